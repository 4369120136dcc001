//! The NAT stage over MemPorts, 64-byte frames, one core (see `bench::nat` for the rigs):
//! - `nat_established_64B`: steady-state forwarding of pre-established connections (1 / 10k / 1M), UDP
//!   (assured) and TCP (after a full handshake, ACK|PSH data segments), container → uplink (masquerade);
//!   plus the reply direction (uplink → container, un-NAT) at 10k. One iteration is one burst of 32 frames,
//!   each of another connection in turn. Reported in frames per second.
//! - `nat_new_connections`: every frame opens a new masqueraded connection (UDP datagrams, TCP SYNs). The
//!   generator cycles a window of 256k distinct flows; when it wraps, the table is flushed outside the timed
//!   part (`iter_custom`), so each measured frame is a real new connection into a table of 0–256k entries,
//!   far below its limit, with no expiry running. Reported in connections per second.

use bench::nat::{NatDirection, NatProto, NewFlows};
use bench::Rig;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::{Duration, Instant};

fn established(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat_established_64B");
    g.throughput(Throughput::Elements(32));
    g.measurement_time(Duration::from_secs(5));
    let cases = [
        (NatProto::Udp, NatDirection::Outbound, 1u32),
        (NatProto::Udp, NatDirection::Outbound, 10_000),
        (NatProto::Udp, NatDirection::Outbound, 1_000_000),
        (NatProto::Tcp, NatDirection::Outbound, 1),
        (NatProto::Tcp, NatDirection::Outbound, 10_000),
        (NatProto::Tcp, NatDirection::Outbound, 1_000_000),
        (NatProto::Udp, NatDirection::Reply, 10_000),
        (NatProto::Tcp, NatDirection::Reply, 10_000),
    ];
    for (proto, dir, flows) in cases {
        let name = format!("{}_{}_{}_conns", format!("{proto:?}").to_lowercase(), dir_name(dir), flows);
        // Criterion calls the closure once per sample: the rig is built at the first call only (so a filtered
        // run builds only what it measures, and 1M connections are set up once, not 100 times).
        let mut rig = None;
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            let rig = rig.get_or_insert_with(|| Rig::nat(flows, proto, dir));
            b.iter(|| rig.step())
        });
    }
    g.finish();
}

fn dir_name(d: NatDirection) -> &'static str {
    match d {
        NatDirection::Outbound => "out",
        NatDirection::Reply => "reply",
    }
}

/// Distinct flows the new-connection generator cycles before the table is flushed.
const WINDOW: u32 = 1 << 18;

fn new_connections(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat_new_connections");
    g.throughput(Throughput::Elements(32));
    g.measurement_time(Duration::from_secs(5));
    for proto in [NatProto::Udp, NatProto::Tcp] {
        let name = format!("{}_window_{WINDOW}", format!("{proto:?}").to_lowercase());
        let mut nf = None;
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            let nf = nf.get_or_insert_with(|| NewFlows::new(WINDOW, proto));
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(u64::from(nf.room()));
                    let t = Instant::now();
                    for _ in 0..n {
                        std::hint::black_box(nf.step());
                    }
                    timed += t.elapsed();
                    left -= n;
                    nf.flush_if_full();
                }
                timed
            })
        });
    }
    g.finish();
}

criterion_group!(benches, established, new_connections);
criterion_main!(benches);
