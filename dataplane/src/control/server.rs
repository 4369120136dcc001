//! The control socket: a Unix stream socket serving the [`crate::control::proto`] protocol for a [`Daemon`].
//!
//! - [`ControlSocket::bind`] creates the parent directory if needed, refuses a path on which another process
//!   answers (a second vswitchd), removes a stale socket file left by a dead one (never any other kind of
//!   file), and binds with mode 0600 (inside a private directory, then renamed into place, so the socket is
//!   never reachable by others, even for a moment). Dropping the socket removes the file.
//! - [`ControlSocket::serve`] runs the accept loop on its own thread; each connection gets a thread. A
//!   connection reads request lines of at most [`MAX_REQUEST_BYTES`]; a longer line gets `too_large` and the
//!   connection is closed; any other bad line gets its error and the connection goes on.
//!
//! # Hostile clients
//!
//! - **Who**: every connection's peer credentials (`SO_PEERCRED`) are checked and logged: root, vswitchd's own
//!   uid, or a member of the group given to [`ControlSocket::serve`] (`vswitchd run --socket-group`, which
//!   also makes the socket mode 0660 owned by that group) may talk, whether the group is the peer's primary one
//!   or a supplementary one (`SO_PEERGROUPS`); anyone else gets one `internal` error.
//! - **Slots**: at most [`MAX_CONNECTIONS`] connections are served at once, of which [`RESERVED_CONNECTIONS`]
//!   only root or vswitchd's uid may take (so the agent and root's vswitchctl get in whatever the group's
//!   members do: those never hold more than `MAX_CONNECTIONS - RESERVED_CONNECTIONS`). When a peer's slots are taken, a new
//!   connection evicts the one that has been idle (no byte received, no request being handled) the longest
//!   (a group member: the longest idle of the group's), instead of being refused: idle or half-line clients
//!   cannot lock out a new client. Only when every connection it may evict is busy is the new one refused;
//!   a busy connection is busy for at most the request's handling plus [`RESPONSE_TIMEOUT`].
//! - **Timeouts**: a connection that sends nothing for [`IDLE_TIMEOUT`] is closed, so is one whose request line
//!   is not complete [`LINE_TIMEOUT`] after its first byte (checked after every read, so dripping bytes does
//!   not defer it); a response whose writes make no progress for [`WRITE_TIMEOUT`] (a client that does not
//!   read), or that is not written in full within [`RESPONSE_TIMEOUT`] (one that reads slowly), closes the
//!   connection. [`Limits`] holds these figures; [`ControlSocket::serve_with`] takes others (tests).
//! - **Slots are given back on every path**: a connection's slot is a guard its thread owns, released however
//!   the thread ends, a panic included.
//! - **Memory**: a line is buffered up to [`SMALL_LINE`] freely; beyond, its bytes come from a switch-wide
//!   budget of [`LARGE_LINE_BUDGET`] (a line that cannot get them is refused `too_large` with a message saying
//!   the server is busy), and large lines are parsed one at a time (parsing builds a JSON tree up to ~22× the
//!   line for `[{},{},…]`: at most one such tree exists; measured peak RSS 219 MB with 8 clients sending 8 MiB
//!   lines at once, README § Security model). Bound on what connections hold: `MAX_CONNECTIONS × SMALL_LINE` +
//!   `LARGE_LINE_BUDGET` + one parse of a [`MAX_REQUEST_BYTES`] line.
//! - **Stop**: when the stop flag is set the accept loop (which polls it every [`POLL`]) shuts every
//!   connection's socket down, so a thread blocked writing to a client that does not read returns at once;
//!   connections poll the flag every [`POLL`] while idle. Stopping takes about [`POLL`], whatever clients do
//!   (a request being handled is finished first).
//!
//! Threads: one accept thread plus one per connection; requests are answered by [`Daemon::handle`], which is
//! `Sync`.

