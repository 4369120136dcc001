//! Routed forwarding over MemPorts: 64-byte UDP frames from network a to destinations behind a next hop on
//! network b, with 10, 10k and 1M static routes in the FIB. Each iteration is one burst of 32 frames: rx copy →
//! ingress → bridge (to the gateway) → router (checksum check, LPM, TTL, incremental checksum, neighbour, MAC
//! rewrite) → bridge lookup of the next hop's port → tx. Reported in frames per second.

use bench::Rig;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

fn routed_forwarding(c: &mut Criterion) {
    let mut g = c.benchmark_group("routed_forward_64B");
    g.throughput(Throughput::Elements(32));
    g.measurement_time(Duration::from_secs(5));
    for routes in [10usize, 10_000, 1_000_000] {
        // The rig is built inside the closure so that a filtered run builds only what it measures.
        g.bench_with_input(BenchmarkId::from_parameter(format!("{routes}_routes")), &routes, |b, &routes| {
            let mut rig = Rig::routed(routes);
            b.iter(|| rig.step())
        });
    }
    g.finish();
}

criterion_group!(benches, routed_forwarding);
criterion_main!(benches);
