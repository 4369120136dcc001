//! [`diff`]: what changes between a running [`Config`] and a desired one, as a list of [`Change`]s that read like
//! a plan (`+ network x`, `~ port c1: network a→b`, `- publish uplink tcp/8080`).
//!
//! Objects are matched by their identity in the configuration language: networks and ports by `name`, routes by
//! `prefix`, publish rules by (`port`, `proto`, `external_port`); `[switch]`, `[nat]` and `[conntrack]` are single
//! objects. A changed object lists each changed field with its old and new value (the field names are those of
//! the TOML language, taken from the serde form, so a field added to the model shows up without code here).
//!
//! The diff is for people: the agent prints it and decides whether to apply by comparing the whole configurations
//! (`running != desired`). The two agree: an empty diff means equal configurations, because a change of file order
//! alone (which decides port and network numbering) is reported as a [`ChangeOp::Reorder`].
//!
//! Order of the list: `[switch]`, networks, ports, routes, publish rules, `[nat]`, `[conntrack]`; within a kind,
//! removals in the running order, then changes and additions in the desired order, then a reorder if any.
//!
//! Pure functions over plain data: any thread.

use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use vswitch_api::config::{Config, NetworkConfig, PortConfig, PublishConfig, RouteConfig};

/// What happens to an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    /// Present only in the desired configuration.
    Add,
    /// Present only in the running configuration.
    Remove,
    /// Present in both with different fields.
    Modify,
    /// The same objects of one kind in a different file order (`fields` is empty; `object` names the kind and the
    /// desired order).
    Reorder,
}

impl ChangeOp {
    /// The plan's sign: `+`, `-`, `~`.
    pub fn sign(&self) -> char {
        match self {
            ChangeOp::Add => '+',
            ChangeOp::Remove => '-',
            ChangeOp::Modify | ChangeOp::Reorder => '~',
        }
    }
}

/// One field of a changed (or added) object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// The key in the configuration language (`network`, `mtu`, `port_range`, …).
    pub field: String,
    /// The running value (`none` when unset); empty for an added object.
    pub old: String,
    /// The desired value (`none` when unset); empty for a removed object.
    pub new: String,
}

/// One line of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Add, remove, modify or reorder.
    pub op: ChangeOp,
    /// The object as the language names it: `switch`, `network bridge`, `port c1`, `route 0.0.0.0/0`,
    /// `publish uplink tcp/8080`, `nat`, `conntrack`; for a reorder, `port order` etc.
    pub object: String,
    /// Modify: the changed fields. Add: the fields set to something other than their default. Remove: empty.
    pub fields: Vec<FieldChange>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.sign(), self.object)?;
        for (i, c) in self.fields.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { ", " })?;
            match self.op {
                ChangeOp::Modify => write!(f, "{} {}→{}", c.field, c.old, c.new)?,
                _ => write!(f, "{}={}", c.field, c.new)?,
            }
        }
        Ok(())
    }
}

/// The changes that turn `running` into `desired`; empty exactly when the two are equal.
pub fn diff(running: &Config, desired: &Config) -> Vec<Change> {
    let mut out = Vec::new();
    single(&mut out, "switch", &running.switch, &desired.switch);
    let network = Kind { name: "network", key: network_key, required: &["name"], identity: &["name"] };
    keyed(&mut out, &network, &running.networks, &desired.networks);
    let port = Kind { name: "port", key: port_key, required: &["name", "kind"], identity: &["name"] };
    keyed(&mut out, &port, &running.ports, &desired.ports);
    let route = Kind { name: "route", key: route_key, required: &["prefix", "via"], identity: &["prefix"] };
    keyed(&mut out, &route, &running.routes, &desired.routes);
    let publish_id: &[&str] = &["port", "proto", "external_port"];
    let publish = Kind {
        name: "publish",
        key: publish_key,
        required: &["port", "proto", "external_port", "to"],
        identity: publish_id,
    };
    keyed(&mut out, &publish, &running.publish, &desired.publish);
    single(&mut out, "nat", &running.nat, &desired.nat);
    single(&mut out, "conntrack", &running.conntrack, &desired.conntrack);
    out
}

/// The plan as text, one change per line (empty string for no change).
pub fn render(changes: &[Change]) -> String {
    changes.iter().map(|c| format!("{c}\n")).collect()
}

fn network_key(n: &NetworkConfig) -> String {
    n.name.clone()
}
fn port_key(p: &PortConfig) -> String {
    p.name.clone()
}
fn route_key(r: &RouteConfig) -> String {
    r.prefix.to_string()
}
fn publish_key(p: &PublishConfig) -> String {
    format!("{} {}/{}", p.port, p.proto, p.external_port)
}

/// A model object's serde form: its fields in declaration order (a `serde_json::Map` would sort them).
#[derive(Debug, Default)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Ordered)
    }
}