use crate::control::daemon::Daemon;
use crate::control::proto::{ErrorBody, ErrorKind, Response, MAX_REQUEST_BYTES};
use std::io::{BufRead, BufReader, ErrorKind as IoKind, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most client connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// Of [`MAX_CONNECTIONS`], how many only root or vswitchd's own uid may take (the agent, root's vswitchctl):
/// peers admitted through the socket's group are refused once `MAX_CONNECTIONS - RESERVED_CONNECTIONS` are
/// served and none is idle.
pub const RESERVED_CONNECTIONS: usize = 4;

/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A request line must be complete this long after its first byte.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Each write of a response must make progress within this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A whole response must be written within this long (a client that reads slowly but steadily is cut then).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of a request line a connection buffers without asking the shared budget.
pub const SMALL_LINE: usize = 64 << 10;

/// Bytes of request lines beyond [`SMALL_LINE`] all connections may buffer together.
pub const LARGE_LINE_BUDGET: usize = 2 * MAX_REQUEST_BYTES;

/// How often the accept loop and idle connections check the stop flag.
pub const POLL: Duration = Duration::from_millis(50);

/// The limits a served socket applies; [`Limits::default`] is what vswitchd uses (the constants above). Tests
/// shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once ([`MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Of those, how many only root or vswitchd's uid may take ([`RESERVED_CONNECTIONS`]).
    pub reserved: usize,
    /// Silence before a connection is closed ([`IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
    /// A request line's time from its first byte to its newline ([`LINE_TIMEOUT`]).
    pub line_timeout: Duration,
    /// The longest one write of a response may block ([`WRITE_TIMEOUT`]).
    pub write_timeout: Duration,
    /// A whole response's time to be written ([`RESPONSE_TIMEOUT`]).
    pub response_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            reserved: RESERVED_CONNECTIONS,
            idle_timeout: IDLE_TIMEOUT,
            line_timeout: LINE_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            response_timeout: RESPONSE_TIMEOUT,
        }
    }
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process serves the path.
    #[error("control socket {0}: another vswitchd is already serving on it")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("control socket {0}: exists and is not a socket; not removing it")]
    NotASocket(PathBuf),
    /// A system call failed.
    #[error("control socket {path}: {what}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// A bound control socket; the file is removed when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl ControlSocket {
    /// Binds `path` (see the module documentation).
    pub fn bind(path: &Path) -> Result<ControlSocket, BindError> {
        let io = |what| move |source| BindError::Io { path: path.to_path_buf(), what, source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("creating its directory"))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(BindError::InUse(path.to_path_buf()));
                }
                tracing::info!(path = %path.display(), "removing a stale control socket");
                std::fs::remove_file(path).map_err(io("removing the stale socket"))?;
            }
            Ok(_) => return Err(BindError::NotASocket(path.to_path_buf())),
            Err(e) if e.kind() == IoKind::NotFound => {}
            Err(e) => return Err(io("checking the path")(e)),
        }
        // Bound inside a private directory (mode 0700) and given mode 0600 there, then renamed into place: the
        // socket is never reachable by others, even for a moment.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let private = dir.join(format!(".vswitchd-{}.bind", std::process::id()));
        let _ = std::fs::remove_dir_all(&private);
        std::fs::DirBuilder::new().mode(0o700).create(&private).map_err(io("creating a private directory"))?;
        let tmp = private.join("s");
        let bound = UnixListener::bind(&tmp).map_err(io("binding")).and_then(|l| {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io("setting mode 0600"))?;
            std::fs::rename(&tmp, path).map_err(io("moving it into place"))?;
            Ok(l)
        });
        let _ = std::fs::remove_dir_all(&private);
        let sock = ControlSocket { path: path.to_path_buf(), listener: Some(bound?) };
        Ok(sock)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lets members of group `gid` use the socket too: mode 0660, owned by that group (see the module
    /// documentation). Call before [`ControlSocket::serve`] with the same group.
    pub fn allow_group(&self, gid: u32) -> std::io::Result<()> {
        std::os::unix::fs::chown(&self.path, None, Some(gid))?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o660))
    }

    /// Serves `daemon` on a new thread until `stop` is set; peers of uid 0, vswitchd's own uid, or group `group`
    /// when given, may talk. The returned handle finishes once every connection thread has.
    pub fn serve(
        self,
        daemon: Arc<Daemon>,
        stop: Arc<AtomicBool>,
        group: Option<u32>,
    ) -> std::io::Result<JoinHandle<()>> {
        self.serve_with(daemon, stop, group, Limits::default())
    }

    /// [`ControlSocket::serve`] with other [`Limits`] than vswitchd's.
    pub fn serve_with(
        mut self,
        daemon: Arc<Daemon>,
        stop: Arc<AtomicBool>,
        group: Option<u32>,
        limits: Limits,
    ) -> std::io::Result<JoinHandle<()>> {
        let listener = self.listener.take().expect("a bound socket is served once");
        listener.set_nonblocking(true)?;
        std::thread::Builder::new().name("vsw-control".to_string()).spawn(move || {
            // This thread and the connection threads it starts (they inherit it) give way to the workers.
            crate::sched::give_way_to_workers();
            let shared = Arc::new(Shared::default());
            // SAFETY: geteuid has no preconditions.
            let ours = unsafe { libc::geteuid() };
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !stop.load(Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        conns.retain(|h| !h.is_finished());
                        let Some(peer) = allowed_peer(&stream, group, ours) else {
                            refuse(stream, "permission denied: not root, vswitchd's uid or the socket's group");
                            continue;
                        };
                        let privileged = peer.uid == 0 || peer.uid == ours;
                        if !shared.make_room(privileged, &limits) {
                            let why = if privileged {
                                format!("too many control connections (at most {}), all busy", limits.max_connections)
                            } else {
                                format!(
                                    "too many control connections (at most {} for peers other than root and \
                                     vswitchd's uid), all busy",
                                    limits.max_connections.saturating_sub(limits.reserved)
                                )
                            };
                            refuse(stream, &why);
                            continue;
                        }
                        let Ok(handle) = stream.try_clone() else { continue };
                        // The slot is released when `slot` is dropped: when the thread ends, however it ends (a
                        // panic included), or here if the thread cannot be started.
                        let slot = Slot::take(&shared, Conn::new(handle, shared.now_ms(), privileged));
                        tracing::info!(pid = peer.pid, uid = peer.uid, gid = peer.gid, "control connection");
                        let (d, s) = (Arc::clone(&daemon), Arc::clone(&stop));
                        let spawned =
                            std::thread::Builder::new().name("vsw-control-conn".to_string()).spawn(move || {
                                if let Err(e) = connection(stream, &d, &s, &slot.shared, &slot.conn, &limits) {
                                    tracing::debug!(error = %e, "control connection ended");
                                }
                            });
                        match spawned {
                            Ok(h) => conns.push(h),
                            Err(e) => tracing::warn!(error = %e, "cannot start a control connection thread"),
                        }
                    }
                    Err(e) if e.kind() == IoKind::WouldBlock => std::thread::sleep(POLL),
                    Err(e) if e.kind() == IoKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        std::thread::sleep(POLL);
                    }
                }
            }
            // Unblock every connection (a client that does not read, one half way through a line).
            shared.close_all();
            for h in conns {
                let _ = h.join();
            }
            // `self` (the path) is dropped here: the socket file is removed.
            drop(self);
        })
    }
}

