//! Carrying the router's learned state into a rebuilt router ([`Router::carried_into`]): when a configuration
//! change renumbers or changes router interfaces, routes or publish rules, the router is rebuilt, but the
//! connections and neighbours the change does not concern are kept, so adding an unrelated network, route or
//! publish rule flushes nothing.
//!
//! Interfaces are matched by name (`network:NAME`, `port:NAME`) and must keep their address, subnet and flags
//! (`internal`, `masquerade`, routed port); MAC and MTU may change. A resolved neighbour is kept when its
//! interface is. A tracked connection is kept when:
//! - both its destinations (the original destination, and the original source the replies go back to) route
//!   through the same interface (by name, same flags) with the same gateway as before;
//! - its allocated NAT port's interface is kept and the port is still in the NAT range;
//! - for a published port (DNAT, hairpin), the same publish rule exists (interface by name, protocol, external
//!   port, target).
//!
//! A kept connection's interface references (its NAT port's interface, the network whose `conntrack_limit` it
//! counts against) are renumbered to the new interfaces, and it keeps whether it has seen a reply.
//!
//! Everything else is flushed and counted (the `apply` summary's `connections_flushed`).
//!
//! Threads: whoever holds the switch: the control thread with the workers paused (`Switch::next_for`), or a
//! worker carrying its own shard over at a batch boundary (`Switch::reconfigure_in_place`). It only reads the
//! old router.

use super::Router;
use crate::config::PublishProto;
use crate::conntrack::{Entry, NatBinding, NatKind, Proto};
use crate::neigh::RifId;
use crate::topology::{RifInfo, Topology};
use std::net::Ipv4Addr;

/// What [`Router::carried_into`] kept and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CarriedRouter {
    /// Connections kept.
    pub connections_kept: usize,
    /// Connections flushed.
    pub connections_flushed: usize,
    /// Resolved neighbours kept.
    pub neighbours_kept: usize,
    /// Resolved neighbours dropped (their interface is gone or changed).
    pub neighbours_dropped: usize,
}

fn same_proto(p: PublishProto, proto: Proto) -> bool {
    matches!((p, proto), (PublishProto::Tcp, Proto::Tcp) | (PublishProto::Udp, Proto::Udp))
}

/// The interface of `new` that is `old`'s interface `rif`: same name, address, subnet and flags.
fn same_rif(old: &RifInfo, new: &Topology) -> Option<RifId> {
    new.rifs
        .iter()
        .position(|r| {
            r.name == old.name
                && r.addr == old.addr
                && r.subnet == old.subnet
                && r.internal == old.internal
                && r.masquerade == old.masquerade
                && r.routed_port == old.routed_port
                && r.host == old.host
        })
        .map(crate::ids::table_id)
}

impl Router {
    /// Where `addr` is routed: the interface and gateway.
    fn egress(&self, addr: Ipv4Addr) -> Option<(RifId, Option<Ipv4Addr>)> {
        let id = self.fib.lookup(addr)?;
        let nh = self.next_hops.get(id.index())?;
        Some((nh.rif, nh.via))
    }

    /// A router for `new_topo` carrying over what of this router's state (built for `old_topo`) the change does
    /// not invalidate; see the module documentation.
    pub fn carried_into(&self, old_topo: &Topology, new_topo: &Topology) -> (Router, CarriedRouter) {
        self.carried_into_new(old_topo, new_topo, Router::new(new_topo))
    }

