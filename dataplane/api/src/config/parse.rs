//! The configuration text → [`Config`]: TOML read with spans, so that every error names its line.
//!
//! Only the shape (tables, arrays, known keys) is checked by serde: each value is taken as a [`Scalar`] of any
//! type and typed by [`Converter`], which knows which object and field it is, records its line and reports a
//! value of the wrong type or out of range; an unusable value becomes a placeholder marked broken (see
//! [`super::diag`]). Syntax errors, unknown keys and misshapen tables stop the parse with that one error
//! ([`fatal`]). The rules between values are [`super::check`]'s.

use super::check::check;
use super::diag::{kinds_list, named, out_of_range, publish_named, route_named, show, truncate, Diags, Obj};
use super::{
    defaults, limits, ClusterConfig, Config, ConfigError, ConntrackTableConfig, MssClamp, NatConfig, NetworkConfig,
    PortConfig, PortKind, PublishConfig, PublishProto, RouteConfig, Scope, SwitchConfig, XdpMode,
};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::str::FromStr;
use toml::Spanned;

/// Parses and validates configuration text; `origin` names it in errors. Every error, sorted by line.
pub(super) fn parse(text: &str, origin: &str) -> Result<Config, Vec<ConfigError>> {
    let index = LineIndex::new(text);
    let raw: RawDoc = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Err(vec![fatal(text, &index, origin, &e)]),
    };
    let (cfg, mut diags) = convert(raw, &index);
    check(&cfg, &mut diags);
    diags.finish(origin).map(|()| cfg)
}

