//! Shared set-up for vswitch's benchmarks: switches over [`MemPort`]s fed with synthetic 64-byte frames.

use dataplane::batch::Batch;
use dataplane::buffer::BufPool;
use dataplane::config::Config;
use dataplane::pipeline::{Switch, TxQueues};
use dataplane::port::mem::MemPort;
use dataplane::port::{Port, PortId};
use etherparse::PacketBuilder;

/// A 64-byte (without FCS: 60 + 4) UDP frame: 14 Ethernet + 20 IPv4 + 8 UDP + 18 payload = 60 bytes.
pub fn udp64(src_mac: [u8; 6], dst_mac: [u8; 6], src_ip: [u8; 4], dst_ip: [u8; 4], sport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src_ip, dst_ip, 64).udp(sport, 9);
    let payload = [0u8; 18];
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).expect("writing to a Vec cannot fail");
    v
}

/// Locally administered unicast MAC number `n`.
pub fn host_mac(n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [0x02, 0x00, b[0], b[1], b[2], b[3]]
}

/// One network, two ports: `gen` receives a cycle of frames from `sources` distinct source MACs, all addressed
/// to a host already learned behind `sink`.
#[derive(Debug)]
pub struct L2Rig {
    /// The pipeline.
    pub switch: Switch,
    /// Generator port (id 0).
    pub gen: MemPort,
    /// Sink port (id 1).
    pub sink: MemPort,
    /// Buffers.
    pub pool: BufPool,
    /// Transmit queues.
    pub tx: TxQueues,
    batch: Batch,
}

impl L2Rig {
    /// Builds the rig and teaches the switch where the destination host is.
    pub fn new(sources: u32) -> Self {
        let cfg = Config::parse(
            &format!(
                "[[network]]\nname = \"bench\"\nmac_limit = {}\n\n\
                 [[port]]\nname = \"gen\"\nkind = \"mem\"\nnetwork = \"bench\"\n\n\
                 [[port]]\nname = \"sink\"\nkind = \"mem\"\nnetwork = \"bench\"\n",
                (sources as usize + 16).max(1024)
            ),
            "bench",
        )
        .expect("bench config is valid");
        let dst = host_mac(0xffff_0001);
        let frames = (0..sources).map(|i| udp64(host_mac(i + 1), dst, [10, 0, 0, 1], [10, 0, 0, 2], 1000)).collect();
        let mut rig = L2Rig {
            switch: Switch::new(&cfg),
            gen: MemPort::cycle("gen", frames),
            sink: MemPort::new("sink"),
            pool: BufPool::new(4096),
            tx: TxQueues::new(2, 256),
            batch: Batch::new(),
        };
        rig.sink.inject(&udp64(dst, host_mac(1), [10, 0, 0, 2], [10, 0, 0, 1], 9));
        rig.sink.set_tx_mode(dataplane::port::mem::TxMode::Count);
        rig.step_port(1);
        // Warm the table: one pass over every source.
        for _ in 0..sources.div_ceil(32) {
            rig.step();
        }
        rig
    }

    fn step_port(&mut self, id: PortId) -> usize {
        let port = if id == 0 { &mut self.gen } else { &mut self.sink };
        let n = port.rx_burst(0, &mut self.pool, &mut self.batch).expect("mem ports do not fail");
        self.switch.process(0, id, &mut self.batch, &mut self.pool, &mut self.tx);
        for p in [0, 1] {
            let q = self.tx.queue_mut(p);
            if !q.is_empty() {
                let port = if p == 0 { &mut self.gen } else { &mut self.sink };
                port.tx_burst(&mut self.pool, q).expect("mem ports do not fail");
            }
        }
        n
    }

    /// One burst from the generator through the switch to the sink; returns frames received.
    #[inline]
    pub fn step(&mut self) -> usize {
        self.step_port(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rig_forwards_every_frame_to_the_sink_without_flooding() {
        let mut rig = L2Rig::new(100);
        let before = rig.sink.stats().tx_packets;
        for _ in 0..10 {
            assert_eq!(rig.step(), 32);
        }
        assert_eq!(rig.sink.stats().tx_packets - before, 320);
        assert_eq!(rig.gen.stats().tx_packets, 1, "only the sink host's first frame was flooded back");
        assert_eq!(rig.switch.counters().total_drops(), 0);
        assert_eq!(rig.pool.available(), 4096, "no buffer leaked");
    }
}
