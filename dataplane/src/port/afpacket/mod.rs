//! [`AfPacketPort`]: an existing Linux interface (typically the switch's end of a veth pair) attached through an
//! `AF_PACKET` socket with a `TPACKET_V3` receive ring, as a [`Port`].
//!
//! # What it owns
//! One `AF_PACKET`/`SOCK_RAW` socket (an [`OwnedFd`]) bound to the interface for every EtherType (`ETH_P_ALL`),
//! and the receive ring mapped into this process ([`AfPacketConfig::block_count`] blocks of
//! [`AfPacketConfig::block_size`] bytes, `munmap`ped when the port is dropped). It does not own the interface:
//! it never creates, deletes, configures or brings it up. It only puts it into promiscuous mode through a
//! socket membership (`PACKET_ADD_MEMBERSHIP`, `PACKET_MR_PROMISC`), which the kernel removes when the socket is
//! closed, so a veth end sees frames for every MAC. A failed [`AfPacketPort::open`] closes and unmaps whatever it
//! had made. The socket is opened in the calling thread's network namespace: open the port on a thread that has
//! `setns()`ed into the namespace that holds the interface; the fd then works from any thread.
//!
//! # Receive
//! The kernel fills fixed-size blocks with variable-length frames and hands a block over (`TP_STATUS_USER`) when
//! it is full or when [`AfPacketConfig::block_timeout_ms`] has passed since its first frame. `rx_burst` walks the
//! handed-over blocks in ring order, copies each frame into a pool buffer (stamped with `now`) and gives a block
//! back (`TP_STATUS_KERNEL`) as soon as its last frame is copied. It stops when the batch is full or the pool is
//! empty and keeps its place inside the block for the next call. The socket is non-blocking and `rx_burst`
//! makes no system call at all.
//!
//! - GSO super-frames (a peer's TSO/GSO output, up to 64 KiB) and jumbo frames are copied into large buffers:
//!   see below. Frames the ring truncated (longer than a block) are dropped and counted in
//!   [`PortStats::rx_dropped`] and [`AfPacketStats::too_long`].
//! - Frames the kernel could not put into the ring because it was full are counted by the kernel
//!   (`PACKET_STATISTICS`, `tp_drops`); [`Port::stats`] and [`AfPacketPort::ring_stats`] read that counter (one
//!   `getsockopt`, which resets the kernel's copy; the port accumulates it) and add it to `rx_dropped`, so a ring
//!   that overflows is visible as [`AfPacketStats::kernel_drops`].
//! - `PACKET_IGNORE_OUTGOING` is set, so frames this port (or anyone else) transmits on the interface are not
//!   received back.
//! - VLAN tags: the kernel strips a VLAN tag into packet metadata (veth and most NICs offload it). The port puts
//!   the tag back into the frame (802.1Q, or the TPID the kernel reports), so the switch sees the frame as it was
//!   on the wire; counted in [`AfPacketStats::vlan_reinserted`].
//!
//! **Latency.** The kernel hands a block over only when it is full or on its timeout (`block_timeout_ms`, at
//! least 1 ms), and the ring's fd becomes readable only then, so under light load a frame used to wait up to
//! 1 ms. Two things remove that wait without touching the batch walk under load (x86-64 only, where stores become
//! visible in program order; elsewhere frames wait for the hand-over as before):
//! - *Peeking.* A block handed over by the timeout (light load) is zeroed where the kernel wrote before it is
//!   given back. When `rx_burst` reaches a block the kernel still owns and that was zeroed, it takes the frames
//!   the kernel has finished: `tpacket_rcv` copies the frame, writes the frame header, then (after an opaque
//!   call) `sll_family` in the `sockaddr_ll` behind the header, so a nonzero `sll_family` means the frame is
//!   complete. When the block is handed over, the walk resumes after the frames already taken. A block handed
//!   over full (load) is not zeroed (it would cost a write of the whole block) and is never peeked: under load the
//!   ring is walked exactly as before.
//! - *Waking.* [`Port::rx_fd`] is a second packet socket on the interface (`Wake`) whose socket filter drops
//!   every frame, until a worker about to sleep arms it ([`Port::before_sleep`]: the filter then keeps one byte);
//!   the first frame makes it readable and wakes the worker, which disarms it ([`Port::after_sleep`]).
//!
//! `frames_in_the_block_the_kernel_fills_are_taken_at_once_and_wake_a_sleeper` measures both: a busy-polled
//! frame is taken 11–54 µs after it was sent (median 14 µs, debug build) against ~0.9 ms without peeking, and a
//! sleeping reader wakes ~130 µs after the send.
//!
//! # Transmit
//! `tx_burst` sends all frames of a burst with `sendmmsg` (up to [`TX_CHUNK`] frames per system call) with
//! `MSG_DONTWAIT`; the kernel copies each frame, and every buffer goes back to the pool before `tx_burst` returns.
//! Each frame is tried exactly once: a frame the kernel refuses (`EAGAIN`/`ENOBUFS`: socket buffer or the peer's
//! queue full; `EMSGSIZE`: longer than the MTU; `ENETDOWN`: link down) is dropped and counted in
//! [`PortStats::tx_dropped`], and sending continues with the next one, so `tx_burst` never blocks or spins.
//! Any other error (the interface disappeared) drops the rest of the burst and is returned after the vector is
//! emptied. Receive makes no system call and so does not notice a deleted interface: it just sees no frames. [`AfPacketConfig::qdisc_bypass`] (default off) makes frames skip the interface's qdisc
//! (`PACKET_QDISC_BYPASS`); on veth (which has none) that saved no measurable CPU, and `tcpdump` on the
//! interface then no longer shows transmitted frames, so it is off unless asked for.
//! A TX ring (`PACKET_TX_RING`) was not used: it saves the copy into an skb for large frames only, and still needs
//! one `send` per burst to kick the kernel, which `sendmmsg` already is.
//!
//! # Checksums and offloads (see [`crate::offload`])
//! The socket has `PACKET_VNET_HDR`: the kernel writes a `virtio_net_hdr` (10 bytes, [`gso::VnetHdr`]) right
//! before each frame in the ring (between the `tpacket3_hdr` and `tp_mac`; the live tests check the layout), and
//! expects one before each frame sent. So the port carries the host stack's offloads both ways, and a veth peer
//! with default offloads needs no `ethtool -K ... tx off`:
//!
//! **Partial checksums.** A host stack behind a veth with default offloads sends TCP/UDP with
//! `CHECKSUM_PARTIAL`: the checksum field holds only the pseudo-header sum and the vnet header says
//! `F_NEEDS_CSUM` with `csum_start`/`csum_offset`. The port hands the frame over with that as its
//! [`Offload`] metadata (`csum_start` counts from the frame without the VLAN tag the kernel stripped, so it moves
//! by 4 when the tag is put back; [`AfPacketStats::csum_partial`]); an egress that cannot take a partial
//! checksum completes it ([`super::soft_offload`]). Offsets outside the frame fall back to completing it here by
//! parsing ([`complete_partial_checksum`], [`AfPacketStats::csum_completed`]), and failing that the frame is
//! passed on unchanged and counted in [`AfPacketStats::csum_unsupported`]; so is SCTP, whose partial checksum
//! is a CRC32c the port does not compute. `F_DATA_VALID` (the kernel verified the checksum) is carried too.
//!
//! **GSO super-frames.** A peer with TSO/GSO on (every container's veth by default) hands the kernel TCP
//! super-frames of up to 64 KiB, which veth passes on unsegmented; the vnet header says `gso_type` (TCPv4,
//! TCPv6, UDP_L4) and `gso_size` (the MSS). The port checks the headers against it ([`SuperFrame::plan`]; a
//! `gso_size` under [`MIN_GSO_SIZE`] is refused, `gso_too_small`) and copies the super-frame whole into a large
//! pool buffer ([`PortStats::rx_super_frames`]): it crosses the switch as one frame and is cut, if at all, by
//! the egress port. Only when no large buffer is free does the port cut it here, in software ([`super::gso`],
//! as the kernel's `tcp_gso_segment`/`__udp_gso_segment`): each segment is written straight from the ring into
//! its own small buffer (headers copied and patched, `gso_size` payload bytes, so each fits the MTU the sender
//! meant; IPv4 total length, identification +1 per segment and header checksum; TCP sequence number, CWR on the
//! first segment only, FIN/PSH on the last only; the TCP/UDP checksum computed in full). A super-frame may need
//! more segments (up to ~45 at MSS 1448) than a batch (32) or the pool has room for: the port then stops after
//! the last segment that fitted, keeps the frame in the ring and its place in it (`RxPos::seg_next`), and the
//! next `rx_burst` goes on from there, so nothing is lost or reordered. Counted in
//! [`AfPacketStats::gso_frames`], [`AfPacketStats::gso_segments`] (each segment also in `rx_packets`) and
//! [`PortStats::sw_segmented`]. Dropped whole and counted ([`AfPacketStats::gso_dropped`], `rx_dropped`), never
//! passed on or segmented from partial data: a super-frame the ring truncated (longer than a block: the default
//! block is 128 KiB so that a 64 KiB super-frame fits; `gso_truncated`), an unsupported type (UFO:
//! `gso_unsupported`), headers that do not parse or disagree with the frame's length, IPv6 extension headers,
//! IPv4 BIG TCP (`tot_len` 0), or a segment that would not fit a buffer (`gso_malformed`). Tunnel GSO (TCP
//! inside VXLAN/GRE from a tunnel device in the peer) is reported by the kernel with its inner TCP type but outer
//! headers, so it fails the header check and is dropped as `gso_malformed` rather than cut wrongly; GSO kinds
//! the kernel cannot describe in a `virtio_net_hdr` it drops itself (`kernel_drops`).
//!
//! **Transmit.** Each frame is sent with a `virtio_net_hdr` made from its metadata ([`Offload::to_vnet`]: GSO
//! type, `gso_size`, `hdr_len`, `NEEDS_CSUM` with start and offset), so [`Port::caps`] is everything: the kernel
//! skips the MTU check for a super-frame (`packet_snd`), veth hands it to its peer unsegmented, and a device
//! without TSO or checksum offload gets it segmented or completed by the kernel (`validate_xmit_skb`).
//!
//! **Jumbo frames** (an MTU up to 9000) are copied into a large buffer; when none is free the frame is dropped
//! and counted ([`AfPacketStats::no_large_buffer`]) rather than left to block the ring.
//!
//! # Host stack
//! Attaching a packet socket does not take the interface away from the kernel: the host stack in the
//! interface's namespace still receives every frame. Give the interface no IP address (and ideally put it in a
//! namespace of its own) so the kernel does not answer ARP or route what the switch also forwards.
//!
//! # Costs
//! Measured by `tests/afpacket_live.rs::measure_costs` (`cargo test -p dataplane --release --test afpacket_live
//! measure -- --nocapture`; 2 vCPU, kernel 6.18, while other builds loaded the machine):
//! - receive ring walk, copy into a pool buffer included: **26–27 ns/frame** (64-byte frames, 6400 frames; the
//!   feasibility study measured 20–45 ns; 25 ns again with the vnet header read); an empty `rx_burst` (one
//!   atomic load) 4–6 ns;
//! - transmit with `sendmmsg`, 64 frames per call: **1.6–2.5 µs CPU per frame** (2.9–4.2 µs wall), which
//!   includes the peer's receive path (veth runs it in the sender's softirq); a host-stack UDP `send()` over the
//!   same veth cost 3.5–4.3 µs CPU in the same runs, so the kernel's skb and veth work dominates;
//! - idle one-frame delay (tx on one end, busy-polled rx on the other): median **1.0 ms**, up to 3–5 ms, before
//!   peeking; ~15 µs with it (see Latency above).
//!
//! # Fan-out
//! [`AfPacketConfig::fanout`] joins the socket to a `PACKET_FANOUT` group (`PACKET_FANOUT_HASH`): open one port
//! per worker with the same group id and interface, and the kernel spreads frames over them by flow hash, so a
//! flow always reaches the same socket (and worker).
//!
//! Threads: owned by one worker at a time; `Send`, not shared. All `unsafe` is confined to the system calls and
//! the ring accesses below.

