//! [`Client`]: one connection to vswitchd's control socket speaking [`vswitch_api::proto`] (one request
//! line, one response line), and [`ClientError`], whose messages say what went wrong in the operator's terms (no
//! socket at the path, permission denied, nothing listening, the server's error with the field it names).
//!
//! [`SocketSwitch`] is the agent's view of a switch ([`crate::agent::Switch`]) over a client: it connects lazily,
//! and a request on a connection the server has closed (vswitchd restarted) is retried once on a new one.
//!
//! Threads: a client is used by one thread at a time (the agent's loop, or vswitchctl's main).

use crate::agent::{Running, Switch};
use serde::de::DeserializeOwned;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vswitch_api::config::Config;
use vswitch_api::proto::{ApplyArgs, ApplyResult, ConfigResult, ErrorBody, ErrorKind, Op, Request, Response};

/// The control socket's default path (`vswitchd run --socket`'s default); `VSWITCH_SOCKET` or `--socket` override it.
pub use vswitch_api::proto::DEFAULT_SOCKET;

/// How long a request may wait for its reply before the connection is given up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No file at the socket path.
    #[error("no control socket at {0}: is vswitchd running with --socket {0}?")]
    NoSocket(PathBuf),
    /// The socket exists but this user may not connect (it is mode 0600, owned by vswitchd's user).
    #[error("permission denied on {0}: the control socket is only for vswitchd's user (run as root?)")]
    Permission(PathBuf),
    /// The socket file exists but nothing listens (vswitchd exited without removing it).
    #[error("nothing listens on {0} (vswitchd is not running; the socket file is stale)")]
    Refused(PathBuf),
    /// Any other failure to connect.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// The connection broke while sending or waiting for the reply (e.g. vswitchd stopped).
    #[error("connection to {path} lost: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// The peer closed the connection without replying.
    #[error("vswitchd closed the connection on {0} without replying")]
    Closed(PathBuf),
    /// A reply that is not the protocol's JSON.
    #[error("bad reply from vswitchd: {0}")]
    Protocol(String),
    /// vswitchd answered with an error.
    #[error("{}", server_message(.0))]
    Server(ErrorBody),
}

/// A server error as one or more lines: `vswitchd: KIND (field F): MESSAGE`, then for an invalid configuration
/// one `ORIGIN:LINE: MESSAGE` line per error (the message already lists them; they are not repeated).
fn server_message(e: &ErrorBody) -> String {
    let kind = serde_json::to_value(e.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let field = e.field.as_deref().map(|f| format!(" (field `{f}`)")).unwrap_or_default();
    format!("vswitchd refused the request: {kind}{field}: {}", e.message)
}

impl ClientError {
    /// True when the switch could not be reached at all (as opposed to a reply that said no): worth retrying.
    pub fn is_unreachable(&self) -> bool {
        !matches!(self, ClientError::Protocol(_) | ClientError::Server(_))
    }
}

/// A connection to the control socket.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ClientError::NoSocket(path.to_path_buf()),
            std::io::ErrorKind::PermissionDenied => ClientError::Permission(path.to_path_buf()),
            std::io::ErrorKind::ConnectionRefused => ClientError::Refused(path.to_path_buf()),
            _ => ClientError::Connect { path: path.to_path_buf(), source: e },
        })?;
        let io = |source| ClientError::Io { path: path.to_path_buf(), source };
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(Client { path: path.to_path_buf(), reader: BufReader::new(stream), writer, next_id: 1 })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `op` and decodes its result as `T` (the op's result type, see [`vswitch_api::proto`]).
    pub fn call<T: DeserializeOwned>(&mut self, op: Op) -> Result<T, ClientError> {
        let response = self.call_raw(op)?;
        response.into_result().map_err(|e| match e.kind {
            // `into_result` reports a result it cannot decode as an internal error without a server message.
            ErrorKind::Internal if e.message.starts_with("unexpected result shape") => ClientError::Protocol(e.message),
            _ => ClientError::Server(e),
        })
    }

    /// Sends `op` and returns the response as it came (`ok` or not).
    pub fn call_raw(&mut self, op: Op) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = Request::new(id, op).to_line();
        let io = |source| ClientError::Io { path: self.path.clone(), source };
        self.writer.write_all(line.as_bytes()).map_err(io)?;
        let mut reply = String::new();
        let n =
            self.reader.read_line(&mut reply).map_err(|source| ClientError::Io { path: self.path.clone(), source })?;
        if n == 0 {
            return Err(ClientError::Closed(self.path.clone()));
        }
        let response = Response::parse(reply.as_bytes())
            .map_err(|e| ClientError::Protocol(format!("{e}: {}", reply.trim_end())))?;
        if response.id.is_some_and(|r| r != id) {
            return Err(ClientError::Protocol(format!("reply to request {:?}, expected {id}", response.id)));
        }
        Ok(response)
    }
}

/// The agent's switch: a [`Client`] connected on first use, reconnected after the server closed it.
#[derive(Debug)]
pub struct SocketSwitch {
    path: PathBuf,
    client: Option<Client>,
    /// What to call the configuration on the server (the agent's file name).
    origin: String,
}

impl SocketSwitch {
    /// A switch at socket `path`; `origin` names the configurations this agent applies.
    pub fn new(path: &Path, origin: &str) -> SocketSwitch {
        SocketSwitch { path: path.to_path_buf(), client: None, origin: origin.to_string() }
    }

    /// Whether a connection is open now.
    pub fn connected(&self) -> bool {
        self.client.is_some()
    }

    /// Drops the connection (the next request connects again).
    pub fn disconnect(&mut self) {
        self.client = None;
    }

    /// Sends `op`; on a connection the server has closed since the last request, connects again and retries once.
    pub fn call<T: DeserializeOwned>(&mut self, op: Op) -> Result<T, ClientError> {
        let had_connection = self.client.is_some();
        match self.call_once(op.clone()) {
            Err(e) if had_connection && e.is_unreachable() => {
                self.client = None;
                self.call_once(op)
            }
            other => other,
        }
    }

    fn call_once<T: DeserializeOwned>(&mut self, op: Op) -> Result<T, ClientError> {
        let client = match &mut self.client {
            Some(c) => c,
            None => self.client.insert(Client::connect(&self.path)?),
        };
        let result = client.call(op);
        if result.as_ref().is_err_and(ClientError::is_unreachable) {
            self.client = None;
        }
        result
    }
}

impl Switch for SocketSwitch {
    type Error = ClientError;

    fn running(&mut self) -> Result<Running, ClientError> {
        let r: ConfigResult = self.call(Op::GetConfig)?;
        Ok(Running { config: r.config, generation: r.generation })
    }

    fn apply(&mut self, desired: &Config, generation: u64) -> Result<u64, ClientError> {
        let args = ApplyArgs {
            config: Some(desired.clone()),
            origin: Some(self.origin.clone()),
            expect_generation: Some(generation),
            ..ApplyArgs::default()
        };
        let r: ApplyResult = self.call(Op::Apply(Box::new(args)))?;
        // Per-port outcome: the apply went through; vswitchd retries these ports itself (no file change needed).
        for f in &r.summary.ports_failed {
            tracing::warn!(port = %f.port, error = %f.error, "port down after the apply: vswitchd retries it");
        }
        for f in &r.summary.ports_change_failed {
            tracing::warn!(port = %f.port, error = %f.error, "the port's change failed: it keeps its old settings; applying again later");
        }
        Ok(r.generation)
    }
}
