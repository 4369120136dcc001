//! The configuration language's tests: every key, every rule and every error message, through
//! [`Config::parse`] and [`Config::validate`] as the agent and `vswitchd` call them.

use super::*;
use proptest::prelude::*;

/// Lines joined with '\n': line numbers in assertions are positions in the slice, counting from 1.
fn text(lines: &[&str]) -> String {
    lines.join("\n")
}

/// The first error's message (what `Display` prints before the first newline) for `t.toml`.
fn first_error(lines: &[&str]) -> String {
    match Config::parse(&text(lines), "t.toml") {
        Ok(cfg) => panic!("expected an error, got {cfg:?}"),
        Err(e) => e.to_string().lines().next().unwrap_or_default().to_string(),
    }
}

/// Every error, as printed.
fn all_errors(lines: &[&str]) -> Vec<String> {
    match Config::parse_all_errors(&text(lines), "t.toml") {
        Ok(cfg) => panic!("expected errors, got {cfg:?}"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

#[track_caller]
fn assert_first(lines: &[&str], expected: &str) {
    let got = first_error(lines);
    assert!(got.starts_with(expected), "\n     got: {got}\nexpected: {expected}…");
}

/// A valid network (lines 1-2) followed by one port whose body is `port` (starting on line 4, header on 3).
fn with_port(port: &[&str]) -> Vec<String> {
    let mut lines = vec!["[[network]]".to_string(), "name = \"bridge\"".to_string(), "[[port]]".to_string()];
    lines.extend(port.iter().map(|l| l.to_string()));
    lines
}

/// Asserts that one of the errors of a config with this port starts with `expected`.
#[track_caller]
fn assert_port(port: &[&str], expected: &str) {
    let lines = with_port(port);
    let errors = match Config::parse_all_errors(&lines.join("\n"), "t.toml") {
        Ok(cfg) => panic!("expected an error, got {cfg:?}"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    assert!(errors.iter().any(|e| e.starts_with(expected)), "\n     got: {errors:#?}\nexpected: {expected}…");
}

#[track_caller]
fn assert_port_ok(port: &[&str]) -> Config {
    let lines = with_port(port);
    match Config::parse(&lines.join("\n"), "t.toml") {
        Ok(cfg) => cfg,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

const FULL: &str = include_str!("../../tests/config/full.toml");

/// A network with the defaults of everything but its name.
fn network(name: &str) -> NetworkConfig {
    NetworkConfig {
        name: name.into(),
        subnet: None,
        gateway: None,
        gateway_mac: None,
        internal: false,
        masquerade: false,
        allow_routing_with: Vec::new(),
        conntrack_limit: None,
        mac_aging_secs: defaults::MAC_AGING_SECS,
        mac_limit: defaults::MAC_LIMIT,
        scope: Scope::Local,
        vni: None,
        bum_rate_pps: defaults::BUM_RATE_PPS,
    }
}

/// A `mem` access port of `network` with the defaults of everything else.
fn access_port(name: &str, network: &str) -> PortConfig {
    PortConfig {
        name: name.into(),
        kind: PortKind::Mem,
        ifname: None,
        network: Some(network.into()),
        address: None,
        mac: None,
        mtu: defaults::MTU,
        netns: None,
        mode: None,
        queues: None,
        endpoint_mac: None,
        endpoint_ip: None,
        offload: None,
        host: false,
        mss_clamp: None,
    }
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn full_config() -> Config {
    Config {
        switch: SwitchConfig { workers: 2, poll_idle_us: 100 },
        networks: vec![
            NetworkConfig {
                subnet: Some("172.17.0.0/16".parse().unwrap()),
                gateway: Some(Ipv4Addr::new(172, 17, 0, 1)),
                gateway_mac: Some(mac("02:00:00:00:01:01")),
                masquerade: true,
                allow_routing_with: vec!["apps".into()],
                conntrack_limit: Some(1000),
                mac_aging_secs: 600,
                mac_limit: 4096,
                ..network("bridge")
            },
            NetworkConfig {
                subnet: Some("10.10.0.0/24".parse().unwrap()),
                gateway: Some(Ipv4Addr::new(10, 10, 0, 1)),
                ..network("apps")
            },
            NetworkConfig {
                subnet: Some("10.20.0.0/24".parse().unwrap()),
                gateway: Some(Ipv4Addr::new(10, 20, 0, 1)),
                internal: true,
                ..network("backend")
            },
            network("lab"),
        ],
        ports: vec![
            PortConfig {
                kind: PortKind::Tap,
                ifname: Some("vs-c1".into()),
                mtu: 1400,
                netns: Some("ctr1".into()),
                queues: Some(2),
                mss_clamp: Some(MssClamp::Pmtu),
                ..access_port("c1", "bridge")
            },
            PortConfig { kind: PortKind::Pcap, ..access_port("c2", "lab") },
            access_port("web", "apps"),
            access_port("db", "backend"),
            PortConfig {
                name: "uplink".into(),
                kind: PortKind::Afxdp,
                ifname: Some("vs-up".into()),
                network: None,
                address: Some("203.0.113.2/24".parse().unwrap()),
                mac: Some(mac("02:00:00:00:02:01")),
                mtu: 1500,
                netns: None,
                mode: Some(XdpMode::Native),
                queues: Some(4),
                endpoint_mac: None,
                endpoint_ip: None,
                offload: None,
                host: false,
                mss_clamp: None,
            },
        ],
        routes: vec![
            RouteConfig { prefix: "0.0.0.0/0".parse().unwrap(), via: Ipv4Addr::new(203, 0, 113, 1), port: None },
            RouteConfig {
                prefix: "198.51.100.0/24".parse().unwrap(),
                via: Ipv4Addr::new(203, 0, 113, 254),
                port: Some("uplink".into()),
            },
            RouteConfig { prefix: "10.99.0.0/16".parse().unwrap(), via: Ipv4Addr::new(10, 10, 0, 254), port: None },
        ],
        publish: vec![
            PublishConfig {
                port: "uplink".into(),
                proto: PublishProto::Tcp,
                external_port: 8080,
                to: "172.17.0.2:80".parse().unwrap(),
            },
            PublishConfig {
                port: "uplink".into(),
                proto: PublishProto::Udp,
                external_port: 5353,
                to: "10.10.0.5:53".parse().unwrap(),
            },
        ],
        nat: NatConfig { port_range: PortRange::new(20000, 29999).unwrap() },
        conntrack: ConntrackTableConfig {
            limit: 100_000,
            tcp_strict: true,
            tcp_syn_sent_secs: 60,
            tcp_syn_recv_secs: 30,
            tcp_established_secs: 86_400,
            tcp_fin_wait_secs: 60,
            tcp_close_wait_secs: 30,
            tcp_last_ack_secs: 20,
            tcp_time_wait_secs: 60,
            tcp_close_secs: 5,
            udp_secs: 20,
            udp_assured_secs: 90,
            icmp_secs: 10,
            tcp_unreplied_secs: 20,
        },
        cluster: None,
    }
}

#[test]
fn full_example_parses_with_defaults_filled_in() {
    let cfg = Config::parse(FULL, "full.toml").unwrap();
    assert_eq!(cfg, full_config());
    assert_eq!(cfg.network_index("lab"), Some(3));
    assert_eq!(cfg.port_index("c2"), Some(1));
    assert_eq!(cfg.validate("again"), Ok(()));
    // The address keeps its host bits.
    assert_eq!(cfg.ports[4].address.map(|a| a.addr()), Some(Ipv4Addr::new(203, 0, 113, 2)));
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config");
    assert_eq!(Config::load(&dir.join("full.toml")).unwrap(), full_config());

    let err = Config::load(&dir.join("invalid.toml")).unwrap_err();
    let origin = dir.join("invalid.toml").display().to_string();
    assert_eq!(err.origin, origin);
    assert_eq!(err.line, Some(4));
    assert_eq!(
        err.to_string(),
        [
            format!("{origin}:4: network bridge: gateway 172.17.0.1 requires a subnet"),
            format!("{origin}:6: port c1: missing field \"ifname\" (kind tap needs the tap to create)"),
            format!("{origin}:9: port c1: network \"brige\" does not exist; known networks: bridge"),
        ]
        .join("\n")
    );

    let err = Config::load(&dir.join("no-such-file.toml")).unwrap_err();
    assert_eq!(err.line, None);
    assert!(err.to_string().contains("no-such-file.toml: cannot read: "), "{err}");
}

#[test]
fn empty_text_is_an_empty_switch() {
    assert_eq!(Config::parse("", "t.toml"), Ok(Config::default()));
    assert_eq!(Config::parse("# nothing\n[switch]\n", "t.toml"), Ok(Config::default()));
    assert_eq!(Config::default().switch.workers, 1);
}

#[test]
fn dotted_and_inline_forms_are_the_same_language() {
    let cfg = Config::parse(
        "switch.workers = 3\nnetwork = [{ name = \"n\", mac_limit = 1_000 }]\n\
         port = [{ name = \"p\", kind = \"mem\", network = \"n\" }]\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(cfg.switch.workers, 3);
    assert_eq!(cfg.networks[0].mac_limit, 1000);
    assert_eq!(cfg.ports[0].network.as_deref(), Some("n"));
}

#[test]
fn unknown_keys_are_errors_naming_key_object_and_line() {
    assert_port(
        &["name = \"c1\"", "kind = \"mem\"", "network = \"bridge\"", "mtux = 1500"],
        "t.toml:7: port c1: unknown field `mtux`, expected one of `name`, `kind`, `ifname`, `network`, `address`, `mac`, `mtu`",
    );
    assert_first(
        &["[[network]]", "name = \"bridge\"", "masquerad = true"],
        "t.toml:3: network bridge: unknown field `masquerad`",
    );
    assert_first(&["[switch]", "workers = 1", "threads = 2"], "t.toml:3: unknown field `threads`, expected `workers`");
    assert_first(&["", "[[publsh]]", "port = \"uplink\""], "t.toml:2: unknown field `publsh`");
    assert_first(&["[[publish]]", "port = \"up\"", "prot = \"tcp\""], "t.toml:3: publish #1: unknown field `prot`");
    assert_first(&["[nat]", "range = \"1-2\""], "t.toml:2: unknown field `range`, expected `port_range`");
    assert_first(&["[conntrack]", "limit = 5", "udp_timeout = 5"], "t.toml:3: unknown field `udp_timeout`");
    assert_first(
        &["[[route]]", "prefix = \"0.0.0.0/0\"", "vai = \"10.0.0.1\""],
        "t.toml:3: route 0.0.0.0/0: unknown field `vai`, expected one of `prefix`, `via`, `port`",
    );
    assert_first(&["[[route]]", "prefix = 5", "vai = \"10.0.0.1\""], "t.toml:3: route #1: unknown field `vai`");
    assert_first(
        &["[route]", "prefix = \"0.0.0.0/0\""],
        "t.toml:1: invalid type: map, expected an array of tables: write [[route]], not [route]",
    );
    // An unnamed object is named by its position.
    assert_first(&["[[port]]", "[[port]]", "nmae = \"c1\""], "t.toml:3: port #2: unknown field `nmae`");
}

#[test]
fn misshapen_tables_are_errors() {
    assert_first(
        &["[port]", "name = \"c1\""],
        "t.toml:1: invalid type: map, expected an array of tables: write [[port]], not [port]",
    );
    assert_first(&["[[switch]]", "workers = 1"], "t.toml:1: invalid type: sequence, expected a [switch] table");
    assert_first(&["network = [1]"], "t.toml:1: invalid type: integer `1`, expected a [[network]] table");
    assert_port(
        &["name = \"c1\"", "mtu.x = 1"],
        "t.toml:5: port c1: a dotted key cannot set this field: it takes a single value, not a table",
    );
}

#[test]
fn syntax_errors_carry_the_line() {
    assert_port(&["name = \"c1\"", "kind = "], "t.toml:5: ");
    // (toml refuses the whole text here, so the object cannot be named.)
    assert_port(&["name = \"c1\"", "name = \"c2\""], "t.toml:5: duplicate key `name` in table `port`");
    // toml's multi-line messages are folded onto one line.
    let e = Config::parse("a = 1\n[x\n", "t.toml").unwrap_err();
    assert_eq!(e.line, Some(2));
    assert!(!e.message.contains('\n'), "{e}");
}

#[test]
fn wrong_types_name_object_field_and_line() {
    assert_port(
        &["name = \"c1\"", "kind = \"mem\"", "network = \"bridge\"", "mtu = \"big\""],
        "t.toml:7: port c1: mtu must be an integer, found string \"big\"",
    );
    assert_port(&["name = \"c1\"", "mtu = 1500.0"], "t.toml:5: port c1: mtu must be an integer, found float 1500");
    assert_port(&["name = 7"], "t.toml:4: port #1: name must be a string, found integer 7");
    assert_port(&["name = \"c1\"", "kind = true"], "t.toml:5: port c1: kind must be a string, found boolean true");
    assert_port(&["name = \"c1\"", "ifname = [1]"], "t.toml:5: port c1: ifname must be a string, found an array");
    assert_port(&["name = \"c1\"", "network = {}"], "t.toml:5: port c1: network must be a string, found a table");
    assert_first(
        &["[[network]]", "name = \"n\"", "subnet = 1979-05-27"],
        "t.toml:3: network n: subnet must be a string holding an IPv4 subnet like \"172.17.0.0/16\", found datetime 1979-05-27",
    );
    assert_first(&["[switch]", "workers = \"2\""], "t.toml:2: switch: workers must be an integer, found string \"2\"");
}

#[test]
fn a_wrong_type_is_reported_once() {
    // No "missing field network" after the type error, no "gateway requires a subnet" after a bad subnet.
    let lines = with_port(&["name = \"c1\"", "kind = \"mem\"", "network = 5"]);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(all_errors(&lines), ["t.toml:6: port c1: network must be a string, found integer 5"]);
    assert_eq!(
        all_errors(&["[[network]]", "name = \"n\"", "subnet = \"10.0.0.0/33\"", "gateway = \"10.0.0.1\""]),
        ["t.toml:3: network n: subnet \"10.0.0.0/33\" is not an IPv4 subnet like \"172.17.0.0/16\""]
    );
    // A port of unknown kind is not also told it needs an ifname.
    assert_eq!(
        all_errors(&["[[network]]", "name = \"n\"", "[[port]]", "name = \"p\"", "kind = \"tun\"", "network = \"n\""]),
        ["t.toml:5: port p: kind \"tun\" is not one of tap, afxdp, afpacket, pcap, mem"]
    );
}

#[test]
fn ranges() {
    let port = |mtu: &str| {
        vec!["name = \"c1\"".to_string(), "kind = \"mem\"".into(), "network = \"bridge\"".into(), mtu.into()]
    };
    for (mtu, ok) in [("mtu = 68", true), ("mtu = 9000", true), ("mtu = 67", false), ("mtu = 9001", false)] {
        let lines = port(mtu);
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        if ok {
            assert_port_ok(&lines);
        } else {
            let value = mtu.trim_start_matches("mtu = ");
            assert_port(&lines, &format!("t.toml:7: port c1: mtu {value} is out of range 68..=9000"));
        }
    }
    // Values that do not even fit the field's type read the same.
    for value in ["70000", "-1"] {
        let lines = port(&format!("mtu = {value}"));
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_port(&lines, &format!("t.toml:7: port c1: mtu {value} is out of range 68..=9000"));
    }
    assert_eq!(limits::SMALL_FRAME_MTU as usize + ETH_HEADER_LEN + 2 * VLAN_TAG_LEN, MAX_FRAME_LEN);

    assert_first(&["[switch]", "workers = 0"], "t.toml:2: switch: workers 0 is out of range 1..=64");
    assert_first(&["[switch]", "workers = 65"], "t.toml:2: switch: workers 65 is out of range 1..=64");
    assert_first(&["[switch]", "workers = -3"], "t.toml:2: switch: workers -3 is out of range 1..=64");
    assert_eq!(Config::parse("[switch]\nworkers = 64", "t").unwrap().switch.workers, 64);

    let net = |kv: &str| ["[[network]]".to_string(), "name = \"n\"".into(), kv.into()];
    for (kv, expected) in [
        ("mac_aging_secs = 0", Some("mac_aging_secs 0 is out of range 1..=1000000")),
        ("mac_aging_secs = 1000001", Some("mac_aging_secs 1000001 is out of range 1..=1000000")),
        ("mac_aging_secs = 1", None),
        ("mac_aging_secs = 1_000_000", None),
        ("mac_limit = 0", Some("mac_limit 0 is out of range 1..=1000000")),
        ("mac_limit = 1000001", Some("mac_limit 1000001 is out of range 1..=1000000")),
        ("mac_limit = -1", Some("mac_limit -1 is out of range 1..=1000000")),
        ("mac_limit = 1", None),
    ] {
        let lines = net(kv);
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        match expected {
            Some(message) => assert_first(&lines, &format!("t.toml:3: network n: {message}")),
            None => assert!(Config::parse(&text(&lines), "t").is_ok(), "{kv}"),
        }
    }
}

#[test]
fn names() {
    assert_port(&["name = \"\""], "t.toml:4: port #1: name must not be empty");
    assert_port(
        &["name = \"c 1\""],
        "t.toml:4: port #1: name \"c 1\" may only contain letters, digits, '_', '.' and '-'",
    );
    assert_port(&["name = \"c/1\""], "t.toml:4: port #1: name \"c/1\" may only contain");
    assert_port(&["name = \"é\""], "t.toml:4: port #1: name \"é\" may only contain");
    assert_port(&["name = \"-c1\""], "t.toml:4: port #1: name \"-c1\" must start with a letter or digit");
    assert_port(&["name = \"..\""], "t.toml:4: port #1: name \"..\" must start with a letter or digit");
    assert_port(
        &["name = \"abcdefghijklmnop\""],
        "t.toml:4: port #1: name \"abcdefghijklmnop\" is longer than 15 characters",
    );
    assert_port_ok(&["name = \"abcdefghijklmno\"", "kind = \"mem\"", "network = \"bridge\""]);
    assert_port_ok(&["name = \"C_1.x-2\"", "kind = \"mem\"", "network = \"bridge\""]);
    assert_port(&["kind = \"mem\"", "network = \"bridge\""], "t.toml:3: port #1: missing field \"name\"");

    let long = "n".repeat(65);
    let line = format!("name = \"{long}\"");
    assert_first(
        &["[[network]]", &line],
        "t.toml:2: network #1: name \"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn\"… is longer than 64 characters",
    );
    let line = format!("name = \"{}\"", "n".repeat(64));
    assert!(Config::parse(&text(&["[[network]]", &line]), "t").is_ok());
    assert_first(&["[[network]]", "subnet = \"10.0.0.0/8\""], "t.toml:1: network #1: missing field \"name\"");
    // Networks and ports have separate namespaces.
    assert_port_ok(&["name = \"bridge\"", "kind = \"mem\"", "network = \"bridge\""]);
}

#[test]
fn duplicate_names() {
    assert_first(
        &["[[network]]", "name = \"n\"", "", "[[network]]", "name = \"n\""],
        "t.toml:5: network n: name \"n\" is already used by network n (line 1)",
    );
    assert_port(
        &[
            "name = \"c1\"",
            "kind = \"mem\"",
            "network = \"bridge\"",
            "[[port]]",
            "name = \"c1\"",
            "kind = \"mem\"",
            "network = \"bridge\"",
        ],
        "t.toml:8: port c1: name \"c1\" is already used by port c1 (line 3)",
    );
}

#[test]
fn port_network() {
    assert_first(
        &["[[network]]", "name = \"bridge\"", "[[port]]", "name = \"c3\"", "kind = \"mem\"", "", "network = \"brige\""],
        "t.toml:7: port c3: network \"brige\" does not exist; known networks: bridge",
    );
    assert_first(
        &["[[port]]", "name = \"c3\"", "kind = \"mem\"", "network = \"brige\""],
        "t.toml:4: port c3: network \"brige\" does not exist; no networks are defined",
    );
    assert_port(
        &["name = \"c1\"", "kind = \"mem\""],
        "t.toml:3: port c1: needs either \"network\" (an access port) or \"address\" (a routed port)",
    );
    // Many networks are listed up to a limit, in file order.
    let mut lines: Vec<String> = (0..12).map(|i| format!("[[network]]\nname = \"n{i}\"")).collect();
    lines.push("[[port]]\nname = \"p\"\nkind = \"mem\"\nnetwork = \"x\"".into());
    let err = Config::parse(&lines.join("\n"), "t").unwrap_err();
    assert_eq!(
        err.message,
        "port p: network \"x\" does not exist; known networks: n0, n1, n2, n3, n4, n5, n6, n7, n8, n9, … (12 in all)"
    );
}

#[test]
fn kind_and_ifname() {
    assert_port(
        &["name = \"c1\"", "network = \"bridge\""],
        "t.toml:3: port c1: missing field \"kind\" (one of tap, afxdp, afpacket, pcap, mem)",
    );
    assert_port(
        &["name = \"c1\"", "kind = \"Tap\""],
        "t.toml:5: port c1: kind \"Tap\" is not one of tap, afxdp, afpacket, pcap, mem",
    );
    assert_port(
        &["name = \"c1\"", "kind = \"tap\"", "network = \"bridge\""],
        "t.toml:3: port c1: missing field \"ifname\" (kind tap needs the tap to create)",
    );
    for kind in ["afxdp", "afpacket"] {
        let line = format!("kind = \"{kind}\"");
        assert_port(
            &["name = \"c1\"", &line, "network = \"bridge\""],
            &format!("t.toml:3: port c1: missing field \"ifname\" (kind {kind} needs the interface to attach to)"),
        );
    }
    for kind in PortKind::ALL {
        assert_eq!(PortKind::from_name(kind.as_str()), Some(kind));
        let line = format!("kind = \"{kind}\"");
        let cfg = assert_port_ok(&["name = \"c1\"", &line, "ifname = \"eth0\"", "network = \"bridge\""]);
        assert_eq!(cfg.ports[0].kind, kind);
        if !kind.needs_ifname() {
            assert_port_ok(&["name = \"c1\"", &line, "network = \"bridge\""]);
        }
    }
    let port = |ifname: &str| format!("ifname = {ifname:?}");
    for (ifname, problem) in [
        ("abcdefghijklmnop", "is longer than 15 bytes"),
        ("ééééééééé", "is longer than 15 bytes"),
        ("", "must not be empty"),
        (".", "is not a valid interface name"),
        ("a/b", "must not contain '/', ':', whitespace or NUL"),
        ("eth0:1", "must not contain"),
        ("a b", "must not contain"),
    ] {
        let line = port(ifname);
        let expected = if ifname.is_empty() {
            "t.toml:7: port c1: ifname must not be empty".to_string()
        } else {
            format!("t.toml:7: port c1: ifname {ifname:?} {problem}")
        };
        assert_port(&["name = \"c1\"", "kind = \"tap\"", "network = \"bridge\"", &line], &expected);
    }
    assert_port_ok(&["name = \"c1\"", "kind = \"tap\"", "network = \"bridge\"", "ifname = \"abcdefghijklmno\""]);
    assert_port(
        &[
            "name = \"c1\"",
            "kind = \"tap\"",
            "ifname = \"vs0\"",
            "network = \"bridge\"",
            "[[port]]",
            "name = \"c2\"",
            "kind = \"afpacket\"",
            "ifname = \"vs0\"",
            "network = \"bridge\"",
        ],
        "t.toml:11: port c2: ifname \"vs0\" is already used by port c1 (line 3)",
    );
}

#[test]
fn subnet_and_gateway() {
    let net = |lines: &[&str]| {
        let mut all = vec!["[[network]]", "name = \"n\""];
        all.extend_from_slice(lines);
        first_error(&all)
    };
    assert_eq!(net(&["gateway = \"10.0.0.1\""]), "t.toml:3: network n: gateway 10.0.0.1 requires a subnet");
    assert_eq!(
        net(&["subnet = \"10.0.0.0/24\"", "gateway = \"10.0.1.1\""]),
        "t.toml:4: network n: gateway 10.0.1.1 is not inside subnet 10.0.0.0/24"
    );
    assert_eq!(
        net(&["subnet = \"10.0.0.0/24\"", "gateway = \"10.0.0.0\""]),
        "t.toml:4: network n: gateway 10.0.0.0 is the network address of subnet 10.0.0.0/24"
    );
    assert_eq!(
        net(&["subnet = \"10.0.0.0/24\"", "gateway = \"10.0.0.255\""]),
        "t.toml:4: network n: gateway 10.0.0.255 is the broadcast address of subnet 10.0.0.0/24"
    );
    assert_eq!(
        net(&["subnet = \"10.0.0.1/24\""]),
        "t.toml:3: network n: subnet 10.0.0.1/24 has host bits set (did you mean 10.0.0.0/24?)"
    );
    assert_eq!(
        net(&["subnet = \"10.0.0.0\""]),
        "t.toml:3: network n: subnet \"10.0.0.0\" is not an IPv4 subnet like \"172.17.0.0/16\""
    );
    assert_eq!(
        net(&["gateway = \"10.0.0.300\""]),
        "t.toml:3: network n: gateway \"10.0.0.300\" is not an IPv4 address"
    );
    let cfg = Config::parse(
        &text(&["[[network]]", "name = \"n\"", "subnet = \"10.0.0.0/30\"", "gateway = \"10.0.0.2\""]),
        "t",
    );
    assert_eq!(cfg.unwrap().networks[0].gateway, Some(Ipv4Addr::new(10, 0, 0, 2)));
}

#[test]
fn overlapping_subnets() {
    let nets = |subnets: &[&str]| {
        let lines: Vec<String> = subnets
            .iter()
            .enumerate()
            .map(|(i, s)| format!("[[network]]\nname = \"n{}\"\nsubnet = \"{s}\"", i + 1))
            .collect();
        match Config::parse_all_errors(&lines.join("\n"), "t.toml") {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    };
    assert_eq!(
        nets(&["10.0.0.0/8", "10.1.0.0/16"]),
        ["t.toml:6: network n2: subnet 10.1.0.0/16 overlaps subnet 10.0.0.0/8 of network n1 (line 1)"]
    );
    assert_eq!(
        nets(&["10.1.0.0/16", "10.0.0.0/8"]),
        ["t.toml:6: network n2: subnet 10.0.0.0/8 overlaps subnet 10.1.0.0/16 of network n1 (line 1)"]
    );
    assert_eq!(
        nets(&["10.0.0.0/24", "10.0.0.0/24"]),
        ["t.toml:6: network n2: subnet 10.0.0.0/24 overlaps subnet 10.0.0.0/24 of network n1 (line 1)"]
    );
    assert_eq!(nets(&["10.0.0.0/24", "10.0.1.0/24", "10.0.0.0/23", "192.168.0.0/16"]).len(), 2);
    assert!(nets(&["10.0.0.0/24", "10.0.1.0/24", "172.16.0.0/12", "192.168.0.0/16"]).is_empty());
}

#[test]
fn all_errors_are_reported_in_line_order() {
    let lines = [
        "[[port]]",       // 1: neither network nor address
        "name = \"c1\"",  // 2
        "kind = \"mem\"", // 3
        "mtu = 9001",     // 4
        "[[network]]",    // 5
        "name = \"n\"",   // 6
        "mac_limit = 0",  // 7
        "[switch]",       // 8
        "workers = 100",  // 9
    ];
    assert_eq!(
        all_errors(&lines),
        [
            "t.toml:1: port c1: needs either \"network\" (an access port) or \"address\" (a routed port)",
            "t.toml:4: port c1: mtu 9001 is out of range 68..=9000",
            "t.toml:7: network n: mac_limit 0 is out of range 1..=1000000",
            "t.toml:9: switch: workers 100 is out of range 1..=64",
        ]
    );
    let joined = Config::parse(&text(&lines), "t.toml").unwrap_err();
    assert_eq!(joined.line, Some(1));
    assert_eq!(joined.to_string(), all_errors(&lines).join("\n"));
}

#[test]
fn long_error_lists_are_cut_short() {
    let ports: String = (0..30).map(|i| format!("[[port]]\nname = \"p{i}\"\nkind = \"mem\"\n")).collect();
    assert_eq!(Config::parse_all_errors(&ports, "t").unwrap_err().len(), 30);
    let err = Config::parse(&ports, "t").unwrap_err().to_string();
    assert_eq!(err.lines().count(), MAX_LISTED_ERRORS + 1);
    assert_eq!(err.lines().last(), Some("t: … and 10 more errors"));
}

#[test]
fn long_values_are_shortened_in_messages() {
    let long = "x".repeat(10_000);
    let line = format!("kind = \"{long}\"");
    let err = first_error(&with_port(&["name = \"p\"", &line]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.len() < 200, "{err}");
}

#[test]
fn validate_checks_configurations_built_in_code() {
    let mut cfg = full_config();
    cfg.ports[1].network = None;
    cfg.networks[0].mac_limit = 0;
    let err = cfg.validate("pushed").unwrap_err();
    assert_eq!(err.line, None);
    assert_eq!(
        err.to_string(),
        "pushed: network bridge: mac_limit 0 is out of range 1..=1000000\n\
         pushed: port c2: needs either \"network\" (an access port) or \"address\" (a routed port)"
    );
    // Deserializing directly (the wire form) only checks the shape.
    let json = serde_json::to_string(&full_config()).unwrap();
    let back: Config = serde_json::from_str(&json).unwrap();
    assert_eq!(back, full_config());
}

/// A routed network (lines 1-4), an access port (5-8) and a routed port (9-12), then `extra` from line 13.
fn l3(extra: &[&str]) -> Vec<String> {
    let mut lines = vec![
        "[[network]]",
        "name = \"bridge\"",
        "subnet = \"172.17.0.0/16\"",
        "gateway = \"172.17.0.1\"",
        "[[port]]",
        "name = \"c1\"",
        "kind = \"mem\"",
        "network = \"bridge\"",
        "[[port]]",
        "name = \"uplink\"",
        "kind = \"mem\"",
        "address = \"203.0.113.2/24\"",
    ];
    lines.extend_from_slice(extra);
    match Config::parse_all_errors(&text(&lines), "t.toml") {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn l3_base_is_valid() {
    assert_eq!(l3(&[]), Vec::<String>::new());
}

#[test]
fn masquerade() {
    assert_eq!(
        l3(&["[[network]]", "name = \"m\"", "masquerade = true"]),
        ["t.toml:15: network m: masquerade requires a gateway (only routed traffic is translated)"]
    );
    let internal = [
        "[[network]]",
        "name = \"m\"",
        "subnet = \"10.5.0.0/24\"",
        "gateway = \"10.5.0.1\"",
        "internal = true",
        "masquerade = true",
    ];
    assert_eq!(
        l3(&internal),
        ["t.toml:18: network m: masquerade has no effect on an internal network (it is never routed)"]
    );
    assert_eq!(
        l3(&["[[network]]", "name = \"m\"", "masquerade = 1"]),
        ["t.toml:15: network m: masquerade must be a boolean, found integer 1"]
    );
    let ok = Config::parse(
        &text(&[
            "[[network]]",
            "name = \"m\"",
            "subnet = \"10.5.0.0/24\"",
            "gateway = \"10.5.0.1\"",
            "masquerade = true",
        ]),
        "t",
    )
    .unwrap();
    assert!(ok.networks[0].masquerade);
}

#[test]
fn object_counts_are_capped_with_one_error_on_the_first_beyond() {
    let mut text = String::new();
    for i in 0..=limits::NETWORKS_MAX {
        text.push_str(&format!("[[network]]\nname = \"n{i}\"\n"));
    }
    for i in 0..=limits::ROUTES_MAX {
        text.push_str(&format!("[[route]]\nprefix = \"10.{}.{}.0/24\"\nvia = \"10.0.0.1\"\n", i / 256, i % 256));
    }
    let errors: Vec<String> =
        Config::parse_all_errors(&text, "t.toml").unwrap_err().iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errors,
        [
            format!("t.toml:{}: network n4096: too many networks: 4097, at most 4096", 2 * 4096 + 1),
            format!("t.toml:{}: route 10.64.0.0/24: too many routes: 16385, at most 16384", 2 * 4097 + 3 * 16384 + 1),
        ]
    );
    // Exactly at the caps is fine as far as counts go.
    let networks = (0..limits::NETWORKS_MAX).map(|i| network(&format!("n{i}"))).collect();
    let mut cfg = Config { networks, ..Config::default() };
    assert_eq!(cfg.validate("t"), Ok(()));
    cfg.networks.push(network("one-more"));
    let e = cfg.validate("t").unwrap_err();
    assert!(e.to_string().contains("network one-more: too many networks: 4097, at most 4096"), "{e}");
}

#[test]
fn network_conntrack_limit() {
    assert_eq!(
        l3(&["[[network]]", "name = \"m\"", "conntrack_limit = 10"]),
        ["t.toml:15: network m: conntrack_limit requires a gateway (only routed traffic is tracked)"]
    );
    assert_eq!(
        l3(&["[[network]]", "name = \"m\"", "conntrack_limit = 0"]),
        ["t.toml:15: network m: conntrack_limit 0 is out of range 1..=16777216"]
    );
}

#[test]
fn allow_routing_with() {
    let other = ["[[network]]", "name = \"m\"", "subnet = \"10.5.0.0/24\"", "gateway = \"10.5.0.1\""];
    let with = |extra: &[&str]| {
        let mut lines = other.to_vec();
        lines.extend_from_slice(extra);
        l3(&lines)
    };
    assert_eq!(with(&["masquerade = true", "allow_routing_with = [\"bridge\"]"]), Vec::<String>::new());
    assert_eq!(
        with(&["allow_routing_with = [\"nope\", \"m\", \"bridge\", \"bridge\"]"]),
        [
            "t.toml:17: network m: allow_routing_with: network \"nope\" does not exist",
            "t.toml:17: network m: allow_routing_with: a network cannot list itself",
            "t.toml:17: network m: allow_routing_with: network \"bridge\" is listed twice",
        ]
    );
    assert_eq!(
        with(&["allow_routing_with = \"bridge\""]),
        ["t.toml:17: network m: allow_routing_with must be an array of strings, found string \"bridge\""]
    );
    assert_eq!(
        with(&["allow_routing_with = [1]"]),
        ["t.toml:17: network m: allow_routing_with must be an array of strings, found integer 1"]
    );
    assert_eq!(
        l3(&["[[network]]", "name = \"l2\"", "[[network]]", "name = \"m\"", "allow_routing_with = [\"bridge\"]"]),
        ["t.toml:17: network m: allow_routing_with requires a gateway (only routed traffic is isolated)"]
    );
    assert_eq!(
        with(&["[[network]]", "name = \"l2\"", "allow_routing_with = [\"m\"]"]),
        ["t.toml:19: network l2: allow_routing_with requires a gateway (only routed traffic is isolated)"]
    );
    let mut lines = vec!["[[network]]", "name = \"bridge\"", "subnet = \"172.17.0.0/16\"", "gateway = \"172.17.0.1\""];
    lines.extend_from_slice(&other);
    lines.push("allow_routing_with = [\"bridge\"]");
    let cfg = Config::parse(&text(&lines), "t").unwrap();
    assert_eq!(cfg.networks[1].allow_routing_with, ["bridge"]);
    let json = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), cfg);
}

/// `[[publish]]` lines start at line 13.
fn publish(fields: &[&str]) -> Vec<String> {
    let mut lines = vec!["[[publish]]"];
    lines.extend_from_slice(fields);
    l3(&lines)
}

#[test]
fn publish_rules() {
    let good = ["port = \"uplink\"", "proto = \"tcp\"", "external_port = 8080", "to = \"172.17.0.2:80\""];
    assert_eq!(publish(&good), Vec::<String>::new());
    assert_eq!(
        publish(&["proto = \"tcp\""]),
        [
            "t.toml:13: publish #1: missing field \"port\" (the routed port whose address is published)",
            "t.toml:13: publish #1: missing field \"external_port\" (the port on the routed port's address)",
            "t.toml:13: publish #1: missing field \"to\" (the internal \"A.B.C.D:PORT\")",
        ]
    );
    let with = |i: usize, line: &str| {
        let mut f = good.to_vec();
        f[i] = line;
        publish(&f)
    };
    assert_eq!(
        with(0, "port = \"c1\""),
        ["t.toml:14: publish #1: port c1 is not a routed port (it has no \"address\"); routed ports: uplink"]
    );
    assert_eq!(
        with(0, "port = \"nope\""),
        ["t.toml:14: publish #1: port \"nope\" does not exist; routed ports: uplink"]
    );
    assert_eq!(with(1, "proto = \"sctp\""), ["t.toml:15: publish #1: proto \"sctp\" is not one of tcp, udp"]);
    assert_eq!(with(2, "external_port = 0"), ["t.toml:16: publish #1: external_port 0 is out of range 1..=65535"]);
    assert_eq!(
        with(2, "external_port = 70000"),
        ["t.toml:16: publish #1: external_port 70000 is out of range 1..=65535"]
    );
    assert_eq!(
        with(3, "to = \"172.17.0.2\""),
        ["t.toml:17: publish #1: to \"172.17.0.2\" is not an IPv4 address and port like \"172.17.0.2:80\""]
    );
    assert_eq!(with(3, "to = \"172.17.0.2:0\""), ["t.toml:17: publish #1: to 172.17.0.2:0 has port 0"]);
    assert_eq!(
        with(3, "to = \"10.9.9.9:80\""),
        ["t.toml:17: publish #1: to 10.9.9.9:80 is not inside any network's subnet"]
    );
    assert_eq!(
        with(3, "to = \"172.17.0.1:80\""),
        ["t.toml:17: publish #1: to 172.17.0.1:80 is the gateway of network bridge (the switch itself)"]
    );
    assert_eq!(
        with(3, "to = \"172.17.255.255:80\""),
        ["t.toml:17: publish #1: to 172.17.255.255:80 is the network or broadcast address of subnet 172.17.0.0/16"]
    );
    // Unique per (port, proto, external_port); the same number in the other protocol is fine.
    let mut twice = vec!["[[publish]]"];
    twice.extend_from_slice(&good);
    twice.push("[[publish]]");
    twice.extend_from_slice(&good);
    assert_eq!(
        l3(&twice),
        ["t.toml:21: publish #2: tcp port 8080 on port uplink is already published by publish #1 (line 13)"]
    );
    twice[7] = "proto = \"udp\"";
    assert_eq!(l3(&twice), Vec::<String>::new());
    // A network without a gateway cannot be a target.
    let mut lines = vec!["[[network]]", "name = \"l2\"", "subnet = \"10.7.0.0/24\"", "[[publish]]"];
    lines.extend_from_slice(&good[..3]);
    lines.push("to = \"10.7.0.5:80\"");
    assert_eq!(
        l3(&lines),
        ["t.toml:20: publish #1: to 10.7.0.5:80 is in network l2, which has no gateway (nothing routes to it)"]
    );
    // Nor an internal one.
    let mut lines = vec![
        "[[network]]",
        "name = \"vault\"",
        "subnet = \"10.7.0.0/24\"",
        "gateway = \"10.7.0.1\"",
        "internal = true",
        "[[publish]]",
    ];
    lines.extend_from_slice(&good[..3]);
    lines.push("to = \"10.7.0.5:80\"");
    assert_eq!(
        l3(&lines),
        ["t.toml:22: publish #1: to 10.7.0.5:80 is in network vault, which is internal (never routed)"]
    );
}

#[test]
fn nat_and_conntrack_tables() {
    let cfg = Config::parse("", "t").unwrap();
    assert_eq!(cfg.nat.port_range, PortRange::new(1024, 65535).unwrap());
    assert_eq!(cfg.conntrack.limit, 262_144);
    assert!(!cfg.conntrack.tcp_strict);
    // netfilter's defaults (the dataplane's topology tests check its conntrack gets the same).
    assert_eq!(
        (cfg.conntrack.tcp_established_secs, cfg.conntrack.udp_secs, cfg.conntrack.icmp_secs),
        (432_000, 30, 30)
    );
    for bad in ["\"0-10\"", "\"10-5\"", "\"1-70000\"", "\"a-b\"", "\"\"", "\"-\"", "\"1 - 2\""] {
        let errors = l3(&["[nat]", &format!("port_range = {bad}")]);
        assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
        assert!(errors[0].starts_with("t.toml:14: nat: port_range "), "{errors:?}");
    }
    assert_eq!(l3(&["[nat]", "port_range = 5"]), [
        "t.toml:14: nat: port_range must be a string holding a port range like \"1024-65535\" (A-B with 1 <= A <= B <= 65535), found integer 5"
    ]);
    let cfg = Config::parse("[nat]\nport_range = \"1024-1025\"", "t").unwrap();
    assert_eq!(cfg.nat.port_range.size(), 2);
    assert_eq!(
        l3(&["[conntrack]", "limit = 0", "tcp_strict = \"yes\"", "udp_secs = 0", "icmp_secs = 3000000"]),
        [
            "t.toml:14: conntrack: limit 0 is out of range 1..=16777216",
            "t.toml:15: conntrack: tcp_strict must be a boolean, found string \"yes\"",
            "t.toml:16: conntrack: udp_secs 0 is out of range 1..=2592000",
            "t.toml:17: conntrack: icmp_secs 3000000 is out of range 1..=2592000",
        ]
    );
    assert_eq!(
        l3(&["[conntrack]", "limit = 16_777_217"]),
        ["t.toml:14: conntrack: limit 16777217 is out of range 1..=16777216"]
    );
    assert_eq!(
        l3(&["[[conntrack]]", "limit = 1"]),
        ["t.toml:13: invalid type: sequence, expected a [conntrack] table"]
    );
    // The serde form round-trips, with the range as text.
    let cfg = Config::parse(FULL, "full.toml").unwrap();
    let json = serde_json::to_string(&cfg).unwrap();
    assert!(json.contains("\"port_range\":\"20000-29999\""), "{json}");
    let back: Config = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cfg);
    assert!(serde_json::from_str::<Config>(&json.replace("20000-29999", "0-1")).is_err());
}

#[test]
fn live_port_keys() {
    let err = |lines: &[&str]| l3(lines);
    assert_eq!(
        err(&["[switch]", "poll_idle_us = 1_000_001"]),
        ["t.toml:14: switch: poll_idle_us 1000001 is out of range 0..=1000000"]
    );
    assert_eq!(
        err(&["[switch]", "poll_idle_us = -1"]),
        ["t.toml:14: switch: poll_idle_us -1 is out of range 0..=1000000"]
    );
    let port = |kind: &str, key: &str| {
        let kind = format!("kind = \"{kind}\"");
        err(&["[[port]]", "name = \"p\"", &kind, "ifname = \"vs-p\"", "network = \"bridge\"", key])
    };
    assert_eq!(port("tap", "netns = \"ctr\""), Vec::<String>::new());
    assert_eq!(port("afxdp", "netns = \"ctr\""), ["t.toml:18: port p: netns is only for kind tap, not afxdp"]);
    assert_eq!(
        port("tap", "netns = \"a/b\""),
        ["t.toml:18: port p: netns \"a/b\" is not a valid namespace name (no '/', NUL, '.' or '..')"]
    );
    assert_eq!(port("tap", "netns = \"\""), ["t.toml:18: port p: netns must not be empty"]);
    assert_eq!(port("afxdp", "mode = \"generic\""), Vec::<String>::new());
    assert_eq!(
        port("afxdp", "mode = \"skb\""),
        ["t.toml:18: port p: mode \"skb\" is not one of auto, native, generic"]
    );
    assert_eq!(port("tap", "mode = \"native\""), ["t.toml:18: port p: mode native is only for kind afxdp, not tap"]);
    assert_eq!(port("tap", "offload = false"), Vec::<String>::new());
    assert_eq!(port("afpacket", "offload = false"), ["t.toml:18: port p: offload is only for kind tap, not afpacket"]);
    assert!(port("tap", "offload = 1")[0].contains("offload"), "{:?}", port("tap", "offload = 1"));
    for kind in ["afxdp", "afpacket", "tap"] {
        assert_eq!(port(kind, "queues = 64"), Vec::<String>::new());
        assert_eq!(port(kind, "queues = 0"), ["t.toml:18: port p: queues 0 is out of range 1..=64"]);
    }
    assert_eq!(
        port("pcap", "queues = 2"),
        ["t.toml:18: port p: queues is only for kinds afxdp, afpacket and tap, not pcap"]
    );
    let cfg = Config::parse(FULL, "full.toml").unwrap();
    assert_eq!(cfg.ports[4].xdp_mode(), XdpMode::Native);
    assert_eq!(cfg.ports[1].xdp_mode(), XdpMode::Auto);
    assert_eq!((cfg.ports[0].queue_count(), cfg.ports[1].queue_count()), (2, 1));
}

#[test]
fn host_port() {
    let port = |lines: &[&str]| {
        let mut all = vec!["[[port]]", "name = \"host\"", "kind = \"tap\"", "ifname = \"vs-host\""];
        all.extend_from_slice(lines);
        l3(&all)
    };
    assert_eq!(port(&["address = \"169.254.77.1/30\"", "host = true"]), Vec::<String>::new());
    assert_eq!(
        port(&["network = \"bridge\"", "host = true"]),
        ["t.toml:18: port host: host = true requires an address (a host port is a routed port: the switch's address on the host's link)"]
    );
    assert!(port(&["address = \"169.254.77.1/30\"", "host = \"yes\""])[0].contains("host"));
    // The wire form leaves `host` out unless set, so older agents' JSON still reads and round-trips.
    let text = "[[port]]\nname = \"h\"\nkind = \"mem\"\naddress = \"169.254.77.1/30\"\nhost = true\n";
    let cfg = Config::parse(text, "h.toml").unwrap();
    assert!(cfg.ports[0].host);
    let json = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), cfg);
    let plain = serde_json::to_string(&Config::parse(&text.replace("host = true\n", ""), "h.toml").unwrap()).unwrap();
    assert!(!plain.contains("host"), "{plain}");
}

#[test]
fn gateway_mac_and_internal() {
    let net = |lines: &[&str]| {
        let mut all = vec!["[[network]]", "name = \"n\"", "subnet = \"10.0.0.0/24\""];
        all.extend_from_slice(lines);
        match Config::parse_all_errors(&text(&all), "t.toml") {
            Ok(cfg) => Ok(cfg.networks[0].clone()),
            Err(errors) => Err(errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()),
        }
    };
    let n = net(&["gateway = \"10.0.0.1\"", "gateway_mac = \"02:00:00:00:01:01\"", "internal = true"]).unwrap();
    assert_eq!((n.gateway_mac, n.internal), (Some(mac("02:00:00:00:01:01")), true));
    let n = net(&["gateway = \"10.0.0.1\"", "gateway_mac = \"02-00-00-00-01-0A\""]).unwrap();
    assert_eq!((n.gateway_mac, n.internal), (Some(mac("02:00:00:00:01:0a")), false));
    // internal needs nothing else.
    assert!(net(&["internal = true"]).unwrap().internal);
    assert!(net(&["internal = false"]).is_ok());
    assert_eq!(
        net(&["gateway_mac = \"02:00:00:00:01:01\""]).unwrap_err(),
        ["t.toml:4: network n: gateway_mac 02:00:00:00:01:01 requires a gateway"]
    );
    assert_eq!(
        net(&["gateway = \"10.0.0.1\"", "gateway_mac = \"02:00:00:00:01\""]).unwrap_err(),
        ["t.toml:5: network n: gateway_mac \"02:00:00:00:01\" is not a MAC address like \"02:00:00:00:00:01\""]
    );
    assert_eq!(
        net(&["gateway = \"10.0.0.1\"", "gateway_mac = 5"]).unwrap_err(),
        ["t.toml:5: network n: gateway_mac must be a string holding a MAC address like \"02:00:00:00:00:01\", found integer 5"]
    );
    assert_eq!(
        net(&["internal = \"yes\""]).unwrap_err(),
        ["t.toml:4: network n: internal must be a boolean, found string \"yes\""]
    );
    // A gateway of the wrong type does not also make gateway_mac an error.
    assert_eq!(
        net(&["gateway = 1", "gateway_mac = \"02:00:00:00:01:01\""]).unwrap_err(),
        ["t.toml:4: network n: gateway must be a string holding an IPv4 address, found integer 1"]
    );
}

#[test]
fn access_or_routed_port() {
    // Neither: reported at the table header.
    assert_port(
        &["name = \"p\"", "kind = \"mem\"", "mtu = 1500"],
        "t.toml:3: port p: needs either \"network\" (an access port) or \"address\" (a routed port)",
    );
    // Both: reported at the address.
    assert_port(
        &["name = \"p\"", "kind = \"mem\"", "network = \"bridge\"", "address = \"10.0.0.2/24\""],
        "t.toml:7: port p: has both \"network\" (an access port) and \"address\" (a routed port); set one",
    );
    let cfg = assert_port_ok(&["name = \"p\"", "kind = \"mem\"", "address = \"10.0.0.2/24\""]);
    assert_eq!(cfg.ports[0].address, Some("10.0.0.2/24".parse().unwrap()));
    assert_eq!(cfg.ports[0].network, None);
    // An unusable address is not also "neither".
    let lines = with_port(&["name = \"p\"", "kind = \"mem\"", "address = \"10.0.0.2\""]);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(
        all_errors(&lines),
        ["t.toml:6: port p: address \"10.0.0.2\" is not an IPv4 address with its prefix length like \"203.0.113.2/24\""]
    );
    assert_port(
        &["name = \"p\"", "kind = \"mem\"", "address = true"],
        "t.toml:6: port p: address must be a string holding an IPv4 address with its prefix length",
    );
}

#[test]
fn routed_port_address() {
    let port = |address: &str| {
        let line = format!("address = \"{address}\"");
        let lines = with_port(&["name = \"up\"", "kind = \"mem\"", &line]);
        match Config::parse_all_errors(&lines.join("\n"), "t.toml") {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    };
    assert_eq!(
        port("10.0.0.0/24"),
        ["t.toml:6: port up: address 10.0.0.0/24 is the network address of subnet 10.0.0.0/24"]
    );
    assert_eq!(
        port("10.0.0.255/24"),
        ["t.toml:6: port up: address 10.0.0.255/24 is the broadcast address of subnet 10.0.0.0/24"]
    );
    assert_eq!(
        port("10.0.0.1/0"),
        ["t.toml:6: port up: address 10.0.0.1/0 has prefix length 0; the link's subnet needs a length of 1..=32"]
    );
    assert_eq!(
        port("10.0.0.1/33"),
        ["t.toml:6: port up: address \"10.0.0.1/33\" is not an IPv4 address with its prefix length like \"203.0.113.2/24\""]
    );
    // /31 (RFC 3021) and /32 have no network or broadcast address; /1 is a (very large) subnet.
    for ok in ["10.0.0.0/31", "10.0.0.1/31", "10.0.0.1/32", "10.0.0.0/32", "10.0.0.1/30", "10.0.0.1/1"] {
        assert_eq!(port(ok), Vec::<String>::new(), "{ok}");
    }
}

#[test]
fn port_mac() {
    let cfg = assert_port_ok(&[
        "name = \"up\"",
        "kind = \"mem\"",
        "address = \"10.0.0.2/24\"",
        "mac = \"02:aa:00:00:00:01\"",
    ]);
    assert_eq!(cfg.ports[0].mac, Some(mac("02:aa:00:00:00:01")));
    assert_port(
        &["name = \"c1\"", "kind = \"mem\"", "network = \"bridge\"", "mac = \"02:aa:00:00:00:01\""],
        "t.toml:7: port c1: mac 02:aa:00:00:00:01 requires an address (only a routed port has a MAC of its own)",
    );
    assert_port(
        &["name = \"up\"", "kind = \"mem\"", "address = \"10.0.0.2/24\"", "mac = \"02:aa:00:00:00\""],
        "t.toml:7: port up: mac \"02:aa:00:00:00\" is not a MAC address like \"02:00:00:00:00:01\"",
    );
    // An unusable address is not also "mac requires an address".
    let lines = with_port(&["name = \"up\"", "kind = \"mem\"", "address = 1", "mac = \"02:aa:00:00:00:01\""]);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(all_errors(&lines).len(), 1);
}

#[test]
fn macs_are_unicast_and_unique() {
    let up = |m: &str| format!("mac = \"{m}\"");
    for (m, problem) in [
        ("ff:ff:ff:ff:ff:ff", "the broadcast address"),
        ("01:00:5e:00:00:01", "a group (multicast) address"),
        ("03:00:00:00:00:01", "a group (multicast) address"),
        ("00:00:00:00:00:00", "the all-zero address"),
    ] {
        let line = up(m);
        assert_eq!(
            l3(&[&line]),
            [format!("t.toml:13: port uplink: mac {m} is {problem}; a router interface needs a unicast MAC")]
        );
    }
    assert_eq!(
        l3(&["[[network]]", "name = \"n\"", "subnet = \"10.0.0.0/24\"", "gateway = \"10.0.0.1\"", "gateway_mac = \"01:00:00:00:00:01\""]),
        ["t.toml:17: network n: gateway_mac 01:00:00:00:00:01 is a group (multicast) address; a router interface needs a unicast MAC"]
    );
    // Unique across gateway_mac and mac, reported on the later one in the file.
    let lines = [
        "mac = \"02:00:00:00:00:01\"",         // 13 (port uplink)
        "[[network]]",                         // 14
        "name = \"n\"",                        // 15
        "subnet = \"10.0.0.0/24\"",            // 16
        "gateway = \"10.0.0.1\"",              // 17
        "gateway_mac = \"02:00:00:00:00:01\"", // 18
        "[[port]]",                            // 19
        "name = \"up2\"",                      // 20
        "kind = \"mem\"",                      // 21
        "address = \"10.1.0.1/24\"",           // 22
        "mac = \"02:00:00:00:00:01\"",         // 23
    ];
    assert_eq!(
        l3(&lines),
        [
            "t.toml:18: network n: gateway_mac 02:00:00:00:00:01 is already used by port uplink (line 9)",
            "t.toml:23: port up2: mac 02:00:00:00:00:01 is already used by port uplink (line 9)",
        ]
    );
    // The same MAC written differently is the same MAC.
    assert_eq!(
        l3(&[
            "mac = \"02:00:00:00:00:0A\"",
            "[[port]]",
            "name = \"up2\"",
            "kind = \"mem\"",
            "address = \"10.1.0.1/24\"",
            "mac = \"02-00-00-00-00-0a\""
        ]),
        ["t.toml:18: port up2: mac 02:00:00:00:00:0a is already used by port uplink (line 9)"]
    );
}

#[test]
fn router_interface_subnets_do_not_overlap() {
    // A routed port inside a routed network's subnet (the port comes later).
    assert_eq!(
        l3(&["[[port]]", "name = \"up2\"", "kind = \"mem\"", "address = \"172.17.5.1/24\""]),
        ["t.toml:16: port up2: address 172.17.5.1/24 overlaps subnet 172.17.0.0/16 of network bridge (line 1)"]
    );
    // A routed network around a routed port (the network comes later).
    assert_eq!(
        l3(&["[[network]]", "name = \"n\"", "subnet = \"203.0.0.0/8\"", "gateway = \"203.0.0.1\""]),
        ["t.toml:15: network n: subnet 203.0.0.0/8 overlaps subnet 203.0.113.0/24 of port uplink (line 9)"]
    );
    // Two routed ports on the same subnet.
    assert_eq!(
        l3(&["[[port]]", "name = \"up2\"", "kind = \"mem\"", "address = \"203.0.113.3/24\""]),
        ["t.toml:16: port up2: address 203.0.113.3/24 overlaps subnet 203.0.113.0/24 of port uplink (line 9)"]
    );
    // A network without a gateway is no router interface: its subnet may hold a routed port's...
    assert_eq!(l3(&["[[network]]", "name = \"n\"", "subnet = \"203.0.113.0/25\""]), Vec::<String>::new());
    // ...but networks' subnets never overlap each other.
    assert_eq!(
        l3(&["[[network]]", "name = \"n\"", "subnet = \"172.17.1.0/24\""]),
        ["t.toml:15: network n: subnet 172.17.1.0/24 overlaps subnet 172.17.0.0/16 of network bridge (line 1)"]
    );
    // Adjacent subnets are fine, and so is a /32 next to its neighbour.
    assert_eq!(
        l3(&[
            "[[port]]",
            "name = \"up2\"",
            "kind = \"mem\"",
            "address = \"203.0.114.1/24\"",
            "[[port]]",
            "name = \"up3\"",
            "kind = \"mem\"",
            "address = \"198.51.100.1/32\""
        ]),
        Vec::<String>::new()
    );
    // A port that is both access and routed only reports that.
    assert_eq!(
        l3(&["[[port]]", "name = \"p\"", "kind = \"mem\"", "network = \"bridge\"", "address = \"203.0.113.3/24\""]),
        ["t.toml:17: port p: has both \"network\" (an access port) and \"address\" (a routed port); set one"]
    );
}

#[test]
fn routes() {
    let route = |lines: &[&str]| {
        let mut all = vec!["[[route]]"];
        all.extend_from_slice(lines);
        l3(&all)
    };
    assert_eq!(route(&["prefix = \"0.0.0.0/0\"", "via = \"203.0.113.1\""]), Vec::<String>::new());
    assert_eq!(
        route(&["prefix = \"10.0.0.0/8\"", "via = \"172.17.0.254\"", "port = \"uplink\""]),
        ["t.toml:15: route 10.0.0.0/8: next hop 172.17.0.254 is not in subnet 203.0.113.0/24 of port uplink"]
    );
    assert_eq!(route(&["prefix = \"10.0.0.0/8\"", "via = \"203.0.113.9\"", "port = \"uplink\""]), Vec::<String>::new());
    assert_eq!(
        route(&["prefix = \"0.0.0.0/0\"", "via = \"198.51.100.1\""]),
        ["t.toml:15: route 0.0.0.0/0: next hop 198.51.100.1 is not in any connected subnet; \
          connected: 172.17.0.0/16 (network bridge), 203.0.113.0/24 (port uplink)"]
    );
    assert_eq!(
        route(&["prefix = \"0.0.0.0/0\"", "via = \"203.0.113.2\""]),
        ["t.toml:15: route 0.0.0.0/0: next hop 203.0.113.2 is the switch's own address on port uplink"]
    );
    assert_eq!(
        route(&["prefix = \"0.0.0.0/0\"", "via = \"172.17.0.1\""]),
        ["t.toml:15: route 0.0.0.0/0: next hop 172.17.0.1 is the switch's own address on network bridge"]
    );
    assert_eq!(
        route(&["prefix = \"10.0.0.1/8\"", "via = \"203.0.113.1\""]),
        ["t.toml:14: route 10.0.0.1/8: prefix 10.0.0.1/8 has host bits set (did you mean 10.0.0.0/8?)"]
    );
    assert_eq!(
        route(&["prefix = \"10.0.0.0/8\"", "via = \"203.0.113.1\"", "port = \"c1\""]),
        ["t.toml:16: route 10.0.0.0/8: port c1 is not a routed port (it has no \"address\"); routed ports: uplink"]
    );
    assert_eq!(
        route(&["prefix = \"10.0.0.0/8\"", "via = \"203.0.113.1\"", "port = \"upl1nk\""]),
        ["t.toml:16: route 10.0.0.0/8: port \"upl1nk\" does not exist; routed ports: uplink"]
    );
    // Missing fields are reported at the table header, by position while the prefix is unknown.
    assert_eq!(route(&["via = \"203.0.113.1\""]), ["t.toml:13: route #1: missing field \"prefix\""]);
    assert_eq!(
        route(&["prefix = \"10.0.0.0/8\""]),
        ["t.toml:13: route 10.0.0.0/8: missing field \"via\" (the next hop)"]
    );
    assert_eq!(
        route(&["prefix = \"10.0.0.0\"", "via = \"1.2.3\""]),
        [
            "t.toml:14: route #1: prefix \"10.0.0.0\" is not an IPv4 prefix like \"10.0.0.0/8\"",
            "t.toml:15: route #1: via \"1.2.3\" is not an IPv4 address",
        ]
    );
    assert_eq!(
        route(&["prefix = \"10.0.0.0/8\"", "via = \"203.0.113.1\"", "port = 3"]),
        ["t.toml:16: route 10.0.0.0/8: port must be a string, found integer 3"]
    );
    // Duplicate prefixes, reported on the later route.
    let lines = [
        "[[route]]",               // 13
        "prefix = \"10.0.0.0/8\"", // 14
        "via = \"203.0.113.1\"",   // 15
        "[[route]]",               // 16
        "prefix = \"10.0.0.0/8\"", // 17
        "via = \"172.17.0.2\"",    // 18
    ];
    assert_eq!(
        l3(&lines),
        ["t.toml:17: route 10.0.0.0/8: prefix 10.0.0.0/8 is already routed by route 10.0.0.0/8 (line 13)"]
    );
    // Without router interfaces.
    assert_eq!(
        first_error(&["[[route]]", "prefix = \"0.0.0.0/0\"", "via = \"10.0.0.1\""]),
        "t.toml:3: route 0.0.0.0/0: next hop 10.0.0.1 is not in any connected subnet; \
         no subnet is connected (give a network a gateway, or a port an address)"
    );
    assert_eq!(
        first_error(&["[[route]]", "prefix = \"0.0.0.0/0\"", "via = \"10.0.0.1\"", "port = \"x\""]),
        "t.toml:4: route 0.0.0.0/0: port \"x\" does not exist; no routed ports are defined"
    );
}

#[test]
fn validate_checks_l3_rules_without_lines() {
    let mut cfg = full_config();
    cfg.ports[4].network = Some("lab".into());
    cfg.routes[0].via = Ipv4Addr::new(192, 0, 2, 1);
    cfg.networks[1].gateway_mac = cfg.ports[4].mac;
    assert_eq!(
        cfg.validate("pushed").unwrap_err().to_string(),
        "pushed: port uplink: has both \"network\" (an access port) and \"address\" (a routed port); set one\n\
         pushed: port uplink: mac 02:00:00:00:02:01 is already used by network apps\n\
         pushed: route 0.0.0.0/0: next hop 192.0.2.1 is not in any connected subnet; \
         connected: 172.17.0.0/16 (network bridge), 10.10.0.0/24 (network apps), 10.20.0.0/24 (network backend)"
    );
}

/// Every prefix of a valid file: no panic, a line inside the text on every error.
#[test]
fn truncated_files_never_panic() {
    for end in (0..=FULL.len()).filter(|&i| FULL.is_char_boundary(i)) {
        check_any(&FULL[..end]);
    }
}

/// Parses `text` twice (the results must agree) and checks the errors' shape.
fn check_any(text: &str) {
    let first = Config::parse_all_errors(text, "t.toml");
    assert_eq!(first, Config::parse_all_errors(text, "t.toml"), "not deterministic: {text:?}");
    match first {
        Ok(cfg) => assert_eq!(cfg.validate("t.toml"), Ok(()), "{text:?}"),
        Err(errors) => {
            assert!(!errors.is_empty());
            let last_line = text.lines().count() + 1;
            for e in &errors {
                assert!(e.line.is_some_and(|l| (1..=last_line).contains(&l)), "{e} in {text:?}");
                assert!(!e.message.is_empty() && !e.message.contains('\n'), "{e:?}");
            }
            assert!(errors.windows(2).all(|w| w[0].line <= w[1].line), "{errors:?}");
        }
    }
}

const TOKENS: &[&str] = &[
    "\n",
    "\n",
    "\n",
    " ",
    "=",
    "[switch]",
    "[[network]]",
    "[[port]]",
    "[port]",
    "name",
    "kind",
    "ifname",
    "network",
    "mtu",
    "subnet",
    "gateway",
    "workers",
    "mac_limit",
    "mac_aging_secs",
    "gateway_mac",
    "internal",
    "address",
    "mac",
    "[[route]]",
    "prefix",
    "via",
    "port",
    "bogus",
    "\"c1\"",
    "\"bridge\"",
    "\"tap\"",
    "\"mem\"",
    "\"10.0.0.0/8\"",
    "\"10.0.0.1\"",
    "\"10.0.0.2/8\"",
    "\"0.0.0.0/0\"",
    "\"02:00:00:00:00:01\"",
    "\"ff:ff:ff:ff:ff:ff\"",
    "\"\"",
    "0",
    "1500",
    "-1",
    "99999999999999999999",
    "1.5",
    "true",
    "1979-05-27",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    "#",
    "'",
    "\"",
    "\"\"\"",
    "é",
    "\\",
    "\0",
];

proptest! {
    #[test]
    fn garbage_never_panics(text in "\\PC{0,300}") {
        check_any(&text);
    }

    #[test]
    fn toml_shaped_garbage_never_panics(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..80)) {
        check_any(&tokens.concat());
    }

    #[test]
    fn edited_valid_files_never_panic(cut in 0usize..600, len in 0usize..40, insert in prop::sample::select(TOKENS)) {
        let start = (0..=cut.min(FULL.len())).rev().find(|&i| FULL.is_char_boundary(i)).unwrap_or(0);
        let end = (start..=(start + len).min(FULL.len())).rev().find(|&i| FULL.is_char_boundary(i)).unwrap_or(start);
        check_any(&format!("{}{insert}{}", &FULL[..start], &FULL[end..]));
    }
}

/// An overlay network on a host with a `[cluster]`: 21 lines.
const OVERLAY_BASE: &[&str] = &[
    "[cluster]",
    "name = \"lab\"",
    "host = \"h1\"",
    "etcd = [\"http://10.9.0.1:2379\", \"http://10.9.0.2:2379\"]",
    "vtep_port = \"under\"",
    "[[network]]",
    "name = \"red\"",
    "scope = \"overlay\"",
    "vni = 100",
    "subnet = \"10.1.0.0/24\"",
    "gateway = \"10.1.0.1\"",
    "[[port]]",
    "name = \"c1\"",
    "kind = \"mem\"",
    "network = \"red\"",
    "endpoint_mac = \"02:00:00:00:00:11\"",
    "endpoint_ip = \"10.1.0.11\"",
    "[[port]]",
    "name = \"under\"",
    "kind = \"mem\"",
    "address = \"198.51.100.11/24\"",
];

/// The errors of [`OVERLAY_BASE`] followed by `extra` (from line 22).
fn overlay(extra: &[&str]) -> Vec<String> {
    let lines: Vec<&str> = OVERLAY_BASE.iter().chain(extra).copied().collect();
    match Config::parse_all_errors(&text(&lines), "t.toml") {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn overlay_networks_endpoints_and_cluster() {
    assert_eq!(overlay(&[]), Vec::<String>::new());
    let cfg = Config::parse(&text(OVERLAY_BASE), "t").unwrap();
    let c = cfg.cluster.as_ref().unwrap();
    assert_eq!((c.lease_ttl_secs, c.vxlan_udp_port, c.etcd.len()), (10, 4789, 2));
    assert_eq!(
        (cfg.networks[0].scope, cfg.networks[0].vni, cfg.networks[0].bum_rate_pps),
        (Scope::Overlay, Some(100), 1000)
    );
    assert_eq!(cfg.ports[0].endpoint_ip, Some(Ipv4Addr::new(10, 1, 0, 11)));
    // The serde form round-trips (the agent sends it over the socket).
    let back: Config = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    assert_eq!(
        overlay(&["[[network]]", "name = \"blue\"", "scope = \"overlay\"", "vni = 100", "bum_rate_pps = 0"]),
        [
            "t.toml:25: network blue: vni 100 is already used by network red (line 6)",
            "t.toml:26: network blue: bum_rate_pps 0 is out of range 1..=10000000",
        ]
    );
    assert_eq!(
        overlay(&["[[network]]", "name = \"blue\"", "scope = \"galaxy\"", "vni = 16777216"]),
        [
            "t.toml:24: network blue: scope \"galaxy\" is not one of local, overlay",
            "t.toml:25: network blue: vni 16777216 is out of range 1..=16777215",
        ]
    );
    assert_eq!(
        overlay(&["[[network]]", "name = \"blue\"", "vni = 7"]),
        ["t.toml:24: network blue: vni 7 requires scope = \"overlay\""]
    );
    assert_eq!(
        overlay(&[
            "[[network]]",
            "name = \"blue\"",
            "[[port]]",
            "name = \"x\"",
            "kind = \"mem\"",
            "network = \"blue\"",
            "endpoint_mac = \"02:00:00:00:00:99\""
        ]),
        ["t.toml:28: port x: endpoint_mac is only for access ports of overlay networks"]
    );
    assert_eq!(
        overlay(&[
            "[[port]]",
            "name = \"c2\"",
            "kind = \"mem\"",
            "network = \"red\"",
            "endpoint_mac = \"01:00:5e:00:00:01\"",
            "endpoint_ip = \"10.2.0.5\""
        ]),
        [
            "t.toml:26: port c2: endpoint_mac 01:00:5e:00:00:01 is not a unicast MAC",
            "t.toml:27: port c2: endpoint_ip 10.2.0.5 is not a host address of subnet 10.1.0.0/24",
        ]
    );
    assert_eq!(
        overlay(&["[[port]]", "name = \"c2\"", "kind = \"mem\"", "network = \"red\"", "endpoint_ip = \"10.1.0.5\""]),
        ["t.toml:26: port c2: endpoint_ip requires endpoint_mac (an endpoint is registered by its MAC)"]
    );

    // [cluster]: required keys, URLs, ranges, and a routed VTEP port.
    let errors = all_errors(&[
        "[cluster]",
        "name = \"a/b\"",
        "etcd = [\"10.9.0.1:2379\"]",
        "lease_ttl_secs = 1",
        "vtep_port = \"c1\"",
        "[[network]]",
        "name = \"red\"",
        "[[port]]",
        "name = \"c1\"",
        "kind = \"mem\"",
        "network = \"red\"",
    ]);
    let expected = [
        "t.toml:1: cluster: missing field \"host\"",
        "t.toml:2: cluster: name ",
        "t.toml:3: cluster: etcd endpoint \"10.9.0.1:2379\" is not a URL like \"http://HOST:2379\"",
        "t.toml:4: cluster: lease_ttl_secs 1 is out of range 2..=3600",
        "t.toml:5: cluster: vtep_port \"c1\" is not a routed port (it needs an address)",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (e, x) in errors.iter().zip(expected) {
        assert!(e.starts_with(x), "\n     got: {e}\nexpected: {x}…");
    }
    assert_eq!(
        all_errors(&["[[network]]", "name = \"red\"", "scope = \"overlay\""]),
        ["t.toml:3: network red: scope \"overlay\" requires a [cluster] section (its vtep_port is the tunnel endpoint)"]
    );
}

#[test]
fn jumbo_mtus_are_for_the_ports_that_carry_them() {
    // Every kind but afxdp carries jumbo frames (large buffers); afxdp's UMEM chunks hold small frames only.
    for kind in ["tap", "afpacket", "pcap", "mem"] {
        let cfg = assert_port_ok(&[
            "name = \"c1\"",
            &format!("kind = \"{kind}\""),
            "ifname = \"x\"",
            "mtu = 9000",
            "network = \"bridge\"",
        ]);
        assert_eq!(cfg.ports[0].mtu, 9000, "{kind}");
    }
    let afxdp = |mtu: &str| {
        vec![
            "name = \"c1\"".to_string(),
            "kind = \"afxdp\"".into(),
            "ifname = \"x\"".into(),
            mtu.into(),
            "network = \"bridge\"".into(),
        ]
    };
    let ok = afxdp("mtu = 1898");
    assert_port_ok(&ok.iter().map(String::as_str).collect::<Vec<_>>());
    for mtu in ["1899", "9000"] {
        let lines = afxdp(&format!("mtu = {mtu}"));
        assert_port(
            &lines.iter().map(String::as_str).collect::<Vec<_>>(),
            &format!("t.toml:7: port c1: mtu {mtu} is above 1898, the most kind afxdp carries (no jumbo frames)"),
        );
    }
}

#[test]
fn mss_clamp_is_a_number_in_range_or_pmtu() {
    fn strs(l: &[String; 5]) -> Vec<&str> {
        l.iter().map(String::as_str).collect()
    }
    let port = |v: &str| ["name = \"c1\"", "kind = \"mem\"", "mtu = 1450", "network = \"bridge\"", v].map(String::from);
    let cfg = assert_port_ok(&strs(&port("mss_clamp = 1360")));
    assert_eq!(cfg.ports[0].mss_clamp, Some(MssClamp::Mss(1360)));
    assert_eq!(MssClamp::Mss(1360).limits(1450), (1360, 1360));
    let cfg = assert_port_ok(&strs(&port("mss_clamp = \"pmtu\"")));
    assert_eq!(cfg.ports[0].mss_clamp, Some(MssClamp::Pmtu));
    assert_eq!(MssClamp::Pmtu.limits(1450), (1410, 1390), "IPv4: mtu - 40, IPv6: mtu - 60");
    assert_eq!(MssClamp::Pmtu.limits(68), (28, 8));
    assert_eq!(assert_port_ok(&strs(&port(""))).ports[0].mss_clamp, None, "absent: no clamp");
    assert_port_ok(&strs(&port("mss_clamp = 536")));
    assert_port_ok(&strs(&port("mss_clamp = 8960")));
    for (value, error) in [
        ("535", "mss_clamp 535 is out of range 536..=8960"),
        ("8961", "mss_clamp 8961 is out of range 536..=8960"),
        ("70000", "mss_clamp 70000 is out of range 536..=8960"),
        ("-1", "mss_clamp -1 is out of range 536..=8960"),
        ("\"auto\"", "mss_clamp \"auto\" is neither a number nor \"pmtu\""),
        ("true", "mss_clamp must be an integer or \"pmtu\", found boolean true"),
    ] {
        assert_port(&strs(&port(&format!("mss_clamp = {value}"))), &format!("t.toml:8: port c1: {error}"));
    }
    // The wire form: a number or "pmtu", as written.
    let cfg = assert_port_ok(&strs(&port("mss_clamp = 1360")));
    let json = serde_json::to_string(&cfg).unwrap();
    assert!(json.contains("\"mss_clamp\":1360"), "{json}");
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), cfg);
    let pmtu = json.replace("\"mss_clamp\":1360", "\"mss_clamp\":\"pmtu\"");
    assert_eq!(serde_json::from_str::<Config>(&pmtu).unwrap().ports[0].mss_clamp, Some(MssClamp::Pmtu));
    assert!(serde_json::from_str::<Config>(&json.replace("\"mss_clamp\":1360", "\"mss_clamp\":\"x\"")).is_err());
    // Validation of the wire form checks the range too.
    let mut cfg = cfg;
    cfg.ports[0].mss_clamp = Some(MssClamp::Mss(100));
    assert_eq!(
        cfg.validate("pushed").unwrap_err().to_string(),
        "pushed: port c1: mss_clamp 100 is out of range 536..=8960"
    );
}