pub use super::gso::complete_partial_checksum;
mod open;
mod ring;
mod socket;

use super::gso::{self, GsoError, SuperFrame, VnetHdr, MAX_HEADERS, VNET_HDR_LEN};
use super::soft_offload::vnet_of;
use super::{IfName, Port, PortError, PortStats};
use crate::batch::Batch;
use crate::buffer::{BufPool, Frame, Nanos, MAX_FRAME_LEN, MAX_LARGE_FRAME_LEN};
use crate::offload::{Caps, Offload, MIN_GSO_SIZE};
use crate::wire::virtio_net_hdr::F_DATA_VALID;
use crate::wire::{ethertype, vlan, MacAddr};
use ring::{Ring, RingFrame, RxPos, FRAME_HDR, PEEK, SLL_AT};
use socket::{socklen_of, Wake, SLL_FAMILY};
use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Most frames handed to one `sendmmsg` call.
pub const TX_CHUNK: usize = 64;

/// A partial checksum at this offset from its start is SCTP's CRC32c (veth offers `NETIF_F_SCTP_CRC`).
const SCTP_CRC_OFFSET: u16 = 8;

/// Nominal frame slot size told to the kernel (`tp_frame_size`); `TPACKET_V3` packs frames by their real length,
/// so this only sets the ring's nominal frame count.
const RING_FRAME_SIZE: u32 = 2048;

