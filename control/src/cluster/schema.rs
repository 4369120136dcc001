//! The etcd key schema of a vswitch cluster, version 1, and the JSON values stored under it.
//!
//! Every key lives under `/vswitch/v1/<cluster>/` ([`Keys::prefix`]); names (cluster, host, network) are
//! `[A-Za-z0-9_.-]`, so a `/` always separates fields:
//!
//! | key | value | lifetime |
//! |-----|-------|----------|
//! | `hosts/<host>` | [`HostRecord`]: `{"vtep":"198.51.100.11","udp_port":4789,"mtu":1500,"networks":["red"]}` | the host's lease |
//! | `endpoints/<host>/<network>/<mac>` | [`EndpointRecord`]: `{"network":"red","mac":"02:…","ip":"10.1.0.2"}` | the host's lease |
//! | `vni/<network>` | the network's VNI, decimal (`"4096"`) | permanent |
//! | `vni-owner/<vni>` | the network holding that VNI | permanent |
//!
//! A host's registration and endpoints are written in one transaction under one lease, so they appear and
//! disappear together (a host that stops keeping its lease alive vanishes after its TTL; one that revokes it,
//! at once). VNIs are allocated by create-if-absent transactions on both `vni/<network>` and `vni-owner/<vni>`,
//! so two networks never share one, and a network keeps its VNI for the life of the cluster. A later, incompatible
//! schema gets a new version prefix (`/vswitch/v2/…`), so both can live side by side during an upgrade.
//!
//! Pure functions and plain data; used by the membership session's task.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use vswitch_api::MacAddr;

/// The schema version in every key.
pub const VERSION: &str = "v1";

/// The first VNI handed out when a network omits `vni` (Docker's overlay starts swarm VNIs at 4096 too; lower
/// ones are left for networks that name theirs).
pub const FIRST_ALLOCATED_VNI: u32 = 4096;

/// A host's registration (`hosts/<host>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Its VTEP address.
    pub vtep: Ipv4Addr,
    /// The UDP port it receives VXLAN on.
    pub udp_port: u16,
    /// Its underlay MTU (the VTEP port's).
    pub mtu: u16,
    /// The overlay networks it serves.
    #[serde(default)]
    pub networks: Vec<String>,
}

/// One endpoint behind a host (`endpoints/<host>/<network>/<mac>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// The overlay network.
    pub network: String,
    /// Its MAC.
    pub mac: MacAddr,
    /// Its IPv4 address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
}

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// `hosts/<host>`.
    Host(String),
    /// `endpoints/<host>/<network>/<mac>`.
    Endpoint {
        /// The host.
        host: String,
        /// The network.
        network: String,
        /// The MAC, as written in the key.
        mac: String,
    },
    /// `vni/<network>`.
    Vni(String),
    /// `vni-owner/<vni>`.
    VniOwner(String),
}

/// The keys of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys of cluster `name`.
    pub fn new(cluster: &str) -> Keys {
        Keys { prefix: format!("/vswitch/{VERSION}/{cluster}/") }
    }

    /// `/vswitch/v1/<cluster>/`: every key of the cluster starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `hosts/<host>`.
    pub fn host(&self, host: &str) -> String {
        format!("{}hosts/{host}", self.prefix)
    }

    /// `endpoints/<host>/`: every endpoint of a host.
    pub fn endpoints_of(&self, host: &str) -> String {
        format!("{}endpoints/{host}/", self.prefix)
    }

    /// `endpoints/<host>/<network>/<mac>`.
    pub fn endpoint(&self, host: &str, e: &EndpointRecord) -> String {
        format!("{}endpoints/{host}/{}/{}", self.prefix, e.network, e.mac)
    }

    /// `vni/<network>`.
    pub fn vni(&self, network: &str) -> String {
        format!("{}vni/{network}", self.prefix)
    }

    /// `vni-owner/`: every allocated VNI.
    pub fn vni_owners(&self) -> String {
        format!("{}vni-owner/", self.prefix)
    }

    /// `vni-owner/<vni>`.
    pub fn vni_owner(&self, vni: u32) -> String {
        format!("{}vni-owner/{vni}", self.prefix)
    }

    /// What `key` is, or `None` for a key outside the schema (ignored).
    pub fn classify(&self, key: &str) -> Option<KeyKind> {
        let rest = key.strip_prefix(&self.prefix)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let ok = |s: &str| valid_name(s);
        match parts[..] {
            ["hosts", h] if ok(h) => Some(KeyKind::Host(h.to_string())),
            ["endpoints", h, n, mac] if ok(h) && ok(n) && !mac.is_empty() => {
                Some(KeyKind::Endpoint { host: h.into(), network: n.into(), mac: mac.into() })
            }
            ["vni", n] if ok(n) => Some(KeyKind::Vni(n.to_string())),
            ["vni-owner", v] if !v.is_empty() => Some(KeyKind::VniOwner(v.to_string())),
            _ => None,
        }
    }
}

/// True for a name usable in a key: 1..=64 characters of `[A-Za-z0-9_.-]`, not `.` or `..`.
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_classify() {
        let k = Keys::new("lab");
        assert_eq!(k.host("h1"), "/vswitch/v1/lab/hosts/h1");
        assert_eq!(k.classify(&k.host("h1")), Some(KeyKind::Host("h1".into())));
        let e = EndpointRecord { network: "red".into(), mac: MacAddr([2, 0, 0, 0, 0, 1]), ip: None };
        assert_eq!(k.endpoint("h1", &e), "/vswitch/v1/lab/endpoints/h1/red/02:00:00:00:00:01");
        assert!(k.endpoint("h1", &e).starts_with(&k.endpoints_of("h1")));
        assert_eq!(
            k.classify(&k.endpoint("h1", &e)),
            Some(KeyKind::Endpoint { host: "h1".into(), network: "red".into(), mac: "02:00:00:00:00:01".into() })
        );
        assert_eq!(k.classify(&k.vni("red")), Some(KeyKind::Vni("red".into())));
        assert_eq!(k.classify(&k.vni_owner(4096)), Some(KeyKind::VniOwner("4096".into())));
        for other in ["/vswitch/v1/other/hosts/h1", "/vswitch/v1/lab/hosts/", "/vswitch/v1/lab/hosts/a/b", "/x"] {
            assert_eq!(k.classify(other), None, "{other}");
        }
    }

    #[test]
    fn records_are_the_documented_json() {
        let h = HostRecord {
            vtep: Ipv4Addr::new(198, 51, 100, 11),
            udp_port: 4789,
            mtu: 1500,
            networks: vec!["red".into()],
        };
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            r#"{"vtep":"198.51.100.11","udp_port":4789,"mtu":1500,"networks":["red"]}"#
        );
        let e = EndpointRecord {
            network: "red".into(),
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            ip: Some(Ipv4Addr::new(10, 1, 0, 2)),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"network":"red","mac":"02:00:00:00:00:01","ip":"10.1.0.2"}"#
        );
    }
}
