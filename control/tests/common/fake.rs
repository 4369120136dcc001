//! A fake vswitchd control server for the client tests: it speaks the real protocol
//! (`vswitch_api::proto`), keeps a configuration and a generation like vswitchd (`apply` validates,
//! honours `expect_generation`, replaces the whole configuration in one step), records every request, and answers
//! the read-only ops with canned results set by the test.
//!
//! Stopping it closes the listener, removes the socket and shuts down every open connection, which is what a
//! client sees when vswitchd exits.

use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vswitch_api::config::Config;
use vswitch_api::proto::{
    ApplyResult, ApplySummary, ConfigResult, ErrorBody, ErrorKind, HelloResult, Op, PortFailedRow, Request, Response,
};

/// What the fake knows and has seen.
#[derive(Debug, Default)]
pub struct State {
    pub config: Config,
    pub generation: u64,
    pub origin: Option<String>,
    /// Every request parsed, in order.
    pub requests: Vec<Op>,
    /// Results for ops by name (`port_ls` → a JSON array, …).
    pub canned: HashMap<&'static str, Value>,
    /// Errors for ops by name.
    pub errors: HashMap<&'static str, ErrorBody>,
    /// Applies that still fail to change existing ports: such an apply keeps each changed port's running
    /// settings and reports it in `ports_change_failed`, as vswitchd does when a reopen fails.
    pub refuse_port_changes: usize,
}

impl State {
    pub fn applies(&self) -> Vec<Config> {
        self.requests
            .iter()
            .filter_map(|op| match op {
                Op::Apply(a) if !a.dry_run => a.config.clone(),
                _ => None,
            })
            .collect()
    }
}

pub struct FakeServer {
    pub path: PathBuf,
    pub state: Arc<Mutex<State>>,
    pub pid: u32,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UnixStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Listens at `path` with `state`; `pid` is what `hello` reports (a restarted server gets a new one).
    pub fn start(path: &Path, state: State, pid: u32) -> FakeServer {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind the fake control socket");
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(state));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (state, stop, conns) = (Arc::clone(&state), Arc::clone(&stop), Arc::clone(&conns));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            conns.lock().unwrap().push(stream.try_clone().unwrap());
                            let state = Arc::clone(&state);
                            std::thread::spawn(move || serve(stream, state, pid));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        FakeServer { path: path.to_path_buf(), state, pid, stop, conns, accept: Some(accept) }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Waits until `cond` holds on the state (panics after `timeout`).
    pub fn wait_for(&self, what: &str, timeout: Duration, cond: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond(&self.state()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("timed out waiting for {what}; state: {:?}", self.state());
    }

    /// Stops like an exiting vswitchd: no more connections, open ones closed, socket removed.
    pub fn stop(mut self) -> State {
        self.shutdown();
        let state = std::mem::take(&mut *self.state());
        state
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(stream: UnixStream, state: Arc<Mutex<State>>, pid: u32) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = match Request::parse(line.as_bytes()) {
            Err(rejected) => rejected.into_response(),
            Ok(req) => answer(&mut state.lock().unwrap(), req, pid),
        };
        if writer.write_all(response.to_line().as_bytes()).is_err() {
            return;
        }
    }
}

fn answer(st: &mut State, req: Request, pid: u32) -> Response {
    st.requests.push(req.op.clone());
    let name = req.op.name();
    if let Some(e) = st.errors.get(name) {
        return Response::error(Some(req.id), e.clone());
    }
    match req.op {
        Op::Hello => Response::success(
            req.id,
            &HelloResult {
                server: "vswitchd".into(),
                server_version: "fake".into(),
                protocol_version: vswitch_api::proto::PROTOCOL_VERSION,
                pid,
                uptime_ns: 1_000_000_000,
                generation: st.generation,
            },
        ),
        Op::GetConfig => Response::success(
            req.id,
            &ConfigResult { generation: st.generation, origin: st.origin.clone(), config: st.config.clone() },
        ),
        Op::Apply(args) => {
            let Some(config) = args.config.clone() else {
                return Response::error(
                    Some(req.id),
                    ErrorBody::new(ErrorKind::BadRequest, "fake: config only".into()),
                );
            };
            if let Err(e) = config.validate("apply") {
                return Response::error(Some(req.id), ErrorBody::invalid_config("config", &[e]));
            }
            if args.expect_generation.is_some_and(|g| g != st.generation) {
                return Response::error(Some(req.id), ErrorBody::new(ErrorKind::Conflict, "generation moved".into()));
            }
            let mut config = config;
            let mut summary = ApplySummary::default();
            if st.refuse_port_changes > 0 && !args.dry_run {
                for p in &mut config.ports {
                    if let Some(old) = st.config.ports.iter().find(|o| o.name == p.name && *o != p) {
                        *p = old.clone();
                        summary
                            .ports_change_failed
                            .push(PortFailedRow { port: p.name.clone(), error: "fake: no".into() });
                    }
                }
                st.refuse_port_changes -= usize::from(!summary.ports_change_failed.is_empty());
            }
            let changed = config != st.config;
            if changed && !args.dry_run {
                st.config = config;
                st.generation += 1;
                st.origin = args.origin.clone();
            }
            Response::success(
                req.id,
                &ApplyResult { generation: st.generation, changed, dry_run: args.dry_run, summary },
            )
        }
        _ => match st.canned.get(name) {
            Some(v) => Response::success(req.id, v),
            None => Response::error(Some(req.id), ErrorBody::new(ErrorKind::Internal, format!("fake: no {name}"))),
        },
    }
}
