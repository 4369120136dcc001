//! IPv4 FIB (`dataplane::route::Fib`) longest-prefix match: lookup rate with 10, 10k, 100k and 1M random routes
//! plus a default route, and the time to build a 1M-route FIB (random-order inserts once, `collect` as a group).
//!
//! Routes are random prefixes with an Internet-like length mix (roughly the global BGP table's: 58% /24, 22%
//! /22–/23, 12% /19–/21, 3% /16–/18, under 1% shorter) plus 5% longer than /24 (host and internal routes), so
//! every level of the trie is exercised. Lookups read a precomputed array of 64Ki addresses, either uniformly
//! random (`uniform`: mostly falls under no specific route, so it measures the level-1/level-2 path) or random
//! inside a random installed route (`routed`: the traffic a router actually forwards). The lookups of one
//! iteration are independent, as in a batch of packets, so the CPU overlaps their cache misses. Reported as
//! elements (lookups) per second.

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use dataplane::route::{Fib, Ipv4Net, NextHopId};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Lookups per iteration.
const LOOKUPS: usize = 1 << 16;

/// Deterministic PRNG (xorshift64*), so every run measures the same tables.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn u32(&mut self) -> u32 {
        (self.next() >> 32) as u32
    }

    fn below(&mut self, n: u32) -> u32 {
        (((self.next() >> 32) * n as u64) >> 32) as u32
    }
}

/// (prefix length, weight in ‰).
const LENGTHS: [(u8, u32); 16] = [
    (12, 3),
    (14, 3),
    (16, 13),
    (17, 6),
    (18, 10),
    (19, 25),
    (20, 40),
    (21, 50),
    (22, 120),
    (23, 100),
    (24, 580),
    (26, 5),
    (27, 5),
    (28, 10),
    (30, 10),
    (32, 20),
];

fn random_len(rng: &mut Rng) -> u8 {
    let mut r = rng.below(1000);
    for (len, w) in LENGTHS {
        if r < w {
            return len;
        }
        r -= w;
    }
    unreachable!("weights sum to 1000")
}

/// `n` distinct random prefixes with next hops `0..n % 256`, then the default route.
fn random_routes(n: usize, seed: u64) -> Vec<(Ipv4Net, NextHopId)> {
    let mut rng = Rng(seed);
    let mut seen = HashSet::with_capacity(n);
    let mut routes = Vec::with_capacity(n + 1);
    while routes.len() < n {
        let len = random_len(&mut rng);
        let prefix = Ipv4Net::new(Ipv4Addr::from(rng.u32()), len).expect("len <= 32").trunc();
        if seen.insert(prefix) {
            routes.push((prefix, NextHopId::new(routes.len() as u32 % 256).expect("small")));
        }
    }
    routes.push(("0.0.0.0/0".parse().expect("valid"), NextHopId::new(256).expect("small")));
    routes
}

fn build(routes: &[(Ipv4Net, NextHopId)]) -> Fib {
    let mut fib = Fib::new();
    for &(prefix, nh) in routes {
        fib.insert(prefix, nh);
    }
    fib
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("lpm_lookup");
    g.throughput(Throughput::Elements(LOOKUPS as u64));
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_millis(1500));
    for n in [10usize, 10_000, 100_000, 1_000_000] {
        let routes = random_routes(n, 0x1f1b_0000 + n as u64);
        let fib = build(&routes);
        eprintln!("lpm: {n} routes + default: {} KiB of lookup tables", fib.table_bytes() / 1024);
        let mut rng = Rng(42);
        let uniform: Vec<Ipv4Addr> = (0..LOOKUPS).map(|_| Ipv4Addr::from(rng.u32())).collect();
        let routed: Vec<Ipv4Addr> = (0..LOOKUPS)
            .map(|_| {
                let (prefix, _) = routes[rng.below(n as u32) as usize];
                Ipv4Addr::from(u32::from(prefix.network()) | (rng.u32() & u32::from(prefix.hostmask())))
            })
            .collect();
        for (pattern, addrs) in [("uniform", &uniform), ("routed", &routed)] {
            g.bench_with_input(BenchmarkId::new(pattern, n), addrs, |b, addrs| {
                b.iter(|| {
                    let mut acc = 0u32;
                    for &a in addrs.iter() {
                        acc = acc.wrapping_add(fib.lookup(a).map_or(0, NextHopId::get));
                    }
                    black_box(acc)
                })
            });
        }
    }
    g.finish();
}

fn building(c: &mut Criterion) {
    const N: usize = 1_000_000;
    let routes = random_routes(N, 0x1f1b_0000 + N as u64);
    // Random order, one `insert` at a time (what a stream of route updates costs): measured once, as ten
    // criterion samples of it would take most of a minute.
    let start = Instant::now();
    let fib = build(&routes);
    let took = start.elapsed();
    eprintln!(
        "lpm_build_1M/insert_random_order (one run): {:.2} s, {:.0} inserts/s",
        took.as_secs_f64(),
        routes.len() as f64 / took.as_secs_f64()
    );
    drop(black_box(fib));
    // `collect`: sorts by prefix length then address first, so no short prefix has to revisit chunks below it
    // and the route set and chunks are filled in order.
    let mut g = c.benchmark_group("lpm_build_1M");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(100));
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(routes.len() as u64));
    g.bench_function("from_iter", |b| {
        b.iter_batched(|| routes.clone(), |r| r.into_iter().collect::<Fib>(), BatchSize::PerIteration)
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Plots off: rendering them took longer than the measurements (over a minute); the estimates are still
    // printed and saved under target/criterion.
    config = Criterion::default().without_plots();
    targets = lookups, building
}
criterion_main!(benches);
