//! Runs every golden case under `pcap-tests/cases/` (see the crate documentation). Set `VSWITCH_BLESS=1` to
//! rewrite the expected outputs, then review them with `git diff` and `vswitch-pcap dump`.

#[test]
fn golden_cases() {
    let cases = pcap_tests::cases();
    assert!(!cases.is_empty(), "no cases found under {}", pcap_tests::cases_dir().display());
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
