//! Bringing failed ports up: a port that could not be opened (at start or in an `apply`) runs on stand-in
//! queues ([`crate::port::failed`]) and is tried again with backoff, without waiting for a configuration change.
//!
//! Two steps, like a reconfiguration: [`Running::prepare_retry`] (only `&self`: reads go on) opens the ports
//! whose retry is due and records a new failure for those that fail again; [`Running::commit_retry`] pauses the
//! workers at a batch boundary, swaps the opened queues in for the stand-ins and starts new workers, which
//! register the new queues' fds (the same pause as an `apply`, ~1 ms). Nothing else changes: the switch, its
//! tables and the configuration (and its generation) stay.
//!
//! Threads: the daemon's main thread, holding the daemon's apply lock (so the configuration cannot change
//! between the two steps).

use super::{Running, Runtime};
use crate::port::any::queue_count;
use crate::port::any::AnyPort;
use crate::worker::lock;
use std::sync::Mutex;
use std::time::Instant;

use super::reconfigure::OpenPort;

/// Ports opened by [`Running::prepare_retry`]: `(port index, queues)`.
#[derive(Debug, Default)]
pub struct Retried {
    ports: Vec<(usize, Vec<AnyPort>)>,
}

impl Retried {
    /// Nothing was opened.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

impl Running {
    /// Some failed port is due for a retry.
    pub fn retry_due(&self) -> bool {
        let now = Instant::now();
        self.rt.shared.ports.iter().any(|lp| lp.failure().is_some_and(|f| f.due(now)))
    }

    /// Opens the failed ports whose retry is due; those that fail again get their next retry later. An opener
    /// that panics fails that attempt only (its message is the port's error; counted as `control_panics`).
    pub fn prepare_retry(&self, open: &mut OpenPort<'_>) -> Retried {
        let mut out = Retried::default();
        let now = Instant::now();
        for (i, lp) in self.rt.shared.ports.iter().enumerate() {
            if !lp.failure().is_some_and(|f| f.due(now)) {
                continue;
            }
            let pc = &self.rt.cfg.ports[i];
            let n = queue_count(pc, self.rt.opts.workers);
            let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open(pc, n))).unwrap_or_else(|p| {
                let message = crate::worker::panic_message(&*p);
                let panics = self.count_control_panic();
                tracing::error!(port = %pc.name, panic = %message, control_panics = panics, "opening a failed port again panicked");
                Err(super::StartError::Queues { port: pc.name.clone(), message: format!("opening it panicked: {message}") })
            });
            match opened {
                Ok(queues) if queues.len() == lp.queues.len() => out.ports.push((i, queues)),
                Ok(queues) => {
                    tracing::error!(port = %pc.name, got = queues.len(), want = lp.queues.len(), "retry opened the wrong number of queues");
                }
                Err(e) => {
                    let mut f = lock(&lp.failure);
                    if let Some(f) = f.as_mut() {
                        f.again(e.to_string(), Instant::now());
                        tracing::warn!(port = %pc.name, attempts = f.attempts, error = %f.error, "port still cannot be opened");
                    }
                }
            }
        }
        out
    }

    /// Swaps the ports opened by [`Running::prepare_retry`] in (workers paused and restarted); returns the
    /// names of the ports now up.
    pub fn commit_retry(self, retried: Retried) -> (Running, Vec<String>) {
        if retried.is_empty() {
            return (self, Vec::new());
        }
        let (cfg, opts) = (self.rt.cfg.clone(), self.rt.opts.clone());
        let mut parts = self.pause();
        let mut up = Vec::new();
        for (i, queues) in retried.ports {
            let lp = &mut parts.ports[i];
            let attempts = lock(&lp.failure).take().map_or(0, |f| f.attempts);
            lp.queues = queues.into_iter().map(Mutex::new).collect();
            lp.persist();
            tracing::info!(port = %lp.name, failed_attempts = attempts, "port up");
            up.push(lp.name.clone());
        }
        let pools = std::mem::take(&mut parts.pools);
        let (running, err) = Runtime::from_parts(parts, cfg, opts).spawn(pools);
        if let Some(e) = err {
            tracing::error!(error = %e, "cannot restart the workers after bringing ports up: stopping");
        }
        (running, up)
    }
}
