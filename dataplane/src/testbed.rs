//! [`Testbed`]: a switch over in-memory ports on a virtual clock, for tests, property tests, fuzzing and the
//! in-process host tests. Frames are injected on a named port and processed at once; what each port sent is
//! collected until taken. Housekeeping runs whenever the clock passes a [`HOUSEKEEPING_INTERVAL`] boundary.
//!
//! Not for the hot path (it allocates per frame); it drives the same `Switch::process` as every other driver.

use crate::batch::Batch;
use crate::buffer::BufPool;
use crate::config::{Config, ConfigError};
use crate::ids::{table_id, Nanos, PortId};
use crate::offload::{Caps, Offload};
use crate::pipeline::{Carried, Switch, TxQueues, HOUSEKEEPING_INTERVAL};
use crate::port::mem::MemPort;
use crate::port::Port;
use crate::topology::Topology;

/// Buffers in a testbed's pool.
const POOL_SIZE: usize = 4096;
/// Large buffers in a testbed's pool (for super-frames and jumbo frames).
const LARGE_POOL_SIZE: usize = 8;

/// A switch wired to one [`MemPort`] per configured port. See the module documentation.
#[derive(Debug)]
pub struct Testbed {
    switch: Switch,
    ports: Vec<MemPort>,
    pool: BufPool,
    tx: TxQueues,
    now: Nanos,
    next_housekeeping: Nanos,
}

impl Testbed {
    /// A testbed for configuration text (every port becomes a [`MemPort`], whatever its kind).
    pub fn new(config: &str) -> Result<Testbed, ConfigError> {
        Ok(Testbed::from_config(&Config::parse(config, "testbed")?))
    }

    /// A testbed for a validated configuration.
    pub fn from_config(cfg: &Config) -> Testbed {
        Testbed::with_pool(cfg, POOL_SIZE)
    }

    /// A testbed whose buffer pool holds `buffers` buffers (the default, 4096, is 8 MiB to allocate and zero:
    /// the fuzz harness uses a few hundred, so one input costs microseconds, not milliseconds). Frames beyond
    /// what the pool holds are dropped as `no-buffer`, as in a live switch.
    pub fn with_pool(cfg: &Config, buffers: usize) -> Testbed {
        let switch = Switch::new(cfg);
        let tx = switch.tx_queues();
        Testbed {
            ports: cfg.ports.iter().map(|p| MemPort::new(p.name.clone())).collect(),
            switch,
            pool: BufPool::with_large(buffers, LARGE_POOL_SIZE),
            tx,
            now: 0,
            next_housekeeping: HOUSEKEEPING_INTERVAL,
        }
    }

    /// The id of the port called `name`; panics if there is none (a mistake in the test).
    pub fn port(&self, name: &str) -> PortId {
        self.switch.topology().port_id(name).unwrap_or_else(|| panic!("testbed has no port {name:?}"))
    }

    /// Receives `frame` on port `port` at the current time and runs it through the switch.
    pub fn send(&mut self, port: &str, frame: &[u8]) {
        let id = self.port(port);
        self.send_on(id, &[frame]);
    }

    /// Receives `frame` with offload metadata (a super-frame, a partial checksum) on port `port` at the current
    /// time, as a port that read it from a host stack hands it over.
    pub fn send_with(&mut self, port: &str, frame: &[u8], offload: Offload) {
        let id = self.port(port);
        self.ports[id as usize].inject_with(frame, offload);
        self.send_on(id, &[]);
    }

    /// Sets what port `port` can send as is (none by default: tests see wire frames; see [`MemPort`]).
    pub fn set_caps(&mut self, port: &str, caps: Caps) {
        let id = self.port(port);
        self.ports[id as usize].set_caps(caps);
    }

    /// Takes the frames port `port` sent since the last call, with the offload metadata they left with.
    pub fn take_frames(&mut self, port: &str) -> Vec<(Vec<u8>, Offload)> {
        let id = self.port(port);
        self.ports[id as usize].take_sent_frames()
    }

