//! `vswitchctl trace`: one frame through a scratch copy of the switch, with a [`Trace`] attached so that every
//! stage records its own decision as it makes it (ingress's checks, the bridge's lookup, the router's route from
//! the FIB, conntrack's verdict and the NAT rewrite, the neighbour, egress). It is the real pipeline
//! ([`Switch::process`]'s body), not a second one: what the trace says is what forwarding does.

use super::Switch;
use crate::batch::{Batch, BATCH_SIZE};
use crate::buffer::BufPool;
use crate::counters::Counters;
use crate::ids::{Nanos, PortId};
use crate::stage::{Context, Trace, TraceStep};
use crate::topology::Attach;

/// What [`Switch::trace`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSteps {
    /// `(stage, decision)` in the order the stages decided: `ingress`, `bridge`, `route`, `conntrack`, `router`,
    /// `neighbour`, `egress`, `drop` (only the stages the frame reached).
    pub stages: Vec<TraceStep>,
    /// Frames that would be sent, by egress port.
    pub outputs: Vec<(PortId, Vec<u8>)>,
    /// Drops counted, by reason name.
    pub drops: std::collections::BTreeMap<&'static str, u64>,
}

impl Switch {
    /// A scratch copy for [`Switch::trace`]: the same topology, MAC tables and tracked connections (with their NAT
    /// bindings), so the trace shows conntrack's real verdict for the frame; the router's resolved neighbours
    /// re-learned (each one's ARP request for its interface's address is run through the copy); zero counters.
    /// Nothing done to the copy reaches this switch. The copy costs time in the size of the MAC and connection
    /// tables, taken by the caller (under the switch lock in `vswitchd`).
    pub fn scratch(&self, now: Nanos) -> Switch {
        use crate::wire::builder::arp_request;
        let mut s = Switch::with_topology(self.topo.clone());
        s.bridge = self.bridge.clone();
        s.overlay = self.overlay.reconfigured(&s.topo, &|a| s.router.underlay_route(a));
        let mut pool = BufPool::new(4 * BATCH_SIZE);
        let mut tx = s.tx_queues();
        let mut batch = Batch::new();
        for n in self.router.neighbours(now) {
            let (Some(mac), Some(rif)) = (n.mac, self.topo.rifs.get(n.rif as usize)) else { continue };
            let port = match rif.attach {
                Attach::Port(p) => Some(p),
                Attach::Network(net) => self
                    .bridge
                    .fdb(net)
                    .lookup(mac, now)
                    .or_else(|| self.topo.networks[net as usize].ports.first().copied()),
            };
            let (Some(port), Some(mut f)) = (port, pool.alloc()) else { continue };
            if f.load(&arp_request(mac, n.ip, rif.addr)).is_ok() && batch.push(f).is_ok() {
                s.process(now, port, &mut batch, &mut pool, &mut tx);
            }
            for p in tx.port_ids() {
                for f in tx.queue_mut(p).drain(..) {
                    pool.free(f);
                }
            }
        }
        s.router.set_nat(self.router.nat().clone());
        s.counters = Counters::new(s.topo.ports.len());
        s
    }

    /// Runs one frame (received on `in_port` at `now`) through the pipeline with a trace attached, and reports
    /// each stage's decision, the frames that would be sent and the drops counted. Meant for a
    /// [`Switch::scratch`] copy: it learns, counts and tracks like any frame.
    pub fn trace(&mut self, now: Nanos, in_port: PortId, data: &[u8]) -> Result<TraceSteps, String> {
        if in_port as usize >= self.topo.ports.len() {
            return Err(format!("no port #{in_port}"));
        }
        let mut pool = BufPool::new(4 * BATCH_SIZE);
        let mut tx = self.tx_queues();
        let mut batch = Batch::new();
        let mut f = pool.alloc().ok_or("no buffer")?;
        f.load(data).map_err(|e| format!("{e}"))?;
        f.ts = now;
        f.port = in_port;
        batch.push(f).map_err(|_| "batch full".to_string())?;
        let trace = Trace::default();
        self.process_traced(Context { now, in_port, trace: Some(&trace) }, &mut batch, &mut pool, &mut tx);
        let mut outputs = Vec::new();
        for p in tx.port_ids() {
            for f in tx.queue_mut(p).drain(..) {
                outputs.push((p, f.data().to_vec()));
                pool.free(f);
            }
        }
        let drops = self.counters.drops_by_name();
        Ok(TraceSteps { stages: trace.into_steps(), outputs, drops })
    }
}
