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
use crate::packet::{check, Parsed};
use crate::pipeline::{Context, Verdict, Verdicts};
use crate::topology::Topology;

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
                Ok(p) => parsed[i] = p,
                Err(reason) => verdicts.set(i, Verdict::Drop(reason)),
            }
        }
    }
}
