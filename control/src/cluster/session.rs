//! The membership session: the async task that talks to etcd for the agent (see the parent module for the
//! behaviour it guarantees). One task, on the membership thread's tokio runtime; it publishes [`Snapshot`]s and
//! takes [`Command`]s.

use super::schema::{Keys, FIRST_ALLOCATED_VNI};
use super::view::ClusterView;
use super::{Registration, Settings, Snapshot};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions,
    Txn, TxnOp, WatchOptions, WatchStream,
};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What the agent asks of the session.
#[derive(Debug)]
pub enum Command {
    /// Replace the registration (the configuration changed).
    Register(Registration),
    /// Revoke the lease and end.
    Stop,
}

/// Why a session with etcd ended (it is then retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A request failed or timed out.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A request took longer than the request timeout.
    #[error("etcd request timed out")]
    Timeout,
    /// A stream (watch or keep-alive) ended.
    #[error("the {0} stream ended")]
    StreamEnded(&'static str),
}

type Result<T> = std::result::Result<T, SessionError>;

/// Reconnect backoff: first delay and ceiling.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Runs until [`Command::Stop`] (or every command sender is gone): sessions with etcd, retried with backoff.
/// Nothing in the published view is ever dropped because etcd is unreachable.
pub async fn run(
    settings: Settings,
    mut registration: Registration,
    mut commands: mpsc::UnboundedReceiver<Command>,
    out: watch::Sender<Snapshot>,
) {
    let keys = Keys::new(&settings.cluster);
    let mut state =
        State { view: ClusterView::default(), lease: None, vnis: BTreeMap::new(), vni_errors: Vec::new(), endpoint: 0 };
    let mut backoff = BACKOFF_MIN;
    loop {
        let result = session(&settings, &keys, &mut registration, &mut commands, &out, &mut state).await;
        match result {
            Ok(()) => return,
            Err(e) => {
                state.endpoint += 1;
                if out.borrow().connected {
                    // The session had worked: this is a fresh outage, retry quickly.
                    backoff = BACKOFF_MIN;
                }
                tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64,
                    next = %settings.endpoints[state.endpoint % settings.endpoints.len().max(1)],
                    "etcd session lost: the data plane keeps its state; retrying");
                out.send_modify(|s| s.connected = false);
            }
        }
        // Wait out the backoff, still obeying commands.
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                c = commands.recv() => match c {
                    Some(Command::Register(r)) => registration = r,
                    Some(Command::Stop) | None => {
                        // Try once to revoke, so the others drop us now rather than after the TTL.
                        if let Some(id) = state.lease {
                            revoke(&settings, id).await;
                        }
                        return;
                    }
                },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// What survives from one session to the next.
struct State {
    view: ClusterView,
    lease: Option<i64>,
    vnis: BTreeMap<String, u32>,
    vni_errors: Vec<String>,
    /// The endpoint the next session connects to (an index into the list, modulo its length).
    endpoint: usize,
}

/// Connects to one endpoint, `endpoints[which % len]`. One at a time, not the client's balanced channel over
/// all of them: that one keeps sending requests to a dead member (every request then fails with "tcp connect
/// error"), whereas a session bound to one member fails as a whole and the next session tries the next member.
/// Requests require a leader, so a member cut off from the majority fails too instead of serving stale reads and
/// a watch that never fires.
async fn connect(settings: &Settings, which: usize) -> Result<Client> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(settings.request_timeout)
        .with_timeout(settings.request_timeout)
        .with_keep_alive(Duration::from_millis(500), settings.request_timeout)
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    let endpoint = &settings.endpoints[which % settings.endpoints.len().max(1)];
    Ok(timeout(settings, Client::connect([endpoint], Some(opts))).await??)
}

async fn timeout<F: std::future::Future>(settings: &Settings, f: F) -> Result<F::Output> {
    tokio::time::timeout(settings.request_timeout, f).await.map_err(|_| SessionError::Timeout)
}

