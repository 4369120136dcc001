//! The envelope of the control protocol: a request line ([`Request`]: version, id, [`Op`] with its arguments)
//! and a response line ([`Response`]: the result, or an [`ErrorBody`]), and how a request line is parsed so
//! that every refusal names the offending field. The specification is the [parent module](super)'s
//! documentation.
//!
//! Threads: plain data and pure functions.

use super::{MAX_REQUEST_BYTES, PROTOCOL_VERSION};
use crate::config::{Config, ConfigError};
use crate::overlay::OverlayState;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[cfg(doc)]
use super::{results::*, DEFAULT_CONNTRACK_LIMIT, MAX_CONNTRACK_LIMIT};

/// One request: the envelope and the operation with its arguments (serialized flat into one object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Request {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// Chosen by the client; echoed in the response.
    pub id: u64,
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
}

/// An operation and its arguments. Serialized as `"op": NAME` plus the arguments as sibling keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// → [`HelloResult`].
    Hello,
    /// → [`ConfigResult`].
    GetConfig,
    /// → [`ApplyResult`].
    Apply(Box<ApplyArgs>),
    /// → `Vec<`[`NetworkSummary`]`>`.
    NetworkLs,
    /// → [`NetworkInspect`].
    NetworkInspect {
        /// The network's name.
        name: String,
    },
    /// → `Vec<`[`PortRow`]`>`.
    PortLs,
    /// → `Vec<`[`FdbRow`]`>`.
    FdbShow {
        /// Only this network (default: every network).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// → `Vec<`[`RouteRow`]`>`.
    RouteShow,
    /// → `Vec<`[`NeighRow`]`>`.
    NeighShow,
    /// → [`ConntrackList`].
    ConntrackLs {
        /// At most this many connections (default [`DEFAULT_CONNTRACK_LIMIT`], at most [`MAX_CONNTRACK_LIMIT`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// → [`ConntrackFlushed`].
    ConntrackFlush,
    /// → [`StatsResult`].
    Stats,
    /// → [`OverlayUpdateResult`].
    OverlayUpdate {
        /// The membership to install.
        state: OverlayState,
    },
    /// → [`TraceResult`].
    Trace {
        /// The port the frame arrives on.
        port: String,
        /// The frame (from the destination MAC on), as hexadecimal digits (whitespace and `:` allowed).
        frame_hex: String,
    },
}

impl Op {
    /// Every op name, in the order the module documentation lists them.
    pub const NAMES: [&'static str; 14] = [
        "hello",
        "get_config",
        "apply",
        "network_ls",
        "network_inspect",
        "port_ls",
        "fdb_show",
        "route_show",
        "neigh_show",
        "conntrack_ls",
        "conntrack_flush",
        "stats",
        "overlay_update",
        "trace",
    ];

    /// The argument keys of the op called `name` (empty for an unknown op).
    pub fn args_of(name: &str) -> &'static [&'static str] {
        match name {
            "apply" => &["config", "toml", "origin", "expect_generation", "dry_run"],
            "network_inspect" => &["name"],
            "fdb_show" => &["network"],
            "conntrack_ls" => &["limit"],
            "trace" => &["port", "frame_hex"],
            "overlay_update" => &["state"],
            _ => &[],
        }
    }

    /// The op's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Hello => "hello",
            Op::GetConfig => "get_config",
            Op::Apply(_) => "apply",
            Op::NetworkLs => "network_ls",
            Op::NetworkInspect { .. } => "network_inspect",
            Op::PortLs => "port_ls",
            Op::FdbShow { .. } => "fdb_show",
            Op::RouteShow => "route_show",
            Op::NeighShow => "neigh_show",
            Op::ConntrackLs { .. } => "conntrack_ls",
            Op::ConntrackFlush => "conntrack_flush",
            Op::Stats => "stats",
            Op::OverlayUpdate { .. } => "overlay_update",
            Op::Trace { .. } => "trace",
        }
    }

    /// True for ops that change the switch (`apply` unless a dry run, `conntrack_flush`).
    pub fn mutates(&self) -> bool {
        match self {
            Op::Apply(a) => !a.dry_run,
            Op::ConntrackFlush | Op::OverlayUpdate { .. } => true,
            _ => false,
        }
    }
}