// Raw, spanned form: what serde sees.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoc {
    #[serde(default)]
    switch: Option<OnlyTable<RawSwitch>>,
    #[serde(default)]
    network: ArrayOfTables<RawNetwork>,
    #[serde(default)]
    port: ArrayOfTables<RawPort>,
    #[serde(default)]
    route: ArrayOfTables<RawRoute>,
    #[serde(default)]
    publish: ArrayOfTables<RawPublish>,
    #[serde(default)]
    nat: Option<OnlyTable<RawNat>>,
    #[serde(default)]
    conntrack: Option<OnlyTable<RawConntrack>>,
    #[serde(default)]
    cluster: Option<Spanned<OnlyTable<RawCluster>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwitch {
    workers: Option<Spanned<Scalar>>,
    poll_idle_us: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    port: Option<Spanned<Scalar>>,
    proto: Option<Spanned<Scalar>>,
    external_port: Option<Spanned<Scalar>>,
    to: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNat {
    port_range: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConntrack {
    limit: Option<Spanned<Scalar>>,
    tcp_strict: Option<Spanned<Scalar>>,
    tcp_syn_sent_secs: Option<Spanned<Scalar>>,
    tcp_syn_recv_secs: Option<Spanned<Scalar>>,
    tcp_established_secs: Option<Spanned<Scalar>>,
    tcp_fin_wait_secs: Option<Spanned<Scalar>>,
    tcp_close_wait_secs: Option<Spanned<Scalar>>,
    tcp_last_ack_secs: Option<Spanned<Scalar>>,
    tcp_time_wait_secs: Option<Spanned<Scalar>>,
    tcp_close_secs: Option<Spanned<Scalar>>,
    udp_secs: Option<Spanned<Scalar>>,
    udp_assured_secs: Option<Spanned<Scalar>>,
    icmp_secs: Option<Spanned<Scalar>>,
    tcp_unreplied_secs: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    name: Option<Spanned<Scalar>>,
    subnet: Option<Spanned<Scalar>>,
    gateway: Option<Spanned<Scalar>>,
    gateway_mac: Option<Spanned<Scalar>>,
    internal: Option<Spanned<Scalar>>,
    masquerade: Option<Spanned<Scalar>>,
    allow_routing_with: Option<Spanned<Scalar>>,
    conntrack_limit: Option<Spanned<Scalar>>,
    mac_aging_secs: Option<Spanned<Scalar>>,
    mac_limit: Option<Spanned<Scalar>>,
    scope: Option<Spanned<Scalar>>,
    vni: Option<Spanned<Scalar>>,
    bum_rate_pps: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: Option<Spanned<Scalar>>,
    kind: Option<Spanned<Scalar>>,
    ifname: Option<Spanned<Scalar>>,
    network: Option<Spanned<Scalar>>,
    address: Option<Spanned<Scalar>>,
    mac: Option<Spanned<Scalar>>,
    mtu: Option<Spanned<Scalar>>,
    netns: Option<Spanned<Scalar>>,
    mode: Option<Spanned<Scalar>>,
    queues: Option<Spanned<Scalar>>,
    offload: Option<Spanned<Scalar>>,
    mss_clamp: Option<Spanned<Scalar>>,
    endpoint_mac: Option<Spanned<Scalar>>,
    endpoint_ip: Option<Spanned<Scalar>>,
    host: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Option<Spanned<Scalar>>,
    host: Option<Spanned<Scalar>>,
    etcd: Option<Spanned<Scalar>>,
    lease_ttl_secs: Option<Spanned<Scalar>>,
    vtep_port: Option<Spanned<Scalar>>,
    vxlan_udp_port: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: Option<Spanned<Scalar>>,
    via: Option<Spanned<Scalar>>,
    port: Option<Spanned<Scalar>>,
}

/// How a table is written, for error messages.
trait TableKind {
    /// The key of the table (or array of tables).
    const KEY: &'static str;
    /// "a [KEY] table", or "a [[KEY]] table".
    const EXPECTING: &'static str;
}
impl TableKind for RawSwitch {
    const KEY: &'static str = "switch";
    const EXPECTING: &'static str = "a [switch] table";
}
impl TableKind for RawNetwork {
    const KEY: &'static str = "network";
    const EXPECTING: &'static str = "a [[network]] table";
}
impl TableKind for RawPort {
    const KEY: &'static str = "port";
    const EXPECTING: &'static str = "a [[port]] table";
}
impl TableKind for RawRoute {
    const KEY: &'static str = "route";
    const EXPECTING: &'static str = "a [[route]] table";
}
impl TableKind for RawPublish {
    const KEY: &'static str = "publish";
    const EXPECTING: &'static str = "a [[publish]] table";
}
impl TableKind for RawNat {
    const KEY: &'static str = "nat";
    const EXPECTING: &'static str = "a [nat] table";
}
impl TableKind for RawConntrack {
    const KEY: &'static str = "conntrack";
    const EXPECTING: &'static str = "a [conntrack] table";
}
impl TableKind for RawCluster {
    const KEY: &'static str = "cluster";
    const EXPECTING: &'static str = "a [cluster] table";
}

/// A struct that may only be written as a table: serde's derived `Deserialize` would also take a struct from an
/// array (`[[switch]]`, `port = [[1, 2]]`), field by field in order.
struct OnlyTable<T>(T);

impl<'de, T: Deserialize<'de> + TableKind> Deserialize<'de> for OnlyTable<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + TableKind> Visitor<'de> for V<T> {
            type Value = OnlyTable<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(OnlyTable)
            }
        }
        deserializer.deserialize_map(V(PhantomData))
    }
}

/// `[[KEY]]` tables, each with its span; says what it expected when given something else (e.g. `[port]`).
struct ArrayOfTables<T>(Vec<Spanned<OnlyTable<T>>>);

impl<T> Default for ArrayOfTables<T> {
    fn default() -> Self {
        ArrayOfTables(Vec::new())
    }
}

impl<'de, T: Deserialize<'de> + TableKind> Deserialize<'de> for ArrayOfTables<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + TableKind> Visitor<'de> for V<T> {
            type Value = ArrayOfTables<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array of tables: write [[{}]], not [{}]", T::KEY, T::KEY)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(ArrayOfTables(items))
            }
        }
        deserializer.deserialize_seq(V(PhantomData))
    }
}

