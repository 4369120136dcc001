//! The ingress stage: decides whether a received frame is well-formed enough to switch, before anything learns
//! from it.
//!
//! Checks, in order, each with its own [`DropReason`]: at least an Ethernet header; no longer than the ingress
//! port's MTU allows (plus 4 bytes per VLAN tag; for a GSO super-frame, each segment it stands for, whose size
//! must be at least 536 bytes); and the headers [`crate::packet::parse`] looks at (VLAN tags,
//! IPv4/IPv6 header and lengths, IPv6 extension headers, TCP/UDP/ICMP headers) are whole and consistent. The
//! header offsets it finds are kept for later stages. A switch could
//! forward such frames blindly; we do not, because every later stage (learning, routing, conntrack) must be able
//! to trust what it reads, and a malformed frame is a symptom worth counting. Payload checksums are not checked
//! here (routing and NAT verify what they rewrite).
//!
//! Frames with other EtherTypes (ARP is sliced as an unknown payload by etherparse, LLDP, ...) pass as long as
//! they have an Ethernet header.

use crate::batch::{Batch, BATCH_SIZE};
use crate::counters::DropReason;
use crate::offload::{Offload, MIN_GSO_SIZE};
use crate::packet::{check, check_into, parse, Parsed};
use crate::stage::{Context, Tracer, Verdict, Verdicts};
use crate::topology::Topology;
use crate::wire::vlan::HEADER_LEN as VLAN_TAG_LEN;
use crate::wire::{ethertype, ip_proto, tcp, udp};

/// The ingress validation stage (stateless).
#[derive(Debug, Default, Clone)]
pub struct Ingress;

impl Ingress {
    /// Sets a `Drop` verdict for every frame of `batch` that fails a check; leaves the others untouched.
    pub fn process<T: Tracer>(
        &mut self,
        cx: &Context<T>,
        topo: &Topology,
        batch: &Batch,
        parsed: &mut [Parsed; BATCH_SIZE],
        verdicts: &mut Verdicts,
    ) {
        let max_len = topo.ports[cx.in_port as usize].max_frame_len();
        for (i, frame) in batch.iter().enumerate() {
            // One comparison on the ordinary path: only frames with offload metadata take the longer check.
            let p = &mut parsed[i];
            let r = if frame.offload.is_none() {
                check_into(frame.data(), max_len, p)
            } else {
                check_offloaded(frame.data(), &frame.offload, max_len).map(|o| *p = o)
            };
            match r {
                Ok(()) => {
                    cx.note("ingress", || {
                        format!(
                            "valid: ethertype {:#06x}, {} VLAN tag(s), ip proto {}",
                            p.ethertype, p.vlan_tags, p.ip_proto
                        )
                    });
                }
                Err(reason) => {
                    verdicts.set(i, Verdict::Drop(reason));
                    cx.note("ingress", || format!("invalid: {}", reason.name()));
                }
            }
        }
    }
}

/// [`check`] for a frame with offload metadata. A GSO super-frame's headers are checked like any frame's, and
/// the length limit applies to each segment it stands for (headers + `gso_size`), which must also carry at least
/// [`MIN_GSO_SIZE`] bytes. A partial checksum (every super-frame has one) on an IPv4 packet must sit in its TCP or
/// UDP header's checksum field ([`DropReason::OffloadMismatch`] otherwise), and is then marked in
/// [`Parsed::csum_partial`] for NAT. IPv6 frames are only switched, never rewritten: their metadata goes on as the
/// port checked it.
#[cold]
#[inline(never)]
pub fn check_offloaded(data: &[u8], offload: &Offload, max_len: usize) -> Result<Parsed, DropReason> {
    let mut parsed = if offload.is_gso() {
        if offload.gso_size() < MIN_GSO_SIZE {
            return Err(DropReason::GsoSegmentTooSmall);
        }
        let parsed = parse(data)?;
        if offload.segment_len(data) > max_len + parsed.vlan_tags as usize * VLAN_TAG_LEN {
            return Err(DropReason::TooLong);
        }
        parsed
    } else {
        check(data, max_len)?
    };
    if let Some((start, offset)) = offload.partial_csum() {
        if parsed.ethertype == ethertype::IPV4 {
            let field = match parsed.ip_proto {
                ip_proto::TCP => Some(tcp::CHECKSUM_OFFSET),
                ip_proto::UDP => Some(udp::CHECKSUM_OFFSET),
                _ => None,
            };
            if parsed.l4 == 0 || start != parsed.l4 || field != Some(offset) {
                return Err(DropReason::OffloadMismatch);
            }
            parsed.csum_partial = true;
        }
    }
    Ok(parsed)
}
