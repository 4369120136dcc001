//! The body of the `workers` fuzz target (`fuzz_targets/workers.rs`), shared with the tests that replay its
//! corpus and generate its inputs (`dataplane/tests/fuzz_corpora.rs`, `dataplane/tests/pipeline_props.rs`,
//! which include this file with `#[path]`).
//!
//! An input runs the pipeline through 2, 3 or 4 shards of one switch driven as that many workers
//! ([`Workers`] in `harness.rs`): which worker receives each frame, which frames make a burst, when each
//! worker polls, takes the updates and frames the others queued for it, and in which order the workers do
//! housekeeping and take their mail are all the input's. Every step is checked by the harness (accounting with
//! frames in flight between workers, buffers, every shard's tables, isolation, NAT, replicas agreeing). With
//! settled delivery (everything delivered after each step) the outcome must also be one switch's, given the
//! same bursts at the same times: the same frames on every port as multisets and the same counters, unless a
//! limit that holds per worker was reached. With lagging delivery (the input decides when each queue is
//! drained, possibly through queues of 4 entries that lose updates and drop handed frames) only the invariants
//! are checked.
//!
//! # Input
//! - byte 0: `2 + b % 3` workers; bit 4 set: lagging delivery, and bit 5 too: queues of 4 entries;
//! - byte 1: the configuration, `b % 3`: 0 `ROUTED_CONFIG`, 1 `L2_CONFIG`, 2 a random one from the next 16
//!   bytes (`harness::config_text`; invalid: the input ends);
//! - then 4-byte operations `[k, a, b, c]` ([`Program::step`]), `k & 15` the operation, `(k >> 4) & 3` the
//!   worker, bit 6 "queue only" for operations that receive a frame (else the worker polls that queue at once).

#![allow(dead_code)]

#[path = "harness.rs"]
pub mod harness;

use dataplane::buffer::Nanos;
use dataplane::config::Config;
use harness::{arp_answers, random_config, reply_to_nth, Delivery, Traffic, Workers, CONFIG_BYTES, FUZZ_TICK};
use std::sync::LazyLock;

static ROUTED: LazyLock<Config> = LazyLock::new(|| harness::config(harness::ROUTED_CONFIG));
static L2: LazyLock<Config> = LazyLock::new(|| harness::config(harness::L2_CONFIG));

/// Queue capacities of "small queues" inputs.
pub const SMALL_QUEUE: usize = 4;

/// Runs one input (see the module documentation).
pub fn workers(data: &[u8]) {
    run(data);
}

/// Runs one input; returns the finished run and whether it was compared with one switch (`None`: no valid
/// configuration).
pub fn run(data: &[u8]) -> Option<(Workers, bool)> {
    let (&[b0, b1], rest) = data.split_first_chunk::<2>()?;
    let n = 2 + usize::from(b0 % 3);
    let delivery = match (b0 & 0x10 != 0, b0 & 0x20 != 0) {
        (false, _) => Delivery::Settled,
        (true, false) => {
            Delivery::Lagging { updates: dataplane::worker::UPDATE_QUEUE, handoffs: dataplane::worker::HANDOFF_QUEUE }
        }
        (true, true) => Delivery::Lagging { updates: SMALL_QUEUE, handoffs: SMALL_QUEUE },
    };
    let (cfg, ops) = match b1 % 3 {
        0 => (ROUTED.clone(), rest),
        1 => (L2.clone(), rest),
        _ => {
            let (c, ops) = rest.split_first_chunk::<CONFIG_BYTES>()?;
            (random_config(c)?, ops)
        }
    };
    let mut p = Program { w: Workers::new(&cfg, n, delivery), last: 0..0 };
    let mut ops = ops;
    while let Some((op, rest)) = ops.split_first_chunk::<4>() {
        ops = p.step(*op, rest);
    }
    p.w.finish();
    let compared = p.w.check_same_as_one_switch();
    Some((p.w, compared))
}

/// A running input.
pub struct Program {
    w: Workers,
    /// The frames the last operation sent (indices into `Workers::sent`).
    last: std::ops::Range<usize>,
}

