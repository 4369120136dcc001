//! The overlay membership on the wire: what the control plane pushes to the switch ([`OverlayState`], the
//! control socket's `overlay_update` and `vswitchd replay --overlay FILE`), the rules it must keep
//! ([`OverlayState::validate`]), and what `network inspect` shows of an overlay network ([`OverlayInspect`]).
//!
//! Plain data shared by vswitchd (which installs the state in its overlay tables) and its clients (the agent
//! builds it from etcd). Threads: plain data and pure functions, usable from any thread.

use crate::mac::MacAddr;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// The IANA VXLAN port, a member's default.
pub const DEFAULT_UDP_PORT: u16 = 4789;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;
/// Bytes VXLAN encapsulation adds to an inner frame: outer Ethernet (14), IPv4 (20), UDP (8) and VXLAN (8).
pub const OVERHEAD: u16 = 50;
/// The smallest underlay MTU a member may announce: an IPv4 minimum (68) plus [`OVERHEAD`].
pub const MIN_UNDERLAY_MTU: u16 = 68 + OVERHEAD;
/// The largest.
pub const MAX_UNDERLAY_MTU: u16 = u16::MAX;
/// The most members (hosts) one state may list: a cluster larger than this is beyond head-end replication anyway,
/// and the switch numbers its peers in 16 bits.
pub const MAX_MEMBERS: usize = 4096;
/// The most remote endpoints one state may list (bounds the memory one control request can make the switch use).
pub const MAX_ENDPOINTS: usize = 1 << 20;

/// The membership the control plane pushes: every live remote host and every remote endpoint. The wire form of
/// the control socket's `overlay_update` and of `vswitchd replay --overlay FILE`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayState {
    /// Where it comes from (the agent sends the etcd revision it read); shown by `network inspect`.
    #[serde(default)]
    pub revision: u64,
    /// The other hosts (our own VTEP, if listed, is ignored).
    #[serde(default)]
    pub members: Vec<Member>,
    /// Endpoints behind the other hosts.
    #[serde(default)]
    pub endpoints: Vec<RemoteEndpoint>,
}

/// One remote host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The host's name (unique).
    pub host: String,
    /// Its VTEP address (unique).
    pub vtep: Ipv4Addr,
    /// The UDP port it receives VXLAN on.
    #[serde(default = "default_udp_port")]
    pub udp_port: u16,
    /// Its underlay MTU.
    pub mtu: u16,
    /// The overlay networks it serves, by name (networks not configured here are ignored).
    pub networks: Vec<String>,
}

fn default_udp_port() -> u16 {
    DEFAULT_UDP_PORT
}

/// One endpoint (a container's interface) behind a remote host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteEndpoint {
    /// The overlay network (ignored when not configured here).
    pub network: String,
    /// Its MAC address.
    pub mac: MacAddr,
    /// Its IPv4 address, when known (ARP suppression and routing into the overlay use it).
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// The member host it is behind.
    pub host: String,
}

/// An [`OverlayState`] that was refused; nothing changed. The message names the offending entry and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct OverlayError {
    /// The field, e.g. `members[2].vtep`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl OverlayState {
    /// Checks the state on its own: unique hosts and VTEPs, unicast VTEP addresses, non-zero ports, MTUs in
    /// [`MIN_UNDERLAY_MTU`]`..=`[`MAX_UNDERLAY_MTU`], unicast endpoint MACs. (An endpoint behind a host that is not
    /// a member is not refused: the registry may list one for a moment while its host's registration expires;
    /// the switch ignores it.) At most [`MAX_MEMBERS`] members and [`MAX_ENDPOINTS`] endpoints.
    pub fn validate(&self) -> Result<(), OverlayError> {
        let err = |field: String, message: String| Err(OverlayError { field, message });
        if self.members.len() > MAX_MEMBERS {
            return err("members".into(), format!("{} members, at most {MAX_MEMBERS}", self.members.len()));
        }
        if self.endpoints.len() > MAX_ENDPOINTS {
            return err("endpoints".into(), format!("{} endpoints, at most {MAX_ENDPOINTS}", self.endpoints.len()));
        }
        let mut hosts = HashMap::new();
        let mut vteps = HashMap::new();
        for (i, m) in self.members.iter().enumerate() {
            if m.host.is_empty() {
                return err(format!("members[{i}].host"), "empty host name".into());
            }
            if let Some(j) = hosts.insert(m.host.as_str(), i) {
                return err(format!("members[{i}].host"), format!("host {:?} is also members[{j}]", m.host));
            }
            let a = m.vtep;
            if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
                return err(format!("members[{i}].vtep"), format!("{a} is not a unicast address"));
            }
            if let Some(j) = vteps.insert(a, i) {
                return err(format!("members[{i}].vtep"), format!("VTEP {a} is also that of members[{j}]"));
            }
            if m.udp_port == 0 {
                return err(format!("members[{i}].udp_port"), "port 0".into());
            }
            if !(MIN_UNDERLAY_MTU..=MAX_UNDERLAY_MTU).contains(&m.mtu) {
                return err(
                    format!("members[{i}].mtu"),
                    format!("{} is out of range {MIN_UNDERLAY_MTU}..={MAX_UNDERLAY_MTU}", m.mtu),
                );
            }
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            if e.mac.is_multicast() || e.mac.is_zero() {
                return err(format!("endpoints[{i}].mac"), format!("{} is not a unicast MAC", e.mac));
            }
        }
        Ok(())
    }
}