/// One served connection, as the accept loop sees it.
#[derive(Debug)]
struct Conn {
    /// A handle on the socket, to shut it down (eviction, stop).
    stream: UnixStream,
    /// When a byte last arrived or a response was last sent (milliseconds since the server started).
    last_active: AtomicU64,
    /// A request is being handled (and its response written): never evicted.
    busy: AtomicBool,
    /// Shut down by the server.
    closed: AtomicBool,
    /// The peer is root or vswitchd's uid (it may take the reserved slots).
    privileged: bool,
}

impl Conn {
    fn new(stream: UnixStream, now_ms: u64, privileged: bool) -> Conn {
        Conn {
            stream,
            privileged,
            last_active: AtomicU64::new(now_ms),
            busy: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    fn close(&self) {
        self.closed.store(true, Relaxed);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// A connection's place in [`Shared::conns`], held by its thread and given back when dropped: on every path
/// out of the connection, a panic included.
struct Slot {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
}

impl Slot {
    fn take(shared: &Arc<Shared>, conn: Conn) -> Slot {
        let conn = Arc::new(conn);
        shared.conns.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::clone(&conn));
        Slot { shared: Arc::clone(shared), conn }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.remove(&self.conn);
    }
}

/// What the accept loop and the connections share: the connections, the clock, the large-line budget and the
/// large-parse lock.
#[derive(Debug)]
struct Shared {
    conns: Mutex<Vec<Arc<Conn>>>,
    start: Instant,
    /// Bytes of large lines buffered now, against [`LARGE_LINE_BUDGET`].
    large_bytes: AtomicUsize,
    /// Held while a line longer than [`SMALL_LINE`] is parsed and handled.
    large_parse: Mutex<()>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            conns: Mutex::new(Vec::new()),
            start: Instant::now(),
            large_bytes: AtomicUsize::new(0),
            large_parse: Mutex::new(()),
        }
    }
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    #[cfg(test)]
    fn live(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|c| !c.closed.load(Relaxed)).count()
    }

