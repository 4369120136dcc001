//! L2 pipeline throughput over MemPorts: 64-byte frames from 1, 1k and 100k source MACs to one learned host.
//! Each iteration is one burst of 32 frames: MemPort rx (copy into a pool buffer) → ingress → learn → forward →
//! MemPort tx (count, free). Reported as elements (frames) per second.

use bench::Rig;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

fn l2_forwarding(c: &mut Criterion) {
    let mut g = c.benchmark_group("l2_forward_64B");
    g.throughput(Throughput::Elements(32));
    g.measurement_time(Duration::from_secs(5));
    for sources in [1u32, 1_000, 100_000] {
        // The rig is built inside the closure so that a filtered run builds only what it measures.
        g.bench_with_input(BenchmarkId::from_parameter(format!("{sources}_macs")), &sources, |b, &sources| {
            let mut rig = Rig::l2(sources);
            b.iter(|| rig.step())
        });
    }
    g.finish();
}

criterion_group!(benches, l2_forwarding);
criterion_main!(benches);
