//! The ingress stage: decides whether a received frame is well-formed enough to switch, before anything learns
//! from it.
//!
//! Checks, in order, each with its own [`DropReason`]: at least an Ethernet header; no longer than the ingress
//! port's MTU allows (plus 4 bytes per VLAN tag); and the headers [`crate::packet::parse`] looks at (VLAN tags,
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
use crate::packet::{parse, Parsed};
use crate::stage::{Context, Verdict, Verdicts};
use crate::topology::Topology;
use crate::wire::ethernet::HEADER_LEN as ETH_HEADER_LEN;
use crate::wire::vlan::HEADER_LEN as VLAN_TAG_LEN;

/// The ingress validation stage (stateless).
#[derive(Debug, Default, Clone)]
pub struct Ingress;

impl Ingress {
    /// Sets a `Drop` verdict for every frame of `batch` that fails a check; leaves the others untouched.
    pub fn process(
        &mut self,
        cx: &Context,
        topo: &Topology,
        batch: &Batch,
        parsed: &mut [Parsed; BATCH_SIZE],
        verdicts: &mut Verdicts,
    ) {
        let max_len = topo.ports[cx.in_port as usize].max_frame_len();
        for (i, frame) in batch.iter().enumerate() {
            match check(frame.data(), max_len) {
                Ok(p) => {
                    parsed[i] = p;
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

/// Checks one frame against an untagged length limit of `max_len` bytes and locates its headers.
#[inline]
pub fn check(data: &[u8], max_len: usize) -> Result<Parsed, DropReason> {
    if data.len() < ETH_HEADER_LEN {
        return Err(DropReason::Runt);
    }
    // Cheap early bound before parsing: no frame longer than two tags' worth can be valid.
    if data.len() > max_len + 2 * VLAN_TAG_LEN {
        return Err(DropReason::TooLong);
    }
    let parsed = parse(data)?;
    if data.len() > max_len + parsed.vlan_tags as usize * VLAN_TAG_LEN {
        return Err(DropReason::TooLong);
    }
    Ok(parsed)
}