/// How to attach to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// The existing interface to attach to.
    pub ifname: IfName,
    /// Join `PACKET_FANOUT` group with this id (`PACKET_FANOUT_HASH`): one port per queue, same id.
    pub fanout: Option<u16>,
    /// Bytes per ring block: a power of two, at least one page. Default 128 KiB: a block must hold a whole GSO
    /// super-frame (up to 64 KiB + headers; a frame longer than a block is truncated by the kernel and dropped
    /// here), and 128 KiB holds about 900 minimum-size frames.
    pub block_size: u32,
    /// Blocks in the ring. Default 64 (8 MiB of ring with the default block size). A block is handed over when
    /// full or after `block_timeout_ms`, so under light load each block holds one timeout's worth of frames: the
    /// ring rides out a worker that does not read for `block_count * block_timeout_ms` (64 ms by default), however
    /// low the rate.
    pub block_count: u32,
    /// Milliseconds after its first frame that a partly filled block is handed over anyway (the receive latency
    /// bound under light load). At least 1; default 1.
    pub block_timeout_ms: u32,
    /// Transmit without the interface's qdisc (`PACKET_QDISC_BYPASS`). Default false: on veth (no qdisc) it
    /// saved no measurable CPU, and it hides transmitted frames from `tcpdump` on the interface.
    pub qdisc_bypass: bool,
}

impl AfPacketConfig {
    /// Defaults for interface `ifname`: no fan-out, 64 blocks of 128 KiB, 1 ms block timeout, no qdisc bypass.
    pub fn new(ifname: IfName) -> Self {
        AfPacketConfig {
            ifname,
            fanout: None,
            block_size: 128 * 1024,
            block_count: 64,
            block_timeout_ms: 1,
            qdisc_bypass: false,
        }
    }
}

/// What an AF_PACKET socket needs (named in [`OpenFailure::PermissionDenied`]).
const NEEDS: &str = "AF_PACKET needs CAP_NET_RAW";

