//! How `vswitchctl` shows each result to a person: one function per op, from the protocol's result types
//! ([`vswitch_api::proto`]) to text, mostly [`Table`]s. (`--json` bypasses this and prints the result as it
//! came off the wire.)
//!
//! Conventions: unset values print as `-`; ages and expiries in seconds; every table prints its header even when
//! empty. Pure functions: any thread.

use crate::diff::non_default_fields;
use crate::table::Table;
use serde_json::Value;
use std::fmt::{Display, Write as _};
use vswitch_api::config::Config;
use vswitch_api::overlay::OverlayInspect;
use vswitch_api::proto::{
    ConfigResult, ConnRow, ConnTuple, ConntrackFlushed, ConntrackList, FdbRow, HelloResult, NeighRow, NetworkInspect,
    NetworkSummary, PortMode, PortRow, PortState, RouteRow, StatsResult, TraceResult,
};

fn opt<T: Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), ToString::to_string)
}

/// Milliseconds as seconds with one decimal (`1.2s`).
fn age(ms: u64) -> String {
    format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
}

/// `network ls`.
pub fn networks(rows: &[NetworkSummary]) -> String {
    let mut t = Table::new(["NAME", "SUBNET", "GATEWAY", "FLAGS", "PORTS", "MACS"]).right(5);
    for n in rows {
        let mut flags = Vec::new();
        if n.masquerade {
            flags.push("masquerade");
        }
        if n.internal {
            flags.push("internal");
        }
        let flags = if flags.is_empty() { "-".to_string() } else { flags.join(",") };
        let ports = if n.ports.is_empty() { "-".to_string() } else { n.ports.join(",") };
        t.row([
            n.name.clone(),
            opt(&n.subnet),
            opt(&n.gateway),
            flags,
            ports,
            format!("{}/{}", n.mac_entries, n.mac_limit),
        ]);
    }
    t.to_string()
}

/// `network inspect NAME`.
pub fn network_inspect(n: &NetworkInspect) -> String {
    let s = &n.summary;
    let c = &n.config;
    let mut out = String::new();
    let mut kv = Table::new(["FIELD", "VALUE"]);
    kv.row(["name".to_string(), s.name.clone()]);
    kv.row(["subnet".to_string(), opt(&s.subnet)]);
    kv.row(["gateway".to_string(), opt(&s.gateway)]);
    kv.row(["gateway_mac".to_string(), opt(&s.gateway_mac)]);
    kv.row(["internal".to_string(), s.internal.to_string()]);
    kv.row(["masquerade".to_string(), s.masquerade.to_string()]);
    kv.row(["mac_aging_secs".to_string(), c.mac_aging_secs.to_string()]);
    kv.row(["mac_limit".to_string(), c.mac_limit.to_string()]);
    kv.row(["ports".to_string(), if s.ports.is_empty() { "-".to_string() } else { s.ports.join(",") }]);
    let f = &n.fdb;
    kv.row([
        "fdb".to_string(),
        format!("entries={} learned={} moved={} evicted={} aged={}", f.entries, f.learned, f.moved, f.evicted, f.aged),
    ]);
    if let Some(o) = &n.overlay {
        kv.row(["scope".to_string(), "overlay".to_string()]);
        kv.row(["vni".to_string(), o.vni.to_string()]);
        kv.row(["overlay_mtu".to_string(), o.mtu.to_string()]);
        kv.row(["vtep".to_string(), opt(&o.vtep)]);
        kv.row(["revision".to_string(), o.revision.to_string()]);
    }
    out.push_str(&kv.to_string());
    if let Some(o) = &n.overlay {
        out.push('\n');
        out.push_str(&overlay(o));
    }
    out.push('\n');
    out.push_str(&fdb(&n.entries));
    out
}

