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
//!   also makes the socket mode 0660 owned by that group) may talk; anyone else gets one `internal` error.
//! - **Slots**: at most [`MAX_CONNECTIONS`] connections are served at once. When all are taken, a new
//!   connection evicts the one that has been idle (no byte received, no request being handled) the longest,
//!   instead of being refused: idle or half-line clients cannot lock out a new client (the agent, vswitchctl).
//!   Only when every connection is busy with a request is the new one refused.
//! - **Timeouts**: a connection that sends nothing for [`IDLE_TIMEOUT`] is closed, so is one whose request line
//!   is not complete [`LINE_TIMEOUT`] after its first byte; a response not written within [`WRITE_TIMEOUT`] (a
//!   client that does not read) closes the connection.
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

/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A request line must be complete this long after its first byte.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// A response must be written within this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes of a request line a connection buffers without asking the shared budget.
pub const SMALL_LINE: usize = 64 << 10;

/// Bytes of request lines beyond [`SMALL_LINE`] all connections may buffer together.
pub const LARGE_LINE_BUDGET: usize = 2 * MAX_REQUEST_BYTES;

/// How often the accept loop and idle connections check the stop flag.
pub const POLL: Duration = Duration::from_millis(50);

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
        mut self,
        daemon: Arc<Daemon>,
        stop: Arc<AtomicBool>,
        group: Option<u32>,
    ) -> std::io::Result<JoinHandle<()>> {
        let listener = self.listener.take().expect("a bound socket is served once");
        listener.set_nonblocking(true)?;
        std::thread::Builder::new().name("vsw-control".to_string()).spawn(move || {
            let shared = Arc::new(Shared::default());
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !stop.load(Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        conns.retain(|h| !h.is_finished());
                        let Some(peer) = allowed_peer(&stream, group) else {
                            refuse(stream, "permission denied: not root, vswitchd's uid or the socket's group");
                            continue;
                        };
                        if shared.live() >= MAX_CONNECTIONS && !shared.evict_idlest() {
                            refuse(
                                stream,
                                &format!("too many control connections (at most {MAX_CONNECTIONS}), all busy"),
                            );
                            continue;
                        }
                        let Ok(handle) = stream.try_clone() else { continue };
                        let conn = Arc::new(Conn::new(handle, shared.now_ms()));
                        shared.conns.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::clone(&conn));
                        tracing::info!(pid = peer.pid, uid = peer.uid, gid = peer.gid, "control connection");
                        let (d, s, sh) = (Arc::clone(&daemon), Arc::clone(&stop), Arc::clone(&shared));
                        let spawned =
                            std::thread::Builder::new().name("vsw-control-conn".to_string()).spawn(move || {
                                if let Err(e) = connection(stream, &d, &s, &sh, &conn) {
                                    tracing::debug!(error = %e, "control connection ended");
                                }
                                sh.remove(&conn);
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
}

impl Conn {
    fn new(stream: UnixStream, now_ms: u64) -> Conn {
        Conn {
            stream,
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

    fn live(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|c| !c.closed.load(Relaxed)).count()
    }

    /// Shuts down the connection idle the longest (not busy); false when every one is busy.
    fn evict_idlest(&self) -> bool {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let idle = conns.iter().filter(|c| !c.closed.load(Relaxed) && !c.busy.load(Relaxed));
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

/// The peer's credentials if it may talk (root, our uid, or `group`), else `None` (logged).
fn allowed_peer(stream: &UnixStream, group: Option<u32>) -> Option<Peer> {
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
    // SAFETY: geteuid has no preconditions.
    let ours = unsafe { libc::geteuid() };
    if peer.uid == 0 || peer.uid == ours || group.is_some_and(|g| g == peer.gid) {
        Some(peer)
    } else {
        tracing::warn!(pid = peer.pid, uid = peer.uid, gid = peer.gid, "control connection refused");
        None
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
fn connection(
    stream: UnixStream,
    daemon: &Daemon,
    stop: &AtomicBool,
    shared: &Shared,
    conn: &Conn,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
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
        writer.write_all(response.to_line().as_bytes())
    };
    loop {
        if conn.closed.load(Relaxed) {
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
                writer.write_all(Response::error(None, e).to_line().as_bytes())?;
                return Ok(());
            }
            Ok(Line::NoBudget) => {
                let message = format!(
                    "request line over {SMALL_LINE} bytes while other clients' large requests hold the server's \
                     budget ({LARGE_LINE_BUDGET} bytes); retry later"
                );
                let e = ErrorBody::new(ErrorKind::TooLarge, message);
                writer.write_all(Response::error(None, e).to_line().as_bytes())?;
                return Ok(());
            }
            Err(e) if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut | IoKind::Interrupted) => {
                if stop.load(Relaxed) {
                    return Ok(());
                }
                let now = Instant::now();
                if line_started.is_some_and(|t| now.duration_since(t) > LINE_TIMEOUT) {
                    tracing::info!("control connection closed: request line not completed in time");
                    return Ok(());
                }
                if now.duration_since(last_byte) > IDLE_TIMEOUT {
                    tracing::debug!("control connection closed: idle");
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
}

enum Line {
    Complete,
    Eof,
    TooLong,
    /// Longer than [`SMALL_LINE`] and the shared budget cannot hold it.
    NoBudget,
}

/// Appends to `line` up to and excluding the next newline. A read timeout returns the error with what was read
/// kept in `line`, so the next call continues the same line.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>, budget: &mut LargeBytes) -> std::io::Result<Line> {
    loop {
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
        if done {
            return Ok(Line::Complete);
        }
    }
}