    /// [`Router::carried_into`] with the new router (`Router::new(new_topo)`, its FIB the costly part) built
    /// beforehand, off the forwarding thread. Reads this router only: a panic leaves it as it was.
    pub fn carried_into_new(&self, old_topo: &Topology, new_topo: &Topology, new: Router) -> (Router, CarriedRouter) {
        let mut new = new;
        let map: Vec<Option<RifId>> = old_topo.rifs.iter().map(|r| same_rif(r, new_topo)).collect();
        let remap = |rif: RifId| map.get(rif as usize).copied().flatten();
        let mut c = CarriedRouter::default();
        (c.neighbours_kept, c.neighbours_dropped) = self.neigh.carry_into(&mut new.neigh, remap);

        let same_route = |addr: Ipv4Addr| match (self.egress(addr), new.egress(addr)) {
            (Some((o, ov)), Some((n, nv))) => remap(o) == Some(n) && ov == nv,
            _ => false,
        };
        let same_publish = |e: &Entry| {
            // The rule that translated it: external port = the original destination port, target = where the
            // replies come from.
            let hit = |t: &Topology, rif: RifId| {
                t.publish.iter().any(|p| {
                    p.rif == rif
                        && p.external_port == e.orig.dport
                        && p.to_addr == e.reply.src
                        && p.to_port == e.reply.sport
                        && same_proto(p.proto, e.orig.proto)
                })
            };
            old_topo
                .publish
                .iter()
                .filter(|p| p.external_port == e.orig.dport)
                .any(|p| hit(old_topo, p.rif) && remap(p.rif).is_some_and(|n| hit(new_topo, n)))
        };
        let mut kept = Vec::new();
        for (_, e) in self.nat.conntrack().all_entries() {
            let mut e = *e;
            let mut keep = same_route(e.orig.dst) && same_route(e.orig.src);
            if let Some(nat) = e.nat {
                let allocator = match nat.allocator {
                    Some(a) => remap(a).map(Some),
                    None => Some(None),
                };
                let published = !matches!(nat.kind, NatKind::Dnat | NatKind::Hairpin) || same_publish(&e);
                keep &= allocator.is_some() && published;
                // The network it counts against is renumbered like the allocator (a kept connection's inside
                // network is kept: its address routes through it).
                let group = nat.group.and_then(remap);
                keep &= nat.group.is_none() || group.is_some();
                e.nat = Some(NatBinding { allocator: allocator.flatten(), group, ..nat });
            }
            if keep {
                kept.push(e);
            } else {
                c.connections_flushed += 1;
            }
        }
        for e in kept {
            // Restored on the same clock: its creation and expiry stay as they were.
            if new.nat.restore(&e, 0) {
                c.connections_kept += 1;
            } else {
                c.connections_flushed += 1;
            }
        }
        (new, c)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::conntrack::{Entry, NatBinding, NatKind, Proto, ProtoState, TcpState, Tuple};
    use crate::pipeline::Switch;
    use crate::testbed::Testbed;
    use crate::topology::Topology;
    use crate::wire::builder::{arp_reply, arp_request, Ipv4Spec};
    use crate::wire::MacAddr;
    use std::net::Ipv4Addr;

    const CONFIG: &str = r#"
[[network]]
name = "lan"
subnet = "10.0.0.0/24"
gateway = "10.0.0.1"
masquerade = true
conntrack_limit = 100

[[port]]
name = "a"
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

    fn rif(t: &Topology, name: &str) -> u16 {
        t.rifs.iter().position(|r| r.name == name).unwrap() as u16
    }

    /// A connection kept across a rebuilt router keeps whether it was replied, and its limit group and NAT
    /// allocator follow their interfaces when a network added in front renumbers them.
    #[test]
    fn a_kept_connection_keeps_replied_and_its_group_follows_its_interface() {
        let old_cfg = Config::parse(CONFIG, "old").unwrap();
        let mut sw = Switch::new(&old_cfg);
        let old = sw.topology().clone();
        let (lan, up) = (rif(&old, "network:lan"), rif(&old, "port:up"));
        let now = 1_000_000_000;
        for (i, replied) in [(0u8, true), (1, false)] {
            let inside = (Ipv4Addr::new(10, 0, 0, 2 + i), 40_000);
            let server = (Ipv4Addr::new(198, 51, 100, 1), 443);
            let e = Entry {
                orig: Tuple::new(0, Proto::Tcp, inside, server),
                reply: Tuple::new(0, Proto::Tcp, server, (Ipv4Addr::new(203, 0, 113, 2), 2000 + u16::from(i))),
                state: ProtoState::Tcp(TcpState::Established),
                created: now,
                expires: now + 1_000_000_000_000,
                nat: Some(NatBinding { kind: NatKind::Snat, allocator: Some(up), group: Some(lan) }),
                replied,
            };
            assert!(sw.tables_mut().1.nat_mut().restore(&e, now));
        }
        // A network in front of lan: every router interface is renumbered.
        let text = format!("[[network]]\nname = \"aaa\"\nsubnet = \"10.9.0.0/24\"\ngateway = \"10.9.0.1\"\n{CONFIG}");
        let new = Topology::from_config(&Config::parse(&text, "new").unwrap());
        let (new_lan, new_up) = (rif(&new, "network:lan"), rif(&new, "port:up"));
        assert_ne!((new_lan, new_up), (lan, up), "the test needs renumbered interfaces");
        let (router, c) = sw.router().carried_into(&old, &new);
        assert_eq!((c.connections_kept, c.connections_flushed), (2, 0));
        let mut kept: Vec<(bool, Option<u16>, Option<u16>)> = router
            .nat()
            .conntrack()
            .all_entries()
            .map(|(_, e)| (e.replied, e.nat.and_then(|n| n.group), e.nat.and_then(|n| n.allocator)))
            .collect();
        kept.sort();
        assert_eq!(kept, [(false, Some(new_lan), Some(new_up)), (true, Some(new_lan), Some(new_up))]);
    }

    /// `n1` masquerades out of `up`; `n0` has no gateway in A and one in B, so B renumbers `n1`'s interface.
    fn config(n0_gateway: bool) -> String {
        let gw = if n0_gateway { "gateway = \"10.1.0.1\"\n" } else { "" };
        format!(
            "[[network]]\nname = \"n0\"\nsubnet = \"10.1.0.0/24\"\n{gw}\n\
             [[network]]\nname = \"n1\"\nsubnet = \"10.2.0.0/24\"\ngateway = \"10.2.0.1\"\nmasquerade = true\n\
             conntrack_limit = 3\n\n\
             [[port]]\nname = \"c\"\nkind = \"mem\"\nnetwork = \"n1\"\n\n\
             [[port]]\nname = \"up\"\nkind = \"mem\"\naddress = \"203.0.113.2/24\"\n\n\
             [[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"203.0.113.1\"\n"
        )
    }

    /// Found by the `reconfigure` fuzz target (`seed-masquerade-renumbered`): a connection carried into a router
    /// whose interfaces were renumbered kept its old limit group (another network's interface), and a replied
    /// one came back unreplied (evictable first).
    #[test]
    fn a_carried_connection_keeps_its_network_and_its_reply() {
        let mut tb = Testbed::new(&config(false)).unwrap();
        let (c_mac, c_ip) = (MacAddr([2, 0, 0, 0, 2, 2]), Ipv4Addr::new(10, 2, 0, 2));
        let (up_mac, up_ip) = (MacAddr([2, 0, 0, 0, 9, 1]), Ipv4Addr::new(203, 0, 113, 1));
        let server = Ipv4Addr::new(198, 51, 100, 7);
        tb.send("up", &arp_reply(up_mac, up_ip, MacAddr([0xff; 6]), Ipv4Addr::new(203, 0, 113, 2)));
        tb.send("c", &arp_request(c_mac, c_ip, Ipv4Addr::new(10, 2, 0, 1)));
        tb.take_all();
        let rif_mac =
            |tb: &Testbed, name: &str| tb.switch().topology().rifs.iter().find(|r| r.name == name).unwrap().mac;
        tb.send("c", &Ipv4Spec::new(c_mac, rif_mac(&tb, "network:n1"), c_ip, server).udp(4000, 53, 4));
        if tb.take("up").is_empty() {
            // The neighbour was not learned from the unsolicited reply: answer the request.
            tb.send("up", &arp_reply(up_mac, up_ip, rif_mac(&tb, "port:up"), Ipv4Addr::new(203, 0, 113, 2)));
        }
        tb.take_all();
        let sport = tb.switch().conntrack().all_entries().next().expect("tracked").1.reply.dport;
        let reply = Ipv4Spec::new(up_mac, rif_mac(&tb, "port:up"), server, Ipv4Addr::new(203, 0, 113, 2));
        tb.send("up", &reply.udp(53, sport, 4));
        assert_eq!(tb.take("c").len(), 1, "the reply is translated back");

        let carried = tb.reconfigure(&crate::config::Config::parse(&config(true), "b").unwrap());
        assert_eq!(carried.connections_flushed, 0);
        let topo = tb.switch().topology();
        let n1 = topo.rifs.iter().position(|r| r.name == "network:n1").unwrap() as u16;
        assert_eq!(n1, 1, "renumbered");
        let (_, e) = tb.switch().conntrack().all_entries().next().expect("carried over");
        assert_eq!(e.nat.and_then(|n| n.group), Some(n1), "counts against its own network");
        assert!(e.replied, "still assured");
        assert_eq!(tb.switch().conntrack().group_count(n1), 1);
        tb.switch().router().nat().check_invariants().unwrap();
    }
}
