//! The switches and frames of `vswitch-bench pipeline`'s scenarios, built from the rigs of `bench` (their
//! configurations, warmed tables and established connections) with frames of the asked size:
//!
//! | scenario | configuration (rig) | what a frame goes through | flows |
//! |---|---|---|---|
//! | `l2` | one network, ports `gen` → `sink` ([`Rig::l2`]) | learn, FDB lookup, forward | distinct source MACs, all to one learned host |
//! | `l3` | networks `a` → `b` with `--routes` extra routes ([`Rig::routed`]) | bridge to the gateway, LPM, TTL, checksum, neighbour, MAC rewrite | distinct (destination, source port) pairs |
//! | `nat-established` | masquerade network → uplink ([`Rig::nat`]) | conntrack hit, SNAT rewrite, route | established UDP connections |
//! | `nat-new` | the same, no connection set up ([`NewFlows`]) | conntrack miss, new entry, port allocation, SNAT | new UDP connections per window (the table is flushed between windows) |
//! | `mixed` | the `nat-established` rig, both ports generating | half masqueraded out, half replies un-NATed in | established UDP connections, both directions |
//!
//! Every frame is UDP/IPv4 (the pipeline's timestamps ride in the UDP payload). Worker `w` of `N` generates
//! the flows `i` with `i % N == w` (as a NIC's RSS would spread them).

use crate::nat::{NatDirection, NatProto, NewFlows};
use crate::{host_mac, udp_frame, Rig, SplitMix};
use dataplane::config::Config;
use dataplane::pipeline::Switch;
use dataplane::port::PortId;
use std::net::Ipv4Addr;

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Bridged.
    L2,
    /// Routed.
    L3,
    /// Masquerade, established connections.
    NatEstablished,
    /// Masquerade, a new connection per frame.
    NatNew,
    /// Masquerade both ways.
    Mixed,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 5] =
        [Scenario::L2, Scenario::L3, Scenario::NatEstablished, Scenario::NatNew, Scenario::Mixed];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::L2 => "l2",
            Scenario::L3 => "l3",
            Scenario::NatEstablished => "nat-established",
            Scenario::NatNew => "nat-new",
            Scenario::Mixed => "mixed",
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown scenario {s:?}: {}", Scenario::ALL.map(Scenario::name).join(", ")))
    }
}

/// Frame sizes, with the 4-byte FCS (as a tester counts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSize {
    /// Every frame this long (64..=1518).
    Fixed(usize),
    /// Simple IMIX: 64, 594 and 1518 bytes, 7:4:1.
    Imix,
}

/// The simple IMIX pattern (bytes with FCS), 12 frames long.
pub const IMIX: [usize; 12] = [64, 594, 64, 64, 594, 64, 1518, 64, 594, 64, 594, 64];

impl FrameSize {
    /// The wire size (with FCS) of template `j`.
    pub fn of(self, j: usize) -> usize {
        match self {
            FrameSize::Fixed(n) => n,
            FrameSize::Imix => IMIX[j % IMIX.len()],
        }
    }

    /// Mean wire size (with FCS), bytes.
    pub fn mean(self) -> f64 {
        match self {
            FrameSize::Fixed(n) => n as f64,
            FrameSize::Imix => IMIX.iter().sum::<usize>() as f64 / IMIX.len() as f64,
        }
    }

    /// For JSON: the size, or "imix".
    pub fn json(self) -> serde_json::Value {
        match self {
            FrameSize::Fixed(n) => n.into(),
            FrameSize::Imix => "imix".into(),
        }
    }
}

impl std::str::FromStr for FrameSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "imix" {
            return Ok(FrameSize::Imix);
        }
        match s.parse::<usize>() {
            Ok(n) if (64..=1518).contains(&n) => Ok(FrameSize::Fixed(n)),
            _ => Err(format!("frame size {s:?}: expected 64..=1518 (bytes with FCS) or imix")),
        }
    }
}

/// A scenario ready to run: the configuration, its switch with warmed tables, and what each port generates.
#[derive(Debug)]
pub struct Built {
    /// The configuration (memory ports).
    pub cfg: Config,
    /// The switch, tables warmed.
    pub switch: Switch,
    /// Per generating port: its templates, per worker.
    pub gens: Vec<(PortId, Vec<Vec<Vec<u8>>>)>,
    /// `nat-new`: generators make one pass per window and the connections are flushed between windows.
    pub windowed: bool,
}

/// Deals templates `0..n` (made by `make(j)`) to `workers` workers: worker `w` gets those with `j % workers == w`.
fn deal(n: usize, workers: usize, mut make: impl FnMut(usize) -> Vec<u8>) -> Vec<Vec<Vec<u8>>> {
    let mut out = vec![Vec::new(); workers];
    for j in 0..n {
        out[j % workers].push(make(j));
    }
    out
}