/// `apply`'s arguments. Exactly one of `config` and `toml`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyArgs {
    /// The desired configuration as JSON (the serde form of [`Config`]); validated like a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Config>,
    /// The desired configuration as TOML text (errors then carry line numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toml: Option<String>,
    /// What to call the configuration in errors and in `get_config` (a file name); default `"apply"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Refuse (`conflict`) unless the running generation is this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_generation: Option<u64>,
    /// Validate and plan only: report what would change, change nothing, keep the generation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

impl Request {
    /// A request for `op` with the current protocol version.
    pub fn new(id: u64, op: Op) -> Request {
        Request { version: PROTOCOL_VERSION, id, op }
    }

    /// The request as one line, newline included.
    pub fn to_line(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parses one request line (without or with its newline). On failure returns the response to send: an
    /// error naming the field, carrying the request's `id` when it could be read.
    pub fn parse(line: &[u8]) -> Result<Request, Rejected> {
        if line.len() > MAX_REQUEST_BYTES {
            return Err(Rejected { id: None, error: ErrorBody::too_large(line.len()) });
        }
        let mut obj: Map<String, Value> = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(o)) => o,
            Ok(other) => {
                let what = json_type(&other);
                return Err(Rejected {
                    id: None,
                    error: ErrorBody::new(ErrorKind::BadRequest, format!("a request is a JSON object, not {what}")),
                });
            }
            Err(e) => {
                return Err(Rejected {
                    id: None,
                    error: ErrorBody::new(ErrorKind::BadRequest, format!("malformed JSON: {e}")),
                })
            }
        };
        let id = obj.get("id").and_then(Value::as_u64);
        let fail = |kind, message: String, field: &str| {
            Err(Rejected { id, error: ErrorBody { field: Some(field.to_string()), ..ErrorBody::new(kind, message) } })
        };
        match obj.remove("version") {
            None => return fail(ErrorKind::BadRequest, "missing field `version`".into(), "version"),
            Some(v) => match v.as_u64() {
                Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
                Some(v) => {
                    return fail(
                        ErrorKind::VersionMismatch,
                        format!(
                            "protocol version {v} is not supported: this vswitchd speaks version {PROTOCOL_VERSION}"
                        ),
                        "version",
                    )
                }
                None => {
                    return fail(
                        ErrorKind::BadRequest,
                        format!("`version` must be an unsigned integer, not {}", json_type(&v)),
                        "version",
                    )
                }
            },
        }
        match obj.remove("id") {
            None => return fail(ErrorKind::BadRequest, "missing field `id`".into(), "id"),
            Some(v) if v.as_u64().is_none() => {
                return fail(
                    ErrorKind::BadRequest,
                    format!("`id` must be an unsigned integer, not {}", json_type(&v)),
                    "id",
                )
            }
            Some(_) => {}
        }
        let id = id.unwrap_or(0);
        let name = match obj.get("op") {
            None => return fail(ErrorKind::BadRequest, "missing field `op`".into(), "op"),
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                return fail(ErrorKind::BadRequest, format!("`op` must be a string, not {}", json_type(v)), "op")
            }
        };
        if !Op::NAMES.contains(&name.as_str()) {
            return fail(
                ErrorKind::UnknownOp,
                format!("unknown op {name:?}; known ops: {}", Op::NAMES.join(", ")),
                "op",
            );
        }
        // serde accepts unknown keys next to a unit variant's tag even with `deny_unknown_fields`: check here.
        if let Some(extra) = obj.keys().find(|k| k.as_str() != "op" && !Op::args_of(&name).contains(&k.as_str())) {
            let known = Op::args_of(&name);
            let message = match known {
                [] => format!("{name}: unknown field `{extra}`: {name} takes no arguments"),
                _ => format!("{name}: unknown field `{extra}`, expected one of {}", known.join(", ")),
            };
            return fail(ErrorKind::BadRequest, message, extra);
        }
        // No copy of the tree on the way (a big `apply` line's tree is many times its text): on an error the
        // line is read again to find the culprit.
        match serde_json::from_value::<Op>(Value::Object(obj)) {
            Ok(op) => Ok(Request { version: PROTOCOL_VERSION, id, op }),
            Err(e) => {
                let mut obj = match serde_json::from_slice::<Value>(line) {
                    Ok(Value::Object(o)) => o,
                    _ => Map::new(),
                };
                obj.remove("version");
                obj.remove("id");
                let message = format!("{name}: {e}");
                let field = backticked(&e.to_string()).or_else(|| culprit(&obj, &e.to_string()));
                Err(Rejected {
                    id: Some(id),
                    error: ErrorBody { field, ..ErrorBody::new(ErrorKind::BadRequest, message) },
                })
            }
        }
    }
}