/// What the port counts beyond [`PortStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AfPacketStats {
    /// Frames the kernel saw for this socket (including those it dropped), from `PACKET_STATISTICS`.
    pub kernel_packets: u64,
    /// Frames the kernel dropped because the ring was full (`tp_drops`); included in `rx_dropped`.
    pub kernel_drops: u64,
    /// Frames dropped because the ring truncated them (longer than a block) or longer than a large buffer, and
    /// not super-frames; included in `rx_dropped`.
    pub too_long: u64,
    /// GSO super-frames received and completely segmented.
    pub gso_frames: u64,
    /// Segments made from them (each also counted in `rx_packets`).
    pub gso_segments: u64,
    /// Super-frames dropped (sum of the three reasons below; included in `rx_dropped`).
    pub gso_dropped: u64,
    /// ... because of a GSO type the port does not segment (UFO, unknown).
    pub gso_unsupported: u64,
    /// ... because the ring truncated them (longer than a block can hold): never segmented from partial data.
    pub gso_truncated: u64,
    /// ... because their headers do not parse or disagree with the frame, or a segment would not fit a buffer
    /// (a peer with an MTU above the buffer size).
    pub gso_malformed: u64,
    /// ... because their segment size is under [`MIN_GSO_SIZE`] (also counted in `gso_malformed`).
    pub gso_too_small: u64,
    /// Received frames whose partial TCP/UDP checksum the port carried on as metadata (completed, if at all, by
    /// the egress port).
    pub csum_partial: u64,
    /// Received frames whose partial TCP/UDP checksum the port completed (its offsets from the kernel did not
    /// fit the frame, so it was found by parsing).
    pub csum_completed: u64,
    /// Received frames marked partial-checksum that the port could not complete (checksum offsets outside the
    /// frame and not TCP/UDP by parsing, or SCTP, whose partial checksum is a CRC32c); passed on unchanged.
    pub csum_unsupported: u64,
    /// Jumbo frames (longer than a small buffer, not super-frames) dropped because no large buffer was free;
    /// included in `rx_dropped`.
    pub no_large_buffer: u64,
    /// Received frames whose VLAN tag the kernel had stripped and the port put back.
    pub vlan_reinserted: u64,
}

/// What [`AfPacketPort::take_frame`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// Handed over, or dropped and counted: move on.
    Done,
    /// The batch or the pool ran out: try this frame again next burst.
    Stalled,
    /// The header points outside the block.
    Corrupt,
}

/// An interface attached through an AF_PACKET socket. See the module documentation.
#[derive(Debug)]
pub struct AfPacketPort {
    name: String,
    ifname: String,
    ifindex: u32,
    mac: MacAddr,
    // Field order matters for drop: unmap the ring, then close the socket.
    ring: Ring,
    fd: OwnedFd,
    block_size: usize,
    block_count: usize,
    pos: RxPos,
    stats: PortStats,
    extra: AfPacketStats,
    /// Accumulated `PACKET_STATISTICS` (the kernel resets its copy on every read): packets, drops.
    kernel: Cell<(u64, u64)>,
    /// Per block: the end of the bytes the kernel may have written since the block was last zeroed (0: all of
    /// it is zero, so it may be peeked while the kernel fills it). Kept across rounds: a block filled to 100 KB,
    /// then to 2 KB and zeroed that far, still holds old frames beyond 2 KB that a peek must never mistake for
    /// new ones.
    dirty: Vec<usize>,
    /// The socket that wakes a sleeping worker on the first frame (see the module documentation, Latency).
    wake: Wake,
}

// SAFETY: the ring mapping (the only non-Send field, a raw pointer) belongs to this port alone; moving the port to
// another thread moves sole access with it, and the kernel side of the ring does not care which thread reads it.
unsafe impl Send for AfPacketPort {}

/// `n` frames (at most [`TX_CHUNK`]) as `sendmmsg`'s count.
#[inline]
#[allow(clippy::cast_possible_truncation)] // n <= TX_CHUNK (64 or less)
fn tx_count(n: usize) -> libc::c_uint {
    debug_assert!(n <= TX_CHUNK);
    n as libc::c_uint
}

impl AfPacketPort {
    /// The interface's name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface's index (in the namespace the port was opened in).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface's MAC address at open.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// The port's own counters, with the kernel's ring statistics read now (one `getsockopt`).
    pub fn ring_stats(&self) -> AfPacketStats {
        let (packets, drops) = self.poll_kernel_stats();
        AfPacketStats { kernel_packets: packets, kernel_drops: drops, ..self.extra }
    }

    /// The port's own counters without a system call (the kernel's ring statistics as of their last read).
    pub fn counters(&self) -> AfPacketStats {
        let (packets, drops) = self.kernel.get();
        AfPacketStats { kernel_packets: packets, kernel_drops: drops, ..self.extra }
    }

    /// Reads and accumulates `PACKET_STATISTICS` (the kernel resets it on read). On failure (never expected on an
    /// open socket) the accumulated values are returned unchanged.
    fn poll_kernel_stats(&self) -> (u64, u64) {
        // SAFETY: tpacket_stats_v3 is three integers; all-zero is valid.
        let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let mut len = socklen_of::<libc::tpacket_stats_v3>();
        // SAFETY: `st` and `len` are valid for writes of the stated size during the call.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        let (mut packets, mut drops) = self.kernel.get();
        if rc == 0 {
            packets += u64::from(st.tp_packets);
            drops += u64::from(st.tp_drops);
            self.kernel.set((packets, drops));
        }
        (packets, drops)
    }

    /// Pointer to byte `off` of block `i`.
    #[inline]
    fn block_at(&self, i: usize, off: usize) -> *mut u8 {
        debug_assert!(i < self.block_count && off < self.block_size);
        // i < block_count and off < block_size, so this stays inside the mapping.
        self.ring.base.as_ptr().wrapping_add(i * self.block_size + off)
    }

