//! [`Shards`]: several shards of one switch ([`Shard`]) driven by one thread, delivering each shard's
//! [`Outbox`] to the others after every call — what `vswitchd run`'s workers do through their queues, made
//! deterministic for replay and tests (the N-shard outcome is compared with one switch's).
//!
//! Delivery order: after a call on shard `k`, every shard's outbox is drained in shard order until all are
//! empty; updates go to every other shard, handed frames to their owner in the order they were handed. Nothing
//! is dropped here (the live queues are bounded; this driver is not).
//!
//! Threads: one thread owns the whole set.

use super::{Handoff, Shard, Switch, TxQueues, Update};
use crate::batch::Batch;
use crate::buffer::BufPool;
use crate::ids::{Nanos, PortId};

/// Several shards of one switch, on one thread.
#[derive(Debug)]
pub struct Shards {
    switches: Vec<Switch>,
}

impl Shards {
    /// `count` shards, shard `i` made by `make(Shard::new(i, count))` (a switch for the same configuration,
    /// already [`Switch::sharded`]). Every MAC refresh is announced ([`Switch::renew_every_refresh`]), so the
    /// replicas age addresses exactly as one switch does.
    pub fn new(count: usize, mut make: impl FnMut(Shard) -> Switch) -> Shards {
        let count = count.max(1);
        let switches = (0..count)
            .map(|i| {
                let mut s = make(Shard::new(i, count));
                s.renew_every_refresh();
                s
            })
            .collect();
        Shards { switches }
    }

    /// The shards.
    pub fn switches(&self) -> &[Switch] {
        &self.switches
    }

    /// Runs `batch`, received on `in_port`, through shard `k` (the receiving worker), then delivers everything
    /// the shards produced for one another. Every frame ends in `tx` or dropped and counted, as with one switch.
    pub fn process(
        &mut self,
        k: usize,
        now: Nanos,
        in_port: PortId,
        batch: &mut Batch,
        pool: &mut BufPool,
        tx: &mut TxQueues,
    ) {
        let k = k % self.switches.len();
        self.switches[k].process(now, in_port, batch, pool, tx);
        self.deliver(now, pool, tx);
    }

    /// Housekeeping on every shard, then delivery.
    pub fn housekeeping(&mut self, now: Nanos, pool: &mut BufPool, tx: &mut TxQueues) {
        for s in &mut self.switches {
            s.housekeeping(now, pool, tx);
        }
        self.deliver(now, pool, tx);
    }

    /// True while some shard waits for ARP answers.
    pub fn has_pending(&self) -> bool {
        self.switches.iter().any(Switch::has_pending)
    }