/// A request line that could not be parsed: the response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The request's id, when it could be read.
    pub id: Option<u64>,
    /// Why.
    pub error: ErrorBody,
}

impl Rejected {
    /// The error response for the client.
    pub fn into_response(self) -> Response {
        Response::error(self.id, self.error)
    }
}

/// The field a serde message names ("missing field `x`", "unknown field `x`, expected …"); other messages
/// quote values in backticks, not fields.
fn backticked(msg: &str) -> Option<String> {
    if !(msg.starts_with("missing field") || msg.starts_with("unknown field")) {
        return None;
    }
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_string())
}

/// The argument whose value alone reproduces a type error `msg` (serde's messages for a mistyped value do not
/// name the field).
fn culprit(obj: &Map<String, Value>, msg: &str) -> Option<String> {
    obj.iter().filter(|(k, _)| k.as_str() != "op").find_map(|(k, v)| {
        let mut one = Map::new();
        one.insert("op".to_string(), obj["op"].clone());
        one.insert(k.clone(), v.clone());
        match serde_json::from_value::<Op>(Value::Object(one)) {
            Err(e) if e.to_string() == msg => Some(k.clone()),
            _ => None,
        }
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The request's id (absent when it could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// True on success.
    pub ok: bool,
    /// The op's result, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// What went wrong, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    /// A success carrying `result`.
    pub fn success<T: Serialize>(id: u64, result: &T) -> Response {
        match serde_json::to_value(result) {
            Ok(v) => Response { version: PROTOCOL_VERSION, id: Some(id), ok: true, result: Some(v), error: None },
            Err(e) => Response::error(Some(id), ErrorBody::new(ErrorKind::Internal, format!("encoding result: {e}"))),
        }
    }

    /// A failure.
    pub fn error(id: Option<u64>, error: ErrorBody) -> Response {
        Response { version: PROTOCOL_VERSION, id, ok: false, result: None, error: Some(error) }
    }

    /// The response as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parses a response line.
    pub fn parse(line: &[u8]) -> Result<Response, serde_json::Error> {
        serde_json::from_slice(line)
    }

    /// The result decoded as `T` (the op's result type), or the error the server sent.
    pub fn into_result<T: DeserializeOwned>(self) -> Result<T, ErrorBody> {
        if !self.ok {
            return Err(self
                .error
                .unwrap_or_else(|| ErrorBody::new(ErrorKind::Internal, "failure without an error".to_string())));
        }
        serde_json::from_value(self.result.unwrap_or(Value::Null))
            .map_err(|e| ErrorBody::new(ErrorKind::Internal, format!("unexpected result shape: {e}")))
    }
}

/// What kind of failure (stable names clients may branch on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Not JSON, not an object, a missing, unknown or mistyped field.
    BadRequest,
    /// The request's `version` is not [`PROTOCOL_VERSION`].
    VersionMismatch,
    /// No such op.
    UnknownOp,
    /// The request line exceeds [`MAX_REQUEST_BYTES`] (the connection is closed after this response).
    TooLarge,
    /// `apply`: the configuration is not valid (see [`ErrorBody::errors`]).
    InvalidConfig,
    /// `apply`: a port can never be opened by this vswitchd (a replay-only kind, a back-end not built in; the
    /// message names it; nothing was changed). A port that fails to open for a reason that may pass is applied
    /// as failed instead (see `ApplySummary::ports_failed`).
    PortFailed,
    /// `apply`: `expect_generation` is not the running generation.
    Conflict,
    /// A named network or port does not exist.
    NotFound,
    /// The daemon is stopping.
    ShuttingDown,
    /// Anything else (a bug, or the switch failing).
    Internal,
}

/// A failed request's error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// For humans.
    pub message: String,
    /// The request field at fault (`version`, `op`, `name`, `config`, …), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// `invalid_config`: every error, each with its origin and line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ConfigIssue>,
}