    /// Block `i`'s status word, shared with the kernel.
    #[inline]
    fn block_status(&self, i: usize) -> &AtomicU32 {
        let off = std::mem::offset_of!(libc::tpacket_block_desc, hdr)
            + std::mem::offset_of!(libc::tpacket_hdr_v1, block_status);
        let p = self.block_at(i, off).cast::<u32>();
        // SAFETY: `p` points to a mapped, aligned u32 (the block descriptor's status) that the kernel and we access
        // with acquire/release (the TPACKET_V3 ownership protocol), so viewing it as an AtomicU32 for the lifetime
        // of `&self` (the mapping lives as long as `self`) is sound.
        unsafe { AtomicU32::from_ptr(p) }
    }

    /// Segments the super-frame `rf` (complete, not truncated) into pool buffers pushed to `batch`, starting at
    /// segment `pos.seg_next`. Returns true when the frame is finished with (all segments emitted, or dropped and
    /// counted), false when the batch or the pool ran out first: `pos.seg_next` then says where to go on, and the
    /// frame stays in the ring.
    fn rx_super_frame(
        &mut self,
        rf: &RingFrame<'_>,
        vnet: &VnetHdr,
        now: Nanos,
        pool: &mut BufPool,
        batch: &mut Batch,
        n: &mut usize,
    ) -> bool {
        let mut head = [0u8; MAX_HEADERS];
        let head = &mut head[..rf.len().min(MAX_HEADERS)];
        rf.copy_head(head);
        let drop_it = |me: &mut Self, e: GsoError| {
            me.stats.rx_dropped += 1;
            me.extra.gso_dropped += 1;
            match e {
                GsoError::Unsupported(_) => me.extra.gso_unsupported += 1,
                GsoError::Malformed | GsoError::MssTooBig(_) | GsoError::MssTooSmall(_) => me.extra.gso_malformed += 1,
            }
            me.pos.seg_next = 0;
        };
        if vnet.gso_size < MIN_GSO_SIZE {
            drop_it(self, GsoError::Malformed);
            self.extra.gso_too_small += 1;
            return true;
        }
        // Whole, into a large buffer, when one is free and the segmentation has not started already: the
        // headers are checked as for cutting, and the metadata carried on (csum_start moves past a reinserted
        // tag). An egress that cannot take it cuts it.
        if self.pos.seg_next == 0 && rf.len() <= MAX_LARGE_FRAME_LEN {
            let offload = u16::try_from(usize::from(vnet.csum_start) + rf.tag_len()).ok().and_then(|start| {
                Offload::from_raw(vnet.flags, vnet.gso_type, vnet.gso_size, start, vnet.csum_offset, rf.len())
            });
            if let Some(o) = offload {
                if let Err(e) = SuperFrame::plan(head, rf.len(), &vnet_of(&o), MAX_LARGE_FRAME_LEN) {
                    drop_it(self, e);
                    return true;
                }
                if let Some(mut frame) = pool.alloc_large() {
                    if batch.room() == 0 {
                        pool.free(frame);
                        return false;
                    }
                    rf.copy_head(&mut frame.room_mut()[..rf.len()]);
                    // Cannot fail: rf.len() <= MAX_LARGE_FRAME_LEN.
                    let _ = frame.set_len(rf.len());
                    frame.offload = o;
                    frame.ts = now;
                    if rf.tag.is_some() {
                        self.extra.vlan_reinserted += 1;
                    }
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += rf.len() as u64;
                    self.stats.rx_super_frames += 1;
                    // Cannot fail: checked room above.
                    let _ = batch.push(frame);
                    *n += 1;
                    return true;
                }
            }
        }
        let plan = match SuperFrame::plan(head, rf.len(), vnet, MAX_FRAME_LEN) {
            Ok(plan) => plan,
            Err(e) => {
                drop_it(self, e);
                return true;
            }
        };
        let segments = plan.segments();
        while self.pos.seg_next < segments {
            if batch.room() == 0 {
                return false;
            }
            let Some(mut frame) = pool.alloc() else { return false };
            let i = self.pos.seg_next;
            let (from, to) = plan.segment_range(i);
            let payload = rf.tail(plan.hdr_len + from, plan.hdr_len + to);
            let len = plan.write_segment(head, i, payload, frame.room_mut());
            // Cannot fail: plan() checked hdr_len + mss <= MAX_FRAME_LEN.
            let _ = frame.set_len(len);
            frame.ts = now;
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += len as u64;
            self.extra.gso_segments += 1;
            // Cannot fail: checked room above.
            let _ = batch.push(frame);
            *n += 1;
            self.pos.seg_next += 1;
        }
        if rf.tag.is_some() {
            self.extra.vlan_reinserted += 1;
        }
        self.extra.gso_frames += 1;
        self.stats.sw_segmented += 1;
        self.pos.seg_next = 0;
        true
    }

