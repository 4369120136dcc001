//! `vswitch-lab`: a switch and its hosts in network namespaces (see `tools::lab`). Needs root.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tools::lab::overlay::{OverlayLab, OverlaySpec};
use tools::lab::{self, demo, overlay_demo, Lab, LabOptions, LabSpec};

#[derive(Parser)]
#[command(name = "vswitch-lab", version, about = "vswitch lab: vswitchd and its hosts in network namespaces (root)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args)]
struct Common {
    /// Lab file (TOML); the embedded default lab (examples/lab/default.toml) when absent. A file with
    /// `[[machine]]` is an overlay lab (examples/lab/overlay.toml: hosts with vswitchd, agent and etcd each).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Prefix of the lab's namespace names.
    #[arg(long, default_value = "vsl-")]
    prefix: String,
    /// The vswitchd executable (default: next to this executable, else from PATH).
    #[arg(long)]
    vswitchd: Option<PathBuf>,
    /// The vswitch-agent executable, for overlay labs (default: next to this executable, else from PATH).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Where the lab's state directory goes.
    #[arg(long, default_value = lab::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Checksum/segmentation offloads at the hosts' veth ends: on or off for every veth (default: on for
    /// afpacket ports, off for afxdp ports).
    #[arg(long, value_parser = ["on", "off"])]
    offloads: Option<String>,
    /// vswitchd's worker threads (`vswitchd run --workers`), overriding the lab's `[switch] workers`. One-switch
    /// labs only: an overlay lab's machines take theirs from their configuration files.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: Option<u16>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the lab and leave it running (`ip netns exec PREFIXc1 ...` to use a host).
    Up(Common),
    /// Stop the lab's vswitchd and delete its namespaces.
    Down(Common),
    /// Up, check forwarding (ping, TCP, masquerade, published ports), print counters, down.
    Demo(Common),
    /// Show whether a lab is up, its vswitchd and its hosts.
    Status(Common),
}

impl Common {
    fn options(&self) -> LabOptions {
        let mut o = LabOptions::new();
        o.prefix = self.prefix.clone();
        if let Some(v) = &self.vswitchd {
            o.vswitchd = v.clone();
        }
        if let Some(a) = &self.agent {
            o.agent = a.clone();
        }
        o.state_root = self.state_dir.clone();
        o.offloads = self.offloads.as_deref().map(|v| v == "on");
        if let Some(n) = self.workers {
            o.switch_args.extend(["--workers".to_string(), n.to_string()]);
        }
        o
    }

    fn spec(&self) -> anyhow::Result<AnyLab> {
        match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                if OverlaySpec::is_overlay(&text) {
                    if self.workers.is_some() {
                        anyhow::bail!(
                            "--workers: {} is an overlay lab, whose machines take `[switch] workers` from their \
                             configuration files",
                            path.display()
                        );
                    }
                    Ok(AnyLab::Overlay(OverlaySpec::load(path)?))
                } else {
                    Ok(AnyLab::Switch(LabSpec::load(path)?))
                }
            }
            None => Ok(AnyLab::Switch(LabSpec::default_lab())),
        }
    }
}

/// A one-switch lab or an overlay lab.
enum AnyLab {
    Switch(LabSpec),
    Overlay(OverlaySpec),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vswitch-lab: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if !lab::is_root() {
        anyhow::bail!(lab::LabError::NotRoot);
    }
    match cli.command {
        Cmd::Up(c) => {
            let opts = c.options();
            let spec = match c.spec()? {
                AnyLab::Switch(spec) => spec,
                AnyLab::Overlay(spec) => {
                    let mut lab = OverlayLab::up(&spec, &opts).context("bringing the overlay lab up")?;
                    lab.join_all().context("starting the late hosts")?;
                    println!("overlay lab {} is up: hosts {:?}", opts.prefix, lab.started());
                    for m in &spec.machines {
                        for ct in &m.containers {
                            println!(
                                "  {:<6} namespace {:<14} {} (on {})",
                                ct.name,
                                lab.host_ns(&ct.name),
                                ct.address,
                                m.name
                            );
                        }
                    }
                    let o = &spec.outside;
                    println!("  {:<6} namespace {:<14} {}", o.name, lab.host_ns(&o.name), o.address);
                    println!(
                        "logs and sockets: {}",
                        lab.state().log.parent().map(|p| p.display().to_string()).unwrap_or_default()
                    );
                    lab.detach();
                    return Ok(ExitCode::SUCCESS);
                }
            };
            let lab = Lab::up(&spec, &opts).context("bringing the lab up")?;
            println!("lab {} is up: vswitchd pid {:?} in namespace {}", opts.prefix, lab.pid(), lab.switch_ns());
            for h in &spec.hosts {
                println!("  host {:<8} namespace {:<14} {}", h.name, lab.host_ns(&h.name), h.address);
            }
            println!(
                "try: ip netns exec {} ping {}",
                lab.host_ns(&spec.hosts[0].name),
                spec.hosts.last().unwrap().ip()
            );
            println!("vswitchd log: {}", lab.state().log.display());
            lab.detach();
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Down(c) => {
            let opts = c.options();
            let stats = Lab::down_from_state(&opts).context("taking the lab down")?;
            if let Some(v) = stats {
                println!("vswitchd counters:\n{}", demo::summarize_stats(&v));
            }
            println!("lab {} is down", opts.prefix);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo(c) => {
            let opts = c.options();
            let checks = match c.spec()? {
                AnyLab::Switch(spec) => demo::run(&spec, &opts, &mut std::io::stdout())?,
                AnyLab::Overlay(spec) => overlay_demo::run(&spec, &opts, &mut std::io::stdout())?,
            };
            let failed = checks.iter().filter(|c| !c.pass).count();
            if failed == 0 {
                println!("demo: all {} checks passed", checks.len());
                Ok(ExitCode::SUCCESS)
            } else {
                println!("demo: {failed} of {} checks FAILED", checks.len());
                Ok(ExitCode::FAILURE)
            }
        }
        Cmd::Status(c) => {
            let opts = c.options();
            let Some(state) = Lab::load_state(&opts) else {
                println!("no lab with prefix {} is up", opts.prefix);
                return Ok(ExitCode::SUCCESS);
            };
            match state.pid {
                Some(pid) if lab::is_vswitchd(pid) => println!("vswitchd pid {pid}: running"),
                Some(pid) => println!("vswitchd pid {pid}: not running (see {})", state.log.display()),
                None if state.processes.is_empty() => println!("vswitchd: not started"),
                None => {}
            }
            for p in &state.processes {
                let up = if lab::runs(p.pid, &p.comm) { "running" } else { "not running" };
                println!("{} pid {}: {up}", p.what, p.pid);
            }
            for ns in &state.namespaces {
                let exists = lab::netns::exists(ns);
                println!("namespace {ns}: {}", if exists { "present" } else { "missing" });
                if exists {
                    if let Ok(out) = lab::netns::run("ip", &["-n", ns, "-br", "addr"]) {
                        for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with("lo ")) {
                            println!("    {line}");
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
