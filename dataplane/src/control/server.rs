//! The control socket: a Unix stream socket serving the [`crate::control::proto`] protocol for a [`Daemon`].
//!
//! - [`ControlSocket::bind`] creates the parent directory if needed, refuses a path on which another process
//!   answers (a second vswitchd), removes a stale socket file left by a dead one (never any other kind of
//!   file), and binds with mode 0600 (inside a private directory, then renamed into place, so the socket is
//!   never reachable by others, even for a moment). Dropping the socket removes the file.
//! - [`ControlSocket::serve`] runs the accept loop on its own thread; each connection gets a thread (at most
//!   [`MAX_CONNECTIONS`] at once: beyond that a client gets one `internal` error and is closed). A connection
//!   reads request lines of at most [`MAX_REQUEST_BYTES`]; a longer line gets `too_large` and the connection is
//!   closed; any other bad line gets its error and the connection goes on.
//! - Everything stops when the stop flag is set: the accept loop polls it every [`POLL`], connections every
//!   [`POLL`] while idle (a read timeout), so the daemon's exit waits at most that long.
//!
//! Threads: one accept thread plus one per connection; requests are answered by [`Daemon::handle`], which is
//! `Sync`.

use crate::control::daemon::Daemon;
use crate::control::proto::{ErrorBody, ErrorKind, Response, MAX_REQUEST_BYTES};
use std::io::{BufRead, BufReader, ErrorKind as IoKind, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Most client connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

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

    /// Serves `daemon` on a new thread until `stop` is set. The returned handle finishes once every
    /// connection thread has.
    pub fn serve(mut self, daemon: Arc<Daemon>, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
        let listener = self.listener.take().expect("a bound socket is served once");
        listener.set_nonblocking(true)?;
        std::thread::Builder::new().name("vsw-control".to_string()).spawn(move || {
            let active = Arc::new(AtomicUsize::new(0));
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !stop.load(Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        conns.retain(|h| !h.is_finished());
                        if active.load(Relaxed) >= MAX_CONNECTIONS {
                            refuse(stream);
                            continue;
                        }
                        active.fetch_add(1, Relaxed);
                        let (d, s, a) = (Arc::clone(&daemon), Arc::clone(&stop), Arc::clone(&active));
                        let spawned =
                            std::thread::Builder::new().name("vsw-control-conn".to_string()).spawn(move || {
                                if let Err(e) = connection(stream, &d, &s) {
                                    tracing::debug!(error = %e, "control connection ended");
                                }
                                a.fetch_sub(1, Relaxed);
                            });
                        match spawned {
                            Ok(h) => conns.push(h),
                            Err(e) => {
                                active.fetch_sub(1, Relaxed);
                                tracing::warn!(error = %e, "cannot start a control connection thread");
                            }
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
            for h in conns {
                let _ = h.join();
            }
            // `self` (the path) is dropped here: the socket file is removed.
            drop(self);
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Too many connections: one error line, then close.
fn refuse(mut stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let e = ErrorBody::new(ErrorKind::Internal, format!("too many control connections (at most {MAX_CONNECTIONS})"));
    let _ = stream.write_all(Response::error(None, e).to_line().as_bytes());
}

/// Serves one connection until the client closes it, a line is too long, or `stop` is set.
fn connection(stream: UnixStream, daemon: &Daemon, stop: &AtomicBool) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line = Vec::new();
    loop {
        match read_line(&mut reader, &mut line) {
            Ok(Line::Complete) => {
                let response = daemon.handle_line(&line);
                writer.write_all(response.to_line().as_bytes())?;
                line.clear();
            }
            Ok(Line::Eof) => {
                // A last line without a newline is still a request.
                if !line.iter().all(u8::is_ascii_whitespace) {
                    writer.write_all(daemon.handle_line(&line).to_line().as_bytes())?;
                }
                return Ok(());
            }
            Ok(Line::TooLong) => {
                let e = ErrorBody::too_large(line.len());
                writer.write_all(Response::error(None, e).to_line().as_bytes())?;
                return Ok(());
            }
            Err(e) if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut | IoKind::Interrupted) => {
                if stop.load(Relaxed) {
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
}

/// Appends to `line` up to and excluding the next newline. A read timeout returns the error with what was read
/// kept in `line`, so the next call continues the same line.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<Line> {
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
        line.extend_from_slice(&buf[..take]);
        reader.consume(take + usize::from(done));
        if done {
            return Ok(Line::Complete);
        }
    }
}
