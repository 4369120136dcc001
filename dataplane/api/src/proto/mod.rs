//! The control socket's wire protocol: the one definition both `vswitchd` (the server) and the clients
//! (`vswitch-agent`, `vswitchctl`) use. This comment is the protocol's specification.
//!
//! # Transport
//! A Unix stream socket, by default [`DEFAULT_SOCKET`] (mode 0600: only its owner, normally root, may
//! connect). A client sends requests and reads responses; every message is **one JSON object on one line**
//! (UTF-8, terminated by `\n`, no newline inside: JSON escapes them). The server answers every request line with
//! exactly one response line, in order, on the same connection; a client may send the next request before
//! reading the previous response (pipelining). Several clients may be connected at once. A request line longer
//! than [`MAX_REQUEST_BYTES`] gets a `too_large` error and the server closes that connection (it cannot tell
//! where the next request starts without reading the rest of the line); every other bad line gets an error and
//! the connection stays usable.
//!
//! # Requests
//! ```json
//! {"version":1,"id":7,"op":"fdb_show","network":"bridge"}
//! ```
//! - `version` (required): [`PROTOCOL_VERSION`]. Any other value gets a `version_mismatch` error naming both.
//! - `id` (required): an unsigned integer chosen by the client, echoed in the response.
//! - `op` (required): the operation; its arguments are the other keys of the same object (see [`Op`]). Unknown
//!   keys are errors (`bad_request`, naming the key), as are missing or mistyped arguments.
//!
//! # Responses
//! ```json
//! {"version":1,"id":7,"ok":true,"result":[{"network":"bridge","mac":"02:00:00:00:00:01","port":"c1","age_ms":1200}]}
//! {"version":1,"id":8,"ok":false,"error":{"kind":"not_found","message":"no network \"brige\"; known networks: bridge","field":"network"}}
//! ```
//! `id` is the request's (absent only when the request line was not a JSON object with a readable `id`).
//! On success `result` holds the operation's result type (listed with each [`Op`]); on failure `error` is an
//! [`ErrorBody`]: a machine-readable [`ErrorKind`], a message for humans, the offending request field when
//! there is one, and for invalid configurations every error with its origin and line ([`ConfigIssue`]).
//! A failed request changes nothing.
//!
//! # Operations
//! | `op` | arguments | result |
//! |------|-----------|--------|
//! | `hello` | | [`HelloResult`]: server version, protocol version, pid, uptime, config generation |
//! | `get_config` | | [`ConfigResult`]: the running [`Config`] and its generation (an empty `Config` at generation 0 when started without one) |
//! | `apply` | [`ApplyArgs`]: `config` (a `Config` as JSON) **or** `toml` (the text, with `origin` naming it in errors); optional `expect_generation`, `dry_run` | [`ApplyResult`]: the new generation and what changed ([`ApplySummary`]) |
//! | `network_ls` | | `[`[`NetworkSummary`]`]` |
//! | `network_inspect` | `name` | [`NetworkInspect`] |
//! | `port_ls` | | `[`[`PortRow`]`]` |
//! | `fdb_show` | optional `network` | `[`[`FdbRow`]`]` |
//! | `route_show` | | `[`[`RouteRow`]`]` |
//! | `neigh_show` | | `[`[`NeighRow`]`]` |
//! | `conntrack_ls` | optional `limit` (default [`DEFAULT_CONNTRACK_LIMIT`], at most [`MAX_CONNTRACK_LIMIT`]: more is `bad_request`, field `limit`) | [`ConntrackList`] |
//! | `conntrack_flush` | | [`ConntrackFlushed`] |
//! | `stats` | | [`StatsResult`]: the counters JSON `vswitchd run --stats-json` writes, with the generation |
//! | `overlay_update` | `state`: an [`OverlayState`] (every live remote member and remote endpoint) | [`OverlayUpdateResult`]: what the overlay tables now hold; replaces them in one step under the switch lock, without pausing the workers or touching any other state; an invalid state changes nothing (`bad_request`, field `state.members[i].…`) |
//! | `trace` | `port`, `frame_hex` | [`TraceResult`]: each stage's decision, the frames that would be sent and the drops, from a scratch copy of the switch (MAC tables, resolved neighbours and the connections the frame belongs to copied, so a packet of a tracked connection is traced as one); the live switch is not touched |
//!
//! # `apply`: one transaction
//! The whole configuration is validated first (errors name the origin, line and field). Then the new ports are
//! opened, each on its own: a port that fails to open is applied as failed (listed with its error in
//! [`ApplySummary::ports_failed`] and as `failed` in `port_ls`; vswitchd retries it with backoff), the others
//! come up; a port that is up and whose changed back-end settings fail to open keeps its old port and old
//! settings (listed in [`ApplySummary::ports_change_failed`]; `get_config` shows what runs, and applying the
//! same configuration again retries the change); only a port that can never open (a replay-only kind, a
//! back-end not built in) refuses the whole apply (`port_failed`, naming the port; those opened are closed,
//! nothing changes). Then the workers switch to the new topology at a batch boundary, and removed ports are
//! closed. A panic during the switch-over fails the apply (`internal`) and leaves the previous configuration
//! running. With
//! `expect_generation`, the apply is refused (`conflict`) unless the running generation is that one (optimistic
//! concurrency between several writers). An apply of the configuration already running changes nothing and
//! keeps the generation (`changed: false`). `dry_run: true` validates and reports the summary without
//! applying. Which learned state survives which change is documented in `dataplane::control::daemon` (and the
//! README); the summary reports what was flushed.
//!
//! # Compatibility
//! Adding an optional request argument, a result field or an op does not change [`PROTOCOL_VERSION`]; clients
//! must ignore result fields they do not know. Removing or changing the meaning of anything does.
//!
//! # Where
//! [`envelope`]: the request and response lines (versions, ids, ops and their arguments, errors) and how a
//! request line is parsed. [`results`]: every op's result type. Both are re-exported here.
//!
//! Threads: plain data and pure functions; used by the control thread and by clients.

pub mod envelope;
pub mod results;

pub use envelope::*;
pub use results::*;

#[cfg(doc)]
use crate::config::Config;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Where `vswitchd run` listens unless told otherwise (`--socket`).
pub const DEFAULT_SOCKET: &str = "/run/vswitch/vswitchd.sock";

/// The longest request line the server reads (a configuration of thousands of ports fits easily).
pub const MAX_REQUEST_BYTES: usize = 8 << 20;

/// Connections listed by `conntrack_ls` without a `limit`.
pub const DEFAULT_CONNTRACK_LIMIT: usize = 1000;

/// The largest `limit` `conntrack_ls` takes: a larger one is refused (`bad_request`, field `limit`), like every
/// out-of-range argument; the response's size stays bounded.
pub const MAX_CONNTRACK_LIMIT: usize = 10_000;
