//! Cluster membership in etcd: how `vswitch-agent` announces its host and local endpoints, learns the other
//! hosts' and allocates VNIs, so that overlay networks span hosts.
//!
//! The key schema is in [`schema`] (`/vswitch/v1/<cluster>/…`). The behaviour, which the live tests check:
//! - **One lease per host** (`lease_ttl_secs`), kept alive three times per TTL. The host's registration (VTEP
//!   address, VXLAN UDP port, underlay MTU, networks) and its local endpoints (MAC, IP, network) are written in
//!   **one transaction** under that lease, so they appear and vanish together; endpoints left over from an
//!   earlier registration of the same host are deleted in the same transaction.
//! - **List, then watch** the whole prefix from the revision after the list; each watch response (one batch of
//!   events) becomes one new [`Snapshot`], which the agent turns into one `overlay_update` of vswitchd.
//! - **Compaction** (the watch is cancelled because its revision is gone): list again, log the difference from
//!   what was known, and watch from the new revision.
//! - **Lease lost** (a keep-alive answered with TTL 0, e.g. after an outage longer than the TTL): grant a new
//!   lease and register again. The agent never exits for it (flannel's daemon does).
//! - **etcd unreachable** (or without quorum): the session is retried with backoff (100 ms doubling to 2 s), each
//!   time on the next endpoint of the list (a session talks to one member and requires it to have a leader); the
//!   last snapshot stays published with `connected = false`, so vswitchd keeps forwarding with what it had:
//!   nothing is flushed because the store is away. A reconnect reuses the lease if it is still alive.
//! - **Stop** (SIGTERM/SIGINT): the lease is revoked, so the other hosts drop this one at once (a round trip)
//!   rather than after the TTL.
//! - **VNIs**: a network that omits `vni` gets one by create-if-absent on `vni/<network>` and
//!   `vni-owner/<vni>` (the smallest free one from 4096); a network that names one claims it the same way; a
//!   VNI recorded for the network, or held by another, wins over the configuration, which is then an error for
//!   that network (logged; it stays local to the host).
//!
//! Threads: [`Membership::start`] runs the session ([`session::run`]) on a thread of its own with a
//! single-threaded tokio runtime; the agent's main loop reads snapshots and sends commands without blocking.

pub mod from_config;
pub mod schema;
pub mod session;
pub mod view;

use schema::{EndpointRecord, HostRecord};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use view::ClusterView;

/// How to reach the cluster and who we are in it (`[cluster]` of the agent's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The cluster's name (the key prefix's last part).
    pub cluster: String,
    /// This host's name (unique in the cluster).
    pub host: String,
    /// etcd client URLs (`http://198.51.100.11:2379`).
    pub endpoints: Vec<String>,
    /// The lease's time to live, in seconds (etcd's minimum is about 2).
    pub lease_ttl_secs: i64,
    /// How long one request (or a connection attempt) may take before the session is considered lost.
    pub request_timeout: Duration,
}

/// What this host announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// `hosts/<host>`.
    pub host: HostRecord,
    /// Its local endpoints.
    pub endpoints: Vec<EndpointRecord>,
    /// Its overlay networks and their configured VNI (`None`: allocate one).
    pub networks: Vec<(String, Option<u32>)>,
}

/// What the session knows, published after every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The cluster as last listed and watched.
    pub view: ClusterView,
    /// VNIs of this host's overlay networks.
    pub vnis: BTreeMap<String, u32>,
    /// Networks without a VNI, and why.
    pub vni_errors: Vec<String>,
    /// True while a session with etcd works.
    pub connected: bool,
    /// True once this host was registered.
    pub registered: bool,
    /// The lease in use.
    pub lease: Option<i64>,
    /// Bumped by every published change of the view.
    pub seq: u64,
}

/// The running membership: a thread with the etcd session.
#[derive(Debug)]
pub struct Membership {
    snapshots: watch::Receiver<Snapshot>,
    commands: mpsc::UnboundedSender<session::Command>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Membership {
    /// Starts the session on its own thread.
    pub fn start(settings: Settings, registration: Registration) -> std::io::Result<Membership> {
        let (out, snapshots) = watch::channel(Snapshot::default());
        let (commands, rx) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new()
            .name("membership".into())
            .spawn(move || runtime.block_on(session::run(settings, registration, rx, out)))?;
        Ok(Membership { snapshots, commands, thread: Some(thread) })
    }

    /// The latest snapshot if it changed since the last call (`force`: in any case).
    pub fn changed(&mut self, force: bool) -> Option<Snapshot> {
        let changed = self.snapshots.has_changed().unwrap_or(false);
        (changed || force).then(|| self.snapshots.borrow_and_update().clone())
    }

    /// The latest snapshot.
    pub fn latest(&self) -> Snapshot {
        self.snapshots.borrow().clone()
    }

    /// Waits (blocking) up to `limit` for a snapshot satisfying `cond`; returns the last one seen.
    pub fn wait_for(&mut self, limit: Duration, cond: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let s = self.snapshots.borrow_and_update().clone();
            if cond(&s) || std::time::Instant::now() >= deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the registration (written at once when etcd is reachable, else on reconnection).
    pub fn register(&self, registration: Registration) {
        let _ = self.commands.send(session::Command::Register(registration));
    }

    /// Revokes the lease (so the others drop this host now) and ends the session, waiting for it at most
    /// `limit`.
    pub fn stop(mut self, limit: Duration) {
        let _ = self.commands.send(session::Command::Stop);
        if let Some(t) = self.thread.take() {
            let deadline = std::time::Instant::now() + limit;
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}
