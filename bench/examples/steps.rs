//! Runs a rig for a fixed number of bursts, for profilers that count instructions (callgrind) or cycles
//! (perf): `cargo run --release -p bench --example steps -- router 10000 100000`.
//!
//! NAT: `steps -- nat CONNS BURSTS [udp|tcp] [out|reply|new]` — `out` (default) and `reply` forward CONNS
//! established connections' traffic (see `bench::nat`); `new` opens a new connection per frame, cycling CONNS
//! distinct flows (a multiple of 32) and flushing the table each time they wrap.

use bench::nat::{NatDirection, NatProto, NewFlows};

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
        "nat" => {
            let proto = match args.get(4).map(String::as_str) {
                Some("tcp") => NatProto::Tcp,
                _ => NatProto::Udp,
            };
            match args.get(5).map(String::as_str) {
                Some("new") => {
                    let mut nf = NewFlows::new(size as u32, proto);
                    for _ in 0..bursts {
                        nf.flush_if_full();
                        frames += nf.step();
                    }
                }
                mode => {
                    let dir = if mode == Some("reply") { NatDirection::Reply } else { NatDirection::Outbound };
                    let mut rig = bench::Rig::nat(size as u32, proto, dir);
                    for _ in 0..bursts {
                        frames += rig.step();
                    }
                }
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