impl Program {
    /// One operation `[k, a, b, c]`, `rest` the input after it; returns what is left after the operation (a raw
    /// frame takes its bytes). `k & 15`:
    /// 0 clock `a` × 50 ms; 1 ARP request, 2 UDP, 3 TCP, 4 ping from host (a, b) to target c
    /// (`harness::Traffic::frame`, with `a >> 3` the payload or flags); 5 a reply to the `a`-th frame the last
    /// operation sent (TCP flags from `b`); 6 answers to every ARP request it sent; 7 a raw frame of
    /// `u16::from_le_bytes([b, c])` bytes from the input, on port `a`; 8 the worker polls port `a`; 9 and 15
    /// every worker polls every queue; 10 the worker's inbox, up to `1 + a % 4` bursts; 11 the worker applies
    /// its updates; 12 it runs one burst of handed frames; 13 everything is delivered; 14 the workers' order
    /// starts at `a`. Frames of 1–7 arrive on worker `(k >> 4) & 3`'s queue, which it polls at once unless bit
    /// 6 of `k` is set.
    pub fn step<'a>(&mut self, [k, a, b, c]: [u8; 4], rest: &'a [u8]) -> &'a [u8] {
        let worker = usize::from((k >> 4) & 3);
        let later = k & 0x40 != 0;
        let start = self.w.sent().len();
        let mut rest = rest;
        let frames: Vec<(usize, Vec<u8>)> = match k & 15 {
            0 => {
                self.w.advance(Nanos::from(a) * FUZZ_TICK);
                Vec::new()
            }
            kind @ 1..=4 => {
                let topo = self.w.switches()[0].topology();
                let (port, frame) = Traffic::new(self.w.config(), topo).frame(kind | (a & 0xf8), a, b, c);
                vec![(usize::from(port), frame)]
            }
            5 => {
                let last = &self.w.sent()[self.last.clone()];
                reply_to_nth(last, a, b).map(|(q, f)| (usize::from(q), f)).into_iter().collect()
            }
            6 => {
                let last = &self.w.sent()[self.last.clone()];
                arp_answers(last).into_iter().map(|(q, f)| (usize::from(q), f)).collect()
            }
            7 => {
                let len = usize::from(u16::from_le_bytes([b, c])).min(harness::FUZZ_MAX_FRAME);
                let (frame, after) = rest.split_at(len.min(rest.len()));
                rest = after;
                vec![(usize::from(a), frame.to_vec())]
            }
            8 => {
                self.w.poll(worker, usize::from(a));
                Vec::new()
            }
            10 => {
                self.w.inbox(worker, 1 + usize::from(a % 4));
                Vec::new()
            }
            11 => {
                self.w.apply_updates(worker);
                Vec::new()
            }
            12 => {
                self.w.handed_burst(worker);
                Vec::new()
            }
            13 => {
                self.w.settle();
                Vec::new()
            }
            14 => {
                self.w.rotate(usize::from(a));
                Vec::new()
            }
            _ => {
                self.w.poll_all();
                Vec::new()
            }
        };
        for (port, frame) in frames {
            self.w.receive(worker, port, &frame);
            if !later {
                self.w.poll(worker, port);
            }
        }
        self.last = start..self.w.sent().len();
        rest
    }
}

/// Encodes an input: the two header bytes, the random configuration's bytes (if `b1 % 3 == 2`), then
/// operations, each `(op, bytes)` (`bytes`: a raw frame's, after a `7` operation).
pub fn encode(b0: u8, b1: u8, config: Option<[u8; CONFIG_BYTES]>, ops: &[([u8; 4], &[u8])]) -> Vec<u8> {
    let mut out = vec![b0, b1];
    out.extend(config.iter().flatten());
    for (op, bytes) in ops {
        out.extend_from_slice(op);
        out.extend_from_slice(bytes);
    }
    out
}

/// The operation receiving `frame` raw on `port` by `worker` (polled at once unless `later`).
pub fn raw(worker: u8, port: u8, later: bool, frame: &[u8]) -> ([u8; 4], &[u8]) {
    let len = (frame.len() as u16).to_le_bytes();
    ([7 | (worker & 3) << 4 | u8::from(later) << 6, port, len[0], len[1]], frame)
}