    /// Hands over (or drops and counts) the frame whose header `h` sits at `off` in the current block. `Stalled`:
    /// the batch or pool ran out (the frame stays where it is for the next burst); `Corrupt`: the header points
    /// outside the block (never expected from the kernel).
    fn take_frame(
        &mut self,
        off: usize,
        h: &libc::tpacket3_hdr,
        now: Nanos,
        pool: &mut BufPool,
        batch: &mut Batch,
        n: &mut usize,
    ) -> Taken {
        let data_at = off + usize::from(h.tp_mac);
        let snap = h.tp_snaplen as usize;
        if data_at + snap > self.block_size || usize::from(h.tp_mac) < FRAME_HDR + VNET_HDR_LEN {
            return Taken::Corrupt;
        }
        // SAFETY: [data_at - VNET_HDR_LEN, data_at + snap) lies inside this block (checked: the vnet header
        // sits between the frame header and the frame), which is ours until released and which nothing
        // writes while we hold it.
        let vnet =
            unsafe { std::slice::from_raw_parts(self.block_at(self.pos.block, data_at - VNET_HDR_LEN), VNET_HDR_LEN) };
        let vnet = VnetHdr::parse(vnet.try_into().expect("VNET_HDR_LEN bytes"));
        // SAFETY: as above, for the frame's bytes.
        let data = unsafe { std::slice::from_raw_parts(self.block_at(self.pos.block, data_at), snap) };
        let vlan = h.tp_status & libc::TP_STATUS_VLAN_VALID != 0 && snap >= 12;
        let tag = vlan.then(|| {
            let tpid =
                if h.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 { h.hv1.tp_vlan_tpid } else { ethertype::VLAN };
            vlan::tag_bytes(tpid, (h.hv1.tp_vlan_tci & 0xffff) as u16)
        });
        let rf = RingFrame { data, tag };
        let len = rf.len();
        if h.tp_len as usize != snap {
            // Truncated by the ring: never handed on, never segmented from partial data.
            self.stats.rx_dropped += 1;
            if vnet.is_gso() {
                self.extra.gso_dropped += 1;
                self.extra.gso_truncated += 1;
            } else {
                self.extra.too_long += 1;
            }
        } else if vnet.is_gso() {
            if !self.rx_super_frame(&rf, &vnet, now, pool, batch, n) {
                return Taken::Stalled; // batch or pool full: continue with this super-frame next time
            }
        } else if len > MAX_LARGE_FRAME_LEN {
            self.stats.rx_dropped += 1;
            self.extra.too_long += 1;
        } else if len > MAX_FRAME_LEN && pool.large_available() == 0 {
            // A jumbo frame and no large buffer: dropped rather than left to block the ring behind it.
            self.stats.rx_dropped += 1;
            self.extra.no_large_buffer += 1;
        } else {
            // A small buffer, or a large one for a jumbo frame.
            let Some(mut frame) = pool.alloc_for(len) else { return Taken::Stalled };
            rf.copy_head(&mut frame.room_mut()[..len]);
            if tag.is_some() {
                self.extra.vlan_reinserted += 1;
            }
            // Cannot fail: the buffer holds len bytes.
            let _ = frame.set_len(len);
            if vnet.flags & gso::F_NEEDS_CSUM != 0 {
                // csum_start counts from the frame as the kernel holds it, without the stripped tag. The
                // partial checksum is carried on (an egress that cannot take it completes it); SCTP's
                // (offset 8) is a CRC32c, not carried as an Internet checksum.
                let start = usize::from(vnet.csum_start) + rf.tag_len();
                let partial = u16::try_from(start)
                    .ok()
                    .filter(|_| vnet.csum_offset != SCTP_CRC_OFFSET)
                    .and_then(|start| Offload::from_raw(gso::F_NEEDS_CSUM, 0, 0, start, vnet.csum_offset, len));
                if let Some(o) = partial {
                    frame.offload = o;
                    self.extra.csum_partial += 1;
                } else if complete_partial_checksum(frame.data_mut()) {
                    self.extra.csum_completed += 1;
                } else {
                    self.extra.csum_unsupported += 1;
                }
            } else if vnet.flags & F_DATA_VALID != 0 {
                frame.offload = Offload::verified();
            }
            frame.ts = now;
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += len as u64;
            // Cannot fail: the loop runs only while the batch has room.
            let _ = batch.push(frame);
            *n += 1;
        }
        Taken::Done
    }

