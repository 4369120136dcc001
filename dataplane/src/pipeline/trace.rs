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
    /// A scratch copy for tracing `frame` with [`Switch::trace`]: the same topology and MAC tables, the tracked
    /// connections `frame` belongs to (with their NAT bindings; [`crate::nat::Nat::copy_for_trace`]), so the
    /// trace shows conntrack's real verdict for it; the router's resolved neighbours re-learned (each one's ARP
    /// request for its interface's address is run through the copy); zero counters. Nothing done to the copy
    /// reaches this switch. The copy costs time in the size of the MAC and neighbour tables (bounded by their
    /// limits), not of the connection table, taken by the caller (under the switch lock in `vswitchd`).
    pub fn scratch(&self, now: Nanos, frame: &[u8]) -> Switch {
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
        s.router.set_nat(self.router.nat().copy_for_trace(&self.topo, now, frame));
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
        self.process_traced(Context { now, in_port, trace: &trace, handed: false }, &mut batch, &mut pool, &mut tx);
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

#[cfg(test)]
mod tests {
    use crate::testbed::Testbed;
    use crate::wire::builder::{arp_request, Ipv4Spec};
    use crate::wire::MacAddr;
    use std::net::Ipv4Addr;

    const CONFIG: &str = "[[network]]\nname = \"n\"\nsubnet = \"10.2.0.0/24\"\ngateway = \"10.2.0.1\"\n\
                          masquerade = true\n\n[[port]]\nname = \"c\"\nkind = \"mem\"\nnetwork = \"n\"\n\n\
                          [[port]]\nname = \"up\"\nkind = \"mem\"\naddress = \"203.0.113.2/24\"\n\n\
                          [[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"203.0.113.1\"\n";

    /// The scratch copy holds the connection the traced frame belongs to, and no other: its cost does not grow
    /// with the connection table, while the trace still reports conntrack's verdict on the live connection.
    #[test]
    fn the_scratch_copy_holds_only_the_traced_frames_connection() {
        let mut tb = Testbed::new(CONFIG).unwrap();
        let (mac, ip) = (MacAddr([2, 0, 0, 0, 2, 2]), Ipv4Addr::new(10, 2, 0, 2));
        tb.send("c", &arp_request(mac, ip, Ipv4Addr::new(10, 2, 0, 1)));
        let gw = tb.switch().topology().rifs[0].mac;
        let to = |port: u16| Ipv4Spec::new(mac, gw, ip, Ipv4Addr::new(198, 51, 100, 7)).udp(4000, port, 4);
        for port in 1..=200 {
            tb.send("c", &to(port));
        }
        assert_eq!(tb.switch().conntrack().len(), 200);
        tb.advance(crate::buffer::NANOS_PER_SEC);
        let now = tb.now();
        let sw = tb.switch();
        let mut scratch = sw.scratch(now, &to(77));
        assert_eq!(scratch.conntrack().len(), 1, "only the traced frame's connection is copied");
        scratch.trace(now, tb.port("c"), &to(77)).unwrap();
        let (_, e) = scratch.conntrack().all_entries().next().expect("the connection");
        assert_eq!(scratch.conntrack().len(), 1, "the trace found the live connection rather than opening one");
        assert!(e.created < now, "the live connection, made before the trace");
        assert_eq!(sw.scratch(now, &to(999)).conntrack().len(), 0, "a new flow copies nothing");
        assert_eq!(tb.switch().conntrack().len(), 200, "the live table is untouched");
    }
}