impl ErrorBody {
    /// An error with no field.
    pub fn new(kind: ErrorKind, message: String) -> ErrorBody {
        ErrorBody { kind, message, field: None, errors: Vec::new() }
    }

    /// An error about request field `field`.
    pub fn field(kind: ErrorKind, field: &str, message: String) -> ErrorBody {
        ErrorBody { field: Some(field.to_string()), ..ErrorBody::new(kind, message) }
    }

    /// A request line of `len` bytes (or more) was refused.
    pub fn too_large(len: usize) -> ErrorBody {
        ErrorBody::new(
            ErrorKind::TooLarge,
            format!("request line of {len}+ bytes exceeds the limit of {MAX_REQUEST_BYTES} bytes"),
        )
    }

    /// An invalid configuration: the joined message and every error separately.
    pub fn invalid_config(field: &str, errors: &[ConfigError]) -> ErrorBody {
        let message = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        ErrorBody {
            errors: errors.iter().map(ConfigIssue::from).collect(),
            ..ErrorBody::field(ErrorKind::InvalidConfig, field, message)
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ErrorBody {}

/// One configuration error: `ORIGIN:LINE: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigIssue {
    /// The file (or `origin`) it is in.
    pub origin: String,
    /// 1-based line, when known (TOML text; a JSON `config` has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// What is wrong, naming the object and field.
    pub message: String,
}

impl From<&ConfigError> for ConfigIssue {
    fn from(e: &ConfigError) -> Self {
        ConfigIssue { origin: e.origin.clone(), line: e.line, message: e.message.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::HelloResult;

    fn parse(s: &str) -> Result<Request, Rejected> {
        Request::parse(s.as_bytes())
    }

    fn err(s: &str) -> ErrorBody {
        parse(s).unwrap_err().error
    }

    #[test]
    fn every_op_round_trips_through_one_line() {
        let ops = vec![
            Op::Hello,
            Op::GetConfig,
            Op::Apply(Box::new(ApplyArgs {
                toml: Some("[[network]]\nname = \"a\"\n".into()),
                origin: Some("x.toml".into()),
                expect_generation: Some(3),
                ..ApplyArgs::default()
            })),
            Op::Apply(Box::new(ApplyArgs {
                config: Some(Config::parse("[[network]]\nname = \"a\"\n", "t").unwrap()),
                dry_run: true,
                ..ApplyArgs::default()
            })),
            Op::NetworkLs,
            Op::NetworkInspect { name: "a".into() },
            Op::PortLs,
            Op::FdbShow { network: None },
            Op::FdbShow { network: Some("a".into()) },
            Op::RouteShow,
            Op::NeighShow,
            Op::ConntrackLs { limit: Some(5) },
            Op::ConntrackFlush,
            Op::Stats,
            Op::OverlayUpdate {
                state: OverlayState {
                    revision: 9,
                    members: vec![crate::overlay::Member {
                        host: "b".into(),
                        vtep: std::net::Ipv4Addr::new(198, 51, 100, 12),
                        udp_port: 4789,
                        mtu: 1500,
                        networks: vec!["red".into()],
                    }],
                    endpoints: vec![],
                },
            },
            Op::Trace { port: "c1".into(), frame_hex: "ffff".into() },
        ];
        assert_eq!(ops.iter().map(Op::name).collect::<std::collections::BTreeSet<_>>().len(), Op::NAMES.len());
        for (i, op) in ops.into_iter().enumerate() {
            let req = Request::new(i as u64, op);
            let line = req.to_line();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'), "{line}");
            assert_eq!(parse(&line).unwrap(), req, "{line}");
        }
        assert_eq!(Request::new(9, Op::Hello).to_line(), "{\"version\":1,\"id\":9,\"op\":\"hello\"}\n");
    }

    #[test]
    fn responses_round_trip_and_decode_to_the_result_type() {
        let hello = HelloResult {
            server: "vswitchd".into(),
            server_version: "0.1.0".into(),
            protocol_version: PROTOCOL_VERSION,
            pid: 1,
            uptime_ns: 2,
            generation: 3,
        };
        let line = Response::success(4, &hello).to_line();
        let r = Response::parse(line.as_bytes()).unwrap();
        assert_eq!(r.id, Some(4));
        assert_eq!(r.into_result::<HelloResult>().unwrap(), hello);
        let e = Response::error(Some(5), ErrorBody::field(ErrorKind::NotFound, "name", "no network".into()));
        let back = Response::parse(e.to_line().as_bytes()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.into_result::<HelloResult>().unwrap_err().kind, ErrorKind::NotFound);
        assert!(e.to_line().contains("\"kind\":\"not_found\""), "{}", e.to_line());
    }

    #[test]
    fn a_version_mismatch_names_both_versions() {
        let r = parse(r#"{"version":2,"id":1,"op":"hello"}"#).unwrap_err();
        assert_eq!(r.id, Some(1));
        let e = r.error;
        assert_eq!(e.kind, ErrorKind::VersionMismatch);
        assert_eq!(e.field.as_deref(), Some("version"));
        assert!(e.message.contains("version 2") && e.message.contains("version 1"), "{}", e.message);
        assert_eq!(err(r#"{"id":1,"op":"hello"}"#).field.as_deref(), Some("version"));
        assert_eq!(err(r#"{"version":"1","id":1,"op":"hello"}"#).kind, ErrorKind::BadRequest);
    }

    #[test]
    fn malformed_lines_are_bad_requests_with_the_field_when_there_is_one() {
        for line in ["", "not json", "{\"version\":1", "[1,2]", "42"] {
            let r = parse(line).unwrap_err();
            assert_eq!(r.id, None);
            assert_eq!(r.error.kind, ErrorKind::BadRequest, "{line:?}");
        }
        let cases = [
            (r#"{"version":1,"op":"hello"}"#, "id"),
            (r#"{"version":1,"id":-1,"op":"hello"}"#, "id"),
            (r#"{"version":1,"id":1}"#, "op"),
            (r#"{"version":1,"id":1,"op":7}"#, "op"),
            (r#"{"version":1,"id":1,"op":"network_inspect"}"#, "name"),
            (r#"{"version":1,"id":1,"op":"network_inspect","name":3}"#, "name"),
            (r#"{"version":1,"id":1,"op":"fdb_show","netwrk":"a"}"#, "netwrk"),
            (r#"{"version":1,"id":1,"op":"conntrack_ls","limit":"x"}"#, "limit"),
            (r#"{"version":1,"id":1,"op":"hello","extra":1}"#, "extra"),
            (r#"{"version":1,"id":1,"op":"apply","expect_generation":true}"#, "expect_generation"),
            (r#"{"version":1,"id":1,"op":"apply","config":{"port":[{"name":"a"}]}}"#, "kind"),
        ];
        for (line, field) in cases {
            let r = parse(line).unwrap_err();
            let e = r.error;
            assert_eq!(e.kind, ErrorKind::BadRequest, "{line}: {e:?}");
            assert_eq!(e.field.as_deref(), Some(field), "{line}: {e:?}");
            if line.contains("\"id\":1") {
                assert_eq!(r.id, Some(1), "{line}");
            }
        }
    }

    #[test]
    fn an_unknown_op_lists_the_known_ones() {
        let e = err(r#"{"version":1,"id":1,"op":"reboot"}"#);
        assert_eq!(e.kind, ErrorKind::UnknownOp);
        assert_eq!(e.field.as_deref(), Some("op"));
        assert!(e.message.contains("reboot") && e.message.contains("fdb_show"), "{}", e.message);
    }

    #[test]
    fn an_oversized_line_is_refused_before_parsing() {
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        let e = Request::parse(&big).unwrap_err().error;
        assert_eq!(e.kind, ErrorKind::TooLarge);
    }

    #[test]
    fn invalid_config_errors_carry_every_issue_with_its_line() {
        let errs = Config::parse_all_errors("[[port]]\nname = \"a\"\nkind = \"tap\"\n", "x.toml").unwrap_err();
        let e = ErrorBody::invalid_config("toml", &errs);
        assert_eq!(e.kind, ErrorKind::InvalidConfig);
        assert!(!e.errors.is_empty());
        assert!(e.errors.iter().all(|i| i.origin == "x.toml" && i.line.is_some()), "{e:?}");
        let back: ErrorBody = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
