//! [`AnyPort`]: every port back-end `vswitchd run` drives, as one enum (dispatch without `dyn` on the hot
//! path), and the opening of a configured port's queues: how many a port gets ([`queue_count`]) and which
//! back-end opens them ([`open_port`], [`open_ports`]).
//!
//! Opening is all or nothing: on the first failure every queue opened so far is dropped on the way out (taps
//! created are deleted: a tap is not persistent until the live switch makes it so, see `tap_persist`; a
//! re-adopted tap is only closed; sockets are closed), and the error
//! names the port.
//!
//! Threads: opening runs on the daemon's main or control thread (or a test); an `AnyPort` is then owned by the
//! worker that polls it, behind its queue's lock (see `crate::live`).

use super::afpacket::{AfPacketConfig, AfPacketPort};
#[cfg(feature = "afxdp")]
use super::afxdp::{AfXdpConfig, AfXdpPort};
use super::mem::MemPort;
use super::tap::{TapConfig, TapPort};
use super::tap_persist;
use super::{BadIfName, IfName, OpenError, Port, PortError, PortStats};
use crate::batch::Batch;
use crate::buffer::{BufPool, Frame};
use crate::config::{Config, PortConfig, PortKind};
use crate::ids::Nanos;
use crate::offload::Caps;
use std::sync::atomic::{AtomicU16, Ordering::Relaxed};

/// Any port back-end `vswitchd run` can drive (enum dispatch: no `dyn` on the hot path). Aligned to
/// [`crate::worker::CACHE_PAIR`] bytes: a port's queues sit side by side (`worker::LivePort::queues`), each
/// locked and written by its own worker per burst, and must not share a cache line.
#[derive(Debug)]
#[repr(align(128))]
pub enum AnyPort {
    /// An in-memory port (tests, benchmarks).
    Mem(MemPort),
    /// A Linux tap.
    Tap(TapPort),
    /// An existing interface through an AF_PACKET socket (one fan-out member per queue).
    AfPacket(AfPacketPort),
    /// One queue of an existing interface through an AF_XDP socket (boxed: its rings make it large).
    #[cfg(feature = "afxdp")]
    AfXdp(Box<AfXdpPort>),
    /// A port implemented outside this crate (the benchmarks' paced generators and latency sinks, which must
    /// run through the real workers): dynamic dispatch, one virtual call per burst. Not made by
    /// [`open_ports`]; a caller of `live::Runtime::new` hands it in.
    External(Box<dyn ExternalPort>),
}

/// A [`Port`] that can run in a worker: what [`AnyPort::External`] holds.
pub trait ExternalPort: Port + Send + std::fmt::Debug {}

impl<T: Port + Send + std::fmt::Debug> ExternalPort for T {}

impl AnyPort {
    /// The AF_XDP attach mode obtained, for AF_XDP ports.
    pub fn xdp_mode(&self) -> Option<String> {
        match self {
            #[cfg(feature = "afxdp")]
            AnyPort::AfXdp(p) => Some(p.mode().to_string()),
            _ => None,
        }
    }

    /// Makes the port's interface outlive the process (taps: persistent, see `tap_persist`); other kinds have
    /// nothing to keep. Call it on one queue of a port once the port is part of the running switch.
    pub fn persist(&self) {
        if let AnyPort::Tap(t) = self {
            if let Err(e) = tap_persist::persist(std::slice::from_ref(t)) {
                tracing::warn!(port = %t.name(), error = %e, "cannot make the tap persistent");
            }
        }
    }

    /// Makes closing the port delete its interface (taps: the persistent flag cleared); other kinds delete
    /// nothing. Call it on one queue before dropping a port the configuration removed.
    pub fn remove_on_close(&self) {
        if let AnyPort::Tap(t) = self {
            if let Err(e) = tap_persist::remove(std::slice::from_ref(t)) {
                tracing::warn!(port = %t.name(), error = %e, "cannot clear the tap's persistent flag");
            }
        }
    }

