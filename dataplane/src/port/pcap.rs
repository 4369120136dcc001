//! [`PcapPort`]: a port whose receive side is a capture file read in full at open time and whose transmit side
//! is written to another capture file. This is what `vswitchd replay` and the pcap regression tests run on.
//!
//! Receive hands out frames in file order, one timestamp at a time: a burst holds only frames that share the
//! timestamp of the first, so the caller can merge several ports by time and advance its virtual clock between
//! bursts. Frames keep their capture timestamp (`now` is ignored).

use super::soft_offload::{Emitted, SoftOffload};
use super::{Port, PortError, PortStats};
use crate::batch::Batch;
use crate::buffer::{BufPool, Frame, MAX_FRAME_LEN, MAX_LARGE_FRAME_LEN};
use crate::ids::Nanos;
use crate::offload::Caps;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::{DataLink, TsResolution};
use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One frame read from a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedFrame {
    /// Capture timestamp.
    pub ts: Nanos,
    /// The frame's bytes as captured.
    pub data: Vec<u8>,
}

/// A capture file that cannot be used as input.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read capture: {message}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The capture is not of Ethernet frames.
    #[error("{path}: link type {link:?} is not Ethernet (only DLT_EN10MB captures can be replayed)")]
    NotEthernet {
        /// The file.
        path: PathBuf,
        /// The link type it declares.
        link: DataLink,
    },
}

/// A capture read into memory, with the timestamp resolution it was written in.
#[derive(Debug, Clone)]
pub struct Capture {
    /// Frames in file order.
    pub frames: Vec<CapturedFrame>,
    /// True if the file stored nanosecond timestamps.
    pub nanosecond: bool,
}

/// Reads a whole Ethernet capture.
pub fn read_capture(path: &Path) -> Result<Capture, CaptureError> {
    let file =
        File::open(path).map_err(|e| CaptureError::Unreadable { path: path.to_path_buf(), message: e.to_string() })?;
    read_capture_from(std::io::BufReader::new(file), path)
}

/// Reads a whole Ethernet capture from `input` (`path` names it in errors). Any byte sequence gives a capture
/// or an error, never a panic (fuzzed: `dataplane/fuzz`, target `pcap_reader`).
pub fn read_capture_from(input: impl std::io::Read, path: &Path) -> Result<Capture, CaptureError> {
    let unreadable = |message: String| CaptureError::Unreadable { path: path.to_path_buf(), message };
    let mut reader = PcapReader::new(input).map_err(|e| unreadable(e.to_string()))?;
    let header = reader.header();
    if header.datalink != DataLink::ETHERNET {
        return Err(CaptureError::NotEthernet { path: path.to_path_buf(), link: header.datalink });
    }
    let mut frames = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.map_err(|e| unreadable(e.to_string()))?;
        let ts = u64::try_from(pkt.timestamp.as_nanos()).unwrap_or(u64::MAX);
        frames.push(CapturedFrame { ts, data: pkt.data.into_owned() });
    }
    Ok(Capture { frames, nanosecond: header.ts_resolution == TsResolution::NanoSecond })
}

/// Writes frames to a new capture file (the transmit side of a [`PcapPort`], and the tools' generator).
#[derive(Debug)]
pub struct CaptureWriter {
    writer: PcapWriter<BufWriter<File>>,
    nanosecond: bool,
}

impl CaptureWriter {
    /// Creates (or truncates) `path` and writes an Ethernet pcap header with microsecond or nanosecond
    /// timestamps.
    pub fn create(path: &Path, nanosecond: bool) -> std::io::Result<Self> {
        let file = BufWriter::new(File::create(path)?);
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            ts_resolution: if nanosecond { TsResolution::NanoSecond } else { TsResolution::MicroSecond },
            snaplen: 65535,
            ..PcapHeader::default()
        };
        let writer = PcapWriter::with_header(file, header).map_err(std::io::Error::other)?;
        Ok(CaptureWriter { writer, nanosecond })
    }

    /// Appends one frame. Timestamps are truncated to microseconds in a microsecond capture.
    pub fn write(&mut self, ts: Nanos, data: &[u8]) -> std::io::Result<()> {
        let ts = if self.nanosecond { ts } else { ts - ts % 1_000 };
        let len = u32::try_from(data.len())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too long for a pcap record"))?;
        let pkt = PcapPacket::new(Duration::from_nanos(ts), len, data);
        self.writer.write_packet(&pkt).map(|_| ()).map_err(std::io::Error::other)
    }

    /// Flushes buffered frames to the file and closes it.
    pub fn finish(self) -> std::io::Result<()> {
        use std::io::Write;
        self.writer.into_writer().flush()
    }
}

