//! The real `vswitch-agent` and `vswitchctl` binaries against a fake control server (`common/fake.rs`) that
//! speaks the real protocol: exit statuses, what is sent (one whole-config apply, nothing for an invalid file or
//! a dry run), the watch loop (edit, write-rename, invalid edit, SIGHUP, server restart), and the CLI's tables,
//! `--json` and error messages. Needs no privileges; the live tests against vswitchd are in `live.rs`.

mod common;

use common::fake::{FakeServer, State};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use vswitch_api::config::Config;
use vswitch_api::proto::{ErrorBody, ErrorKind, Op};

const AGENT: &str = env!("CARGO_BIN_EXE_vswitch-agent");
const CTL: &str = env!("CARGO_BIN_EXE_vswitchctl");

const CONFIG: &str = r#"
[[network]]
name = "bridge"
subnet = "172.17.0.0/16"
gateway = "172.17.0.1"

[[port]]
name = "c1"
kind = "tap"
ifname = "vs-c1"
network = "bridge"
"#;

/// Two errors (line 9 and line 11) and a valid rest: all must be reported.
const INVALID: &str = r#"
[[network]]
name = "bridge"
subnet = "172.17.0.0/16"

[[port]]
name = "c1"
kind = "tap"
network = "brige"
ifname = "vs-c1"
mtu = 10
"#;

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).env_remove("VSWITCH_SOCKET").output().expect("run the binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir { dir: tempfile::tempdir().unwrap() }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn once_applies_the_whole_config_in_one_request_and_prints_the_diff() {
    let d = Dir::new();
    let cfg = d.write("desired.toml", CONFIG);
    let sock = d.path("ctl.sock");
    let server = FakeServer::start(&sock, State::default(), 100);
    let out = run(AGENT, &["--config", s(&cfg), "--socket", s(&sock), "--once"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("+ network bridge: subnet=172.17.0.0/16, gateway=172.17.0.1\n"), "{stdout}");
    assert!(stdout.contains("+ port c1: kind=tap, ifname=vs-c1, network=bridge\n"), "{stdout}");
    assert!(stdout.contains("applied 2 change(s): generation 1"), "{stdout}");
    let st = server.state();
    assert_eq!(st.applies(), vec![Config::parse(CONFIG, "x").unwrap()], "one apply with the whole config");
    let Some(Op::Apply(args)) = st.requests.iter().find(|op| matches!(op, Op::Apply(_))) else { unreachable!() };
    assert_eq!(args.expect_generation, Some(0), "guarded by the generation read");
    assert_eq!(args.origin.as_deref(), Some(s(&cfg)));
    drop(st);

    // Again: in sync, nothing sent.
    let out = run(AGENT, &["--config", s(&cfg), "--socket", s(&sock), "--once"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "in sync (generation 1): nothing to do\n");
    assert_eq!(server.state().applies().len(), 1);
}

#[test]
fn an_invalid_file_reports_every_error_exits_2_and_sends_nothing() {
    let d = Dir::new();
    let cfg = d.write("bad.toml", INVALID);
    let sock = d.path("ctl.sock");
    let server = FakeServer::start(&sock, State::default(), 100);
    for extra in [&["--once"][..], &["--dry-run"], &[]] {
        let mut args = vec!["--config", s(&cfg), "--socket", s(&sock)];
        args.extend_from_slice(extra);
        let out = run(AGENT, &args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {out:?}");
        let stderr = text(&out.stderr);
        let origin = s(&cfg);
        assert!(stderr.contains(&format!("{origin}:9: port c1: network \"brige\" does not exist")), "{stderr}");
        assert!(stderr.contains(&format!("{origin}:11: port c1: mtu 10")), "{stderr}");
        assert!(stderr.contains("invalid, nothing sent"), "{stderr}");
    }
    assert!(server.state().requests.is_empty(), "nothing sent: {:?}", server.state().requests);
}

#[test]
fn dry_run_prints_the_diff_and_sends_no_apply() {
    let d = Dir::new();
    let running = Config::parse("[[network]]\nname = \"old\"\n", "r").unwrap();
    let cfg = d.write("desired.toml", CONFIG);
    let sock = d.path("ctl.sock");
    let server = FakeServer::start(&sock, State { config: running, generation: 4, ..State::default() }, 100);
    let out = run(AGENT, &["--config", s(&cfg), "--socket", s(&sock), "--dry-run"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("- network old\n+ network bridge"), "{stdout}");
    assert!(stdout.ends_with("dry run: 3 change(s), nothing sent\n"), "{stdout}");
    assert!(server.state().applies().is_empty());
    assert_eq!(server.state().generation, 4);
}

#[test]
fn unreachable_or_refusing_switch_exits_1_with_a_clear_message() {
    let d = Dir::new();
    let cfg = d.write("desired.toml", CONFIG);
    let sock = d.path("ctl.sock");
    let out = run(AGENT, &["--config", s(&cfg), "--socket", s(&sock), "--once"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("no control socket at {}", s(&sock))), "{stderr}");

    // A stale socket file: nothing listens.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let out = run(CTL, &["--socket", s(&sock), "port", "ls"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains(&format!("nothing listens on {}", s(&sock))), "{out:?}");

    let mut state = State::default();
    state.errors.insert(
        "apply",
        ErrorBody::field(ErrorKind::PortFailed, "config", "port c1: cannot create tap vs-c1: busy".into()),
    );
    let _server = FakeServer::start(&sock, state, 100);
    let out = run(AGENT, &["--config", s(&cfg), "--socket", s(&sock), "--once"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("apply failed (running configuration unchanged): vswitchd refused the request: port_failed (field `config`): port c1: cannot create tap vs-c1: busy"),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("+ port c1"), "the attempted changes are shown: {out:?}");
}

/// The agent in watch mode as a child process, killed (by its PID) when dropped.
struct Agent {
    child: Child,
    stdout: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::mpsc::Receiver<String>,
    seen_out: String,
    seen_err: String,
}

impl Agent {
    fn start(cfg: &Path, sock: &Path) -> Agent {
        let mut child = Command::new(AGENT)
            .args(["--config", s(cfg), "--socket", s(sock)])
            .args(["--poll-ms", "20", "--settle-ms", "100", "--check-ms", "100"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vswitch-agent");
        let pipe = |mut r: Box<dyn Read + Send>| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 || tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = pipe(Box::new(child.stdout.take().unwrap()));
        let stderr = pipe(Box::new(child.stderr.take().unwrap()));
        Agent { child, stdout, stderr, seen_out: String::new(), seen_err: String::new() }
    }

    fn drain(&mut self) {
        while let Ok(s) = self.stdout.try_recv() {
            self.seen_out.push_str(&s);
        }
        while let Ok(s) = self.stderr.try_recv() {
            self.seen_err.push_str(&s);
        }
    }

    /// Waits until stderr (the log) or stdout (the plan) contains `needle`.
    fn wait_output(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.drain();
            if self.seen_out.contains(needle) || self.seen_err.contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("agent never printed {needle:?}\nstdout:\n{}\nstderr:\n{}", self.seen_out, self.seen_err);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn watch_mode_follows_edits_ignores_invalid_ones_and_repushes_after_a_restart() {
    let d = Dir::new();
    let cfg = d.write("desired.toml", CONFIG);
    let sock = d.path("ctl.sock");
    let first = Config::parse(CONFIG, "x").unwrap();
    let server = FakeServer::start(&sock, State::default(), 100);
    let mut agent = Agent::start(&cfg, &sock);
    server.wait_for("the first apply", WAIT, |st| st.applies().len() == 1);
    assert_eq!(server.state().config, first);

    // An editor's save: write a new file, rename it over the old one.
    let edited = CONFIG.replace("network = \"bridge\"", "network = \"bridge\"\nmtu = 1400");
    let tmp = d.write(".desired.toml.swp", &edited);
    std::fs::rename(&tmp, &cfg).unwrap();
    server.wait_for("the edit applied", WAIT, |st| st.applies().len() == 2);
    assert_eq!(server.state().config, Config::parse(&edited, "x").unwrap());
    agent.wait_output("~ port c1: mtu 1500→1400", WAIT);

    // An invalid edit: reported, nothing sent, running config unchanged.
    std::fs::write(&cfg, INVALID).unwrap();
    agent.wait_output(&format!("{}:9: port c1: network \"brige\" does not exist", s(&cfg)), WAIT);
    agent.wait_output("the running configuration stays as it is", WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.state().applies().len(), 2);
    assert_eq!(server.state().config, Config::parse(&edited, "x").unwrap());

    // SIGHUP re-reads at once (the file is restored without waiting for the poll to notice: settle is 100 ms,
    // so either path applies it; the log line shows the signal was handled).
    std::fs::write(&cfg, CONFIG).unwrap();
    // SAFETY: kill(2) on the PID of the child this test started and still owns (not yet waited for).
    let rc = unsafe { libc::kill(agent.child.id() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0);
    agent.wait_output("SIGHUP: re-reading the configuration", WAIT);
    server.wait_for("the restored file applied", WAIT, |st| st.applies().len() == 3);
    assert_eq!(server.state().config, first);

    // vswitchd restarts empty: the agent reconnects and pushes everything again.
    let old = server.stop();
    assert_eq!(old.applies().len(), 3);
    let server = FakeServer::start(&sock, State::default(), 200);
    server.wait_for("the re-push after the restart", WAIT, |st| st.applies().len() == 1);
    assert_eq!(server.state().config, first);
    assert_eq!(server.state().generation, 1);

    // A restarted switch already at the desired configuration gets no apply.
    let old = server.stop();
    let server = FakeServer::start(&sock, State { config: old.config, generation: 1, ..State::default() }, 300);
    server.wait_for("the agent to look", WAIT, |st| st.requests.iter().any(|op| matches!(op, Op::GetConfig)));
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.state().applies().is_empty(), "{:?}", server.state().requests);
    drop(agent);
}

/// A port whose change vswitchd could not make keeps its old settings in the running configuration: the agent
/// applies again, with backoff, until the change is made, without a file change.
#[test]
fn watch_mode_applies_again_until_a_failed_port_change_is_made() {
    let d = Dir::new();
    let cfg = d.write("desired.toml", CONFIG);
    let sock = d.path("ctl.sock");
    let server = FakeServer::start(&sock, State::default(), 100);
    let _agent = Agent::start(&cfg, &sock);
    server.wait_for("the first apply", WAIT, |st| st.applies().len() == 1);

    server.state().refuse_port_changes = 2;
    let edited = CONFIG.replace("network = \"bridge\"", "network = \"bridge\"\nmtu = 1400");
    std::fs::write(&cfg, &edited).unwrap();
    server
        .wait_for("the change made at the third attempt", WAIT, |st| st.config == Config::parse(&edited, "x").unwrap());
    assert_eq!(server.state().applies().len(), 4, "the edit, then twice more: {:?}", server.state().requests);
    assert_eq!(server.state().refuse_port_changes, 0);
    // In sync now: no more applies.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(server.state().applies().len(), 4);
}

#[test]
fn vswitchctl_prints_tables_json_and_server_errors() {
    let d = Dir::new();
    let sock = d.path("ctl.sock");
    let mut state = State::default();
    let fdb = serde_json::json!([
        {"network": "bridge", "mac": "02:00:00:00:00:0a", "port": "c1", "age_ms": 2500, "future_field": 1}
    ]);
    state.canned.insert("fdb_show", fdb.clone());
    state.errors.insert(
        "network_inspect",
        ErrorBody::field(ErrorKind::NotFound, "name", "no network \"brige\"; known networks: bridge".into()),
    );
    let server = FakeServer::start(&sock, state, 100);

    let out = run(CTL, &["--socket", s(&sock), "fdb", "show", "bridge"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "NETWORK  MAC                PORT   AGE\nbridge   02:00:00:00:00:0a  c1    2.5s\n");
    assert!(matches!(server.state().requests.last(), Some(Op::FdbShow { network: Some(n) }) if n == "bridge"));

    // --json: the result as sent, unknown fields included; the socket from the environment.
    let out = Command::new(CTL).args(["--json", "fdb", "show"]).env("VSWITCH_SOCKET", &sock).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, fdb);

    let out = run(CTL, &["--socket", s(&sock), "network", "inspect", "brige"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "vswitchctl: vswitchd refused the request: not_found (field `name`): no network \"brige\"; known networks: bridge\n"
    );

    let out = run(CTL, &["--socket", s(&sock), "config", "show"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "# generation 0\n");

    let out = run(CTL, &["--socket", s(&sock), "version"]);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("vswitchd fake (protocol 1), pid 100"), "{out:?}");

    let missing = d.path("nope.sock");
    let out = run(CTL, &["--socket", s(&missing), "port", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("vswitchctl: no control socket at {0}: is vswitchd running with --socket {0}?\n", s(&missing))
    );
    let out = run(CTL, &["--socket", s(&sock), "fdb"]);
    assert_eq!(out.status.code(), Some(2), "usage error: {out:?}");
}