async fn revoke(settings: &Settings, id: i64) {
    let done = async {
        let mut last = None;
        for which in 0..settings.endpoints.len() {
            let attempt = async {
                let mut c = connect(settings, which).await?;
                timeout(settings, c.lease_revoke(id)).await??;
                Ok::<(), SessionError>(())
            };
            match attempt.await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(SessionError::StreamEnded("endpoint list")))
    };
    match done.await {
        Ok(()) => tracing::info!(lease = id, "lease revoked: the other hosts drop this one now"),
        Err(e) => tracing::warn!(error = %e, "could not revoke the lease: the other hosts drop this one after its TTL"),
    }
}

/// One session: connect, lease, VNIs, register, list, then watch and keep alive until something fails or
/// the agent stops.
async fn session(
    settings: &Settings,
    keys: &Keys,
    registration: &mut Registration,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    out: &watch::Sender<Snapshot>,
    st: &mut State,
) -> Result<()> {
    let mut client = connect(settings, st.endpoint).await?;
    // Keep the lease of an earlier session if it is still alive: the registration then never disappeared.
    let alive = match st.lease {
        Some(id) => timeout(settings, client.lease_time_to_live(id, None)).await??.ttl() > 0,
        None => false,
    };
    if !alive {
        grant(settings, &mut client, st).await?;
    }
    let lease = st.lease.expect("granted above");
    allocate_vnis(settings, keys, &mut client, registration, st).await?;
    register(settings, keys, &mut client, registration, lease).await?;
    let (mut keeper, mut alive_stream) = timeout(settings, client.lease_keep_alive(lease)).await??;
    let mut watch = relist_and_watch(settings, keys, &mut client, st, out).await?;
    out.send_modify(|s| {
        s.connected = true;
        s.registered = true;
        s.lease = st.lease;
    });
    tracing::info!(lease, revision = st.view.revision, hosts = st.view.hosts.len(), "registered; watching");
    let mut tick = tokio::time::interval(keepalive_interval(settings));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => timeout(settings, keeper.keep_alive()).await??,
            m = alive_stream.message() => match m? {
                Some(r) if r.ttl() <= 0 => {
                    tracing::warn!(lease = r.id(), "lease lost (expired while unreachable?): registering again");
                    grant(settings, &mut client, st).await?;
                    let lease = st.lease.expect("granted above");
                    register(settings, keys, &mut client, registration, lease).await?;
                    (keeper, alive_stream) = keep_alive(settings, &mut client, lease).await?;
                    out.send_modify(|s| s.lease = st.lease);
                }
                Some(_) => {}
                None => return Err(SessionError::StreamEnded("keep-alive")),
            },
            m = watch.message() => match m? {
                Some(r) if r.canceled() || r.compact_revision() > 0 => {
                    tracing::warn!(compact_revision = r.compact_revision(), reason = r.cancel_reason(),
                        "watch cancelled (compaction): listing again");
                    watch = relist_and_watch(settings, keys, &mut client, st, out).await?;
                }
                Some(r) => {
                    let old = st.view.clone();
                    for ev in r.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let Ok(key) = kv.key_str() else { continue };
                        match ev.event_type() {
                            EventType::Put => st.view.put(keys, key, kv.value()),
                            EventType::Delete => st.view.delete(keys, key),
                        };
                        st.view.revision = st.view.revision.max(kv.mod_revision());
                    }
                    if let Some(h) = r.header() {
                        st.view.revision = st.view.revision.max(h.revision());
                    }
                    publish(st, &old, out);
                }
                None => return Err(SessionError::StreamEnded("watch")),
            },
            c = commands.recv() => match c {
                Some(Command::Register(r)) => {
                    *registration = r;
                    allocate_vnis(settings, keys, &mut client, registration, st).await?;
                    register(settings, keys, &mut client, registration, lease_of(st)).await?;
                    out.send_modify(|s| { s.vnis = st.vnis.clone(); s.vni_errors = st.vni_errors.clone(); });
                }
                Some(Command::Stop) | None => {
                    let id = lease_of(st);
                    match timeout(settings, client.lease_revoke(id)).await {
                        Ok(Ok(_)) => tracing::info!(lease = id, "lease revoked: the other hosts drop this one now"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "could not revoke the lease"),
                        Err(e) => tracing::warn!(error = %e, "could not revoke the lease"),
                    }
                    return Ok(());
                }
            },
        }
    }
}