/// A port backed by capture files.
#[derive(Debug)]
pub struct PcapPort {
    name: String,
    input: VecDeque<CapturedFrame>,
    output: Option<CaptureWriter>,
    stats: PortStats,
    soft: SoftOffload,
}

impl PcapPort {
    /// A port that receives `input` and writes what it sends to `output` (or discards it).
    pub fn new(name: impl Into<String>, input: Vec<CapturedFrame>, output: Option<CaptureWriter>) -> Self {
        PcapPort {
            name: name.into(),
            input: input.into(),
            output,
            stats: PortStats::default(),
            soft: SoftOffload::new(),
        }
    }

    /// Timestamp of the next frame to be received.
    pub fn next_ts(&self) -> Option<Nanos> {
        self.input.front().map(|f| f.ts)
    }

    /// Flushes and closes the output file; later frames sent are counted but not written.
    pub fn finish(&mut self) -> Result<(), PortError> {
        if let Some(w) = self.output.take() {
            w.finish().map_err(|source| PortError::Io { port: self.name.clone(), op: "flush capture", source })?;
        }
        Ok(())
    }
}

impl Port for PcapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, _now: Nanos, pool: &mut BufPool, batch: &mut Batch) -> Result<usize, PortError> {
        let Some(first_ts) = self.next_ts() else {
            return Ok(0);
        };
        let mut n = 0;
        while batch.room() > 0 && self.next_ts() == Some(first_ts) {
            let len = self.input.front().map_or(0, |f| f.data.len());
            // A frame longer than any buffer the pool can give (none large, or longer than a large one).
            if len > MAX_LARGE_FRAME_LEN || (len > MAX_FRAME_LEN && pool.large_capacity() == 0) {
                self.input.pop_front();
                self.stats.rx_dropped += 1;
                continue;
            }
            let Some(mut frame) = pool.alloc_for(len) else { break };
            let captured = self.input.pop_front().expect("next_ts saw a frame");
            if frame.load(&captured.data).is_err() {
                self.stats.rx_dropped += 1;
                pool.free(frame);
                continue;
            }
            frame.ts = captured.ts;
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += captured.data.len() as u64;
            // Cannot fail: the loop runs only while the batch has room.
            let _ = batch.push(frame);
            n += 1;
        }
        Ok(n)
    }

    fn tx_burst(&mut self, pool: &mut BufPool, frames: &mut Vec<Frame>) -> Result<(), PortError> {
        let mut result = Ok(());
        for mut frame in frames.drain(..) {
            // What a capture on a link without offloads shows: complete checksums, super-frames as segments.
            let (ts, stats, output, name) = (frame.ts, &mut self.stats, &mut self.output, &self.name);
            let emitted = self.soft.emit(&mut frame, Caps::NONE, |bytes, _| {
                match (&mut *output, &result) {
                    (Some(w), Ok(())) => match w.write(ts, bytes) {
                        Ok(()) => {
                            stats.tx_packets += 1;
                            stats.tx_bytes += bytes.len() as u64;
                        }
                        Err(source) => {
                            stats.tx_dropped += 1;
                            result = Err(PortError::Io { port: name.clone(), op: "write capture", source });
                        }
                    },
                    (None, _) => {
                        stats.tx_packets += 1;
                        stats.tx_bytes += bytes.len() as u64;
                    }
                    (Some(_), Err(_)) => stats.tx_dropped += 1,
                }
                true
            });
            if let Emitted::Malformed(_) = emitted {
                self.stats.tx_dropped += 1;
            }
            pool.free(frame);
        }
        result
    }

    fn stats(&self) -> PortStats {
        let soft = self.soft.stats();
        PortStats { sw_segmented: soft.gso_segmented, sw_csum: soft.csum_completed, ..self.stats }
    }
}