    /// Makes room for a new connection: true when a slot is free for this peer (`privileged`: root or
    /// vswitchd's uid, who may also take the reserved ones), or when the connection idle the longest that it may
    /// evict was closed for it; false when every such connection is busy. The others (the socket group's
    /// members) never hold more than `max_connections - reserved` between them: beyond that, one of them may
    /// only take the place of another one's idle connection.
    fn make_room(&self, privileged: bool, limits: &Limits) -> bool {
        let (live, others) = {
            let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            let open = conns.iter().filter(|c| !c.closed.load(Relaxed));
            open.fold((0, 0), |(n, o), c| (n + 1, o + usize::from(!c.privileged)))
        };
        if !privileged && others >= limits.max_connections.saturating_sub(limits.reserved) {
            return self.evict_idlest(|c| !c.privileged);
        }
        live < limits.max_connections || self.evict_idlest(|_| true)
    }

    /// Shuts down the connection idle the longest (not busy) among those `which` picks; false when every one is
    /// busy.
    fn evict_idlest(&self, which: impl Fn(&Conn) -> bool) -> bool {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let idle = conns.iter().filter(|c| !c.closed.load(Relaxed) && !c.busy.load(Relaxed) && which(c));
        match idle.min_by_key(|c| c.last_active.load(Relaxed)) {
            Some(c) => {
                tracing::warn!("control connections full: closing the one idle the longest");
                c.close();
                true
            }
            None => false,
        }
    }

    fn remove(&self, conn: &Arc<Conn>) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).retain(|c| !Arc::ptr_eq(c, conn));
    }

    fn close_all(&self) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).iter().for_each(|c| c.close());
    }

    /// Takes `n` bytes of the large-line budget; false (nothing taken) when they are not there.
    fn take_large(&self, n: usize) -> bool {
        self.large_bytes
            .fetch_update(Relaxed, Relaxed, |used| used.checked_add(n).filter(|&u| u <= LARGE_LINE_BUDGET))
            .is_ok()
    }

    fn give_large(&self, n: usize) {
        self.large_bytes.fetch_sub(n, Relaxed);
    }
}

/// A peer's credentials.
#[derive(Debug, Clone, Copy)]
struct Peer {
    pid: i32,
    uid: u32,
    gid: u32,
}

/// The peer's credentials if it may talk (root, `ours`, or `group` as its primary or a supplementary group),
/// else `None` (logged).
fn allowed_peer(stream: &UnixStream, group: Option<u32>, ours: u32) -> Option<Peer> {
    let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: u32::MAX };
    #[allow(clippy::cast_possible_truncation)] // a 12-byte struct
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `stream` is an open Unix socket; `cred` and `len` are valid for writes of a `ucred` and its size,
    // which is what SO_PEERCRED fills in.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "control connection: cannot read peer credentials");
        return None;
    }
    let peer = Peer { pid: cred.pid, uid: cred.uid, gid: cred.gid };
    let in_group = |g: u32| {
        g == peer.gid
            || match peer_groups(stream) {
                Ok(groups) => groups.contains(&g),
                Err(e) => {
                    tracing::warn!(error = %e, "control connection: cannot read the peer's supplementary groups");
                    false
                }
            }
    };
    if peer.uid == 0 || peer.uid == ours || group.is_some_and(in_group) {
        Some(peer)
    } else {
        tracing::warn!(pid = peer.pid, uid = peer.uid, gid = peer.gid, "control connection refused");
        None
    }
}

/// The peer's supplementary groups as of its `connect` (`SO_PEERGROUPS`, Linux 4.13 and later).
fn peer_groups(stream: &UnixStream) -> std::io::Result<Vec<libc::gid_t>> {
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    // NGROUPS_MAX on Linux: the kernel never needs more.
    const MOST: usize = 65_536;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * GID).unwrap_or(libc::socklen_t::MAX);
        // SAFETY: `stream` is an open Unix socket; `groups` is valid for writes of `len` bytes (its length in
        // gid_t), and the kernel writes at most `len` bytes there and the size it wrote (or, with ERANGE, the
        // size it needs) to `len`.
        let rc = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(stream),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let len = len as usize;
        if rc == 0 {
            groups.truncate(len / GID);
            return Ok(groups);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || groups.len() >= MOST {
            return Err(e);
        }
        // ERANGE: `len` is the size needed (the groups may have changed since; grow at least twofold).
        let want = (len / GID).max(groups.len() * 2).min(MOST);
        groups.resize(want, 0);
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One error line, then close.
fn refuse(mut stream: UnixStream, why: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let e = ErrorBody::new(ErrorKind::Internal, why.to_string());
    let _ = stream.write_all(Response::error(None, e).to_line().as_bytes());
}

/// The large-line budget a connection holds; given back when dropped.
struct LargeBytes<'a> {
    shared: &'a Shared,
    held: usize,
}