fn lease_of(st: &State) -> i64 {
    st.lease.expect("a session has a lease")
}

/// Keep-alives go out three times per TTL (at least every 500 ms apart).
fn keepalive_interval(settings: &Settings) -> Duration {
    Duration::from_millis((settings.lease_ttl_secs.max(1) as u64 * 1000 / 3).max(500))
}

async fn grant(settings: &Settings, client: &mut Client, st: &mut State) -> Result<()> {
    let r = timeout(settings, client.lease_grant(settings.lease_ttl_secs, None)).await??;
    tracing::info!(lease = r.id(), ttl = r.ttl(), "lease granted");
    st.lease = Some(r.id());
    Ok(())
}

async fn keep_alive(
    settings: &Settings,
    client: &mut Client,
    lease: i64,
) -> Result<(LeaseKeeper, LeaseKeepAliveStream)> {
    Ok(timeout(settings, client.lease_keep_alive(lease)).await??)
}

/// Writes the host's registration and endpoints under `lease` in one transaction, and deletes endpoints of this
/// host left from an earlier registration (a restart with fewer containers).
async fn register(settings: &Settings, keys: &Keys, client: &mut Client, reg: &Registration, lease: i64) -> Result<()> {
    let prefix = keys.endpoints_of(&settings.host);
    let existing =
        timeout(settings, client.get(prefix.as_str(), Some(GetOptions::new().with_prefix().with_keys_only())))
            .await??;
    let wanted: Vec<String> = reg.endpoints.iter().map(|e| keys.endpoint(&settings.host, e)).collect();
    let mut ops = vec![TxnOp::put(
        keys.host(&settings.host),
        serde_json::to_vec(&reg.host).expect("a host record serializes"),
        Some(PutOptions::new().with_lease(lease)),
    )];
    for kv in existing.kvs() {
        if let Ok(k) = kv.key_str() {
            if !wanted.iter().any(|w| w == k) {
                ops.push(TxnOp::delete(k, None));
            }
        }
    }
    for (key, e) in wanted.iter().zip(&reg.endpoints) {
        let value = serde_json::to_vec(e).expect("an endpoint record serializes");
        ops.push(TxnOp::put(key.as_str(), value, Some(PutOptions::new().with_lease(lease))));
    }
    timeout(settings, client.txn(Txn::new().and_then(ops))).await??;
    tracing::info!(host = %settings.host, endpoints = reg.endpoints.len(), lease, "host registered");
    Ok(())
}

/// Lists the prefix into a fresh view (logging what changed since the last one), publishes it, and watches from
/// the revision after the list.
async fn relist_and_watch(
    settings: &Settings,
    keys: &Keys,
    client: &mut Client,
    st: &mut State,
    out: &watch::Sender<Snapshot>,
) -> Result<WatchStream> {
    let r = timeout(settings, client.get(keys.prefix(), Some(GetOptions::new().with_prefix()))).await??;
    let mut view = ClusterView { revision: r.header().map_or(0, |h| h.revision()), ..ClusterView::default() };
    for kv in r.kvs() {
        if let Ok(k) = kv.key_str() {
            view.put(keys, k, kv.value());
        }
    }
    let old = std::mem::replace(&mut st.view, view);
    publish(st, &old, out);
    let opts = WatchOptions::new().with_prefix().with_start_revision(st.view.revision + 1);
    Ok(timeout(settings, client.watch(keys.prefix(), Some(opts))).await??)
}

/// Publishes the view (when it changed), logging the differences.
fn publish(st: &State, old: &ClusterView, out: &watch::Sender<Snapshot>) {
    let changes = st.view.changes_from(old);
    for c in &changes {
        tracing::info!(change = %c, revision = st.view.revision, "cluster");
    }
    out.send_modify(|s| {
        s.view = st.view.clone();
        s.vnis = st.vnis.clone();
        s.vni_errors = st.vni_errors.clone();
        s.seq += 1;
    });
}

