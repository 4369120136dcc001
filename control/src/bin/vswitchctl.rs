//! `vswitchctl`: the operator's view of a running vswitchd, over its control socket.
//!
//! ```text
//! vswitchctl [--socket PATH] [--json] COMMAND
//!   network ls | network inspect NAME
//!   port ls
//!   fdb show [NETWORK]
//!   route show
//!   neigh show
//!   conntrack ls [--limit N] | conntrack flush
//!   stats
//!   trace PORT FRAME_HEX
//!   config show
//!   version
//! ```
//!
//! Tables for people by default (`control::render`); `--json` prints the op's result exactly as vswitchd sent it
//! (the protocol's wire types, `vswitch_api::proto`), pretty-printed. The socket is `--socket`, else
//! `$VSWITCH_SOCKET`, else `/run/vswitch/vswitchd.sock`.
//!
//! Exit status: 0 on success; 1 when vswitchd cannot be reached or answers with an error (the message says
//! which: no socket at the path, permission denied, nothing listening, or the server's error kind, the request
//! field it names and its message); 2 for a bad command line.

use clap::{Parser, Subcommand};
use control::client::{Client, DEFAULT_SOCKET};
use control::render;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vswitch_api::proto::{
    ConfigResult, ConntrackFlushed, ConntrackList, FdbRow, HelloResult, NeighRow, NetworkInspect, NetworkSummary, Op,
    PortRow, RouteRow, StatsResult, TraceResult, PROTOCOL_VERSION,
};

#[derive(Parser, Debug)]
#[command(name = "vswitchctl", version, about = "Inspect a running vswitchd")]
struct Cli {
    /// vswitchd's control socket.
    #[arg(long, global = true, value_name = "PATH", env = "VSWITCH_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the result as JSON (the protocol's wire form) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Networks (bridge domains).
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Ports.
    #[command(subcommand)]
    Port(PortCmd),
    /// MAC tables.
    #[command(subcommand)]
    Fdb(FdbCmd),
    /// The routing table.
    #[command(subcommand)]
    Route(ShowCmd),
    /// The neighbour (ARP) table.
    #[command(subcommand)]
    Neigh(ShowCmd),
    /// Tracked connections.
    #[command(subcommand)]
    Conntrack(ConntrackCmd),
    /// Every counter (zero counters left out of the table; --json has them all).
    Stats,
    /// Run one frame through the pipeline (on a scratch copy of the switch) and show each stage's decision.
    Trace {
        /// The port the frame arrives on.
        port: String,
        /// The frame from the destination MAC on, in hexadecimal (spaces and `:` allowed).
        frame_hex: String,
    },
    /// The running configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// This tool's version and vswitchd's.
    Version,
}

#[derive(Subcommand, Debug)]
enum NetworkCmd {
    /// List networks.
    Ls,
    /// One network: settings, MAC table counters and entries.
    Inspect {
        /// The network's name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum PortCmd {
    /// List ports with their counters.
    Ls,
}

#[derive(Subcommand, Debug)]
enum FdbCmd {
    /// Learned MAC addresses.
    Show {
        /// Only this network.
        network: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ShowCmd {
    /// Show the table.
    Show,
}

#[derive(Subcommand, Debug)]
enum ConntrackCmd {
    /// List tracked connections.
    Ls {
        /// At most this many (the server's default, 1,000, when absent; the server takes at most 10,000).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Remove every tracked connection (and release their NAT bindings).
    Flush,
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Print the running configuration as TOML (--json: with its generation and origin).
    Show,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                // A reader that went away (`| head`) is not a failure.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vswitchctl: writing the output: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("vswitchctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Connects, sends `op` and renders its result (`T`, the op's result type) with `human`, or as JSON.
fn show<T: DeserializeOwned>(
    socket: &Path,
    json: bool,
    op: Op,
    human: impl FnOnce(&T) -> Result<String, String>,
) -> Result<String, String> {
    let mut client = Client::connect(socket).map_err(|e| e.to_string())?;
    if json {
        // The result as it came: fields this build does not know are kept.
        let value: Value = client.call(op).map_err(|e| e.to_string())?;
        let mut text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
        text.push('\n');
        return Ok(text);
    }
    let result: T = client.call(op).map_err(|e| e.to_string())?;
    human(&result)
}

/// `version`: the client's version is printed even when vswitchd is down; the status then says it was not reached.
fn version(socket: &Path, json: bool) -> Result<String, String> {
    let hello = Client::connect(socket).and_then(|mut c| c.call::<HelloResult>(Op::Hello));
    match hello {
        Ok(h) if json => {
            let v = serde_json::json!({
                "client": {"name": "vswitchctl", "version": env!("CARGO_PKG_VERSION"),
                           "protocol_version": PROTOCOL_VERSION},
                "server": h,
            });
            Ok(format!("{}\n", serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?))
        }
        Ok(h) => Ok(render::version(Some(&h))),
        Err(e) => {
            print!("{}", render::version(None));
            Err(e.to_string())
        }
    }
}

fn run(cli: &Cli) -> Result<String, String> {
    let (s, json) = (cli.socket.as_path(), cli.json);
    let ok = |s: String| -> Result<String, String> { Ok(s) };
    match &cli.command {
        Command::Network(NetworkCmd::Ls) => {
            show(s, json, Op::NetworkLs, |r: &Vec<NetworkSummary>| ok(render::networks(r)))
        }
        Command::Network(NetworkCmd::Inspect { name }) => {
            show(s, json, Op::NetworkInspect { name: name.clone() }, |r: &NetworkInspect| {
                ok(render::network_inspect(r))
            })
        }
        Command::Port(PortCmd::Ls) => show(s, json, Op::PortLs, |r: &Vec<PortRow>| ok(render::ports(r))),
        Command::Fdb(FdbCmd::Show { network }) => {
            show(s, json, Op::FdbShow { network: network.clone() }, |r: &Vec<FdbRow>| ok(render::fdb(r)))
        }
        Command::Route(ShowCmd::Show) => show(s, json, Op::RouteShow, |r: &Vec<RouteRow>| ok(render::routes(r))),
        Command::Neigh(ShowCmd::Show) => show(s, json, Op::NeighShow, |r: &Vec<NeighRow>| ok(render::neighbours(r))),
        Command::Conntrack(ConntrackCmd::Ls { limit }) => {
            show(s, json, Op::ConntrackLs { limit: *limit }, |r: &ConntrackList| ok(render::conntrack(r)))
        }
        Command::Conntrack(ConntrackCmd::Flush) => {
            show(s, json, Op::ConntrackFlush, |r: &ConntrackFlushed| ok(render::conntrack_flushed(r)))
        }
        Command::Stats => show(s, json, Op::Stats, |r: &StatsResult| ok(render::stats(r))),
        Command::Trace { port, frame_hex } => {
            let op = Op::Trace { port: port.clone(), frame_hex: frame_hex.clone() };
            show(s, json, op, |r: &TraceResult| ok(render::trace(r)))
        }
        Command::Config(ConfigCmd::Show) => show(s, json, Op::GetConfig, |r: &ConfigResult| {
            render::config(r).map_err(|e| format!("cannot print the running configuration as TOML: {e}"))
        }),
        Command::Version => version(s, json),
    }
}
