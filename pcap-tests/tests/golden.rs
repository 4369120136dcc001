//! Runs every golden case under `pcap-tests/cases/` (see the crate documentation). Set `VSWITCH_BLESS=1` to
//! rewrite the expected outputs, then review them with `git diff` and `vswitch-pcap dump`. Set
//! `VSWITCH_CASE=PREFIX` to run (and bless) only the cases whose name starts with `PREFIX`, e.g.
//! `VSWITCH_BLESS=1 VSWITCH_CASE=nat-publish cargo test -p pcap-tests`.

#[test]
fn golden_cases() {
    let only = std::env::var("VSWITCH_CASE").unwrap_or_default();
    let cases: Vec<_> = pcap_tests::cases()
        .into_iter()
        .filter(|c| c.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&only)))
        .collect();
    assert!(!cases.is_empty(), "no cases named {only}* under {}", pcap_tests::cases_dir().display());
    let bless = pcap_tests::blessing();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        match pcap_tests::run_case(case, bless) {
            Ok(()) => println!("case {name}: ok"),
            Err(e) => {
                println!("{e}");
                failures.push(name);
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed: {}", failures.len(), cases.len(), failures.join(", "));
}

/// Every case through 2 and 3 shards of the switch (bursts dealt round-robin, see
/// `dataplane::replay::replay_with_workers`) gives the one-switch outcome: the same frames on every port (as
/// multisets) and the same counters — except where the difference is the design's (listed with the reason).
#[test]
fn golden_cases_through_several_workers_match_one() {
    // Frames waiting for ARP are held per worker: each shard's queue for a neighbour holds up to
    // `queue_len` frames, so N shards overflow later than one switch (and answer more Host Unreachables).
    const DIFFERENT: [&str; 1] = ["l3-arp-timeout"];
    let mut failures = Vec::new();
    for case in &pcap_tests::cases() {
        if DIFFERENT.iter().any(|d| case.ends_with(d)) {
            continue;
        }
        for workers in [2, 3] {
            if let Err(e) = pcap_tests::compare_workers(case, workers) {
                println!("{e}");
                failures.push(format!("{}×{workers}", case.file_name().unwrap().to_string_lossy()));
            }
        }
    }
    assert!(failures.is_empty(), "{} differ: {}", failures.len(), failures.join(", "));
}