/// How many templates: the flows, made a multiple of the IMIX pattern's length (and at least one per worker).
fn templates(flows: usize, size: FrameSize, workers: usize) -> usize {
    let n = flows.max(workers);
    match size {
        FrameSize::Fixed(_) => n,
        FrameSize::Imix => n.next_multiple_of(IMIX.len() * workers / gcd(IMIX.len(), workers)),
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Builds `scenario` with `flows` flows for `workers` workers (`routes`: extra routes for `l3`).
pub fn build(scenario: Scenario, flows: usize, size: FrameSize, workers: usize, routes: usize) -> Built {
    let flows = flows.max(1);
    let n = templates(flows, size, workers);
    let len = |j: usize| size.of(j) - 4;
    match scenario {
        Scenario::L2 => {
            let rig = Rig::l2(flows as u32);
            let cfg = Rig::l2_config(flows as u32);
            let dst = host_mac(0xffff_0001);
            let gens = deal(n, workers, |j| {
                let i = (j % flows) as u32;
                udp_frame(host_mac(i + 1), dst, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 1000, 9, len(j))
            });
            Built { cfg, switch: rig.switch, gens: vec![(0, gens)], windowed: false }
        }
        Scenario::L3 => {
            let (rig, prefixes) = Rig::routed_with_prefixes(routes);
            let gw = rig.switch.topology().rifs[0].mac.0;
            let mut rng = SplitMix(flows as u64 ^ 0x5eed);
            let dsts: Vec<Ipv4Addr> = (0..flows)
                .map(|i| {
                    if prefixes.is_empty() {
                        Ipv4Addr::new(10, 0, 2, (i % 200) as u8 + 2)
                    } else {
                        let p = prefixes[rng.next_u64() as usize % prefixes.len()];
                        let host = (rng.next_u64() as u32) & !u32::from(p.netmask());
                        Ipv4Addr::from(u32::from(p.network()) | host)
                    }
                })
                .collect();
            let gens = deal(n, workers, |j| {
                let i = j % flows;
                let sport = 1000 + (i / 200 % 60000) as u16;
                udp_frame(host_mac(1), gw, Ipv4Addr::new(10, 0, 1, 10), dsts[i], sport, 9, len(j))
            });
            Built { cfg: Rig::routed_config(), switch: rig.switch, gens: vec![(0, gens)], windowed: false }
        }
        Scenario::NatEstablished | Scenario::Mixed => {
            let rig = Rig::nat(flows as u32, NatProto::Udp, NatDirection::Outbound);
            let cfg = crate::nat::config(false, flows + 1024);
            let mk = |dir| {
                let per: Vec<Vec<u8>> = (0..n)
                    .map(|j| {
                        let i = (j % flows) as u32;
                        crate::nat::udp_frames(&rig.switch, i..i + 1, dir, len(j)).remove(0)
                    })
                    .collect();
                deal(n, workers, |j| per[j].clone())
            };
            let mut gens = vec![(0, mk(NatDirection::Outbound))];
            if scenario == Scenario::Mixed {
                gens.push((1, mk(NatDirection::Reply)));
            }
            Built { cfg, switch: rig.switch, gens, windowed: false }
        }
        Scenario::NatNew => {
            let window = (n as u32).next_multiple_of(32);
            let nf = NewFlows::new(window, NatProto::Udp);
            let cfg = crate::nat::config(false, window as usize + 1024);
            let gens = deal(n, workers, |j| {
                crate::nat::udp_frames(&nf.rig.switch, j as u32..j as u32 + 1, NatDirection::Outbound, len(j)).remove(0)
            });
            Built { cfg, switch: nf.rig.switch, gens: vec![(0, gens)], windowed: true }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_parse_and_refuse_what_is_out_of_range() {
        assert_eq!("64".parse::<FrameSize>(), Ok(FrameSize::Fixed(64)));
        assert_eq!("imix".parse::<FrameSize>(), Ok(FrameSize::Imix));
        for bad in ["63", "1519", "x", ""] {
            assert!(bad.parse::<FrameSize>().unwrap_err().contains("64..=1518"), "{bad}");
        }
        assert!((FrameSize::Imix.mean() - 361.83).abs() < 0.01);
        assert!("l4".parse::<Scenario>().unwrap_err().contains("nat-established"));
    }

    #[test]
    fn templates_are_dealt_to_workers_with_the_asked_sizes() {
        let b = build(Scenario::L2, 10, FrameSize::Imix, 2, 0);
        let per: Vec<usize> = b.gens[0].1.iter().map(Vec::len).collect();
        assert_eq!(per, [6, 6], "10 flows made 12 templates (the IMIX pattern), 6 per worker");
        let mut lens: Vec<usize> = b.gens[0].1.iter().flatten().map(|t| t.len() + 4).collect();
        lens.sort_unstable();
        assert_eq!(lens.iter().filter(|&&l| l == 64).count(), 7);
        assert_eq!(lens.last(), Some(&1518));
        let b = build(Scenario::Mixed, 3, FrameSize::Fixed(128), 1, 0);
        assert_eq!(b.gens.len(), 2, "both ports generate");
        assert!(b.gens.iter().all(|(_, w)| w[0].iter().all(|t| t.len() == 124)));
    }
}