    /// The memory port, if this is one (tests inject frames through it).
    pub fn as_mem_mut(&mut self) -> Option<&mut MemPort> {
        match self {
            AnyPort::Mem(p) => Some(p),
            _ => None,
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            AnyPort::Mem($p) => $e,
            AnyPort::Tap($p) => $e,
            AnyPort::AfPacket($p) => $e,
            #[cfg(feature = "afxdp")]
            AnyPort::AfXdp($p) => $e,
            AnyPort::External($p) => $e,
        }
    };
}

impl Port for AnyPort {
    fn name(&self) -> &str {
        dispatch!(self, p => p.name())
    }

    #[inline]
    fn rx_burst(&mut self, now: Nanos, pool: &mut BufPool, batch: &mut Batch) -> Result<usize, PortError> {
        dispatch!(self, p => p.rx_burst(now, pool, batch))
    }

    #[inline]
    fn tx_burst(&mut self, pool: &mut BufPool, frames: &mut Vec<Frame>) -> Result<(), PortError> {
        dispatch!(self, p => p.tx_burst(pool, frames))
    }

    fn stats(&self) -> PortStats {
        dispatch!(self, p => p.stats())
    }

    fn caps(&self) -> Caps {
        dispatch!(self, p => p.caps())
    }

    fn rx_fd(&self) -> Option<std::os::fd::RawFd> {
        dispatch!(self, p => p.rx_fd())
    }

    fn tx_pending(&self) -> bool {
        dispatch!(self, p => p.tx_pending())
    }

    fn before_sleep(&mut self) -> bool {
        dispatch!(self, p => p.before_sleep())
    }

    fn after_sleep(&mut self) {
        dispatch!(self, p => p.after_sleep())
    }
}

