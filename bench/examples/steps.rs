//! Runs a rig for a fixed number of bursts, for profilers that count instructions (callgrind) or cycles
//! (perf): `cargo run --release -p bench --example steps -- router 10000 100000`.
//!
//! NAT: `steps -- nat CONNS BURSTS [udp|tcp] [out|reply|new]` — `out` (default) and `reply` forward CONNS
//! established connections' traffic (see `bench::nat`); `new` opens a new connection per frame, cycling CONNS
//! distinct flows (a multiple of 32) and flushing the table each time they wrap.

use bench::nat::{NatDirection, NatProto, NewFlows};
use dataplane::worker::thread_cpu_ns;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("router");
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let bursts: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let mut frames = 0;
    // Only the stepping loops are timed (set-up excluded); the rate is a rough figure for A/B runs, the
    // criterion benches are the reference.
    let mut elapsed = std::time::Duration::ZERO;
    let cpu0;
    match which {
        "l2" => {
            let mut rig = bench::Rig::l2(size as u32);
            cpu0 = thread_cpu_ns();
            let t = std::time::Instant::now();
            for _ in 0..bursts {
                frames += rig.step();
            }
            elapsed = t.elapsed();
        }
        "nat" => {
            let proto = match args.get(4).map(String::as_str) {
                Some("tcp") => NatProto::Tcp,
                _ => NatProto::Udp,
            };
            match args.get(5).map(String::as_str) {
                Some("new") => {
                    let mut nf = NewFlows::new(size as u32, proto);
                    // (CPU time here includes the flushes between windows.)
                    cpu0 = thread_cpu_ns();
                    for _ in 0..bursts {
                        if nf.room() == 0 {
                            nf.flush_if_full();
                        }
                        let t = std::time::Instant::now();
                        frames += nf.step();
                        elapsed += t.elapsed();
                    }
                }
                mode => {
                    let dir = if mode == Some("reply") { NatDirection::Reply } else { NatDirection::Outbound };
                    let mut rig = bench::Rig::nat(size as u32, proto, dir);
                    cpu0 = thread_cpu_ns();
                    let t = std::time::Instant::now();
                    for _ in 0..bursts {
                        frames += rig.step();
                    }
                    elapsed = t.elapsed();
                }
            }
        }
        _ => {
            let mut rig = bench::Rig::routed(size);
            cpu0 = thread_cpu_ns();
            let t = std::time::Instant::now();
            for _ in 0..bursts {
                frames += rig.step();
            }
            elapsed = t.elapsed();
        }
    }
    let mpps = frames as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6;
    // On a shared machine the CPU-time rate is the steadier one: time spent preempted is not in it.
    let cpu = (thread_cpu_ns() - cpu0) as f64 / 1e9;
    let cpu_mpps = frames as f64 / cpu.max(1e-9) / 1e6;
    println!("{which} {size}: {frames} frames in {elapsed:.3?} ({mpps:.2} M/s), cpu {cpu:.3}s ({cpu_mpps:.2} M/s cpu)");
}