/// An overlay network's members (with their counters) and remote endpoints, for `network inspect`.
pub fn overlay(o: &OverlayInspect) -> String {
    let mut m =
        Table::new(["HOST", "VTEP", "UDP", "MTU", "STATE", "NEXT_HOP", "TX_PKTS", "TX_BYTES", "RX_PKTS", "RX_BYTES"]);
    for c in 6..10 {
        m = m.right(c);
    }
    for p in &o.members {
        let c = &p.counters;
        m.row([
            p.host.clone(),
            p.vtep.to_string(),
            p.udp_port.to_string(),
            p.mtu.to_string(),
            p.state.clone(),
            opt(&p.next_hop),
            c.tx_packets.to_string(),
            c.tx_bytes.to_string(),
            c.rx_packets.to_string(),
            c.rx_bytes.to_string(),
        ]);
    }
    let mut e = Table::new(["MAC", "IP", "HOST", "VTEP"]);
    for x in &o.endpoints {
        e.row([x.mac.to_string(), opt(&x.ip), x.host.clone(), x.vtep.to_string()]);
    }
    format!("{m}\n{e}")
}

/// `fdb show`.
pub fn fdb(rows: &[FdbRow]) -> String {
    let mut t = Table::new(["NETWORK", "MAC", "PORT", "AGE"]).right(3);
    for r in rows {
        t.row([r.network.clone(), r.mac.to_string(), r.port.clone(), age(r.age_ms)]);
    }
    t.to_string()
}

/// `port ls`: I/O counters are the port's own; DROPS adds the port's and the pipeline's drops; OFFLOADS is what
/// the port transmits as is (anything more is segmented or completed in software first); STATE is `up` or
/// `failed`, and each failed port's error follows the table.
pub fn ports(rows: &[PortRow]) -> String {
    let mut t = Table::new([
        "NAME", "KIND", "IFNAME", "ATTACH", "QUEUES", "RX_PKTS", "RX_BYTES", "TX_PKTS", "TX_BYTES", "DROPS",
        "OFFLOADS", "STATE",
    ]);
    for c in 4..10 {
        t = t.right(c);
    }
    for p in rows {
        let attach = match p.mode {
            PortMode::Access => format!("network {}", opt(&p.network)),
            PortMode::Routed => format!("routed {}", opt(&p.address)),
        };
        let kind = match &p.xdp_mode {
            Some(m) => format!("{}({m})", p.kind),
            None => p.kind.to_string(),
        };
        t.row([
            p.name.clone(),
            kind,
            opt(&p.ifname),
            attach,
            p.queues.to_string(),
            p.io.rx_packets.to_string(),
            p.io.rx_bytes.to_string(),
            p.io.tx_packets.to_string(),
            p.io.tx_bytes.to_string(),
            (p.io.rx_dropped + p.io.tx_dropped + p.pipeline.dropped).to_string(),
            if p.offloads.is_empty() { "?".to_string() } else { p.offloads.clone() },
            match p.state {
                PortState::Up => "up".to_string(),
                PortState::Failed => "failed".to_string(),
            },
        ]);
    }
    let mut out = t.to_string();
    for p in rows.iter().filter(|p| p.state == PortState::Failed) {
        out.push_str(&format!("{}: failed: {} (retried with backoff)\n", p.name, p.error.as_deref().unwrap_or("?")));
    }
    out
}

/// `route show`.
pub fn routes(rows: &[RouteRow]) -> String {
    let mut t = Table::new(["PREFIX", "VIA", "INTERFACE", "ORIGIN"]);
    for r in rows {
        t.row([r.prefix.to_string(), opt(&r.via), r.interface.clone(), r.origin.clone()]);
    }
    t.to_string()
}

/// `neigh show`.
pub fn neighbours(rows: &[NeighRow]) -> String {
    let mut t = Table::new(["INTERFACE", "IP", "MAC", "STATE"]);
    for n in rows {
        t.row([n.interface.clone(), n.ip.to_string(), opt(&n.mac), n.state.clone()]);
    }
    t.to_string()
}

fn tuple(t: &ConnTuple) -> String {
    format!("{}:{} > {}:{}", t.src, t.sport, t.dst, t.dport)
}

