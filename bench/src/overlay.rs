//! Overlay rigs: host a's switch with an overlay network `red` (VNI 100) and a routed underlay port
//! (198.51.100.11/24, the VTEP), one remote member b (198.51.100.12) with `flows` remote endpoints behind it,
//! the underlay next hop already resolved, for the `overlay` benchmark.
//!
//! - [`Rig::overlay_encap`]: the generator is a local container port; it sends 64-byte UDP frames to the remote
//!   endpoints (one frame per endpoint in turn), each bridged, encapsulated (template copy, flow hash for the
//!   source port, length and checksum fixed up) and sent to b's MAC on the underlay port (the sink).
//! - [`Rig::overlay_decap`]: the generator is the underlay port; it receives VXLAN packets from b carrying 64-byte
//!   frames from the remote endpoints to a container learnt behind the sink; each is checked, stripped and
//!   bridged to the sink.
//!
//! The clock stays at 0 and housekeeping never runs.

use crate::{host_mac, udp64, Rig};
use dataplane::config::Config;
use dataplane::overlay::{Member, OverlayState, RemoteEndpoint};
use dataplane::pipeline::Switch;
use dataplane::port::mem::TxMode;
use dataplane::wire::builder::{arp_request, Ipv4Opts, Ipv4Spec};
use dataplane::wire::MacAddr;
use std::net::Ipv4Addr;

/// Our VTEP.
pub const VTEP_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
/// The remote member's VTEP.
pub const VTEP_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
/// The remote member's underlay MAC.
pub const MAC_B: MacAddr = MacAddr([2, 0, 0, 0, 9, 0x12]);
/// The VNI of `red`.
pub const VNI: u32 = 100;
/// The local container (behind the access port).
pub const LOCAL: u32 = 0xa0_0001;

/// The configuration: `red` with the access port and the underlay port in the order the rig needs (the
/// generator is port 0).
fn config(underlay_first: bool) -> Config {
    let access = "[[port]]\nname = \"c\"\nkind = \"mem\"\nnetwork = \"red\"\n";
    let under = format!("[[port]]\nname = \"under\"\nkind = \"mem\"\naddress = \"{VTEP_A}/24\"\n");
    let ports = if underlay_first { format!("{under}{access}") } else { format!("{access}{under}") };
    let text = format!(
        "[cluster]\nname = \"bench\"\nhost = \"a\"\netcd = [\"http://127.0.0.1:2379\"]\nvtep_port = \"under\"\n\
         [[network]]\nname = \"red\"\nscope = \"overlay\"\nvni = {VNI}\nmac_limit = 1000000\n{ports}"
    );
    Config::parse(&text, "bench").expect("bench config is valid")
}

/// Remote endpoint number `i` (behind b).
fn remote(i: u32) -> MacAddr {
    MacAddr(host_mac(0xb0_0000 + i))
}

/// Member b serving `red` with `flows` endpoints.
fn state(flows: u32) -> OverlayState {
    OverlayState {
        revision: 1,
        members: vec![Member {
            host: "b".into(),
            vtep: VTEP_B,
            udp_port: 4789,
            mtu: 1500,
            networks: vec!["red".into()],
        }],
        endpoints: (0..flows)
            .map(|i| RemoteEndpoint { network: "red".into(), mac: remote(i), ip: None, host: "b".into() })
            .collect(),
    }
}

/// A switch for `cfg` with `flows` remote endpoints installed.
fn switch(cfg: &Config, flows: u32) -> Switch {
    let mut s = Switch::new(cfg);
    s.update_overlay(state(flows)).expect("the bench's overlay state is valid");
    s
}

impl Rig {
    /// See the module documentation.
    pub fn overlay_encap(flows: u32) -> Self {
        let sw = switch(&config(false), flows);
        let frames = (0..flows)
            .map(|i| udp64(host_mac(LOCAL), remote(i).0, [10, 1, 0, 2], [10, 1, 0, 3], 1000 + (i % 1000) as u16))
            .collect();
        let mut rig = Rig::with(sw, frames);
        // b asks for our VTEP address: the router learns b's MAC, so nothing waits for ARP while measuring.
        rig.sink.inject(&arp_request(MAC_B, VTEP_B, VTEP_A));
        while rig.sink.pending() > 0 {
            rig.step_port(1);
        }
        rig.sink.set_tx_mode(TxMode::Count);
        rig.step();
        rig
    }

    /// See the module documentation.
    pub fn overlay_decap(flows: u32) -> Self {
        let sw = switch(&config(true), flows);
        let under_mac = sw.topology().rifs.iter().find(|r| r.name == "port:under").expect("routed port").mac;
        let outer =
            Ipv4Spec::new(MAC_B, under_mac, VTEP_B, VTEP_A).with_opts(Ipv4Opts { df: true, ..Ipv4Opts::default() });
        let frames = (0..flows)
            .map(|i| {
                let inner = udp64(remote(i).0, host_mac(LOCAL), [10, 1, 0, 3], [10, 1, 0, 2], 1000);
                outer.vxlan(49152 + (i % 16384) as u16, 4789, VNI, &inner)
            })
            .collect();
        let mut rig = Rig::with(sw, frames);
        // The local container speaks first (to a remote endpoint), so its MAC is learnt behind the sink.
        rig.sink.inject(&udp64(host_mac(LOCAL), remote(0).0, [10, 1, 0, 2], [10, 1, 0, 3], 9));
        while rig.sink.pending() > 0 {
            rig.step_port(1);
        }
        rig.gen.set_tx_mode(TxMode::Count);
        rig.sink.set_tx_mode(TxMode::Count);
        rig.step();
        rig
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rigs_encapsulate_and_decapsulate_every_frame() {
        let mut r = Rig::overlay_encap(8);
        let (before, sent) = (r.switch.overlay().stats().encapsulated, r.switch.router().stats().forwarded);
        for _ in 0..4 {
            assert_eq!(r.step(), 32);
        }
        assert_eq!(r.switch.overlay().stats().encapsulated - before, 128);
        assert_eq!(r.switch.router().stats().forwarded - sent, 128, "sent to b's MAC, none held for ARP");
        assert!(r.switch.counters().drops_by_name().is_empty(), "{:?}", r.switch.counters().drops_by_name());
        let mut r = Rig::overlay_decap(8);
        let before = r.switch.overlay().stats().decapsulated;
        for _ in 0..4 {
            assert_eq!(r.step(), 32);
        }
        assert_eq!(r.switch.overlay().stats().decapsulated - before, 128);
        assert!(r.switch.counters().drops_by_name().is_empty(), "{:?}", r.switch.counters().drops_by_name());
    }
}