impl LargeBytes<'_> {
    /// Makes the held budget cover a line of `len` bytes; false when the budget cannot.
    fn cover(&mut self, len: usize) -> bool {
        let need = len.saturating_sub(SMALL_LINE);
        if need <= self.held {
            return true;
        }
        // Taken in steps of at least 1 MiB so a growing line asks rarely.
        let more = (need - self.held).max(1 << 20).min(MAX_REQUEST_BYTES - self.held.min(MAX_REQUEST_BYTES));
        if more == 0 || !self.shared.take_large(more) {
            return false;
        }
        self.held += more;
        true
    }

    fn release(&mut self) {
        self.shared.give_large(self.held);
        self.held = 0;
    }
}

impl Drop for LargeBytes<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Serves one connection until the client closes it, a line is too long, a timeout passes, or `stop` is set.
/// The deadlines (idle, line) are checked on every pass of the read loop: at least every [`POLL`], and after
/// every read that brought bytes, so a client dripping bytes is cut like one that pauses.
fn connection(
    stream: UnixStream,
    daemon: &Daemon,
    stop: &AtomicBool,
    shared: &Shared,
    conn: &Conn,
    limits: &Limits,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(limits.write_timeout))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(SMALL_LINE, stream);
    let mut line = Vec::new();
    let mut budget = LargeBytes { shared, held: 0 };
    let mut line_started: Option<Instant> = None;
    let mut last_byte = Instant::now();
    let respond = |line: &[u8], writer: &mut UnixStream| -> std::io::Result<()> {
        let response = if line.len() > SMALL_LINE {
            let _one_at_a_time = shared.large_parse.lock().unwrap_or_else(|e| e.into_inner());
            daemon.handle_line(line)
        } else {
            daemon.handle_line(line)
        };
        write_response(writer, response.to_line().as_bytes(), limits)
    };
    loop {
        if conn.closed.load(Relaxed) || stop.load(Relaxed) {
            return Ok(());
        }
        let now = Instant::now();
        if line_started.is_some_and(|t| now.duration_since(t) > limits.line_timeout) {
            tracing::info!("control connection closed: request line not completed in time");
            return Ok(());
        }
        if now.duration_since(last_byte) > limits.idle_timeout {
            tracing::debug!("control connection closed: idle");
            return Ok(());
        }
        let before = line.len();
        let read = read_line(&mut reader, &mut line, &mut budget);
        if line.len() != before || matches!(read, Ok(Line::Complete)) {
            last_byte = Instant::now();
            conn.last_active.store(shared.now_ms(), Relaxed);
            if line_started.is_none() {
                line_started = Some(last_byte);
            }
        }
        match read {
            Ok(Line::Partial) => {}
            Ok(Line::Complete) => {
                conn.busy.store(true, Relaxed);
                let sent = respond(&line, &mut writer);
                conn.busy.store(false, Relaxed);
                sent?;
                line.clear();
                line.shrink_to(SMALL_LINE);
                budget.release();
                line_started = None;
                conn.last_active.store(shared.now_ms(), Relaxed);
            }
            Ok(Line::Eof) => {
                // A last line without a newline is still a request (not when the server shut the connection:
                // an evicted client's half line is not acted on).
                if !conn.closed.load(Relaxed) && !line.iter().all(u8::is_ascii_whitespace) {
                    respond(&line, &mut writer)?;
                }
                return Ok(());
            }
            Ok(Line::TooLong) => {
                let e = ErrorBody::too_large(line.len());
                return write_response(&mut writer, Response::error(None, e).to_line().as_bytes(), limits);
            }
            Ok(Line::NoBudget) => {
                let message = format!(
                    "request line over {SMALL_LINE} bytes while other clients' large requests hold the server's \
                     budget ({LARGE_LINE_BUDGET} bytes); retry later"
                );
                let e = ErrorBody::new(ErrorKind::TooLarge, message);
                return write_response(&mut writer, Response::error(None, e).to_line().as_bytes(), limits);
            }
            Err(e) if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut | IoKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes `bytes` within `limits.response_timeout` in all, each write making progress within
/// `limits.write_timeout`; a `TimedOut` error otherwise (the caller closes the connection).
fn write_response(writer: &mut UnixStream, bytes: &[u8], limits: &Limits) -> std::io::Result<()> {
    let deadline = Instant::now() + limits.response_timeout;
    let mut sent = 0;
    while sent < bytes.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::info!(sent, len = bytes.len(), "control connection closed: response not read in time");
            return Err(std::io::Error::new(IoKind::TimedOut, "response not read in time"));
        }
        writer.set_write_timeout(Some(left.min(limits.write_timeout)))?;
        // Chunks, so a slow reader's deadline is checked between them.
        let end = bytes.len().min(sent + SMALL_LINE);
        match writer.write(&bytes[sent..end]) {
            Ok(0) => return Err(IoKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == IoKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

enum Line {
    /// Bytes were appended, no newline yet.
    Partial,
    Complete,
    Eof,
    TooLong,
    /// Longer than [`SMALL_LINE`] and the shared budget cannot hold it.
    NoBudget,
}

/// Appends to `line` what one read brings, up to and excluding the next newline (`Partial` when there is none
/// yet: the caller checks its deadlines between reads). A read timeout returns the error with what was read kept
/// in `line`, so the next call continues the same line.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>, budget: &mut LargeBytes) -> std::io::Result<Line> {
    let buf = reader.fill_buf()?;
    if buf.is_empty() {
        return Ok(Line::Eof);
    }
    let (take, done) = match buf.iter().position(|&b| b == b'\n') {
        Some(i) => (i, true),
        None => (buf.len(), false),
    };
    if line.len() + take > MAX_REQUEST_BYTES {
        return Ok(Line::TooLong);
    }
    if !budget.cover(line.len() + take) {
        return Ok(Line::NoBudget);
    }
    line.extend_from_slice(&buf[..take]);
    reader.consume(take + usize::from(done));
    Ok(if done { Line::Complete } else { Line::Partial })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A served connection as the accept loop records it (on one end of a socket pair), busy or idle, of a
    /// privileged peer (root or our uid) or not.
    fn served_as(shared: &Arc<Shared>, busy: bool, privileged: bool) -> Slot {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let slot = Slot::take(shared, Conn::new(ours, shared.now_ms(), privileged));
        slot.conn.busy.store(busy, Relaxed);
        slot
    }

    fn served(shared: &Arc<Shared>, busy: bool) -> Slot {
        served_as(shared, busy, false)
    }

    #[test]
    fn a_panicking_connection_thread_gives_its_slot_back() {
        let shared = Arc::new(Shared::default());
        let slot = served(&shared, true);
        let kept = served(&shared, true);
        assert_eq!(shared.live(), 2);
        let thread = std::thread::spawn(move || {
            let _slot = slot;
            panic!("a connection's handling panicked (test)");
        });
        assert!(thread.join().is_err(), "the thread panicked");
        assert_eq!(shared.live(), 1, "the panicking connection's slot is free");
        assert_eq!(shared.conns.lock().unwrap().len(), 1);
        drop(kept);
        assert_eq!(shared.live(), 0);
    }

    #[test]
    fn reserved_slots_go_to_root_and_our_uid_only_and_idle_ones_are_evicted_first() {
        let limits = Limits { max_connections: 8, reserved: 2, ..Limits::default() };
        let shared = Arc::new(Shared::default());
        let mut slots: Vec<Slot> = (0..6).map(|_| served(&shared, true)).collect();
        // Six group members busy of eight: another is refused, root and our uid get the reserved two.
        assert!(!shared.make_room(false, &limits), "a group peer may not take a reserved slot");
        assert!(shared.make_room(true, &limits));
        slots.push(served_as(&shared, false, true));
        assert!(shared.make_room(true, &limits));
        slots.push(served_as(&shared, true, true));
        // All eight taken, one (root's, slots[6]) idle: a group member may not take its place...
        assert!(!shared.make_room(false, &limits), "a group peer may not evict its way into a reserved slot");
        assert!(!slots[6].conn.closed.load(Relaxed));
        // ...root may.
        assert!(shared.make_room(true, &limits));
        assert!(slots[6].conn.closed.load(Relaxed), "the idle one was closed");
        slots.push(served_as(&shared, true, true));
        // All eight busy: nobody gets in.
        assert!(!shared.make_room(true, &limits));
        assert!(!shared.make_room(false, &limits));
        // A group member's connection goes idle: whoever comes next closes it and takes its place.
        slots[3].conn.busy.store(false, Relaxed);
        assert!(shared.make_room(false, &limits));
        assert!(slots[3].conn.closed.load(Relaxed), "the idle one was closed");
        assert_eq!(shared.live(), 7);
    }
}
