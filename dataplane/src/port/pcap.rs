//! [`PcapPort`]: a port whose receive side is a capture file read in full at open time and whose transmit side
//! is written to another capture file. This is what `vswitchd replay` and the pcap regression tests run on.
//!
//! Receive hands out frames in file order, one timestamp at a time: a burst holds only frames that share the
//! timestamp of the first, so the caller can merge several ports by time and advance its virtual clock between
//! bursts. Frames keep their capture timestamp (`now` is ignored).

use super::{Port, PortError, PortStats};
use crate::batch::Batch;
use crate::buffer::{BufPool, Frame};
use crate::ids::Nanos;
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
    let unreadable = |message: String| CaptureError::Unreadable { path: path.to_path_buf(), message };
    let file = File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let mut reader = PcapReader::new(std::io::BufReader::new(file)).map_err(|e| unreadable(e.to_string()))?;
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
        let pkt = PcapPacket::new(Duration::from_nanos(ts), data.len() as u32, data);
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
}

impl PcapPort {
    /// A port that receives `input` and writes what it sends to `output` (or discards it).
    pub fn new(name: impl Into<String>, input: Vec<CapturedFrame>, output: Option<CaptureWriter>) -> Self {
        PcapPort { name: name.into(), input: input.into(), output, stats: PortStats::default() }
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
            let Some(mut frame) = pool.alloc() else { break };
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
        for frame in frames.drain(..) {
            match (&mut self.output, &result) {
                (Some(w), Ok(())) => match w.write(frame.ts, frame.data()) {
                    Ok(()) => {
                        self.stats.tx_packets += 1;
                        self.stats.tx_bytes += frame.len() as u64;
                    }
                    Err(source) => {
                        self.stats.tx_dropped += 1;
                        result = Err(PortError::Io { port: self.name.clone(), op: "write capture", source });
                    }
                },
                (None, _) => {
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += frame.len() as u64;
                }
                (Some(_), Err(_)) => self.stats.tx_dropped += 1,
            }
            pool.free(frame);
        }
        result
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}