/// Any TOML value, as found; arrays are kept (of scalars: `[cluster] etcd`), tables only recognised.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Scalar>),
    Table,
}

/// The key under which toml hands a datetime to a visitor (toml_datetime's private protocol).
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Scalar>()? {
                    items.push(item);
                }
                Ok(Scalar::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                let mut datetime = None;
                let mut first = true;
                while let Some(key) = map.next_key::<String>()? {
                    if first && key == TOML_DATETIME_KEY {
                        datetime = Some(map.next_value::<String>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                        datetime = None;
                    }
                    first = false;
                }
                Ok(datetime.map_or(Scalar::Table, Scalar::Datetime))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl Scalar {
    /// "string \"x\"", "integer 5", … for "found …" in messages.
    fn describe(&self) -> String {
        match self {
            Scalar::Str(s) => format!("string {}", show(s)),
            Scalar::Int(i) => format!("integer {i}"),
            Scalar::Float(x) => format!("float {x}"),
            Scalar::Bool(b) => format!("boolean {b}"),
            Scalar::Datetime(d) => format!("datetime {}", truncate(d)),
            Scalar::Array(_) => "an array".to_string(),
            Scalar::Table => "a table".to_string(),
        }
    }
}

/// A lenient reading used only to say which object a fatal error is in.
#[derive(Deserialize)]
struct LenientDoc {
    #[serde(default)]
    network: Vec<Spanned<LenientObject>>,
    #[serde(default)]
    port: Vec<Spanned<LenientObject>>,
    #[serde(default)]
    route: Vec<Spanned<LenientRoute>>,
    #[serde(default)]
    publish: Vec<Spanned<IgnoredAny>>,
}

#[derive(Deserialize)]
struct LenientObject {
    #[serde(default)]
    name: Option<Scalar>,
}

#[derive(Deserialize)]
struct LenientRoute {
    #[serde(default)]
    prefix: Option<Scalar>,
}

/// Byte offset to 1-based line.
struct LineIndex {
    newlines: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        LineIndex { newlines: text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i).collect() }
    }

    fn line(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&nl| nl < offset) + 1
    }
}

/// The error for text toml or serde refused: syntax, unknown keys, misshapen tables.
fn fatal(text: &str, index: &LineIndex, origin: &str, e: &toml::de::Error) -> ConfigError {
    let start = e.span().map(|s| s.start);
    let mut message = e.message().trim().replace('\n', "; ");
    if message.is_empty() {
        message = "invalid TOML".to_string();
    }
    if message.contains("expected a borrowed string") {
        // toml cannot give a span to a table made by a dotted key (`mtu.x = 1`) where a value is expected.
        message = "a dotted key cannot set this field: it takes a single value, not a table".to_string();
    }
    if let Some(object) = start.and_then(|s| object_at(text, s)) {
        message = format!("{object}: {message}");
    }
    ConfigError { origin: origin.to_string(), line: start.map(|s| index.line(s)), message }
}

/// "port c1" (or "port #2") when `offset` lies inside a `[[network]]`, `[[port]]` or `[[route]]` table.
fn object_at(text: &str, offset: usize) -> Option<String> {
    let doc: LenientDoc = toml::from_str(text).ok()?;
    if let Some((i, route)) = doc.route.iter().enumerate().find(|(_, r)| r.span().contains(&offset)) {
        let prefix = match &route.get_ref().prefix {
            Some(Scalar::Str(s)) => s.parse().ok(),
            _ => None,
        };
        return Some(route_named(i, prefix));
    }
    if let Some(i) = doc.publish.iter().position(|p| p.span().contains(&offset)) {
        return Some(publish_named(i));
    }
    let lists = [("network", &doc.network, limits::NETWORK_NAME_MAX), ("port", &doc.port, limits::PORT_NAME_MAX)];
    for (what, list, max) in lists {
        for (i, object) in list.iter().enumerate() {
            if object.span().contains(&offset) {
                let name = match &object.get_ref().name {
                    Some(Scalar::Str(s)) => s.as_str(),
                    _ => "",
                };
                return Some(named(what, i, name, max));
            }
        }
    }
    None
}

