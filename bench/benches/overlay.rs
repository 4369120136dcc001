//! The overlay's per-frame cost beside plain L2, in one run (the machine is shared: compare within a run):
//! 64-byte inner frames over MemPorts, one burst of 32 frames per iteration, reported in frames per second.
//! - `l2_1_mac`: plain bridging between two access ports (`Rig::l2(1)`), the baseline;
//! - `encap_N_endpoints`: bridged to a remote endpoint and VXLAN-encapsulated to its VTEP (`Rig::overlay_encap`);
//! - `decap_N_endpoints`: VXLAN from a member checked, stripped and bridged to a local port
//!   (`Rig::overlay_decap`).
//!
//! Criterion runs the cases one after the other; the ratio encap/L2 and decap/L2 of one run is the figure.

use bench::Rig;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

fn overlay(c: &mut Criterion) {
    let mut g = c.benchmark_group("overlay_64B");
    g.throughput(Throughput::Elements(32));
    g.measurement_time(Duration::from_secs(4));
    type Build = fn() -> Rig;
    let cases: [(&str, Build); 5] = [
        ("l2_1_mac", || Rig::l2(1)),
        ("encap_1_endpoints", || Rig::overlay_encap(1)),
        ("decap_1_endpoints", || Rig::overlay_decap(1)),
        ("encap_1000_endpoints", || Rig::overlay_encap(1000)),
        ("decap_1000_endpoints", || Rig::overlay_decap(1000)),
    ];
    for (name, build) in cases {
        let mut rig = None;
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            let rig = rig.get_or_insert_with(build);
            b.iter(|| rig.step())
        });
    }
    g.finish();
}

criterion_group!(benches, overlay);
criterion_main!(benches);