/// The fields of a model object (the model's types all serialize to maps; anything else has no fields).
fn fields_of<T: Serialize>(v: &T) -> Fields {
    serde_json::to_string(v).ok().and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default()
}

/// A value as the plan prints it: strings bare, unset as `none`.
fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "none".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The fields that differ between two serde maps, in the order of the desired one's keys.
fn changed_fields(old: &Fields, new: &Fields) -> Vec<FieldChange> {
    let mut keys: Vec<&String> = new.0.iter().map(|(k, _)| k).collect();
    keys.extend(old.0.iter().map(|(k, _)| k).filter(|k| new.get(k).is_none()));
    keys.into_iter()
        .filter(|k| old.get(k) != new.get(k))
        .map(|k| FieldChange { field: k.clone(), old: show(old.get(k)), new: show(new.get(k)) })
        .collect()
}

fn single<T: Serialize + PartialEq>(out: &mut Vec<Change>, object: &str, running: &T, desired: &T) {
    if running != desired {
        let fields = changed_fields(&fields_of(running), &fields_of(desired));
        out.push(Change { op: ChangeOp::Modify, object: object.to_string(), fields });
    }
}

/// A list-valued kind of object: how to name it, match it and summarize an added one.
struct Kind<T> {
    /// `network`, `port`, `route`, `publish`.
    name: &'static str,
    /// The identity the running and desired lists are matched by (also printed after the kind).
    key: fn(&T) -> String,
    /// The fields without a serde default: with only these written, the object has its defaults.
    required: &'static [&'static str],
    /// The fields already printed in the key.
    identity: &'static [&'static str],
}

/// An added object's fields worth printing: the required ones and those not at their default, except the
/// identity already printed in the object's name.
fn added_fields<T: Serialize + DeserializeOwned>(kind: &Kind<T>, v: &T) -> Vec<FieldChange> {
    non_default_fields(v, kind.required)
        .into_iter()
        .filter(|(k, _)| !kind.identity.contains(&k.as_str()))
        .map(|(k, val)| FieldChange { field: k, old: String::new(), new: show(Some(&val)) })
        .collect()
}

/// A model object's fields, in declaration order, that are set and not at their default: the `required` ones
/// (those without a serde default) always, the others when they differ from the object deserialized from the
/// required fields alone.
pub(crate) fn non_default_fields<T: Serialize + DeserializeOwned>(v: &T, required: &[&str]) -> Vec<(String, Value)> {
    let full = fields_of(v);
    let minimal: Map<String, Value> = full.0.iter().filter(|(k, _)| required.contains(&k.as_str())).cloned().collect();
    let defaults = serde_json::from_value::<T>(Value::Object(minimal)).map(|d| fields_of(&d)).unwrap_or_default();
    full.0
        .into_iter()
        .filter(|(k, val)| !val.is_null() && (required.contains(&k.as_str()) || defaults.get(k) != Some(val)))
        .collect()
}

/// The object of `list` whose key is `k`.
fn find<'a, T>(key: fn(&T) -> String, list: &'a [T], k: &str) -> Option<&'a T> {
    list.iter().find(|x| key(x) == k)
}