    /// Receives `frames` (up to a burst at a time) on port `id` at the current time.
    pub fn send_on(&mut self, id: PortId, frames: &[&[u8]]) {
        let port = &mut self.ports[id as usize];
        for f in frames {
            port.inject(f);
        }
        let mut batch = Batch::new();
        while port.pending() > 0 {
            let n = port.rx_burst(self.now, &mut self.pool, &mut batch).expect("mem ports do not fail");
            if n == 0 {
                break; // pool exhausted: leave the rest queued
            }
            self.switch.process(self.now, id, &mut batch, &mut self.pool, &mut self.tx);
        }
        self.flush();
    }

    /// Changes the configuration as `vswitchd`'s `apply` does ([`Switch::reconfigure`], state carried over by
    /// name), at the current time. Ports are rebuilt for the new configuration (frames sent and not taken are
    /// discarded). Frames the old router held for ARP are dropped with it when the router is rebuilt; the live
    /// workers top their pools up, and so does this: when nothing is held any more, the pool is made whole.
    pub fn reconfigure(&mut self, cfg: &Config) -> Carried {
        self.flush();
        let old = std::mem::replace(&mut self.switch, Switch::with_topology(Topology::default()));
        let (switch, carried) = old.reconfigure(cfg);
        self.switch = switch;
        self.tx = self.switch.tx_queues();
        self.ports = cfg.ports.iter().map(|p| MemPort::new(p.name.clone())).collect();
        let short =
            self.pool.available() < self.pool.capacity() || self.pool.large_available() < self.pool.large_capacity();
        if short && !self.switch.has_pending() {
            self.pool = BufPool::with_large(self.pool.capacity(), self.pool.large_capacity());
        }
        carried
    }

    /// Moves the clock forward by `dt`, running housekeeping at every interval boundary passed.
    pub fn advance(&mut self, dt: Nanos) {
        let end = self.now + dt;
        while self.next_housekeeping <= end {
            self.now = self.next_housekeeping;
            self.switch.housekeeping(self.now, &mut self.pool, &mut self.tx);
            self.flush();
            self.next_housekeeping += HOUSEKEEPING_INTERVAL;
        }
        self.now = end;
    }

    /// The current virtual time.
    pub fn now(&self) -> Nanos {
        self.now
    }

    /// Takes the frames port `port` sent since the last call.
    pub fn take(&mut self, port: &str) -> Vec<Vec<u8>> {
        let id = self.port(port);
        self.ports[id as usize].take_sent()
    }

    /// Takes what every port sent, as (port name, frame) in port order.
    pub fn take_all(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for p in &mut self.ports {
            let name = p.name().to_string();
            out.extend(p.take_sent().into_iter().map(|f| (name.clone(), f)));
        }
        out
    }

    /// The switch under test.
    pub fn switch(&self) -> &Switch {
        &self.switch
    }

    /// The switch under test, for what the control plane does to it (e.g. `update_overlay`).
    pub fn switch_mut(&mut self) -> &mut Switch {
        &mut self.switch
    }

    /// Buffers not in use (all of them when nothing is queued: a leak check).
    pub fn free_buffers(&self) -> usize {
        self.pool.available()
    }

    /// Large buffers not in use (all of them when nothing is queued).
    pub fn free_large_buffers(&self) -> usize {
        self.pool.large_available()
    }

    /// Buffers the pool was made with.
    pub fn total_buffers(&self) -> usize {
        self.pool.capacity()
    }

    fn flush(&mut self) {
        for (p, port) in self.ports.iter_mut().enumerate() {
            let q = self.tx.queue_mut(table_id(p));
            if !q.is_empty() {
                port.tx_burst(&mut self.pool, q).expect("mem ports do not fail");
            }
        }
    }
}
