//! [`ClusterView`]: the agent's copy of the cluster's keys (hosts, endpoints, VNIs), built by a list and kept
//! current by the watch's events; and what vswitchd is told from it ([`ClusterView::overlay_state`]).
//!
//! Values that do not parse are skipped (and logged once per key): a bad record written by hand must not stop
//! the agent, nor remove what it knew. Pure data; owned by the membership task.

use super::schema::{EndpointRecord, HostRecord, KeyKind, Keys};
use std::collections::BTreeMap;
use vswitch_api::overlay::{Member, OverlayState, RemoteEndpoint};

/// What the agent knows of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// The etcd revision this view reflects.
    pub revision: i64,
    /// Registered hosts by name.
    pub hosts: BTreeMap<String, HostRecord>,
    /// Endpoints by (host, network, MAC as in the key).
    pub endpoints: BTreeMap<(String, String, String), EndpointRecord>,
    /// Allocated VNIs by network.
    pub vnis: BTreeMap<String, u32>,
}

/// One difference between two views, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A host appeared or changed.
    HostUp(String),
    /// A host went away.
    HostDown(String),
    /// An endpoint appeared or changed.
    EndpointUp(String, EndpointRecord),
    /// An endpoint went away.
    EndpointDown(String, EndpointRecord),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::HostUp(h) => write!(f, "+ host {h}"),
            Change::HostDown(h) => write!(f, "- host {h}"),
            Change::EndpointUp(h, e) => write!(f, "+ endpoint {h}/{}/{}", e.network, e.mac),
            Change::EndpointDown(h, e) => write!(f, "- endpoint {h}/{}/{}", e.network, e.mac),
        }
    }
}

impl ClusterView {
    /// Applies a put of `key` = `value`; returns false when the key is outside the schema or the value does not
    /// parse (nothing changed).
    pub fn put(&mut self, keys: &Keys, key: &str, value: &[u8]) -> bool {
        match keys.classify(key) {
            Some(KeyKind::Host(h)) => match serde_json::from_slice::<HostRecord>(value) {
                Ok(r) => {
                    self.hosts.insert(h, r);
                    true
                }
                Err(e) => bad(key, &e),
            },
            Some(KeyKind::Endpoint { host, network, mac }) => match serde_json::from_slice::<EndpointRecord>(value) {
                Ok(r) if r.network == network => {
                    self.endpoints.insert((host, network, mac), r);
                    true
                }
                Ok(_) => bad(key, &"the value's network is not the key's"),
                Err(e) => bad(key, &e),
            },
            Some(KeyKind::Vni(n)) => match std::str::from_utf8(value).ok().and_then(|v| v.trim().parse::<u32>().ok()) {
                Some(v) if v <= vswitch_api::overlay::MAX_VNI => {
                    self.vnis.insert(n, v);
                    true
                }
                _ => bad(key, &"not a VNI (a decimal number below 2^24)"),
            },
            Some(KeyKind::VniOwner(_)) | None => false,
        }
    }

    /// Applies a delete of `key`.
    pub fn delete(&mut self, keys: &Keys, key: &str) -> bool {
        match keys.classify(key) {
            Some(KeyKind::Host(h)) => self.hosts.remove(&h).is_some(),
            Some(KeyKind::Endpoint { host, network, mac }) => self.endpoints.remove(&(host, network, mac)).is_some(),
            Some(KeyKind::Vni(n)) => self.vnis.remove(&n).is_some(),
            Some(KeyKind::VniOwner(_)) | None => false,
        }
    }

    /// What changed from `old` to `self` (hosts and endpoints), for the log.
    pub fn changes_from(&self, old: &ClusterView) -> Vec<Change> {
        let mut out = Vec::new();
        for (h, r) in &self.hosts {
            if old.hosts.get(h) != Some(r) {
                out.push(Change::HostUp(h.clone()));
            }
        }
        for h in old.hosts.keys().filter(|h| !self.hosts.contains_key(*h)) {
            out.push(Change::HostDown(h.clone()));
        }
        for (k, e) in &self.endpoints {
            if old.endpoints.get(k) != Some(e) {
                out.push(Change::EndpointUp(k.0.clone(), e.clone()));
            }
        }
        for (k, e) in old.endpoints.iter().filter(|(k, _)| !self.endpoints.contains_key(*k)) {
            out.push(Change::EndpointDown(k.0.clone(), e.clone()));
        }
        out
    }

