//! Which of vswitchd's threads give way when they compete with the workers for a CPU.
//!
//! **Why**: the workers are the dataplane; control work (answering the control socket, serving metrics scrapes)
//! can wait a few milliseconds, forwarded frames should not. Linux's scheduler (EEVDF) lets a running thread of
//! equal priority finish its time slice — up to a scheduler tick, about 3–4 ms here — before a thread woken by
//! traffic runs, and an idle worker that wakes for a ping is exactly such a thread. Measured with
//! `perf sched timehist` while `vswitchctl conntrack ls` ran in a loop over 200k connections: a worker, woken by
//! a ping, waited 3.3 ms behind a control connection thread that had just been given the CPU.
//!
//! **What**: [`give_way_to_workers`] sets the calling thread's nice value to [`CONTROL_NICE`] (threads it
//! creates afterwards inherit it). A thread at nice 10 has about a tenth of a worker's weight: when both want
//! the CPU the worker gets about 90 % of it, and the scheduler picks the worker at its next decision (a wake-up,
//! a yield) instead of letting control finish its slice. Control is never starved: alone on a CPU it runs at
//! full speed, and beside a busy worker it still gets its share (a `port ls` costs well under a millisecond of
//! CPU). Long control reads also yield between chunks of work (`conntrack ls`), which gives the scheduler
//! those decisions.
//!
//! Raising a thread's nice value needs no privilege; it is best effort: a failure (another OS, a seccomp
//! filter) is logged and changes nothing else.
//!
//! Threads: any; affects only the calling thread (on Linux, nice is per thread).

/// The nice value of vswitchd's control threads (the control socket's and the metrics server's); workers keep
/// the process's (normally 0).
pub const CONTROL_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`CONTROL_NICE`] (never raises it: a thread already nicer keeps
/// its value). Returns whether the thread now runs at `CONTROL_NICE` or nicer.
pub fn give_way_to_workers() -> bool {
    let tid = rustix::thread::gettid();
    match rustix::process::getpriority_process(Some(tid)) {
        Ok(nice) if nice >= CONTROL_NICE => true,
        _ => match rustix::process::setpriority_process(Some(tid), CONTROL_NICE) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "cannot lower a control thread's priority; it competes with the workers");
                false
            }
        },
    }
}

/// The calling thread's nice value, if it can be read.
pub fn current_nice() -> Option<i32> {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_gives_way_runs_nicer_and_its_children_inherit_it_while_others_do_not() {
        let before = current_nice().expect("nice of this thread");
        let (own, child) = std::thread::spawn(|| {
            assert!(give_way_to_workers());
            let own = current_nice();
            let child = std::thread::spawn(current_nice).join().expect("child");
            (own, child)
        })
        .join()
        .expect("thread");
        assert_eq!(own, Some(CONTROL_NICE.max(before)));
        assert_eq!(child, Some(CONTROL_NICE.max(before)), "a thread started by a control thread inherits its nice");
        assert_eq!(current_nice(), Some(before), "only the calling thread changes");
    }
}