/// Makes sure every overlay network of the registration has a VNI: the one already in etcd, else the configured
/// one, else a new one (create-if-absent on `vni/<network>` and `vni-owner/<vni>`). A configured VNI that the
/// cluster gave another network, or that differs from the network's recorded one, is an error for that network
/// (reported in the snapshot; the network stays local until the configuration is fixed).
async fn allocate_vnis(
    settings: &Settings,
    keys: &Keys,
    client: &mut Client,
    reg: &Registration,
    st: &mut State,
) -> Result<()> {
    let mut vnis = BTreeMap::new();
    let mut errors = Vec::new();
    for (net, wanted) in &reg.networks {
        match vni_for(settings, keys, client, net, *wanted).await? {
            Ok(v) => {
                vnis.insert(net.clone(), v);
            }
            Err(e) => {
                tracing::error!(network = %net, error = %e, "no VNI: the network stays local to this host");
                errors.push(format!("network {net}: {e}"));
            }
        }
    }
    st.vnis = vnis;
    st.vni_errors = errors;
    Ok(())
}

/// Most allocation attempts for one network (each lost race moves to the next free VNI).
const VNI_ATTEMPTS: usize = 64;

async fn vni_for(
    settings: &Settings,
    keys: &Keys,
    client: &mut Client,
    net: &str,
    wanted: Option<u32>,
) -> Result<std::result::Result<u32, String>> {
    for _ in 0..VNI_ATTEMPTS {
        let r = timeout(settings, client.get(keys.vni(net), None)).await??;
        if let Some(kv) = r.kvs().first() {
            let have = kv.value_str().ok().and_then(|s| s.trim().parse::<u32>().ok());
            return Ok(match (have, wanted) {
                (Some(h), Some(w)) if h != w => {
                    Err(format!("configured vni {w}, but the cluster gave the network vni {h} (key {})", keys.vni(net)))
                }
                (Some(h), _) => Ok(h),
                (None, _) => Err(format!("key {} holds no VNI", keys.vni(net))),
            });
        }
        let candidate = match wanted {
            Some(w) => w,
            None => {
                let used = timeout(
                    settings,
                    client.get(keys.vni_owners(), Some(GetOptions::new().with_prefix().with_keys_only())),
                )
                .await??;
                let taken: std::collections::BTreeSet<u32> =
                    used.kvs().iter().filter_map(|kv| kv.key_str().ok()?.rsplit('/').next()?.parse().ok()).collect();
                (FIRST_ALLOCATED_VNI..=vswitch_api::overlay::MAX_VNI)
                    .find(|v| !taken.contains(v))
                    .ok_or_else(|| SessionError::Etcd(etcd_client::Error::InvalidArgs("no free VNI".into())))?
            }
        };
        let txn = Txn::new()
            .when([
                Compare::version(keys.vni(net), CompareOp::Equal, 0),
                Compare::version(keys.vni_owner(candidate), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(keys.vni(net), candidate.to_string(), None),
                TxnOp::put(keys.vni_owner(candidate), net, None),
            ]);
        let r = timeout(settings, client.txn(txn)).await??;
        if r.succeeded() {
            tracing::info!(network = net, vni = candidate, "VNI recorded in the cluster");
            return Ok(Ok(candidate));
        }
        if let Some(w) = wanted {
            // Either the network got one meanwhile (loop: read it) or another network holds `w`.
            let owner = timeout(settings, client.get(keys.vni_owner(w), None)).await??;
            if let Some(kv) = owner.kvs().first() {
                let holder = kv.value_str().unwrap_or("?");
                if holder != net {
                    return Ok(Err(format!("vni {w} belongs to network {holder:?} in this cluster")));
                }
            }
        }
    }
    Ok(Err(format!("no VNI after {VNI_ATTEMPTS} attempts (contention)")))
}