    /// Takes the next frame of the block the kernel is still filling, if the block may be peeked (see the module
    /// documentation, Latency) and the kernel has finished writing that frame. False when there is none (yet),
    /// or the batch or pool ran out.
    fn peek_next(&mut self, now: Nanos, pool: &mut BufPool, batch: &mut Batch, n: &mut usize) -> bool {
        if !PEEK || self.dirty[self.pos.block] != 0 {
            return false;
        }
        if self.pos.peeked == 0 {
            // The kernel writes the same first offset into the block header whenever it opens the block.
            let hdr = self.block_at(self.pos.block, std::mem::offset_of!(libc::tpacket_block_desc, hdr));
            // SAFETY: `hdr` points to the mapped, 8-aligned block header; the kernel may write the field
            // concurrently (when it opens the block), with the same value each time, so a volatile read sees it or
            // the previous one.
            let first = unsafe {
                std::ptr::read_volatile(
                    hdr.wrapping_add(std::mem::offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt)).cast::<u32>(),
                )
            } as usize;
            if first < std::mem::size_of::<libc::tpacket_block_desc>() || first >= self.block_size {
                return false;
            }
            self.pos.off = first;
        }
        let off = self.pos.off;
        let Some(h) = self.finished_frame(off) else { return false };
        match self.take_frame(off, &h, now, pool, batch, n) {
            Taken::Done => {
                self.pos.peeked += 1;
                self.pos.off = off + h.tp_next_offset as usize;
                true
            }
            // A frame header that does not fit (not expected): wait for the block to be handed over.
            Taken::Stalled | Taken::Corrupt => false,
        }
    }

    /// The header of the frame at `off` in the current (kernel-owned) block, if the kernel has finished writing
    /// it. The block was zeroed before the kernel got it back; `tpacket_rcv` copies the frame (after the vnet
    /// header), then writes the `tpacket3_hdr` fields, then calls `dev_parse_header` (an opaque call the compiler
    /// cannot move those stores past) and only then writes `sll_family = AF_PACKET` into the `sockaddr_ll` that
    /// follows the header. So `sll_family` set means every byte before it in program order is final, and x86's
    /// store order makes them visible first. `tp_len`/`tp_snaplen`/`tp_mac` nonzero is checked as well.
    fn finished_frame(&self, off: usize) -> Option<libc::tpacket3_hdr> {
        if off + SLL_AT + std::mem::size_of::<libc::sockaddr_ll>() > self.block_size {
            return None;
        }
        let at = self.block_at(self.pos.block, off);
        let field = |o: usize| {
            // SAFETY: at + o is a 4-aligned u32 inside the mapped block (checked above; frame headers are
            // 16-aligned, and every offset read is a multiple of 4); the kernel writes it concurrently, so it is
            // read atomically.
            unsafe { AtomicU32::from_ptr(at.wrapping_add(o).cast::<u32>()) }.load(Ordering::Acquire)
        };
        use std::mem::offset_of;
        // sll_family is the first (native-endian) u16 of the sockaddr_ll.
        let family = field(SLL_AT).to_ne_bytes();
        if u16::from_ne_bytes([family[0], family[1]]) != SLL_FAMILY {
            return None;
        }
        let len = field(offset_of!(libc::tpacket3_hdr, tp_len));
        let snap = field(offset_of!(libc::tpacket3_hdr, tp_snaplen));
        if len == 0 || snap == 0 {
            return None;
        }
        // SAFETY: as above; every header field was written before sll_family (see above).
        Some(unsafe { at.cast::<libc::tpacket3_hdr>().read_volatile() })
    }

    /// Gives the current block back to the kernel and moves to the next. A block handed over by the timeout
    /// (light load) is zeroed first wherever the kernel wrote since it was last zeroed, so that it may be peeked
    /// next time round; a full one (load) is not, and will not be until a light-load round zeroes it.
    #[inline]
    fn release_block(&mut self) {
        let b = self.pos.block;
        let first = std::mem::size_of::<libc::tpacket_block_desc>();
        let written = self.dirty[b].max(self.pos.used).clamp(first, self.block_size);
        if PEEK && self.pos.timed_out {
            // SAFETY: [first, written) lies inside block b, which is ours until the release below; nothing else
            // refers to it (frames were copied out).
            unsafe { std::ptr::write_bytes(self.block_at(b, first), 0, written - first) };
            self.dirty[b] = 0;
        } else {
            self.dirty[b] = written;
        }
        self.block_status(b).store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.pos = RxPos { block: (b + 1) % self.block_count, ..RxPos::default() };
    }
}