// Raw → typed: every value gets its type checked, its line recorded; unusable values become placeholders
// marked broken.

struct Converter<'a> {
    index: &'a LineIndex,
    diags: Diags,
}

impl Converter<'_> {
    /// Records where `field` is and hands back its value.
    fn take(&mut self, obj: Obj, field: &'static str, value: Option<Spanned<Scalar>>) -> Option<Scalar> {
        let value = value?;
        self.diags.fields.insert((obj, field), self.index.line(value.span().start));
        Some(value.into_inner())
    }

    fn wrong_type(&mut self, obj: Obj, field: &'static str, label: &str, expected: &str, found: &Scalar) {
        let message = format!("{field} must be {expected}, found {}", found.describe());
        self.diags.report_broken(obj, field, label, message);
    }

    fn string(&mut self, obj: Obj, field: &'static str, label: &str, value: Option<Spanned<Scalar>>) -> Option<String> {
        match self.take(obj, field, value)? {
            Scalar::Str(s) => Some(s),
            other => {
                self.wrong_type(obj, field, label, "a string", &other);
                None
            }
        }
    }

    /// An array of strings.
    fn strings(
        &mut self,
        obj: Obj,
        field: &'static str,
        label: &str,
        value: Option<Spanned<Scalar>>,
    ) -> Option<Vec<String>> {
        match self.take(obj, field, value)? {
            Scalar::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Scalar::Str(s) => out.push(s),
                        other => {
                            self.wrong_type(obj, field, label, "an array of strings", &other);
                            return None;
                        }
                    }
                }
                Some(out)
            }
            other => {
                self.wrong_type(obj, field, label, "an array of strings", &other);
                None
            }
        }
    }

    fn boolean(&mut self, obj: Obj, field: &'static str, label: &str, value: Option<Spanned<Scalar>>) -> Option<bool> {
        match self.take(obj, field, value)? {
            Scalar::Bool(b) => Some(b),
            other => {
                self.wrong_type(obj, field, label, "a boolean", &other);
                None
            }
        }
    }

    /// An integer of type `T`; one that does not fit `T` is reported against `range`, as the rule would.
    fn integer<T>(
        &mut self,
        obj: Obj,
        field: &'static str,
        label: &str,
        value: Option<Spanned<Scalar>>,
        range: &RangeInclusive<T>,
    ) -> Option<T>
    where
        T: TryFrom<i64> + fmt::Display,
    {
        match self.take(obj, field, value)? {
            Scalar::Int(i) => match T::try_from(i) {
                Ok(v) => Some(v),
                Err(_) => {
                    self.diags.report_broken(obj, field, label, out_of_range(field, i, range));
                    None
                }
            },
            other => {
                self.wrong_type(obj, field, label, "an integer", &other);
                None
            }
        }
    }

    /// `[[port]] mss_clamp`: a number (range-checked with the other rules) or `"pmtu"`.
    fn mss_clamp(&mut self, obj: Obj, label: &str, value: Option<Spanned<Scalar>>) -> Option<MssClamp> {
        const FIELD: &str = "mss_clamp";
        match self.take(obj, FIELD, value)? {
            Scalar::Int(i) => match u16::try_from(i) {
                Ok(v) => Some(MssClamp::Mss(v)),
                Err(_) => {
                    self.diags.report_broken(obj, FIELD, label, out_of_range(FIELD, i, &limits::MSS_CLAMP));
                    None
                }
            },
            Scalar::Str(s) if s == "pmtu" => Some(MssClamp::Pmtu),
            Scalar::Str(s) => {
                let message = format!("mss_clamp {} is neither a number nor \"pmtu\"", show(&s));
                self.diags.report_broken(obj, FIELD, label, message);
                None
            }
            other => {
                self.wrong_type(obj, FIELD, label, "an integer or \"pmtu\"", &other);
                None
            }
        }
    }

    /// A string parsed as `T`; `what` completes "… is not …".
    fn parsed<T: FromStr>(
        &mut self,
        obj: Obj,
        field: &'static str,
        label: &str,
        value: Option<Spanned<Scalar>>,
        what: &str,
    ) -> Option<T> {
        match self.take(obj, field, value)? {
            Scalar::Str(s) => match s.parse() {
                Ok(v) => Some(v),
                Err(_) => {
                    self.diags.report_broken(obj, field, label, format!("{field} {} is not {what}", show(&s)));
                    None
                }
            },
            other => {
                self.wrong_type(obj, field, label, &format!("a string holding {what}"), &other);
                None
            }
        }
    }

    /// The `name` field, required; an unusable one becomes "" (so the object is labelled by position).
    fn name(&mut self, obj: Obj, what: &str, index: usize, value: Option<Spanned<Scalar>>) -> String {
        let position = format!("{what} #{}", index + 1);
        if value.is_none() {
            self.diags.report_broken(obj, "name", &position, "missing field \"name\"".to_string());
        }
        self.string(obj, "name", &position, value).unwrap_or_default()
    }

    fn table(&mut self, obj: Obj, span: std::ops::Range<usize>) {
        self.diags.tables.insert(obj, self.index.line(span.start));
    }

    fn network(&mut self, i: usize, raw: Spanned<OnlyTable<RawNetwork>>) -> NetworkConfig {
        let obj = Obj::Network(i);
        self.table(obj, raw.span());
        let raw = raw.into_inner().0;
        let name = self.name(obj, "network", i, raw.name);
        let label = named("network", i, &name, limits::NETWORK_NAME_MAX);
        NetworkConfig {
            subnet: self.parsed(obj, "subnet", &label, raw.subnet, WHAT_SUBNET),
            gateway: self.parsed(obj, "gateway", &label, raw.gateway, "an IPv4 address"),
            gateway_mac: self.parsed(obj, "gateway_mac", &label, raw.gateway_mac, WHAT_MAC),
            internal: self.boolean(obj, "internal", &label, raw.internal).unwrap_or(false),
            masquerade: self.boolean(obj, "masquerade", &label, raw.masquerade).unwrap_or(false),
            allow_routing_with: self
                .strings(obj, "allow_routing_with", &label, raw.allow_routing_with)
                .unwrap_or_default(),
            conntrack_limit: self.integer(
                obj,
                "conntrack_limit",
                &label,
                raw.conntrack_limit,
                &limits::CONNTRACK_LIMIT,
            ),
            mac_aging_secs: self
                .integer(obj, "mac_aging_secs", &label, raw.mac_aging_secs, &limits::MAC_AGING_SECS)
                .unwrap_or(defaults::MAC_AGING_SECS),
            mac_limit: self
                .integer(obj, "mac_limit", &label, raw.mac_limit, &limits::MAC_LIMIT)
                .unwrap_or(defaults::MAC_LIMIT),
            scope: self.string(obj, "scope", &label, raw.scope).map_or(Scope::Local, |v| match v.as_str() {
                "local" => Scope::Local,
                "overlay" => Scope::Overlay,
                _ => {
                    let message = format!("scope {} is not one of local, overlay", show(&v));
                    self.diags.report_broken(obj, "scope", &label, message);
                    Scope::Local
                }
            }),
            vni: self.integer(obj, "vni", &label, raw.vni, &limits::VNI),
            bum_rate_pps: self
                .integer(obj, "bum_rate_pps", &label, raw.bum_rate_pps, &limits::BUM_RATE_PPS)
                .unwrap_or(defaults::BUM_RATE_PPS),
            name,
        }
    }

    fn cluster(&mut self, raw: Spanned<OnlyTable<RawCluster>>) -> ClusterConfig {
        let (obj, label) = (Obj::Cluster, "cluster");
        self.table(obj, raw.span());
        let raw = raw.into_inner().0;
        for (field, present, what) in [
            ("name", raw.name.is_some(), "the cluster's name"),
            ("host", raw.host.is_some(), "this host's name in the cluster"),
            ("etcd", raw.etcd.is_some(), "etcd client URLs like [\"http://198.51.100.11:2379\"]"),
            ("vtep_port", raw.vtep_port.is_some(), "the routed port whose address is the VTEP"),
        ] {
            if !present {
                self.diags.report_broken(obj, field, label, format!("missing field \"{field}\" ({what})"));
            }
        }
        let etcd = match self.take(obj, "etcd", raw.etcd) {
            None => Vec::new(),
            Some(Scalar::Array(items)) => {
                let mut urls = Vec::new();
                for item in items {
                    match item {
                        Scalar::Str(u) => urls.push(u),
                        other => {
                            self.wrong_type(obj, "etcd", label, "an array of strings", &other);
                            break;
                        }
                    }
                }
                urls
            }
            Some(other) => {
                self.wrong_type(obj, "etcd", label, "an array of URL strings", &other);
                Vec::new()
            }
        };
        ClusterConfig {
            name: self.string(obj, "name", label, raw.name).unwrap_or_default(),
            host: self.string(obj, "host", label, raw.host).unwrap_or_default(),
            etcd,
            lease_ttl_secs: self
                .integer(obj, "lease_ttl_secs", label, raw.lease_ttl_secs, &limits::LEASE_TTL_SECS)
                .unwrap_or(defaults::LEASE_TTL_SECS),
            vtep_port: self.string(obj, "vtep_port", label, raw.vtep_port).unwrap_or_default(),
            vxlan_udp_port: self
                .integer(obj, "vxlan_udp_port", label, raw.vxlan_udp_port, &limits::VXLAN_UDP_PORT)
                .unwrap_or(defaults::VXLAN_UDP_PORT),
        }
    }

    fn port(&mut self, i: usize, raw: Spanned<OnlyTable<RawPort>>) -> PortConfig {
        let obj = Obj::Port(i);
        self.table(obj, raw.span());
        let raw = raw.into_inner().0;
        let name = self.name(obj, "port", i, raw.name);
        let label = named("port", i, &name, limits::PORT_NAME_MAX);
        if raw.kind.is_none() {
            let message = format!("missing field \"kind\" (one of {})", kinds_list());
            self.diags.report_broken(obj, "kind", &label, message);
        }
        let kind = self.string(obj, "kind", &label, raw.kind).and_then(|k| match PortKind::from_name(&k) {
            Some(kind) => Some(kind),
            None => {
                let message = format!("kind {} is not one of {}", show(&k), kinds_list());
                self.diags.report_broken(obj, "kind", &label, message);
                None
            }
        });
        PortConfig {
            kind: kind.unwrap_or(PortKind::Mem),
            ifname: self.string(obj, "ifname", &label, raw.ifname),
            network: self.string(obj, "network", &label, raw.network),
            address: self.parsed(obj, "address", &label, raw.address, WHAT_ADDRESS),
            mac: self.parsed(obj, "mac", &label, raw.mac, WHAT_MAC),
            mtu: self.integer(obj, "mtu", &label, raw.mtu, &limits::MTU).unwrap_or(defaults::MTU),
            netns: self.string(obj, "netns", &label, raw.netns),
            mode: self.string(obj, "mode", &label, raw.mode).and_then(|m| {
                let mode = XdpMode::ALL.into_iter().find(|x| x.as_str() == m);
                if mode.is_none() {
                    let message = format!("mode {} is not one of auto, native, generic", show(&m));
                    self.diags.report_broken(obj, "mode", &label, message);
                }
                mode
            }),
            queues: self.integer(obj, "queues", &label, raw.queues, &limits::QUEUES),
            offload: self.boolean(obj, "offload", &label, raw.offload),
            host: self.boolean(obj, "host", &label, raw.host).unwrap_or(false),
            mss_clamp: self.mss_clamp(obj, &label, raw.mss_clamp),
            endpoint_mac: self.parsed(obj, "endpoint_mac", &label, raw.endpoint_mac, WHAT_MAC),
            endpoint_ip: self.parsed(obj, "endpoint_ip", &label, raw.endpoint_ip, "an IPv4 address"),
            name,
        }
    }

    fn publish(&mut self, i: usize, raw: Spanned<OnlyTable<RawPublish>>) -> PublishConfig {
        let obj = Obj::Publish(i);
        self.table(obj, raw.span());
        let raw = raw.into_inner().0;
        let label = publish_named(i);
        for (field, present, what) in [
            ("port", raw.port.is_some(), "the routed port whose address is published"),
            ("proto", raw.proto.is_some(), "tcp or udp"),
            ("external_port", raw.external_port.is_some(), "the port on the routed port's address"),
            ("to", raw.to.is_some(), "the internal \"A.B.C.D:PORT\""),
        ] {
            if !present {
                self.diags.report_broken(obj, field, &label, format!("missing field \"{field}\" ({what})"));
            }
        }
        let proto = self.string(obj, "proto", &label, raw.proto).and_then(|p| match p.as_str() {
            "tcp" => Some(PublishProto::Tcp),
            "udp" => Some(PublishProto::Udp),
            _ => {
                let message = format!("proto {} is not one of tcp, udp", show(&p));
                self.diags.report_broken(obj, "proto", &label, message);
                None
            }
        });
        PublishConfig {
            port: self.string(obj, "port", &label, raw.port).unwrap_or_default(),
            proto: proto.unwrap_or(PublishProto::Tcp),
            external_port: self
                .integer(obj, "external_port", &label, raw.external_port, &limits::EXTERNAL_PORT)
                .unwrap_or(0),
            to: self
                .parsed(obj, "to", &label, raw.to, "an IPv4 address and port like \"172.17.0.2:80\"")
                .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
        }
    }

    fn nat(&mut self, raw: RawNat) -> NatConfig {
        let what = "a port range like \"1024-65535\" (A-B with 1 <= A <= B <= 65535)";
        NatConfig { port_range: self.parsed(Obj::Nat, "port_range", "nat", raw.port_range, what).unwrap_or_default() }
    }

    fn conntrack(&mut self, raw: RawConntrack) -> ConntrackTableConfig {
        let (obj, label) = (Obj::Conntrack, "conntrack");
        let d = ConntrackTableConfig::default();
        let mut secs = |field: &'static str, value: Option<Spanned<Scalar>>, default: u64| {
            self.integer(obj, field, label, value, &limits::TIMEOUT_SECS).unwrap_or(default)
        };
        let timeouts = ConntrackTableConfig {
            tcp_syn_sent_secs: secs("tcp_syn_sent_secs", raw.tcp_syn_sent_secs, d.tcp_syn_sent_secs),
            tcp_syn_recv_secs: secs("tcp_syn_recv_secs", raw.tcp_syn_recv_secs, d.tcp_syn_recv_secs),
            tcp_established_secs: secs("tcp_established_secs", raw.tcp_established_secs, d.tcp_established_secs),
            tcp_fin_wait_secs: secs("tcp_fin_wait_secs", raw.tcp_fin_wait_secs, d.tcp_fin_wait_secs),
            tcp_close_wait_secs: secs("tcp_close_wait_secs", raw.tcp_close_wait_secs, d.tcp_close_wait_secs),
            tcp_last_ack_secs: secs("tcp_last_ack_secs", raw.tcp_last_ack_secs, d.tcp_last_ack_secs),
            tcp_time_wait_secs: secs("tcp_time_wait_secs", raw.tcp_time_wait_secs, d.tcp_time_wait_secs),
            tcp_close_secs: secs("tcp_close_secs", raw.tcp_close_secs, d.tcp_close_secs),
            udp_secs: secs("udp_secs", raw.udp_secs, d.udp_secs),
            udp_assured_secs: secs("udp_assured_secs", raw.udp_assured_secs, d.udp_assured_secs),
            icmp_secs: secs("icmp_secs", raw.icmp_secs, d.icmp_secs),
            tcp_unreplied_secs: secs("tcp_unreplied_secs", raw.tcp_unreplied_secs, d.tcp_unreplied_secs),
            ..d
        };
        ConntrackTableConfig {
            limit: self.integer(obj, "limit", label, raw.limit, &limits::CONNTRACK_LIMIT).unwrap_or(d.limit),
            tcp_strict: self.boolean(obj, "tcp_strict", label, raw.tcp_strict).unwrap_or(false),
            ..timeouts
        }
    }

    fn route(&mut self, i: usize, raw: Spanned<OnlyTable<RawRoute>>) -> RouteConfig {
        let obj = Obj::Route(i);
        self.table(obj, raw.span());
        let raw = raw.into_inner().0;
        let position = route_named(i, None);
        if raw.prefix.is_none() {
            self.diags.report_broken(obj, "prefix", &position, "missing field \"prefix\"".to_string());
        }
        let prefix = self.parsed(obj, "prefix", &position, raw.prefix, WHAT_PREFIX);
        let label = route_named(i, prefix);
        if raw.via.is_none() {
            self.diags.report_broken(obj, "via", &label, "missing field \"via\" (the next hop)".to_string());
        }
        RouteConfig {
            prefix: prefix.unwrap_or_default(),
            via: self.parsed(obj, "via", &label, raw.via, "an IPv4 address").unwrap_or(Ipv4Addr::UNSPECIFIED),
            port: self.string(obj, "port", &label, raw.port),
        }
    }
}