fn keyed<T: Serialize + DeserializeOwned + PartialEq>(
    out: &mut Vec<Change>,
    kind: &Kind<T>,
    running: &[T],
    desired: &[T],
) {
    let key = kind.key;
    for r in running {
        let k = key(r);
        if find(key, desired, &k).is_none() {
            out.push(Change { op: ChangeOp::Remove, object: format!("{} {k}", kind.name), fields: Vec::new() });
        }
    }
    for d in desired {
        let k = key(d);
        let object = format!("{} {k}", kind.name);
        match find(key, running, &k) {
            None => out.push(Change { op: ChangeOp::Add, object, fields: added_fields(kind, d) }),
            Some(r) if r != d => {
                out.push(Change { op: ChangeOp::Modify, object, fields: changed_fields(&fields_of(r), &fields_of(d)) })
            }
            Some(_) => {}
        }
    }
    // Same objects, different order: the order numbers ports and networks, so it is a change of its own.
    let kept_running: Vec<String> = running.iter().map(key).filter(|k| find(key, desired, k).is_some()).collect();
    let kept_desired: Vec<String> = desired.iter().map(key).filter(|k| find(key, running, k).is_some()).collect();
    if kept_running != kept_desired {
        out.push(Change {
            op: ChangeOp::Reorder,
            object: format!("{} order: {}", kind.name, kept_desired.join(", ")),
            fields: Vec::new(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::parse(text, "test.toml").unwrap()
    }

    const BASE: &str = r#"
[[network]]
name = "bridge"
subnet = "172.17.0.0/16"
gateway = "172.17.0.1"
masquerade = true

[[network]]
name = "other"

[[port]]
name = "c1"
kind = "tap"
ifname = "vs-c1"
network = "bridge"

[[port]]
name = "uplink"
kind = "afpacket"
ifname = "vs-up"
address = "203.0.113.2/24"

[[route]]
prefix = "0.0.0.0/0"
via = "203.0.113.1"

[[publish]]
port = "uplink"
proto = "tcp"
external_port = 8080
to = "172.17.0.2:80"
"#;

    fn lines(running: &Config, desired: &Config) -> Vec<String> {
        diff(running, desired).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn equal_configs_have_no_changes() {
        assert!(diff(&cfg(BASE), &cfg(BASE)).is_empty());
        assert!(diff(&Config::default(), &Config::default()).is_empty());
        assert_eq!(render(&[]), "");
    }

    #[test]
    fn from_empty_every_object_is_added_with_its_non_default_fields() {
        assert_eq!(
            lines(&Config::default(), &cfg(BASE)),
            [
                "+ network bridge: subnet=172.17.0.0/16, gateway=172.17.0.1, masquerade=true",
                "+ network other",
                "+ port c1: kind=tap, ifname=vs-c1, network=bridge",
                "+ port uplink: kind=afpacket, ifname=vs-up, address=203.0.113.2/24",
                "+ route 0.0.0.0/0: via=203.0.113.1",
                "+ publish uplink tcp/8080: to=172.17.0.2:80",
            ]
        );
    }

    #[test]
    fn to_empty_every_object_is_removed() {
        assert_eq!(
            lines(&cfg(BASE), &Config::default()),
            [
                "- network bridge",
                "- network other",
                "- port c1",
                "- port uplink",
                "- route 0.0.0.0/0",
                "- publish uplink tcp/8080"
            ]
        );
    }

    #[test]
    fn a_changed_field_shows_old_and_new_values() {
        let desired = BASE.replace("network = \"bridge\"", "network = \"other\"\nmtu = 1400");
        assert_eq!(lines(&cfg(BASE), &cfg(&desired)), ["~ port c1: network bridge→other, mtu 1500→1400"]);
    }

    #[test]
    fn an_unset_option_reads_none() {
        let desired = BASE.replace("ifname = \"vs-c1\"\n", "ifname = \"vs-c1\"\nnetns = \"ctr1\"\n");
        assert_eq!(lines(&cfg(BASE), &cfg(&desired)), ["~ port c1: netns none→ctr1"]);
        assert_eq!(lines(&cfg(&desired), &cfg(BASE)), ["~ port c1: netns ctr1→none"]);
    }

    #[test]
    fn publish_rules_are_matched_by_port_proto_and_external_port() {
        let moved = BASE.replace("172.17.0.2:80", "172.17.0.3:80");
        assert_eq!(lines(&cfg(BASE), &cfg(&moved)), ["~ publish uplink tcp/8080: to 172.17.0.2:80→172.17.0.3:80"]);
        let other_port = BASE.replace("8080", "8081");
        assert_eq!(
            lines(&cfg(BASE), &cfg(&other_port)),
            ["- publish uplink tcp/8080", "+ publish uplink tcp/8081: to=172.17.0.2:80"]
        );
    }

    #[test]
    fn routes_are_matched_by_prefix() {
        let desired = BASE.replace("via = \"203.0.113.1\"", "via = \"203.0.113.254\"");
        assert_eq!(lines(&cfg(BASE), &cfg(&desired)), ["~ route 0.0.0.0/0: via 203.0.113.1→203.0.113.254"]);
    }

    #[test]
    fn single_tables_list_their_changed_fields() {
        let desired =
            format!("[switch]\nworkers = 2\n[nat]\nport_range = \"2000-3000\"\n[conntrack]\nlimit = 10\n{BASE}");
        assert_eq!(
            lines(&cfg(BASE), &cfg(&desired)),
            ["~ switch: workers 1→2", "~ nat: port_range 1024-65535→2000-3000", "~ conntrack: limit 262144→10"]
        );
    }

    #[test]
    fn a_change_of_order_alone_is_a_change() {
        let a = cfg(BASE);
        let mut b = a.clone();
        b.ports.reverse();
        assert_ne!(a, b);
        assert_eq!(lines(&a, &b), ["~ port order: uplink, c1"]);
    }

    #[test]
    fn removals_come_before_changes_and_additions_within_a_kind() {
        let desired = BASE.replace("name = \"other\"", "name = \"third\"");
        assert_eq!(lines(&cfg(BASE), &cfg(&desired)), ["- network other", "+ network third"]);
    }

    #[test]
    fn changes_serialize_for_scripts() {
        let desired = BASE.replace("network = \"bridge\"", "network = \"other\"");
        let json = serde_json::to_value(diff(&cfg(BASE), &cfg(&desired))).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"op": "modify", "object": "port c1",
                "fields": [{"field": "network", "old": "bridge", "new": "other"}]}])
        );
    }
}