impl AsRawFd for AfPacketPort {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Port for AfPacketPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, now: Nanos, pool: &mut BufPool, batch: &mut Batch) -> Result<usize, PortError> {
        let mut n = 0;
        while batch.room() > 0 {
            if !self.pos.open {
                let status = self.block_status(self.pos.block).load(Ordering::Acquire);
                if status & libc::TP_STATUS_USER == 0 {
                    // The kernel still fills this block: take the frames it has finished, if it may be peeked.
                    if !self.peek_next(now, pool, batch, &mut n) {
                        break;
                    }
                    continue;
                }
                let hdr = self.block_at(self.pos.block, std::mem::offset_of!(libc::tpacket_block_desc, hdr));
                // SAFETY: the block is ours (TP_STATUS_USER, acquired above), so its header is stable; `hdr` points
                // to the mapped, 8-aligned block header.
                let bh = unsafe { hdr.cast::<libc::tpacket_hdr_v1>().read() };
                self.pos.open = true;
                self.pos.left = bh.num_pkts.saturating_sub(self.pos.peeked);
                if self.pos.peeked == 0 {
                    self.pos.off = bh.offset_to_first_pkt as usize;
                }
                self.pos.used = (bh.blk_len as usize).min(self.block_size);
                self.pos.timed_out = status & libc::TP_STATUS_BLK_TMO != 0;
            }
            if self.pos.left == 0 {
                self.release_block();
                continue;
            }
            let off = self.pos.off;
            if off + FRAME_HDR > self.block_size {
                // A corrupt descriptor (never expected): give the block back rather than read out of it.
                self.release_block();
                continue;
            }
            // SAFETY: off + FRAME_HDR lies inside this block (checked), which is ours; frame headers are 16-aligned.
            let h = unsafe { self.block_at(self.pos.block, off).cast::<libc::tpacket3_hdr>().read() };
            match self.take_frame(off, &h, now, pool, batch, &mut n) {
                Taken::Done => {}
                Taken::Stalled => break,
                Taken::Corrupt => {
                    self.release_block();
                    continue;
                }
            }
            self.pos.left -= 1;
            self.pos.off = off + h.tp_next_offset as usize;
            if self.pos.left == 0 {
                self.release_block();
            }
        }
        Ok(n)
    }

    fn tx_burst(&mut self, pool: &mut BufPool, frames: &mut Vec<Frame>) -> Result<(), PortError> {
        let mut first_err = None;
        let mut start = 0;
        while start < frames.len() && first_err.is_none() {
            let chunk = &frames[start..frames.len().min(start + TX_CHUNK)];
            // One virtio_net_hdr per frame, from its offload metadata (all zero for an ordinary frame).
            let mut vh = [[0u8; VNET_HDR_LEN]; TX_CHUNK];
            // SAFETY: iovec and mmsghdr are plain C structs; all-zero is valid (null pointers, zero lengths).
            let mut iov: [[libc::iovec; 2]; TX_CHUNK] = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut msgs: [libc::mmsghdr; TX_CHUNK] = unsafe { std::mem::zeroed() };
            for (i, f) in chunk.iter().enumerate() {
                let d = f.data();
                // With PACKET_VNET_HDR every frame sent is preceded by a virtio_net_hdr: GSO type and segment
                // size for a super-frame, checksum start and offset for a partial checksum. The kernel only
                // reads it.
                if !f.offload.is_none() {
                    vh[i] = f.offload.to_vnet(d);
                }
                iov[i][0] = libc::iovec { iov_base: vh[i].as_mut_ptr().cast(), iov_len: VNET_HDR_LEN };
                iov[i][1] = libc::iovec { iov_base: d.as_ptr() as *mut libc::c_void, iov_len: d.len() };
                msgs[i].msg_hdr.msg_iov = iov[i].as_mut_ptr();
                msgs[i].msg_hdr.msg_iovlen = 2;
            }
            let mut i = 0;
            while i < chunk.len() {
                // SAFETY: msgs[i..chunk.len()] are initialised headers whose iovecs point into `iov`, `vh` and
                // `frames` (none moved nor freed during the call); the kernel only reads them (and writes msg_len).
                let r = unsafe {
                    libc::sendmmsg(
                        self.fd.as_raw_fd(),
                        msgs[i..].as_mut_ptr(),
                        tx_count(chunk.len() - i),
                        libc::MSG_DONTWAIT,
                    )
                };
                let sent = usize::try_from(r).unwrap_or(0);
                if sent > 0 {
                    for f in &chunk[i..i + sent] {
                        self.stats.tx_packets += 1;
                        self.stats.tx_bytes += f.len() as u64;
                        self.stats.tx_super_frames += u64::from(f.offload.is_gso());
                    }
                    i += sent;
                    continue;
                }
                let e = io::Error::last_os_error();
                if r < 0 && e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Frame i was refused: drop it and go on with the next (each frame is tried once).
                self.stats.tx_dropped += 1;
                i += 1;
                let per_frame = r == 0
                    || matches!(
                        e.raw_os_error(),
                        Some(libc::EAGAIN)
                            | Some(libc::ENOBUFS)
                            | Some(libc::ENOMEM)
                            | Some(libc::EMSGSIZE)
                            | Some(libc::EINVAL)
                            | Some(libc::ENETDOWN)
                    );
                if !per_frame {
                    // The socket or interface is broken: drop the rest of the burst and report.
                    self.stats.tx_dropped += (frames.len() - start - i) as u64;
                    first_err = Some(e);
                    break;
                }
            }
            start += chunk.len();
        }
        for f in frames.drain(..) {
            pool.free(f);
        }
        match first_err {
            None => Ok(()),
            Some(source) => Err(PortError::Io { port: self.name.clone(), op: "sendmmsg on AF_PACKET socket", source }),
        }
    }

    fn stats(&self) -> PortStats {
        let (_, kernel_drops) = self.poll_kernel_stats();
        PortStats { rx_dropped: self.stats.rx_dropped + kernel_drops, ..self.stats }
    }

    fn caps(&self) -> Caps {
        // The kernel takes any virtio_net_hdr on a packet socket and segments or completes later for a device
        // that needs it (validate_xmit_skb); veth hands it to its peer as is.
        Caps::ALL
    }

    /// The wake-up socket: readable on the first frame after [`Port::before_sleep`] (the ring's fd would only
    /// signal when the kernel hands a block over).
    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.wake.fd.as_raw_fd())
    }

    fn before_sleep(&mut self) -> bool {
        self.wake.arm();
        // A frame that arrived before the arming would not wake the worker: look once more.
        let b = self.pos.block;
        let handed_over = self.block_status(b).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0;
        let finished = PEEK && self.dirty[b] == 0 && !self.pos.open && {
            let off = if self.pos.peeked == 0 { std::mem::size_of::<libc::tpacket_block_desc>() } else { self.pos.off };
            self.finished_frame(off).is_some()
        };
        !(handed_over || finished || self.pos.open)
    }

    fn after_sleep(&mut self) {
        self.wake.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::OpenFailure;
    #[test]
    fn bad_geometry_is_refused_before_any_socket() {
        for (bs, bc, tmo) in [(4096 * 3, 4, 1), (1024, 4, 1), (4096, 0, 1), (4096, 4, 0), (1 << 30, 2, 1)] {
            let x = IfName::new("x").unwrap();
            let cfg =
                AfPacketConfig { block_size: bs, block_count: bc, block_timeout_ms: tmo, ..AfPacketConfig::new(x) };
            let err = AfPacketPort::open("p", &cfg).unwrap_err();
            assert!(matches!(err.failure, OpenFailure::BadConfig(_)), "{bs} {bc} {tmo}: {err}");
            assert!(err.to_string().starts_with("port p: AF_PACKET on x: bad configuration: "), "{err}");
        }
    }
}