/// What a `[[network]] subnet` must be, for "… is not …".
const WHAT_SUBNET: &str = "an IPv4 subnet like \"172.17.0.0/16\"";
/// What a `[[route]] prefix` must be.
const WHAT_PREFIX: &str = "an IPv4 prefix like \"10.0.0.0/8\"";
/// What a `[[port]] address` must be.
const WHAT_ADDRESS: &str = "an IPv4 address with its prefix length like \"203.0.113.2/24\"";
/// What a MAC must be.
const WHAT_MAC: &str = "a MAC address like \"02:00:00:00:00:01\"";

fn convert(raw: RawDoc, index: &LineIndex) -> (Config, Diags) {
    let mut conv = Converter { index, diags: Diags::default() };
    let mut switch = SwitchConfig::default();
    if let Some(OnlyTable(s)) = raw.switch {
        let (obj, label) = (Obj::Switch, "switch");
        switch.workers = conv.integer(obj, "workers", label, s.workers, &limits::WORKERS).unwrap_or(switch.workers);
        switch.poll_idle_us = conv
            .integer(obj, "poll_idle_us", label, s.poll_idle_us, &limits::POLL_IDLE_US)
            .unwrap_or(switch.poll_idle_us);
    }
    let networks = raw.network.0.into_iter().enumerate().map(|(i, n)| conv.network(i, n)).collect();
    let ports = raw.port.0.into_iter().enumerate().map(|(i, p)| conv.port(i, p)).collect();
    let routes = raw.route.0.into_iter().enumerate().map(|(i, r)| conv.route(i, r)).collect();
    let publish = raw.publish.0.into_iter().enumerate().map(|(i, p)| conv.publish(i, p)).collect();
    let nat = raw.nat.map(|n| conv.nat(n.0)).unwrap_or_default();
    let conntrack = raw.conntrack.map(|c| conv.conntrack(c.0)).unwrap_or_default();
    let cluster = raw.cluster.map(|c| conv.cluster(c));
    let cfg = Config { switch, networks, ports, routes, publish, nat, conntrack, cluster };
    (cfg, conv.diags)
}

#[cfg(test)]
mod tests {
    use super::LineIndex;

    #[test]
    fn line_index() {
        let index = LineIndex::new("a\nbc\n\nd");
        assert_eq!([0, 1, 2, 3, 4, 5, 6, 99].map(|o| index.line(o)), [1, 1, 2, 2, 2, 3, 4, 4]);
    }
}
