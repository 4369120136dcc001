//! A byte-verified TCP transfer between two namespaces (iperf3 counts bytes but never checks them): the client
//! sends `len` bytes of a seeded pseudo-random stream, the server checks every byte against the same stream,
//! then sends `len` bytes of another stream back, which the client checks; both directions in one connection.
//! And the receivers' checksum error counters (`/proc/net/snmp`, what `nstat` shows).
//!
//! Include with `#[path = "common/transfer.rs"] mod transfer;`, after `mod netns;`.
#![allow(dead_code)]

use crate::netns::Netns;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The byte stream: xorshift64* from `seed`, 8 bytes per step.
struct Stream(u64);

impl Stream {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn send(s: &mut TcpStream, seed: u64, len: usize) {
    let mut st = Stream(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        st.fill(&mut buf[..n]);
        s.write_all(&buf[..n]).expect("send");
        left -= n;
    }
}

/// Reads exactly `len` bytes and checks them against the stream from `seed`; panics at the first difference.
fn receive(s: &mut TcpStream, seed: u64, len: usize) {
    let mut st = Stream(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < len {
        let n = (len - got).min(buf.len());
        s.read_exact(&mut buf[..n]).unwrap_or_else(|e| panic!("receive at byte {got} of {len}: {e}"));
        st.fill(&mut want[..n]);
        if let Some(i) = (0..n).find(|&i| buf[i] != want[i]) {
            panic!("byte {} of {len} differs: {:#04x} instead of {:#04x}", got + i, buf[i], want[i]);
        }
        got += n;
    }
}

/// What [`verified_transfer`] measured.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    /// Time from connect to the last byte checked, both directions.
    pub elapsed: Duration,
    /// Bytes each way.
    pub len: usize,
}

impl Transfer {
    /// Bits per second over both directions.
    pub fn gbit_per_s(&self) -> f64 {
        (2 * self.len * 8) as f64 / self.elapsed.as_secs_f64() / 1e9
    }
}

/// Sends `len` checked bytes from `client` to `server_ip:port` in `server`, then `len` back. Panics (with the
/// first differing byte) if anything arrives changed, or if it takes longer than `timeout`.
pub fn verified_transfer(
    client: &Netns,
    server: &Netns,
    server_ip: Ipv4Addr,
    port: u16,
    len: usize,
    timeout: Duration,
) -> Transfer {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let srv = server.spawn(move || {
        let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).expect("bind");
        ready_tx.send(()).unwrap();
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(timeout)).unwrap();
        receive(&mut s, 0x5eed_0001, len);
        send(&mut s, 0x5eed_0002, len);
        s.shutdown(std::net::Shutdown::Write).unwrap();
        // Wait for the client to close, so every byte sent was read.
        let mut rest = [0u8; 1];
        let _ = s.read(&mut rest);
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("server ready");
    let cli = client.spawn(move || {
        let t = Instant::now();
        let mut s = TcpStream::connect_timeout(&SocketAddrV4::new(server_ip, port).into(), Duration::from_secs(5))
            .expect("connect");
        s.set_read_timeout(Some(timeout)).unwrap();
        s.set_write_timeout(Some(timeout)).unwrap();
        send(&mut s, 0x5eed_0001, len);
        receive(&mut s, 0x5eed_0002, len);
        t.elapsed()
    });
    let elapsed = cli.join().expect("client");
    srv.join().expect("server");
    Transfer { elapsed, len }
}

/// `(TcpInCsumErrors, UdpInCsumErrors)` of namespace `ns` (`/proc/net/snmp` as a thread in it sees it).
pub fn csum_errors(ns: &Netns) -> (u64, u64) {
    ns.run(|| {
        let text = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("read snmp");
        let field = |proto: &str, name: &str| -> u64 {
            let mut lines = text.lines().filter(|l| l.starts_with(&format!("{proto}:")));
            let (Some(head), Some(vals)) = (lines.next(), lines.next()) else { return 0 };
            let i = head.split_whitespace().position(|f| f == name).expect("field");
            vals.split_whitespace().nth(i).unwrap().parse().unwrap()
        };
        (field("Tcp", "InCsumErrors"), field("Udp", "InCsumErrors"))
    })
}
