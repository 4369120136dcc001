//! The body of the `reconfigure` fuzz target (`fuzz_targets/reconfigure.rs`), shared with the test that replays
//! its corpus (`dataplane/tests/fuzz_corpora.rs`, which includes this file with `#[path]`).
//!
//! An input is two small random configurations, A and B, and a program of traffic and configuration changes:
//! the switch starts on A; the program sends frames between hosts it derives from the running configuration
//! (ARP, UDP, TCP with any flags, ping, replies to what the switch sent, answers to its ARP requests), moves the
//! clock, and switches A ↔ B with [`Harness::reconfigure`] (`Switch::reconfigure`, what `apply` runs) at any
//! point, as often as it likes. Every step is checked by the pipeline harness (`harness.rs`: accounting,
//! buffers, MAC tables, isolation, NAT), including that no table entry refers to an interface, port or network
//! that the change removed or renumbered.
//!
//! # Input
//! - bytes 0..16: configuration A, 16..32: configuration B ([`config_text`], in `harness.rs`);
//! - then 4-byte operations `[op, a, b, c]` ([`Program::step`]).
//!
//! A configuration byte string that does not make a valid configuration ends the input (nothing to test).

#![allow(dead_code)]

#[path = "harness.rs"]
mod harness;

use dataplane::buffer::Nanos;
use dataplane::config::Config;
use harness::{arp_answers, reply_to_nth, Harness, Traffic, FUZZ_TICK};

pub use harness::{config_text, random_config as config, CONFIG_BYTES};

/// Runs one input (see the module documentation).
pub fn reconfigure(data: &[u8]) {
    let Some((a, rest)) = data.split_first_chunk::<CONFIG_BYTES>() else { return };
    let Some((b, ops)) = rest.split_first_chunk::<CONFIG_BYTES>() else { return };
    let (Some(a), Some(b)) = (config(a), config(b)) else { return };
    let mut p = Program { h: Some(Harness::new(&a)), cfgs: [a, b], on: 0 };
    for op in ops.chunks_exact(4) {
        p.step([op[0], op[1], op[2], op[3]]);
    }
    p.h().finish();
}

/// A running input: the harness and the two configurations.
pub struct Program {
    h: Option<Harness>,
    cfgs: [Config; 2],
    /// Which configuration runs.
    on: usize,
}

impl Program {
    fn h(&mut self) -> &mut Harness {
        self.h.as_mut().expect("a harness between steps")
    }

    fn cfg(&self) -> &Config {
        &self.cfgs[self.on]
    }

    /// One operation `[op, a, b, c]`: `op % 8` picks it.
    /// 0 clock `a` × 50 ms; 1 ARP request from host (a, b) for target c; 2 UDP, 3 TCP (flags from `op`'s high
    /// bits), 4 ping from host (a, b) to target c ([`Traffic::frame`]); 5 a reply to the `a`-th frame the last
    /// step sent; 6 switch to the other configuration; 7 answer every ARP request the last step sent.
    pub fn step(&mut self, [op, a, b, c]: [u8; 4]) {
        match op % 8 {
            0 => self.h().advance(Nanos::from(a) * FUZZ_TICK),
            1..=4 => {
                let (port, frame) = {
                    let topo = self.h.as_ref().expect("harness").testbed().switch().topology();
                    Traffic::new(self.cfg(), topo).frame(op, a, b, c)
                };
                self.h().send(port, &frame);
            }
            5 => {
                let sent = self.h().last_sent().to_vec();
                if let Some((q, reply)) = reply_to_nth(&sent, a, b) {
                    self.h().send(q, &reply);
                }
            }
            6 => {
                self.on ^= 1;
                let cfg = self.cfgs[self.on].clone();
                let h = self.h.take().expect("a harness between steps");
                self.h = Some(h.reconfigure(&cfg).0);
            }
            _ => {
                let sent = self.h().last_sent().to_vec();
                for (q, answer) in arp_answers(&sent) {
                    self.h().send(q, &answer);
                }
            }
        }
    }
}

/// Encodes an input: configurations A and B, then operations.
pub fn encode(a: [u8; CONFIG_BYTES], b: [u8; CONFIG_BYTES], ops: &[[u8; 4]]) -> Vec<u8> {
    let mut out = a.to_vec();
    out.extend_from_slice(&b);
    for op in ops {
        out.extend_from_slice(op);
    }
    out
}
