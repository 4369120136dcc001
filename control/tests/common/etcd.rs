//! A real etcd cluster for tests: Debian's `/usr/bin/etcd` (3.4), members listening on 127.0.0.1 (or given
//! addresses) with ports picked free, data directories on tmpfs (`/dev/shm`, since etcd 3.4 has no
//! `--unsafe-no-fsync`), fast raft timings (heartbeat 50 ms, election 500 ms) so leader changes and lease expiry
//! take well under a second of the test's time. Every member is started and killed by its PID; the data
//! directories are removed on drop. No root needed.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Where etcd is installed (`.ci/run` installs `etcd-server`).
pub const ETCD: &str = "/usr/bin/etcd";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Why tests that need etcd cannot run here, if they cannot.
pub fn etcd_missing() -> Option<String> {
    (!std::path::Path::new(ETCD).exists()).then(|| format!("{ETCD} not found (install etcd-server)"))
}

/// One member.
#[derive(Debug)]
pub struct Member {
    /// `m0`, `m1`, …
    pub name: String,
    /// Its client URL.
    pub client_url: String,
    peer_url: String,
    dir: PathBuf,
    child: Option<Child>,
    /// Run it inside this network namespace (`ip netns exec`), if any.
    netns: Option<String>,
}

/// A cluster of members.
#[derive(Debug)]
pub struct Etcd {
    /// The members, in start order.
    pub members: Vec<Member>,
    initial_cluster: String,
    root: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral port").local_addr().unwrap().port()
}

impl Etcd {
    /// `n` members on 127.0.0.1, started and ready.
    pub fn start(n: usize) -> Etcd {
        let addrs = vec![Ipv4Addr::LOCALHOST; n];
        Etcd::start_on(&addrs, &vec![None; n])
    }

    /// One member per address (each in the namespace given, if any), started and ready.
    pub fn start_on(addrs: &[Ipv4Addr], netns: &[Option<String>]) -> Etcd {
        let id = COUNTER.fetch_add(1, Ordering::Relaxed);
        let root = PathBuf::from(format!("/dev/shm/vswitch-etcd-{}-{id}", std::process::id()));
        std::fs::create_dir_all(&root).expect("create the data root on tmpfs");
        let loopback = addrs.iter().all(|a| a.is_loopback());
        let members: Vec<Member> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let (cp, pp) = if loopback { (free_port(), free_port()) } else { (2379, 2380) };
                Member {
                    name: format!("m{i}"),
                    client_url: format!("http://{a}:{cp}"),
                    peer_url: format!("http://{a}:{pp}"),
                    dir: root.join(format!("m{i}")),
                    child: None,
                    netns: netns.get(i).cloned().flatten(),
                }
            })
            .collect();
        let initial_cluster =
            members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
        let mut e = Etcd { members, initial_cluster, root };
        for i in 0..e.members.len() {
            e.spawn(i, "new");
        }
        e.wait_ready();
        e
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let m = &mut self.members[i];
        std::fs::create_dir_all(&m.dir).unwrap();
        let log = std::fs::File::create(m.dir.with_extension("log")).unwrap();
        let mut cmd = match &m.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, ETCD]);
                c
            }
            None => Command::new(ETCD),
        };
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.dir)
            .args(["--listen-client-urls", &m.client_url, "--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url, "--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", "vswitch-test"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        m.child = Some(cmd.spawn().expect("start etcd"));
    }

    /// Client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Kills member `i` (SIGKILL, by PID).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again with its data.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "existing");
    }

    /// The index of the current leader (asked of every live member).
    pub fn leader(&self) -> Option<usize> {
        let out = self.ctl(&["endpoint", "status", "-w", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        for s in v.as_array()? {
            let st = &s["Status"];
            if st["leader"] == st["header"]["member_id"] {
                let ep = s["Endpoint"].as_str()?;
                return self.members.iter().position(|m| m.client_url == ep);
            }
        }
        None
    }

    /// Runs `etcdctl` (v3 API) against the live members; `None` when it fails.
    pub fn ctl(&self, args: &[&str]) -> Option<String> {
        let live: Vec<String> =
            self.members.iter().filter(|m| m.child.is_some()).map(|m| m.client_url.clone()).collect();
        let mut cmd = match self.members.iter().find_map(|m| m.netns.clone()) {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns, "etcdctl"]);
                c
            }
            None => Command::new("etcdctl"),
        };
        let out = cmd
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", live.join(",")))
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=3s")
            .args(args)
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until every live member answers and there is a leader.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.ctl(&["endpoint", "health"]).is_some() && self.leader().is_some() {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not become healthy; logs in {}", self.root.display());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