    /// Drains every shard's outbox into the others until all are empty.
    pub fn deliver(&mut self, now: Nanos, pool: &mut BufPool, tx: &mut TxQueues) {
        let mut updates: Vec<(usize, Update)> = Vec::new();
        let mut handoffs: Vec<Handoff> = Vec::new();
        loop {
            for (k, s) in self.switches.iter_mut().enumerate() {
                let outbox = s.outbox_mut();
                updates.extend(outbox.updates.drain(..).map(|u| (k, u)));
                handoffs.append(&mut outbox.handoffs);
            }
            if updates.is_empty() && handoffs.is_empty() {
                return;
            }
            for (from, u) in updates.drain(..) {
                for (k, s) in self.switches.iter_mut().enumerate() {
                    if k != from {
                        s.apply_update(now, u, pool, tx);
                    }
                }
            }
            let mut batch = Batch::new();
            let mut current: Option<(usize, PortId)> = None;
            for h in handoffs.drain(..) {
                if current != Some((h.owner, h.port)) || batch.room() == 0 {
                    if let Some((owner, port)) = current {
                        self.switches[owner].process_handed(now, port, &mut batch, pool, tx);
                    }
                    current = Some((h.owner, h.port));
                }
                if let Err(f) = batch.push(h.frame) {
                    pool.free(f);
                }
            }
            if let Some((owner, port)) = current {
                self.switches[owner].process_handed(now, port, &mut batch, pool, tx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ids::{table_id, NANOS_PER_SEC};
    use crate::wire::builder::{arp_reply, arp_request, eth, pattern, udp};
    use crate::wire::{ethernet, ethertype, MacAddr};
    use std::net::Ipv4Addr;

    const CONFIG: &str = r#"
        [[network]]
        name = "lan"
        subnet = "10.0.1.0/24"
        gateway = "10.0.1.1"
        masquerade = true
        [[port]]
        name = "p1"
        kind = "mem"
        network = "lan"
        [[port]]
        name = "p2"
        kind = "mem"
        network = "lan"
        [[port]]
        name = "up"
        kind = "mem"
        address = "203.0.113.2/24"
        [[route]]
        prefix = "0.0.0.0/0"
        via = "203.0.113.1"
    "#;

    /// Two plain networks: traffic between them is routed where it is received.
    const PLAIN: &str = r#"
        [[network]]
        name = "lan"
        subnet = "10.0.1.0/24"
        gateway = "10.0.1.1"
        [[port]]
        name = "p1"
        kind = "mem"
        network = "lan"
        [[port]]
        name = "p2"
        kind = "mem"
        network = "lan"
        [[network]]
        name = "dmz"
        subnet = "10.0.2.0/24"
        gateway = "10.0.2.1"
        [[port]]
        name = "d1"
        kind = "mem"
        network = "dmz"
    "#;

    /// `lan` masquerades; `dmz` is plain and may route to it; `up` publishes TCP 8080 to a `lan` host.
    const PUBLISHED: &str = r#"
        [[network]]
        name = "lan"
        subnet = "10.0.1.0/24"
        gateway = "10.0.1.1"
        masquerade = true
        allow_routing_with = ["dmz"]
        [[port]]
        name = "p1"
        kind = "mem"
        network = "lan"
        [[network]]
        name = "dmz"
        subnet = "10.0.2.0/24"
        gateway = "10.0.2.1"
        [[port]]
        name = "d1"
        kind = "mem"
        network = "dmz"
        [[port]]
        name = "up"
        kind = "mem"
        address = "203.0.113.2/24"
        [[publish]]
        port = "up"
        proto = "tcp"
        external_port = 8080
        to = "10.0.1.10:80"
    "#;

    const HOST: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 1, 10]), Ipv4Addr::new(10, 0, 1, 10));
    const HOST2: MacAddr = MacAddr([2, 0, 0, 0, 1, 11]);
    const UPSTREAM: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 9, 1]), Ipv4Addr::new(203, 0, 113, 1));

    struct Rig {
        shards: Shards,
        pool: BufPool,
        tx: TxQueues,
        now: Nanos,
    }

    impl Rig {
        fn new(n: usize) -> Rig {
            Rig::with(CONFIG, n)
        }

        fn with(config: &str, n: usize) -> Rig {
            let cfg = Config::parse(config, "t").expect("valid");
            let shards = Shards::new(n, |s| Switch::new(&cfg).sharded(s));
            let tx = shards.switches()[0].tx_queues();
            Rig { shards, pool: BufPool::new(1024), tx, now: NANOS_PER_SEC }
        }

        fn mac(&self, rif: usize) -> MacAddr {
            self.shards.switches()[0].topology().rifs[rif].mac
        }

        /// `frame` received on `port` by shard `k`; returns what every port sent, by port.
        fn rx(&mut self, k: usize, port: u16, frame: &[u8]) -> Vec<(u16, Vec<u8>)> {
            self.now += 1000;
            let mut batch = Batch::new();
            let mut f = self.pool.alloc().expect("buffer");
            f.load(frame).expect("fits");
            batch.push(f).expect("room");
            self.shards.process(k, self.now, port, &mut batch, &mut self.pool, &mut self.tx);
            let mut out = Vec::new();
            for p in self.tx.port_ids() {
                for f in self.tx.queue_mut(p).drain(..) {
                    out.push((p, f.data().to_vec()));
                    self.pool.free(f);
                }
            }
            out
        }
    }

    fn is_arp(f: &[u8]) -> bool {
        ethernet::Header::at(f, 0).is_some_and(|e| e.ethertype() == ethertype::ARP)
    }

    #[test]
    fn frames_waiting_for_arp_on_two_shards_leave_when_the_answer_reaches_either() {
        // lan → dmz is routed without NAT: each shard routes what it receives (no handoff).
        let mut r = Rig::with(PLAIN, 2);
        let (gw, dmz_gw) = (r.mac(0), r.mac(1));
        let server = (MacAddr([2, 0, 0, 0, 2, 20]), Ipv4Addr::new(10, 0, 2, 20));
        let to_server = |sport| udp(HOST.0, gw, HOST.1, server.1, sport, 53, 20);
        let first = r.rx(0, 0, &to_server(1000));
        assert_eq!(first.iter().filter(|(p, f)| *p == 2 && is_arp(f)).count(), 1, "one ARP request: {first:?}");
        let second = r.rx(1, 0, &to_server(1001));
        assert!(second.is_empty(), "shard 1 holds its frame without asking again: {second:?}");
        // The answer reaches shard 1; both held frames leave, to the server's MAC.
        let released = r.rx(1, 2, &arp_reply(server.0, server.1, dmz_gw, Ipv4Addr::new(10, 0, 2, 1)));
        let sent: Vec<_> = released.iter().filter(|(p, f)| *p == 2 && !is_arp(f)).collect();
        assert_eq!(sent.len(), 2, "both held frames released: {released:?}");
        assert!(sent.iter().all(|(_, f)| ethernet::Header::at(f, 0).is_some_and(|e| e.dst_addr() == server.0)));
        for s in r.shards.switches() {
            let asked = if s.shard().index == 0 { 1 } else { 0 };
            assert_eq!(s.router().stats().arp_requests, asked, "only the shard that held first asks");
            assert!(!s.has_pending());
        }
    }

    #[test]
    fn a_mac_learned_on_one_shard_is_forwarded_to_by_the_other() {
        let mut r = Rig::new(2);
        r.rx(0, 0, &eth(MacAddr::BROADCAST, HOST.0, 0x88b5, &pattern(46)));
        let out = r.rx(1, 1, &eth(HOST.0, HOST2, 0x88b5, &pattern(46)));
        assert_eq!(out.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [0], "unicast to p1, not flooded");
        assert_eq!(r.shards.switches()[1].fdb(0).lookup(HOST.0, r.now), Some(table_id(0)));
    }

    /// A client in another network reaches a published port; its ICMP error about the reply it got (which the
    /// switch sent from the routed port's address and the external port) is translated back to the published
    /// host whichever shards receive the three, as by one switch. The error used to be given to shard 0 (its
    /// quoted packet, routed address → inside client, fell to the "no client named" rule) while the connection
    /// lived on the client's hash: with 3 shards it was dropped. Found by `nat_through_workers_*`.
    #[test]
    fn an_error_about_a_published_ports_reply_reaches_the_connection() {
        use crate::wire::builder::{Ipv4Spec, TcpFlags, TcpSegment};
        use etherparse::{icmpv4::DestUnreachableHeader, Icmpv4Type};
        let client_mac = MacAddr([2, 0, 0, 0, 2, 20]);
        let up_addr = Ipv4Addr::new(203, 0, 113, 2);
        for n in 1..=4 {
            for client in (20..30).map(|i| Ipv4Addr::new(10, 0, 2, i)) {
                for (j, k, m) in [(0, 0, 0), (0, 1, 2), (1, 2, 0), (2, 0, 1), (3, 3, 3)] {
                    let mut r = Rig::with(PUBLISHED, n);
                    let (lan_gw, dmz_gw) = (r.mac(0), r.mac(1));
                    r.rx(0, 0, &arp_request(HOST.0, HOST.1, Ipv4Addr::new(10, 0, 1, 1)));
                    r.rx(0, 1, &arp_request(client_mac, client, Ipv4Addr::new(10, 0, 2, 1)));
                    let syn = Ipv4Spec::new(client_mac, dmz_gw, client, up_addr)
                        .tcp(TcpSegment::new(40000, 8080, TcpFlags::SYN), 0);
                    let out = r.rx(j % n, 1, &syn);
                    assert_eq!(out.len(), 1, "{n} shards: the SYN reaches the published host: {out:?}");
                    let answer = Ipv4Spec::new(HOST.0, lan_gw, HOST.1, client)
                        .tcp(TcpSegment::new(80, 40000, TcpFlags::SYN | TcpFlags::ACK), 0);
                    let back = r.rx(k % n, 0, &answer);
                    assert_eq!(back.len(), 1, "{n} shards: the answer reaches the client: {back:?}");
                    let quoted = &back[0].1[14..14 + 28];
                    assert_eq!(&quoted[12..16], &up_addr.octets(), "translated from the routed port's address");
                    let error = Ipv4Spec::new(client_mac, dmz_gw, client, up_addr)
                        .icmp(Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port), quoted);
                    let out = r.rx(m % n, 1, &error);
                    assert_eq!(out.len(), 1, "{n} shards, client {client}, ({j}, {k}, {m}): the error is lost");
                    assert_eq!(out[0].0, 0, "translated to the published host's port");
                    let translated =
                        r.shards.switches().iter().map(|s| s.nat_stats().icmp_errors_translated).sum::<u64>();
                    assert_eq!(translated, 1);
                }
            }
        }
    }

    #[test]
    fn replies_reach_the_connection_whichever_shard_receives_them() {
        for n in [2, 3, 4] {
            let mut r = Rig::new(n);
            let (gw, up) = (r.mac(0), r.mac(1));
            r.rx(0, 2, &arp_reply(UPSTREAM.0, UPSTREAM.1, up, Ipv4Addr::new(203, 0, 113, 2)));
            r.rx(0, 0, &arp_request(HOST.0, HOST.1, Ipv4Addr::new(10, 0, 1, 1)));
            // Many remote servers, each flow opened on one shard and answered on every other.
            for s in 0..16u8 {
                let server = Ipv4Addr::new(198, 51, 100, 1 + s);
                let k = usize::from(s) % n;
                let out = r.rx(k, 0, &udp(HOST.0, gw, HOST.1, server, 4000, 53, 20));
                assert_eq!(out.len(), 1, "masqueraded out: {out:?}");
                for j in 0..n {
                    let reply = udp(UPSTREAM.0, up, server, Ipv4Addr::new(203, 0, 113, 2), 53, 4000, 20);
                    let back = r.rx(j, 2, &reply);
                    assert_eq!(back.len(), 1, "{n} shards, server {server}, reply on shard {j}: {back:?}");
                    assert_eq!(back[0].0, 0, "to the host's port");
                }
            }
            let conns: usize = r.shards.switches().iter().map(|s| s.conntrack().len()).sum();
            assert_eq!(conns, 16, "one connection per flow, on its owner only");
            let drops: u64 = r.shards.switches().iter().map(|s| s.counters().total_drops()).sum();
            assert_eq!(drops, 0);
        }
    }
}
