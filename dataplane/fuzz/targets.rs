//! The bodies of the parser fuzz targets (`fuzz_targets/*.rs`), shared with the test that replays their corpora
//! (`dataplane/tests/fuzz_corpora.rs`, which includes this file with `#[path]`). Each takes arbitrary bytes and
//! panics only when a property breaks; a parser that panics on its own is a finding too.
//!
//! - [`control_request`]: a control-protocol request line → `Request::parse` → the error or the request; a
//!   parsed request serializes back to one line that parses to the same request; an `apply`'s configuration is
//!   validated like the daemon does; the response line has no newline inside and ends with one.
//! - [`config_text`]: TOML text → `Config::parse_all_errors`; a configuration it accepts validates, goes through
//!   JSON (the control socket's form) and back unchanged, and the topology the dataplane builds from it has one
//!   entry per port and network.
//! - [`gso`]: a virtio-net header (10 bytes) and a frame → `SuperFrame::plan`; every planned segment is written
//!   within the buffer, at most `max_frame` bytes, and their payloads add up to the frame's.
//! - [`pcap_reader`]: a capture file's bytes → `read_capture_from`: a capture or an error.
#![allow(dead_code)]

use dataplane::config::Config;
use dataplane::control::proto::{ErrorBody, Op, Request, Response};
use dataplane::port::gso::SuperFrame;
use dataplane::topology::Topology;
use dataplane::wire::virtio_net_hdr::Repr as VnetHdr;
use std::path::Path;

/// Longest segment the GSO target asks for (a pool buffer's frame room).
const MAX_FRAME: usize = 1920;

/// A control request line.
pub fn control_request(data: &[u8]) {
    let response = match Request::parse(data) {
        Err(rejected) => rejected.into_response(),
        Ok(req) => {
            let line = req.to_line();
            let again =
                Request::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?} does not parse back: {e:?}"));
            assert_eq!(again, req, "a request survives serialization");
            if let Op::Apply(a) = &req.op {
                if let Some(cfg) = &a.config {
                    let _ = cfg.validate("apply");
                }
                if let Some(text) = &a.toml {
                    let _ = Config::parse_all_errors(text, "apply");
                }
            }
            Response::error(Some(req.id), ErrorBody::new(dataplane::control::proto::ErrorKind::Internal, "x".into()))
        }
    };
    let line = response.to_line();
    assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'), "one line: {line:?}");
}

/// Configuration text.
pub fn config_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = Config::parse_all_errors(text, "fuzz") else { return };
    assert_eq!(cfg.validate("again"), Ok(()), "what parses validates");
    let json = serde_json::to_string(&cfg).expect("a configuration serializes");
    let back: Config = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(back, cfg, "JSON round trip");
    let topo = Topology::from_config(&cfg);
    assert_eq!((topo.ports.len(), topo.networks.len()), (cfg.ports.len(), cfg.networks.len()));
}

/// A virtio-net header and a (super-)frame.
pub fn gso(data: &[u8]) {
    let Some((hdr, frame)) = data.split_first_chunk::<10>() else { return };
    let vnet = VnetHdr::parse(hdr);
    let head = &frame[..frame.len().min(dataplane::port::gso::MAX_HEADERS)];
    let Ok(plan) = SuperFrame::plan(head, frame.len(), &vnet, MAX_FRAME) else { return };
    assert!(plan.segments() <= frame.len() / dataplane::port::gso::MIN_GSO_SIZE + 1, "bounded fan-out");
    let mut out = [0u8; MAX_FRAME];
    let mut total = 0;
    for i in 0..plan.segments() {
        let (s, e) = plan.segment_range(i);
        let payload = &frame[plan.hdr_len + s..plan.hdr_len + e];
        let len = plan.write_segment(head, i, payload, &mut out);
        assert!(len <= MAX_FRAME);
        total += e - s;
    }
    assert_eq!(total, frame.len() - plan.hdr_len, "the segments carry the whole payload");
}

/// A pcap file's bytes.
pub fn pcap_reader(data: &[u8]) {
    if let Ok(c) = dataplane::port::pcap::read_capture_from(data, Path::new("fuzz.pcap")) {
        assert!(c.frames.iter().map(|f| f.data.len()).sum::<usize>() <= data.len(), "no frame bytes from nowhere");
    }
}
