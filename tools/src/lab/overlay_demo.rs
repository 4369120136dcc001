//! `vswitch-lab demo` on an overlay lab ([`super::overlay`]): brings up the machines that are not `late`, checks
//! the overlay between them, starts the late ones and checks that they joined, then the ways in and out
//! through each host's own gateway; prints one `PASS`/`FAIL` line per check, each machine's counters, and tears
//! everything down (also when a step fails).
//!
//! The checks, derived from the lab: etcd answers; every started machine lists the others as members of the
//! client's network; the client (the first container of the first machine) pings its gateway (served on its own
//! host: the anycast gateway) and every other container (across hosts), and sends [`super::demo::TRANSFER_BYTES`] over TCP
//! to each, the server seeing the client's own address (no NAT inside the overlay); a late machine joins with
//! its own file only: its container pings the client within [`JOIN_LIMIT`] of its agent starting, and the
//! others list it; every container's TCP to the outside host arrives from its own host's VTEP address when its
//! network masquerades (each host masquerades locally); every `[[publish]]` of a machine is reached from the
//! outside at that host's address and lands in the container, which sees the outside's address. Runs on the
//! caller's thread.

use super::demo::{summarize_stats, transfer_between, Check};
use super::overlay::{ContainerSpec, MachineSpec, OverlayLab, OverlaySpec};
use super::probe::ping;
use super::{LabError, LabOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How soon a joining host's container must reach the client after its agent starts.
pub const JOIN_LIMIT: Duration = Duration::from_secs(5);
/// How long the first machines get to see each other.
const SETTLE: Duration = Duration::from_secs(15);
const SERVER_PORT: u16 = 5001;

/// Pings `ip` from `ns` once a time until one answers or `limit` passes; how long it took.
fn reach(ns: &str, ip: Ipv4Addr, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ping(ns, ip, 1).is_ok_and(|r| r.received > 0) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn ping_check(lab: &OverlayLab, from: &ContainerSpec, to_name: &str, ip: Ipv4Addr) -> Check {
    let name = format!("ping {} -> {to_name} ({ip})", from.name);
    let ns = lab.host_ns(&from.name);
    let waited = reach(&ns, ip, SETTLE);
    match ping(&ns, ip, 3) {
        Ok(r) => Check {
            name,
            pass: waited.is_some() && r.received > 0,
            detail: format!(
                "{}/{} replies{}{}",
                r.received,
                r.sent,
                r.avg_ms.map(|a| format!(", avg {a:.3} ms")).unwrap_or_default(),
                waited.map(|w| format!(" (first reply after {} ms)", w.as_millis())).unwrap_or_default()
            ),
        },
        Err(e) => Check { name, pass: false, detail: e.to_string() },
    }
}

/// Waits until every machine in `lab.started()` lists all the others as members of `network`.
fn members_check(lab: &OverlayLab, network: &str) -> Vec<Check> {
    let started: Vec<String> = lab.started().to_vec();
    started
        .iter()
        .map(|m| {
            let mut want: Vec<String> = started.iter().filter(|o| *o != m).cloned().collect();
            want.sort();
            let start = Instant::now();
            let mut seen = lab.members(m, network);
            while seen != want && start.elapsed() < SETTLE {
                std::thread::sleep(Duration::from_millis(100));
                seen = lab.members(m, network);
            }
            let vni = lab.overlay(m, network).and_then(|o| o["vni"].as_u64());
            Check {
                name: format!("{m} lists {want:?} in {network}"),
                pass: seen == want,
                detail: format!(
                    "members {seen:?}, VNI {}, after {} ms",
                    vni.map_or("-".into(), |v| v.to_string()),
                    start.elapsed().as_millis()
                ),
            }
        })
        .collect()
}

fn containers_of<'a>(spec: &'a OverlaySpec, started: &[String]) -> Vec<(&'a MachineSpec, &'a ContainerSpec)> {
    spec.machines
        .iter()
        .filter(|m| started.contains(&m.name))
        .flat_map(|m| m.containers.iter().map(move |c| (m, c)))
        .collect()
}

/// Runs the demo; writes progress and results to `out`; returns the checks.
pub fn run(spec: &OverlaySpec, opts: &LabOptions, out: &mut dyn Write) -> Result<Vec<Check>, LabError> {
    let t0 = Instant::now();
    let mut lab = OverlayLab::up(spec, opts)?;
    let mut checks = Vec::new();
    let mut record = |out: &mut dyn Write, c: Check| {
        let _ = writeln!(out, "{} {:<44} {}", if c.pass { "PASS" } else { "FAIL" }, c.name, c.detail);
        checks.push(c);
    };
    let _ = writeln!(
        out,
        "overlay lab {} is up in {:.1} s: hosts {:?} (late: {:?}); logs in {}",
        opts.prefix,
        t0.elapsed().as_secs_f64(),
        lab.started(),
        spec.machines.iter().filter(|m| m.late).map(|m| &m.name).collect::<Vec<_>>(),
        lab.state().log.parent().map(|p| p.display().to_string()).unwrap_or_default()
    );
    let Some((client_m, client)) =
        spec.machines.iter().find(|m| !m.late).and_then(|m| m.containers.first().map(|c| (m, c)))
    else {
        return Err(LabError::Spec("the demo needs a container on a machine that is not late".into()));
    };
    let network = client.network.clone();
    let outside = spec.outside.clone();
    let out_ns = lab.host_ns(&outside.name);

    let health = lab.etcdctl(&["endpoint", "health"]);
    record(
        out,
        Check {
            name: format!("etcd answers on {} member(s)", lab.started().len()),
            pass: health.is_ok(),
            detail: match &health {
                Ok(_) => "endpoint health ok".into(),
                Err(e) => e.to_string(),
            },
        },
    );
    for c in members_check(&lab, &network) {
        record(out, c);
    }

    // Across hosts: the anycast gateway, then every other container.
    if let Some(gw) = client.gateway {
        record(out, ping_check(&lab, client, &format!("gateway on {}", client_m.name), gw));
    }
    let others: Vec<(String, String, Ipv4Addr)> = containers_of(spec, lab.started())
        .into_iter()
        .filter(|(_, c)| c.name != client.name)
        .map(|(m, c)| (m.name.clone(), c.name.clone(), c.ip()))
        .collect();
    for (m, c, ip) in &others {
        record(out, ping_check(&lab, client, &format!("{c} on {m}"), *ip));
    }
    for (m, c, ip) in &others {
        let name = format!("tcp {} -> {c} on {m} ({ip}) 10 MB", client.name);
        let (from_ns, to_ns) = (lab.host_ns(&client.name), lab.host_ns(c));
        record(out, transfer_between(name, &from_ns, &to_ns, SERVER_PORT, *ip, SERVER_PORT, Some(client.ip())));
    }

    // Hosts joining: only their own files; nothing restarted elsewhere.
    let late: Vec<MachineSpec> = spec.machines.iter().filter(|m| m.late).cloned().collect();
    for m in &late {
        let started = Instant::now();
        let joined = lab.join(&m.name);
        let agent_at = started.elapsed();
        match joined {
            Err(e) => record(out, Check { name: format!("{} joins", m.name), pass: false, detail: e.to_string() }),
            Ok(()) => {
                for c in &m.containers {
                    let ns = lab.host_ns(&c.name);
                    let took = reach(&ns, client.ip(), JOIN_LIMIT);
                    record(
                        out,
                        Check {
                            name: format!(
                                "{} joins: {} pings {} within {} s",
                                m.name,
                                c.name,
                                client.name,
                                JOIN_LIMIT.as_secs()
                            ),
                            pass: took.is_some(),
                            detail: match took {
                                Some(t) => format!(
                                    "first reply {} ms after its agent started ({} ms after the host's start)",
                                    t.as_millis(),
                                    (agent_at + t).as_millis()
                                ),
                                None => format!("no reply within {JOIN_LIMIT:?}"),
                            },
                        },
                    );
                    let name = format!("tcp {} -> {} ({}) 10 MB", c.name, client.name, client.ip());
                    let (from_ns, to_ns) = (lab.host_ns(&c.name), lab.host_ns(&client.name));
                    record(
                        out,
                        transfer_between(name, &from_ns, &to_ns, SERVER_PORT, client.ip(), SERVER_PORT, Some(c.ip())),
                    );
                }
            }
        }
    }
    if !late.is_empty() {
        for c in members_check(&lab, &network) {
            record(out, c);
        }
    }

    // Out through each host's own gateway (masquerade to its VTEP address), and in through published ports.
    for (m, c) in containers_of(spec, lab.started()) {
        let masq = m.masquerading.iter().any(|n| n.contains(&c.ip()));
        let expect = if masq { m.vtep.addr() } else { c.ip() };
        let what = if masq { "masquerade" } else { "routed" };
        let name = format!("tcp {} -> {} ({}) {what} via {}", c.name, outside.name, outside.address.addr(), m.name);
        let from_ns = lab.host_ns(&c.name);
        let dst = outside.address.addr();
        record(out, transfer_between(name, &from_ns, &out_ns, SERVER_PORT, dst, SERVER_PORT, Some(expect)));
    }
    for m in spec.machines.iter().filter(|m| lab.started().contains(&m.name)) {
        for p in &m.published {
            let Some(c) = m.containers.iter().find(|c| c.ip() == *p.to.ip()) else { continue };
            let name =
                format!("published {}:{} ({}) -> {}:{}", p.address, p.external_port, m.name, c.name, p.to.port());
            let to_ns = lab.host_ns(&c.name);
            let src = Some(outside.address.addr());
            record(out, transfer_between(name, &out_ns, &to_ns, p.to.port(), p.address, p.external_port, src));
        }
    }

    let stats = lab.stop_daemons();
    for (m, s) in stats {
        let _ = writeln!(out, "\nvswitchd counters of {m} (stopped with SIGTERM):");
        let _ = writeln!(out, "{}", s.map_or_else(|| "  (no stats file)".to_string(), |v| summarize_stats(&v)));
    }
    lab.down()?;
    let _ = writeln!(out, "overlay lab {} is down ({:.1} s in all)", opts.prefix, t0.elapsed().as_secs_f64());
    Ok(checks)
}