/// `conntrack ls`; a last line says so when the list stops at the limit.
pub fn conntrack(list: &ConntrackList) -> String {
    let mut t = Table::new(["PROTO", "STATE", "ORIGINAL", "REPLY", "NAT", "EXPIRES"]).right(5);
    for c in &list.connections {
        let ConnRow { proto, state, orig, reply, nat, expires_in_secs } = c;
        t.row([proto.clone(), state.clone(), tuple(orig), tuple(reply), opt(nat), format!("{expires_in_secs}s")]);
    }
    let mut out = t.to_string();
    if list.truncated {
        let _ = writeln!(out, "(first {} of {} connections; --limit N for more)", list.connections.len(), list.total);
    }
    out
}

/// `conntrack flush`.
pub fn conntrack_flushed(f: &ConntrackFlushed) -> String {
    format!("flushed {} connection(s)\n", f.removed)
}

/// Appends every non-zero scalar under `prefix` as `KEY VALUE` rows (arrays indexed `[i]`).
fn flatten(t: &mut Table, prefix: &str, v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(t, &key, v);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(t, &format!("{prefix}[{i}]"), v);
            }
        }
        Value::Null => {}
        Value::Number(n) if n.as_u64() == Some(0) || n.as_f64() == Some(0.0) => {}
        Value::Bool(false) => {}
        Value::String(s) => t.row([prefix.to_string(), s.clone()]),
        other => t.row([prefix.to_string(), other.to_string()]),
    }
}

/// `stats`: the counters report flattened to `KEY VALUE` rows, zero counters left out (`--json` has them all).
pub fn stats(s: &StatsResult) -> String {
    let mut t = Table::new(["COUNTER", "VALUE"]).right(1);
    t.row(["generation".to_string(), s.generation.to_string()]);
    flatten(&mut t, "", &s.report);
    t.to_string()
}

/// `trace`.
pub fn trace(r: &TraceResult) -> String {
    let mut out = format!("frame on {}: {}\n\n", r.port, r.frame);
    let mut stages = Table::new(["STAGE", "DECISION"]);
    for s in &r.stages {
        stages.row([s.stage.clone(), s.decision.clone()]);
    }
    out.push_str(&stages.to_string());
    out.push('\n');
    let mut outputs = Table::new(["OUT_PORT", "FRAME"]);
    for o in &r.outputs {
        outputs.row([o.port.clone(), o.frame.clone()]);
    }
    out.push_str(&outputs.to_string());
    if !r.drops.is_empty() {
        out.push('\n');
        let mut drops = Table::new(["DROP_REASON", "COUNT"]).right(1);
        for (reason, n) in &r.drops {
            drops.row([reason.clone(), n.to_string()]);
        }
        out.push_str(&drops.to_string());
    }
    out
}

/// `config show`: the running configuration as TOML in the configuration language (so it can be saved and fed
/// back to `vswitch-agent --config` or `vswitchd run --config`), after a comment with its generation and origin.
pub fn config(r: &ConfigResult) -> Result<String, toml::ser::Error> {
    let mut out = format!("# generation {}", r.generation);
    if let Some(origin) = &r.origin {
        let _ = write!(out, ", from {origin}");
    }
    out.push('\n');
    out.push_str(&config_toml(&r.config)?);
    Ok(out)
}

/// A configuration as TOML that parses back to the same configuration, written as a person would: sections and
/// keys in the language's order, settings at their default left out, empty sections left out.
pub fn config_toml(c: &Config) -> Result<String, toml::ser::Error> {
    let mut out = String::new();
    section(&mut out, "[switch]", non_default_fields(&c.switch, &[]))?;
    for n in &c.networks {
        section(&mut out, "[[network]]", non_default_fields(n, &["name"]))?;
    }
    for p in &c.ports {
        section(&mut out, "[[port]]", non_default_fields(p, &["name", "kind"]))?;
    }
    for r in &c.routes {
        section(&mut out, "[[route]]", non_default_fields(r, &["prefix", "via"]))?;
    }
    for p in &c.publish {
        section(&mut out, "[[publish]]", non_default_fields(p, &["port", "proto", "external_port", "to"]))?;
    }
    section(&mut out, "[nat]", non_default_fields(&c.nat, &[]))?;
    section(&mut out, "[conntrack]", non_default_fields(&c.conntrack, &[]))?;
    Ok(out)
}

