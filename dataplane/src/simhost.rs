//! [`SimHost`]: an in-process host (a smoltcp interface with real TCP/UDP/ICMP state machines) attached to a
//! port of a [`Testbed`], on the testbed's virtual clock. Tests use pairs of them to run real protocol exchanges
//! through the switch, deterministically and without privileges.
//!
//! The host's device is two queues: frames the host sent wait in its outbox until [`exchange`] hands them to the
//! testbed's port, and frames the port sent are delivered to the host's inbox.

use crate::ids::Nanos;
use crate::testbed::Testbed;
use crate::wire::MacAddr;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpCidr};
use std::collections::VecDeque;
use std::net::Ipv4Addr;

/// A device made of two frame queues.
#[derive(Debug, Default)]
pub struct QueueDevice {
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
    mtu: usize,
}

/// Receive token of a [`QueueDevice`].
#[derive(Debug)]
pub struct QueueRx(Vec<u8>);
/// Transmit token of a [`QueueDevice`].
#[derive(Debug)]
pub struct QueueTx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for QueueRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for QueueTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = QueueRx;
    type TxToken<'a> = QueueTx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.inbox.pop_front()?;
        Some((QueueRx(frame), QueueTx(&mut self.outbox)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(QueueTx(&mut self.outbox))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// A smoltcp host on a testbed port.
pub struct SimHost {
    /// The testbed port it is plugged into.
    pub port: String,
    /// The interface.
    pub iface: Interface,
    /// Its sockets.
    pub sockets: SocketSet<'static>,
    device: QueueDevice,
}

impl std::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHost").field("port", &self.port).field("device", &self.device).finish_non_exhaustive()
    }
}

/// smoltcp's clock from ours.
pub fn instant(now: Nanos) -> Instant {
    Instant::from_micros((now / 1_000) as i64)
}

impl SimHost {
    /// A host with `mac` and `ip/prefix`, routing everything else via `gateway`, plugged into `port`.
    pub fn new(port: &str, mac: MacAddr, ip: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr>, now: Nanos) -> Self {
        let mut device = QueueDevice { mtu: 1514, ..QueueDevice::default() };
        let config = Config::new(EthernetAddress(mac.0).into());
        let mut iface = Interface::new(config, &mut device, instant(now));
        iface.update_ip_addrs(|addrs| {
            addrs.push(IpCidr::new(ip.into(), prefix)).expect("one address fits");
        });
        if let Some(gw) = gateway {
            iface.routes_mut().add_default_ipv4_route(gw).expect("one route fits");
        }
        SimHost { port: port.to_string(), iface, sockets: SocketSet::new(Vec::new()), device }
    }

    /// Lets the host's stack run at `now` (ingress, timers, egress).
    pub fn poll(&mut self, now: Nanos) {
        self.iface.poll(instant(now), &mut self.device, &mut self.sockets);
    }
}

/// One round: every host runs, what each sent goes into its testbed port, and what each port sent goes to its
/// host. Returns the number of frames moved.
pub fn exchange(tb: &mut Testbed, hosts: &mut [&mut SimHost]) -> usize {
    let mut moved = 0;
    for h in hosts.iter_mut() {
        h.poll(tb.now());
        for f in std::mem::take(&mut h.device.outbox) {
            tb.send(&h.port, &f);
            moved += 1;
        }
    }
    for h in hosts.iter_mut() {
        for f in tb.take(&h.port) {
            h.device.inbox.push_back(f);
            moved += 1;
        }
        h.poll(tb.now());
    }
    moved
}