/// Why a configured port could not be opened ([`open_port`]). Every message names the port.
#[derive(Debug, thiserror::Error)]
pub enum OpenPortError {
    /// A replay-only kind (`pcap`, `mem`) in a live configuration.
    #[error("port {port}: kind {kind} is replay-only; `vswitchd run` drives tap, afpacket and afxdp ports")]
    ReplayOnly {
        /// The port's name.
        port: String,
        /// Its kind.
        kind: PortKind,
    },
    /// The kind's back-end is not compiled into this binary.
    #[error("port {port}: port up: kind {kind} needs vswitchd built with --features {feature}")]
    NotBuilt {
        /// The port's name.
        port: String,
        /// Its kind.
        kind: PortKind,
        /// The cargo feature that provides it.
        feature: &'static str,
    },
    /// A port that needs an interface name has none (a configuration that skipped validation).
    #[error("port {port}: kind {kind} needs an ifname")]
    NoIfname {
        /// The port's name.
        port: String,
        /// Its kind.
        kind: PortKind,
    },
    /// A port's `ifname` is not an interface name (a configuration that skipped validation).
    #[error("port {port}: ifname {ifname:?} is not an interface name: {source}")]
    BadIfname {
        /// The port's name.
        port: String,
        /// The refused name.
        ifname: String,
        /// Why.
        #[source]
        source: BadIfName,
    },
    /// The back-end (tap, AF_PACKET, AF_XDP) could not open it.
    #[error(transparent)]
    Open(#[from] OpenError),
}

/// How many queues `port` gets with `workers` workers: `port.queues` when configured; else, for taps and
/// AF_PACKET ports, one per worker; else one.
pub fn queue_count(port: &PortConfig, workers: usize) -> usize {
    match port.queues {
        Some(q) => usize::from(q.max(1)),
        None if matches!(port.kind, PortKind::Tap | PortKind::Afpacket) => workers.max(1),
        None => 1,
    }
}

/// Opens every configured port's queues for `workers` workers, in configuration order. On error, everything
/// opened so far is closed (taps created are deleted) before returning.
pub fn open_ports(cfg: &Config, workers: usize) -> Result<Vec<Vec<AnyPort>>, OpenPortError> {
    cfg.ports.iter().map(|p| open_port(p, queue_count(p, workers))).collect()
}

/// Opens the `n` queues of port `p` (on error, the queues opened so far are closed).
pub fn open_port(p: &PortConfig, n: usize) -> Result<Vec<AnyPort>, OpenPortError> {
    let queues = open_queues(p, n)?;
    for (i, q) in queues.iter().enumerate() {
        tracing::info!(
            port = %p.name,
            kind = %p.kind,
            ifname = p.ifname.as_deref().unwrap_or(""),
            queue = i,
            queues = queues.len(),
            mode = q.xdp_mode().as_deref().unwrap_or("-"),
            "port up"
        );
    }
    Ok(queues)
}

/// Fan-out groups handed out so far: each AF_PACKET port opened gets a new one, so a port opened by a
/// configuration change never joins the group of a port still open.
static FANOUT_GROUPS: AtomicU16 = AtomicU16::new(0);

fn open_queues(p: &PortConfig, n: usize) -> Result<Vec<AnyPort>, OpenPortError> {
    let ifname = || {
        let name = p.ifname.as_deref().ok_or(OpenPortError::NoIfname { port: p.name.clone(), kind: p.kind })?;
        IfName::new(name).map_err(|source| OpenPortError::BadIfname {
            port: p.name.clone(),
            ifname: name.to_string(),
            source,
        })
    };
    match p.kind {
        PortKind::Tap => {
            let mut cfg = TapConfig::new(ifname()?);
            cfg.mtu = Some(u32::from(p.mtu));
            cfg.offload = p.offloads();
            cfg.netns = p.netns.clone();
            // Created (not yet persistent) or re-adopted: see `tap_persist`.
            let (queues, _origin) = tap_persist::open(&p.name, &cfg, n)?;
            Ok(queues.into_iter().map(AnyPort::Tap).collect())
        }
        PortKind::Afpacket => {
            let mut cfg = AfPacketConfig::new(ifname()?);
            // Fan-out group ids are per network namespace: derive one from the process and a counter.
            cfg.fanout = (n > 1).then(|| {
                // Only the pid's low bits seed the 16-bit group id: dropping the rest is the intent.
                #[allow(clippy::cast_possible_truncation)]
                let pid = std::process::id() as u16;
                pid.wrapping_mul(64).wrapping_add(FANOUT_GROUPS.fetch_add(1, Relaxed))
            });
            (0..n).map(|_| Ok(AnyPort::AfPacket(AfPacketPort::open(&p.name, &cfg)?))).collect()
        }
        #[cfg(feature = "afxdp")]
        PortKind::Afxdp => {
            let mut cfg = AfXdpConfig::new(ifname()?);
            cfg.mode = p.xdp_mode();
            (0..)
                .take(n)
                .map(|q: u32| {
                    cfg.queue_id = q;
                    Ok(AnyPort::AfXdp(Box::new(AfXdpPort::open(&p.name, &cfg)?)))
                })
                .collect()
        }
        #[cfg(not(feature = "afxdp"))]
        PortKind::Afxdp => Err(OpenPortError::NotBuilt { port: p.name.clone(), kind: p.kind, feature: "afxdp" }),
        PortKind::Pcap | PortKind::Mem => Err(OpenPortError::ReplayOnly { port: p.name.clone(), kind: p.kind }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "[[network]]\nname = \"lan\"\n[[port]]\nname = \"a\"\nkind = \"mem\"\nnetwork = \"lan\"\n";

    #[test]
    fn open_ports_refuses_replay_only_kinds_naming_the_port() {
        let cfg = Config::parse(CONFIG, "test").unwrap();
        let err = open_ports(&cfg, 1).unwrap_err();
        assert!(err.to_string().starts_with("port a: kind mem is replay-only"), "{err}");
    }

    #[test]
    fn queue_counts_follow_the_workers_for_taps_and_afpacket() {
        let cfg = Config::parse(CONFIG, "test").unwrap();
        let mut p = cfg.ports[0].clone();
        p.kind = PortKind::Tap;
        assert_eq!((queue_count(&p, 1), queue_count(&p, 3)), (1, 3));
        p.kind = PortKind::Afpacket;
        assert_eq!(queue_count(&p, 2), 2);
        p.kind = PortKind::Afxdp;
        assert_eq!(queue_count(&p, 3), 1);
        p.queues = Some(4);
        assert_eq!(queue_count(&p, 3), 4);
    }
}