    /// What vswitchd must know: every other host as a member, and their endpoints (ours are local ports).
    pub fn overlay_state(&self, me: &str) -> OverlayState {
        let members = self
            .hosts
            .iter()
            .filter(|(h, _)| h.as_str() != me)
            .map(|(h, r)| Member {
                host: h.clone(),
                vtep: r.vtep,
                udp_port: r.udp_port,
                mtu: r.mtu,
                networks: r.networks.clone(),
            })
            .collect();
        let endpoints = self
            .endpoints
            .iter()
            .filter(|((h, _, _), _)| h.as_str() != me && self.hosts.contains_key(h))
            .map(|((h, _, _), e)| RemoteEndpoint { network: e.network.clone(), mac: e.mac, ip: e.ip, host: h.clone() })
            .collect();
        OverlayState { revision: self.revision.max(0) as u64, members, endpoints }
    }
}

fn bad(key: &str, e: &dyn std::fmt::Display) -> bool {
    tracing::warn!(key, error = %e, "ignoring a value that does not parse");
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use vswitch_api::MacAddr;

    fn host(last: u8, nets: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&HostRecord {
            vtep: Ipv4Addr::new(198, 51, 100, last),
            udp_port: 4789,
            mtu: 1500,
            networks: nets.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    fn ep(net: &str, mac: u8, ip: u8) -> EndpointRecord {
        EndpointRecord {
            network: net.into(),
            mac: MacAddr([2, 0, 0, 0, 0, mac]),
            ip: Some(Ipv4Addr::new(10, 1, 0, ip)),
        }
    }

    #[test]
    fn puts_and_deletes_build_the_overlay_state_without_our_own_host() {
        let k = Keys::new("c");
        let mut v = ClusterView::default();
        assert!(v.put(&k, &k.host("h1"), &host(11, &["red"])));
        assert!(v.put(&k, &k.host("h2"), &host(12, &["red"])));
        let e1 = ep("red", 1, 2);
        let e2 = ep("red", 2, 3);
        assert!(v.put(&k, &k.endpoint("h1", &e1), &serde_json::to_vec(&e1).unwrap()));
        assert!(v.put(&k, &k.endpoint("h2", &e2), &serde_json::to_vec(&e2).unwrap()));
        assert!(v.put(&k, &k.vni("red"), b"4096"));
        let s = v.overlay_state("h1");
        assert_eq!(s.members.len(), 1);
        assert_eq!(s.members[0].host, "h2");
        assert_eq!(s.endpoints.len(), 1);
        assert_eq!((s.endpoints[0].host.as_str(), s.endpoints[0].mac), ("h2", e2.mac));
        assert_eq!(v.vnis.get("red"), Some(&4096));
        let before = v.clone();
        assert!(v.delete(&k, &k.host("h2")));
        assert!(v.overlay_state("h1").endpoints.is_empty(), "an endpoint whose host is gone is not sent");
        assert_eq!(v.changes_from(&before), vec![Change::HostDown("h2".into())]);
    }

    #[test]
    fn bad_values_and_foreign_keys_change_nothing() {
        let k = Keys::new("c");
        let mut v = ClusterView::default();
        assert!(!v.put(&k, &k.host("h1"), b"{not json"));
        assert!(!v.put(&k, "/vswitch/v1/other/hosts/h1", &host(11, &[])));
        let e = ep("red", 1, 2);
        assert!(!v.put(&k, &format!("{}endpoints/h1/blue/x", k.prefix()), &serde_json::to_vec(&e).unwrap()));
        assert!(!v.put(&k, &k.vni("red"), b"99999999"));
        assert_eq!(v, ClusterView::default());
    }
}
