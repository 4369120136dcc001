//! Runs a rig for a fixed number of bursts, for profilers that count instructions (callgrind) or cycles
//! (perf): `cargo run --release -p bench --example steps -- router 10000 100000`.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("router");
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let bursts: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let mut frames = 0;
    match which {
        "l2" => {
            let mut rig = bench::Rig::l2(size as u32);
            for _ in 0..bursts {
                frames += rig.step();
            }
        }
        _ => {
            let mut rig = bench::Rig::routed(size);
            for _ in 0..bursts {
                frames += rig.step();
            }
        }
    }
    println!("{which} {size}: {frames} frames");
}
