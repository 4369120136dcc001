//! What `vswitch-agent` derives from its configuration file for the cluster: how to reach etcd and who it is
//! ([`settings`]), what it registers ([`registration`]: the VTEP from `[cluster] vtep_port`, its MTU, the
//! overlay networks, and every port's `endpoint_mac`/`endpoint_ip`), and the configuration vswitchd actually
//! runs ([`effective`]: the file's, with each overlay network's VNI as etcd allocated it).
//!
//! Pure functions of a validated [`Config`]; called from the agent's main loop.

use super::schema::{EndpointRecord, HostRecord};
use super::{Registration, Settings};
use std::collections::BTreeMap;
use std::time::Duration;
use vswitch_api::config::{Config, Scope};

/// How long one etcd request (or connection attempt) may take before the session is considered lost: a third
/// of the lease, between 0.5 and 2 seconds, so an unreachable member is left well before the lease runs out.
pub fn request_timeout(lease_ttl_secs: u32) -> Duration {
    Duration::from_millis((u64::from(lease_ttl_secs) * 1000 / 3).clamp(500, 2000))
}

/// The session's settings, when the file has a `[cluster]` section.
pub fn settings(cfg: &Config) -> Option<Settings> {
    let c = cfg.cluster.as_ref()?;
    Some(Settings {
        cluster: c.name.clone(),
        host: c.host.clone(),
        endpoints: c.etcd.clone(),
        lease_ttl_secs: i64::from(c.lease_ttl_secs),
        request_timeout: request_timeout(c.lease_ttl_secs),
    })
}

/// What this host registers, when the file has a `[cluster]` section: the VTEP (the address of `vtep_port`,
/// a routed port, as validation guarantees), the VXLAN port, the underlay MTU (the VTEP port's), the overlay
/// networks with their configured VNI if any, and the endpoints of the overlay networks' ports.
pub fn registration(cfg: &Config) -> Option<Registration> {
    let c = cfg.cluster.as_ref()?;
    let vtep_port = cfg.ports.iter().find(|p| p.name == c.vtep_port)?;
    let vtep = vtep_port.address?.addr();
    let overlay: Vec<&vswitch_api::config::NetworkConfig> =
        cfg.networks.iter().filter(|n| n.scope == Scope::Overlay).collect();
    let endpoints = cfg
        .ports
        .iter()
        .filter_map(|p| {
            let network = p.network.as_ref().filter(|n| overlay.iter().any(|o| &o.name == *n))?;
            Some(EndpointRecord { network: network.clone(), mac: p.endpoint_mac?, ip: p.endpoint_ip })
        })
        .collect();
    Some(Registration {
        host: HostRecord {
            vtep,
            udp_port: c.vxlan_udp_port,
            mtu: vtep_port.mtu,
            networks: overlay.iter().map(|n| n.name.clone()).collect(),
        },
        endpoints,
        networks: overlay.iter().map(|n| (n.name.clone(), n.vni)).collect(),
    })
}

/// The configuration to run: `cfg` with each overlay network's VNI as etcd holds it (`vnis`, once the session
/// allocated them), or as the file says until then. A network etcd has no VNI for (the allocation was refused:
/// the VNI is another network's) runs without one: bridged on this host only.
pub fn effective(cfg: &Config, vnis: Option<&BTreeMap<String, u32>>) -> Config {
    let mut out = cfg.clone();
    if let Some(vnis) = vnis {
        for n in out.networks.iter_mut().filter(|n| n.scope == Scope::Overlay) {
            n.vni = vnis.get(&n.name).copied();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const FILE: &str = r#"
[cluster]
name = "lab"
host = "h1"
etcd = ["http://10.9.0.1:2379", "http://10.9.0.2:2379"]
lease_ttl_secs = 3
vtep_port = "under"
vxlan_udp_port = 4790

[[network]]
name = "red"
scope = "overlay"
subnet = "10.1.0.0/24"
gateway = "10.1.0.1"

[[network]]
name = "blue"
scope = "overlay"
vni = 77

[[network]]
name = "local"

[[port]]
name = "c1"
kind = "mem"
network = "red"
endpoint_mac = "02:00:00:00:00:11"
endpoint_ip = "10.1.0.11"

[[port]]
name = "c2"
kind = "mem"
network = "red"

[[port]]
name = "under"
kind = "mem"
address = "198.51.100.11/24"
mtu = 1400
"#;

    #[test]
    fn the_cluster_section_gives_settings_registration_and_the_effective_config() {
        let cfg = Config::parse(FILE, "t").unwrap();
        let s = settings(&cfg).unwrap();
        assert_eq!((s.cluster.as_str(), s.host.as_str(), s.endpoints.len(), s.lease_ttl_secs), ("lab", "h1", 2, 3));
        assert_eq!(s.request_timeout, Duration::from_millis(1000));
        let r = registration(&cfg).unwrap();
        assert_eq!(
            r.host,
            HostRecord {
                vtep: Ipv4Addr::new(198, 51, 100, 11),
                udp_port: 4790,
                mtu: 1400,
                networks: vec!["red".into(), "blue".into()]
            }
        );
        assert_eq!(
            r.endpoints,
            [EndpointRecord {
                network: "red".into(),
                mac: "02:00:00:00:00:11".parse().unwrap(),
                ip: Some(Ipv4Addr::new(10, 1, 0, 11))
            }]
        );
        assert_eq!(r.networks, [("red".to_string(), None), ("blue".to_string(), Some(77))]);
        let vnis = BTreeMap::from([("red".to_string(), 4096), ("blue".to_string(), 77)]);
        let e = effective(&cfg, Some(&vnis));
        assert_eq!(e.networks.iter().map(|n| n.vni).collect::<Vec<_>>(), [Some(4096), Some(77), None]);
        let vni = |c: Config| c.networks.iter().map(|n| n.vni).collect::<Vec<_>>();
        assert_eq!(vni(effective(&cfg, None)), [None, Some(77), None], "the file's until etcd answers");
        assert_eq!(vni(effective(&cfg, Some(&BTreeMap::new()))), [None, None, None], "refused by etcd: local");
        assert!(Config::validate(&e, "effective").is_ok());
        let plain = Config::parse("[[network]]\nname = \"a\"\n", "t").unwrap();
        assert!(settings(&plain).is_none() && registration(&plain).is_none());
    }

    #[test]
    fn request_timeout_is_a_third_of_the_lease_within_bounds() {
        assert_eq!([1, 3, 6, 60].map(request_timeout), [500, 1000, 2000, 2000].map(Duration::from_millis),);
    }
}