/// What installing an [`OverlayState`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSummary {
    /// Members (VTEPs) now known.
    pub members: usize,
    /// Members added by this update.
    pub members_added: usize,
    /// Members removed by this update.
    pub members_removed: usize,
    /// Remote endpoints now known (entries in the networks configured here).
    pub endpoints: usize,
    /// Entries of the state that name a network not configured here (or not an overlay), or whose host does not
    /// serve the network: ignored.
    pub ignored: usize,
}

/// Per-peer counters (all overlay networks together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCounters {
    /// Frames encapsulated towards the peer.
    pub tx_packets: u64,
    /// Their bytes, outer headers included.
    pub tx_bytes: u64,
    /// Frames decapsulated from the peer.
    pub rx_packets: u64,
    /// Their bytes, outer headers included.
    pub rx_bytes: u64,
}

/// `network inspect`'s overlay part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayInspect {
    /// The VNI.
    pub vni: u32,
    /// The overlay MTU (IP bytes).
    pub mtu: u16,
    /// Our VTEP.
    pub vtep: Option<Ipv4Addr>,
    /// The revision of the membership applied.
    pub revision: u64,
    /// Member VTEPs serving the network.
    pub members: Vec<MemberInfo>,
    /// Remote endpoints.
    pub endpoints: Vec<EndpointInfo>,
}

/// A member VTEP as `network inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Host name.
    pub host: String,
    /// VTEP address.
    pub vtep: Ipv4Addr,
    /// Its VXLAN UDP port.
    pub udp_port: u16,
    /// Its underlay MTU.
    pub mtu: u16,
    /// `live` (listed by the control plane, with an underlay route) or `no-underlay-route`.
    pub state: String,
    /// The underlay next hop.
    pub next_hop: Option<Ipv4Addr>,
    /// Per-peer counters (across all networks).
    pub counters: PeerCounters,
}

/// A remote endpoint as `network inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// MAC.
    pub mac: MacAddr,
    /// IPv4 address, if registered.
    pub ip: Option<Ipv4Addr>,
    /// The host it is behind.
    pub host: String,
    /// That host's VTEP.
    pub vtep: Ipv4Addr,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(host: &str, vtep: [u8; 4]) -> Member {
        Member { host: host.into(), vtep: vtep.into(), udp_port: 4789, mtu: 1500, networks: vec!["red".into()] }
    }

    #[test]
    fn validate_caps_members_and_endpoints() {
        let member = |i: usize| {
            let mut m = member(&format!("h{i}"), [10, 0, 0, 0]);
            m.vtep = Ipv4Addr::from(0x0a00_0001 + u32::try_from(i).unwrap());
            m
        };
        let mut s = OverlayState { revision: 1, members: (0..MAX_MEMBERS).map(member).collect(), endpoints: vec![] };
        assert_eq!(s.validate(), Ok(()));
        s.members.push(member(MAX_MEMBERS));
        assert_eq!(s.validate().unwrap_err().field, "members");
    }

    #[test]
    fn validate_names_the_offending_field() {
        let ok = OverlayState { revision: 1, members: vec![member("b", [198, 51, 100, 12])], endpoints: vec![] };
        assert_eq!(ok.validate(), Ok(()));
        let field = |s: OverlayState| s.validate().unwrap_err().field;
        let mut s = ok.clone();
        s.members.push(member("b", [198, 51, 100, 13]));
        assert_eq!(field(s), "members[1].host");
        let mut s = ok.clone();
        s.members.push(member("c", [198, 51, 100, 12]));
        assert_eq!(field(s), "members[1].vtep");
        let mut s = ok.clone();
        s.members[0].vtep = Ipv4Addr::new(224, 0, 0, 1);
        assert_eq!(field(s), "members[0].vtep");
        let mut s = ok.clone();
        s.members[0].udp_port = 0;
        assert_eq!(field(s), "members[0].udp_port");
        let mut s = ok.clone();
        s.members[0].mtu = MIN_UNDERLAY_MTU - 1;
        assert_eq!(field(s), "members[0].mtu");
        let mut s = ok.clone();
        s.endpoints.push(RemoteEndpoint {
            network: "red".into(),
            mac: MacAddr([1, 0, 0, 0, 0, 1]),
            ip: None,
            host: "b".into(),
        });
        assert_eq!(field(s), "endpoints[0].mac");
    }

    #[test]
    fn json_form_defaults_the_port_and_refuses_unknown_keys() {
        let m: Member =
            serde_json::from_str(r#"{"host":"b","vtep":"198.51.100.12","mtu":1500,"networks":[]}"#).unwrap();
        assert_eq!(m.udp_port, DEFAULT_UDP_PORT);
        assert!(serde_json::from_str::<OverlayState>(r#"{"members":[],"bogus":1}"#).is_err());
    }
}