/// Appends `header` and one `key = value` line per field (nothing when there are no fields), a blank line between
/// sections.
fn section(out: &mut String, header: &str, fields: Vec<(String, Value)>) -> Result<(), toml::ser::Error> {
    if fields.is_empty() {
        return Ok(());
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(header);
    out.push('\n');
    for (key, value) in fields {
        let value = toml::Value::try_from(value)?;
        let _ = writeln!(out, "{key} = {value}");
    }
    Ok(())
}

/// `version`: this tool's version, then the server's (when reachable).
pub fn version(hello: Option<&HelloResult>) -> String {
    let mut out =
        format!("vswitchctl {} (protocol {})\n", env!("CARGO_PKG_VERSION"), vswitch_api::proto::PROTOCOL_VERSION);
    if let Some(h) = hello {
        let _ = writeln!(
            out,
            "{} {} (protocol {}), pid {}, up {}s, config generation {}",
            h.server,
            h.server_version,
            h.protocol_version,
            h.pid,
            h.uptime_ns / 1_000_000_000,
            h.generation
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch_api::config::PortKind;
    use vswitch_api::proto::{PortIo, PortPipeline, TraceOutput, TraceStage};

    #[test]
    fn port_rows_show_attachment_counters_and_summed_drops() {
        let row = |name: &str, mode, network: Option<&str>, address: Option<&str>| PortRow {
            name: name.into(),
            kind: PortKind::Tap,
            ifname: Some(format!("vs-{name}")),
            mode,
            network: network.map(Into::into),
            address: address.map(|a| a.parse().unwrap()),
            queues: 1,
            xdp_mode: None,
            io: PortIo {
                rx_packets: 5,
                rx_bytes: 420,
                rx_dropped: 1,
                tx_packets: 3,
                tx_bytes: 300,
                tx_dropped: 2,
                ..PortIo::default()
            },
            pipeline: PortPipeline { dropped: 4, ..PortPipeline::default() },
            offloads: "csum,tso4,tso6,uso".into(),
            state: PortState::Up,
            error: None,
        };
        let mut down = row("c2", PortMode::Access, Some("bridge"), None);
        down.state = PortState::Failed;
        down.error = Some("port c2: tap vs-c2: moving into netns c2: no such namespace".into());
        let text = ports(&[
            row("c1", PortMode::Access, Some("bridge"), None),
            PortRow { offloads: "-".into(), ..row("up", PortMode::Routed, None, Some("203.0.113.2/24")) },
            PortRow { offloads: "-".into(), ..down },
        ]);
        assert_eq!(
            text,
            "NAME  KIND  IFNAME  ATTACH                 QUEUES  RX_PKTS  RX_BYTES  TX_PKTS  TX_BYTES  DROPS  OFFLOADS            STATE\n\
             c1    tap   vs-c1   network bridge              1        5       420        3       300      7  csum,tso4,tso6,uso  up\n\
             up    tap   vs-up   routed 203.0.113.2/24       1        5       420        3       300      7  -                   up\n\
             c2    tap   vs-c2   network bridge              1        5       420        3       300      7  -                   failed\n\
             c2: failed: port c2: tap vs-c2: moving into netns c2: no such namespace (retried with backoff)\n"
        );
    }

    #[test]
    fn overlay_members_and_endpoints_are_tables() {
        use vswitch_api::overlay::{EndpointInfo, MemberInfo, PeerCounters};
        let o = OverlayInspect {
            vni: 4096,
            mtu: 1450,
            vtep: Some([10, 200, 0, 11].into()),
            revision: 9,
            members: vec![MemberInfo {
                host: "h2".into(),
                vtep: [10, 200, 0, 12].into(),
                udp_port: 4789,
                mtu: 1500,
                state: "live".into(),
                next_hop: Some([10, 200, 0, 12].into()),
                counters: PeerCounters { tx_packets: 3, tx_bytes: 372, rx_packets: 2, rx_bytes: 248 },
            }],
            endpoints: vec![EndpointInfo {
                mac: "02:00:00:00:01:02".parse().unwrap(),
                ip: Some([10, 1, 0, 12].into()),
                host: "h2".into(),
                vtep: [10, 200, 0, 12].into(),
            }],
        };
        assert_eq!(
            overlay(&o),
            "HOST  VTEP         UDP   MTU   STATE  NEXT_HOP     TX_PKTS  TX_BYTES  RX_PKTS  RX_BYTES\n\
             h2    10.200.0.12  4789  1500  live   10.200.0.12        3       372        2       248\n\
             \n\
             MAC                IP         HOST  VTEP\n\
             02:00:00:00:01:02  10.1.0.12  h2    10.200.0.12\n"
        );
    }

    #[test]
    fn empty_lists_print_their_header() {
        assert_eq!(fdb(&[]), "NETWORK  MAC  PORT  AGE\n");
        assert_eq!(neighbours(&[]), "INTERFACE  IP  MAC  STATE\n");
        assert_eq!(routes(&[]), "PREFIX  VIA  INTERFACE  ORIGIN\n");
    }

    #[test]
    fn fdb_ages_are_seconds_and_unset_values_a_dash() {
        let r =
            FdbRow { network: "b".into(), mac: "02:00:00:00:00:01".parse().unwrap(), port: "c1".into(), age_ms: 1250 };
        assert_eq!(fdb(&[r]), "NETWORK  MAC                PORT   AGE\nb        02:00:00:00:00:01  c1    1.2s\n");
        let n = NeighRow {
            interface: "port:up".into(),
            ip: "203.0.113.1".parse().unwrap(),
            mac: None,
            state: "incomplete".into(),
        };
        assert_eq!(neighbours(&[n]), "INTERFACE  IP           MAC  STATE\nport:up    203.0.113.1  -    incomplete\n");
    }

    #[test]
    fn a_truncated_conntrack_list_says_so() {
        let t = |s: &str, sp, d: &str, dp| ConnTuple {
            src: s.parse().unwrap(),
            sport: sp,
            dst: d.parse().unwrap(),
            dport: dp,
        };
        let row = ConnRow {
            proto: "icmp".into(),
            state: "established".into(),
            orig: t("172.17.0.2", 7, "203.0.113.1", 7),
            reply: t("203.0.113.1", 1024, "203.0.113.2", 1024),
            nat: Some("snat".into()),
            expires_in_secs: 29,
        };
        let list = ConntrackList { total: 3, truncated: true, connections: vec![row] };
        let text = conntrack(&list);
        assert_eq!(
            text,
            "PROTO  STATE        ORIGINAL                      REPLY                                NAT   EXPIRES\n\
             icmp   established  172.17.0.2:7 > 203.0.113.1:7  203.0.113.1:1024 > 203.0.113.2:1024  snat      29s\n\
             (first 1 of 3 connections; --limit N for more)\n"
        );
    }

    #[test]
    fn stats_flatten_non_zero_counters_with_their_path() {
        let s = StatsResult {
            generation: 2,
            report: serde_json::json!({"frames_in": 10, "frames_out": 0, "drops": {"no-route": 3}, "workers": [{"id": 0, "busy_ns": 5}]}),
        };
        assert_eq!(
            stats(&s),
            "COUNTER             VALUE\ngeneration              2\ndrops.no-route          3\nframes_in              10\nworkers[0].busy_ns      5\n"
        );
    }

    #[test]
    fn trace_lists_stages_outputs_and_drops() {
        let r = TraceResult {
            port: "c1".into(),
            frame: "ARP who-has 172.17.0.1".into(),
            stages: vec![TraceStage { stage: "bridge".into(), decision: "to the router".into() }],
            outputs: vec![TraceOutput { port: "c1".into(), frame: "ARP reply".into() }],
            drops: [("no-route".to_string(), 1)].into(),
        };
        let text = trace(&r);
        assert!(
            text.starts_with("frame on c1: ARP who-has 172.17.0.1\n\nSTAGE   DECISION\nbridge  to the router\n"),
            "{text}"
        );
        assert!(text.contains("OUT_PORT  FRAME\nc1        ARP reply\n"), "{text}");
        assert!(text.ends_with("DROP_REASON  COUNT\nno-route         1\n"), "{text}");
    }

    #[test]
    fn config_show_is_toml_that_parses_back_to_the_same_config() {
        let text = "[switch]\nworkers = 2\n[[network]]\nname = \"b\"\nsubnet = \"172.17.0.0/16\"\ngateway = \"172.17.0.1\"\nmasquerade = true\n\
                    [[port]]\nname = \"c1\"\nkind = \"tap\"\nifname = \"vs-c1\"\nnetwork = \"b\"\n\
                    [[port]]\nname = \"up\"\nkind = \"afpacket\"\nifname = \"vs-up\"\naddress = \"203.0.113.2/24\"\nmac = \"02:00:00:00:02:01\"\n\
                    [[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"203.0.113.1\"\n\
                    [[publish]]\nport = \"up\"\nproto = \"tcp\"\nexternal_port = 8080\nto = \"172.17.0.2:80\"\n\
                    [nat]\nport_range = \"2000-3000\"\n[conntrack]\nlimit = 100\n";
        let cfg = Config::parse(text, "t.toml").unwrap();
        let shown =
            config(&ConfigResult { generation: 3, origin: Some("t.toml".into()), config: cfg.clone() }).unwrap();
        assert!(shown.starts_with("# generation 3, from t.toml\n"), "{shown}");
        assert_eq!(Config::parse(&shown, "shown").unwrap(), cfg, "{shown}");
        assert_eq!(config_toml(&Config::default()).unwrap(), "");
        assert!(!shown.contains("mtu") && !shown.contains("mac_limit") && !shown.contains("tcp_strict"), "{shown}");
    }

    #[test]
    fn config_show_keeps_the_language_order_and_leaves_defaults_out() {
        let text = "[conntrack]\nlimit = 100\n\n[[port]]\nname = \"c1\"\nkind = \"tap\"\nifname = \"vs-c1\"\nnetwork = \"b\"\nmtu = 1400\n\n\
                    [[network]]\nname = \"b\"\nsubnet = \"10.1.0.0/24\"\nmac_limit = 8192\n";
        assert_eq!(
            config_toml(&Config::parse(text, "t").unwrap()).unwrap(),
            "[[network]]\nname = \"b\"\nsubnet = \"10.1.0.0/24\"\n\n\
             [[port]]\nname = \"c1\"\nkind = \"tap\"\nifname = \"vs-c1\"\nnetwork = \"b\"\nmtu = 1400\n\n\
             [conntrack]\nlimit = 100\n"
        );
    }

    #[test]
    fn network_rows_show_flags_ports_and_mac_use() {
        let n = NetworkSummary {
            name: "bridge".into(),
            subnet: Some("172.17.0.0/16".parse().unwrap()),
            gateway: Some("172.17.0.1".parse().unwrap()),
            gateway_mac: None,
            internal: false,
            masquerade: true,
            ports: vec!["c1".into(), "c2".into()],
            mac_entries: 2,
            mac_limit: 8192,
        };
        assert_eq!(
            networks(&[n]),
            "NAME    SUBNET         GATEWAY     FLAGS       PORTS    MACS\nbridge  172.17.0.0/16  172.17.0.1  masquerade  c1,c2  2/8192\n"
        );
    }
}
