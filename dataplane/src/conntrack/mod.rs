//! Connection tracking: the table of IPv4 TCP, UDP and ICMP echo connections the NAT stage ([`crate::nat`])
//! translates and polices.
//!
//! - **What it owns**: one [`Entry`] per connection, in a slab addressed by [`EntryId`] (one cache line per entry,
//!   in memory advised for huge pages, [`crate::hugepage`]), and two references per connection in the index
//!   (`conntrack/index.rs`, a bucketed open-addressing table that stores tags, not keys, so a lookup reads one
//!   index line and the entry): its *original* tuple (what the first packet
//!   looked like) and its *reply* tuple (what packets of the other direction look like — the inverse of the original,
//!   or whatever NAT made of it). Either direction finds the entry, and its [`Direction`], in one lookup
//!   ([`Conntrack::lookup`]). A [`Tuple`] is a zone (the network, so overlapping subnets stay apart), a protocol,
//!   addresses and ports. **ICMP echo** is keyed by its identifier: a request as `sport = id, dport = 0`, a reply as
//!   `sport = 0, dport = id` ([`Tuple::icmp_echo_request`], [`Tuple::icmp_echo_reply`]). So the [`Tuple::inverse`] of a
//!   request is exactly its reply, while a request in the opposite direction with the same identifier is another
//!   connection.
//! - **Per-protocol state** is a closed enum ([`ProtoState`]; no `dyn` on the hot path). TCP follows netfilter's
//!   `nf_conntrack_proto_tcp` state machine without window tracking: a transition table as data
//!   ([`TCP_TRANSITIONS`]) indexed by direction, the packet's flag class and the current state. The policy
//!   ([`ConntrackConfig::strict`], default **loose** like netfilter's `nf_conntrack_tcp_loose = 1`) decides
//!   whether a connection may be picked up in the middle (first packet a plain ACK, e.g. after a restart) and
//!   whether packets that make no sense before the handshake completes are accepted without a state change
//!   (loose) or invalid (strict). Simultaneous open (netfilter's SYN_SENT2) is not supported. UDP is unreplied
//!   until a packet is seen in the reply direction, then assured. ICMP echo is requested, then replied.
//! - **Expiry**: every entry stores the time it expires (`now` + the timeout of its state, [`Timeouts`],
//!   netfilter's defaults), refreshed by every accepted state step. An entry is live while `now <= expires`.
//!   [`Conntrack::lookup`] treats expired entries as absent at once, and [`Conntrack::insert`] treats them as
//!   absent too (a new connection may take an expired one's key or its room), so decisions never depend on
//!   when the sweep ran. The driver calls [`Conntrack::expire_with`] off the hot path: it removes expired
//!   entries from both indexes and hands every dead entry to the caller (who releases its NAT port, recorded in
//!   [`Entry::nat`]), including those that `insert` reclaimed since the last call
//!   ([`Conntrack::pending_dead`] lists those). The sweep walks every slot, so it runs only when the lower
//!   bound of all expiry times says something may have expired.
//! - **Limit**: at most [`ConntrackConfig::limit`] live entries. When full, [`Conntrack::insert`] first sweeps
//!   expired entries (only if one may have expired: the table keeps a lower bound of all expiry times, and each
//!   sweep either frees an entry or tightens the bound), then **evicts** the oldest entry that has not seen a
//!   packet in the reply direction ([`Entry::replied`]; netfilter's early drop of unassured connections),
//!   counted in [`ConntrackStats::evicted`] and handed out like an expired one. Only when every entry has
//!   replied is the new connection refused with [`InsertError::Full`] ([`ConntrackStats::table_full`]; the
//!   caller drops the packet as `conntrack-full`). So a host that opens connections nobody answers (a SYN or
//!   ACK flood, a UDP sweep) recycles its own entries and cannot lock others out. Eviction candidates are a
//!   FIFO of `(id, created)` records, oldest first; stale ones are skipped and compacted away when they
//!   outnumber the entries (amortised O(1)).
//! - **Group limits** ([`Conntrack::set_group_limits`]): an entry whose [`NatBinding::group`] is set counts
//!   against that group (the NAT stage uses the inside network's interface, `network.conntrack_limit`); a
//!   group at its limit refuses new entries ([`InsertError::GroupFull`]) without evicting.
//! - **Mid-stream pickups**: a TCP connection created ESTABLISHED from a plain ACK (loose policy) lives
//!   `Timeouts::tcp_unreplied` (30 s) until a packet in the reply direction moves its state machine, then the
//!   established timeout ([`Timeouts::of_entry`]): an ACK flood to a silent address holds nothing for days.
//! - **Ids**: an [`EntryId`] is valid until its entry is removed — by [`Conntrack::remove`], by a sweep, or by
//!   `insert` reclaiming it after it expired; then the slot may be reused. Use ids within the batch that
//!   looked them up. A stale id given to [`Conntrack::update`] is [`Verdict::Invalid`].
//! - **Cost**: lookups hash one `u128`, read one index line and the entry, and allocate nothing; inserts
//!   allocate only when the slab grows or the index is rebuilt larger (both are reserved up front, up to 65,536
//!   entries, by [`Conntrack::new`]). A batch can overlap its lookups' cache misses: [`Conntrack::probe`] every
//!   packet first, then [`Conntrack::prefetch_entry`], then [`Conntrack::lookup_probe`] (the router does this
//!   for NAT, see `Router::lookup_batch`).
//!
//! Threads: owned by the worker that runs the NAT stage; not shared. The sweep runs on the same thread,
//! between batches.

mod index;
mod tcp;
mod timeouts;
mod tuple;

use crate::buffer::Nanos;
use index::{Hash, Index};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use tcp::{tcp_step, Step};
pub use tcp::{Cell, TcpFlags, TcpState, TCP_TRANSITIONS};
use timeouts::ExpiryTable;
pub use timeouts::{ConntrackConfig, Timeouts};
pub use tuple::{Direction, IcmpState, Proto, ProtoState, Tuple, UdpState};

// ---------------------------------------------------------------------------------------------------------------
// The table.

/// An entry's slot in the table. See the module documentation for how long it stays valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct EntryId(pub u32);

/// How a connection is translated (the reply tuple is not the inverse of the original one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatKind {
    /// Source NAT: a masquerade network's connection leaving through a routed port.
    Snat,
    /// Destination NAT: a connection to a published port.
    Dnat,
    /// Both: a published port reached from the target's own network (the source becomes the gateway address).
    Hairpin,
}

/// What a translated connection holds: its kind and, when a source port was allocated, the allocator that
/// must get it back when the entry dies (its port is the reply tuple's `dport`, its destination the reply
/// tuple's `src:sport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NatBinding {
    /// How the connection is translated.
    pub kind: NatKind,
    /// The allocator (the router interface whose address is the new source) holding the port, if any.
    pub allocator: Option<u16>,
    /// The group whose limit the connection counts against ([`Conntrack::set_group_limits`]; the NAT stage
    /// uses the inside network's router interface), if any.
    pub group: Option<u16>,
}

/// One tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// What the first packet looked like.
    pub orig: Tuple,
    /// What packets of the reply direction look like (after NAT).
    pub reply: Tuple,
    /// Protocol state.
    pub state: ProtoState,
    /// When the entry was created.
    pub created: Nanos,
    /// The last instant the entry is live.
    pub expires: Nanos,
    /// The translation, for a NAT'd connection.
    pub nat: Option<NatBinding>,
    /// A packet was accepted in the reply direction (netfilter's SEEN_REPLY): the connection is *assured*,
    /// never evicted to make room ([`Conntrack::insert`]).
    pub replied: bool,
}

impl Entry {
    /// The tuple of direction `dir`.
    pub fn tuple(&self, dir: Direction) -> &Tuple {
        match dir {
            Direction::Original => &self.orig,
            Direction::Reply => &self.reply,
        }
    }

    /// True while the entry has not expired at `now`.
    pub fn is_live(&self, now: Nanos) -> bool {
        now <= self.expires
    }
}

/// What [`Conntrack::update`] decided about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The packet belongs to the connection; forward it.
    Accept,
    /// The packet does not fit the connection's state (counted); the caller drops it.
    Invalid,
}

/// Why [`Conntrack::insert`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// The table holds its limit of live connections, every one of them replied (`conntrack-full`).
    #[error("conntrack table full")]
    Full,
    /// The connection's group holds its limit (`conntrack-network-limit`).
    #[error("conntrack group limit reached")]
    GroupFull,
    /// One of the tuples is already a key of a live connection.
    #[error("tuple already tracked by entry {}", .0 .0)]
    Clash(EntryId),
    /// The reply tuple equals the original one, or the tuples and the state disagree on the protocol.
    #[error("inconsistent tuples or state")]
    BadTuples,
}

/// Counters of the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConntrackStats {
    /// Entries now (expired ones included until swept).
    pub entries: usize,
    /// Connections created.
    pub created: u64,
    /// Entries removed because they expired.
    pub expired: u64,
    /// Packets found invalid (by [`Conntrack::update`] or [`Conntrack::new_state`]).
    pub invalid: u64,
    /// New connections refused because the table was full.
    pub table_full: u64,
    /// New connections refused because a tuple was already tracked.
    pub clash: u64,
    /// Unreplied connections evicted to make room for new ones in a full table.
    pub evicted: u64,
    /// New connections refused because their group held its limit.
    pub group_full: u64,
}

/// A tuple's hash in the table, computed once per packet by [`Conntrack::probe`], and the first index reference
/// [`Conntrack::prefetch_entry`] saw under its tag (a guess, confirmed by [`Conntrack::lookup_probe`] against
/// the entry before use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    hash: Hash,
    candidate: Option<u32>,
}

/// One entry's room in the slab: a cache line of its own, so reading an entry costs one line.
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
struct Slot(Option<Entry>);

/// The largest entry id: the index keeps `id << 1 | direction` in 32 bits.
const MAX_ID: u32 = u32::MAX >> 1;

/// An index reference: the entry and the direction of the tuple it is indexed under.
#[inline]
fn entry_ref(id: EntryId, dir: Direction) -> u32 {
    id.0 << 1 | matches!(dir, Direction::Reply) as u32
}

/// The id of the slot at position `i` of the slab. A slot is only added while its position is at most
/// [`MAX_ID`] (`insert`), so every position fits: cannot truncate.
#[inline]
#[allow(clippy::cast_possible_truncation)]
fn slot_id(i: usize) -> EntryId {
    debug_assert!(i <= MAX_ID as usize);
    EntryId(i as u32)
}

#[inline]
fn ref_id(r: u32) -> EntryId {
    EntryId(r >> 1)
}

#[inline]
fn ref_dir(r: u32) -> Direction {
    if r & 1 == 0 {
        Direction::Original
    } else {
        Direction::Reply
    }
}

/// The connection-tracking table. See the module documentation.
#[derive(Debug, Clone)]
pub struct Conntrack {
    cfg: ConntrackConfig,
    /// `cfg.timeouts` by state.
    expiry: ExpiryTable,
    slots: Vec<Slot>,
    free: Vec<u32>,
    count: usize,
    index: Index,
    /// A lower bound of every entry's `expires` (`Nanos::MAX` when none may have expired).
    earliest: Nanos,
    /// Entries `insert` reclaimed after they expired or evicted, to be handed out by the next sweep.
    reclaimed: Vec<Entry>,
    /// Every entry created, as `(id, created, tag)`, oldest first: the eviction candidates. A record is stale
    /// once its entry is gone (the slot is empty or holds another entry) or has replied; stale records are skipped
    /// when evicting and dropped when they outnumber live entries (see [`Conntrack::place`]). The tag (a fold of
    /// the original tuple, [`record_tag`]) tells a slot's new entry from the one a stale record was made for even
    /// when both were created at the same instant (one batch shares one `now`).
    unreplied: VecDeque<(u32, Nanos, u32)>,
    /// Per group: its limit (0: none) and the entries counted against it.
    group_limits: Vec<u32>,
    group_counts: Vec<u32>,
    stats: ConntrackStats,
}

impl Conntrack {
    /// An empty table.
    pub fn new(cfg: ConntrackConfig) -> Self {
        let reserve = cfg.limit.min(1 << 16);
        Conntrack::with_reserve(cfg, reserve)
    }

    /// An empty table with room reserved for `reserve` entries (at most the limit), e.g. 0 when nothing will be
    /// tracked.
    pub fn with_reserve(cfg: ConntrackConfig, reserve: usize) -> Self {
        let cfg = ConntrackConfig { limit: cfg.limit.max(1), ..cfg };
        let reserve = reserve.min(cfg.limit);
        Conntrack {
            cfg,
            expiry: ExpiryTable::new(&cfg.timeouts),
            slots: crate::hugepage::with_capacity(reserve),
            free: Vec::new(),
            count: 0,
            index: Index::with_capacity(2 * reserve),
            earliest: Nanos::MAX,
            reclaimed: Vec::new(),
            unreplied: VecDeque::new(),
            group_limits: Vec::new(),
            group_counts: Vec::new(),
            stats: ConntrackStats::default(),
        }
    }

    /// Sets the limit of each group, by group id (`None`: no limit of its own); entries already counted stay.
    pub fn set_group_limits(&mut self, limits: &[Option<usize>]) {
        self.group_limits =
            limits.iter().map(|l| l.map_or(0, |l| u32::try_from(l.max(1)).unwrap_or(u32::MAX))).collect();
        if self.group_counts.len() < self.group_limits.len() {
            self.group_counts.resize(self.group_limits.len(), 0);
        }
    }

    /// Entries counted against group `g`.
    pub fn group_count(&self, g: u16) -> usize {
        self.group_counts.get(g as usize).map_or(0, |&c| c as usize)
    }

    /// True when group `g` has a limit and holds it.
    fn group_at_limit(&self, g: Option<u16>) -> bool {
        let Some(g) = g.map(usize::from) else { return false };
        match (self.group_limits.get(g), self.group_counts.get(g)) {
            (Some(&limit), Some(&count)) => limit != 0 && count >= limit,
            _ => false,
        }
    }

    /// Drops stale eviction records once they outnumber the entries, so the queue stays O(entries) and each
    /// record is pushed and dropped once (amortised O(1) per insert or removal).
    fn compact_records(&mut self) {
        if self.unreplied.len() >= 2 * self.count + 64 {
            let slots = &self.slots;
            self.unreplied.retain(|&(i, c, t)| {
                slots.get(i as usize).and_then(|s| s.0.as_ref()).is_some_and(|e| is_record_of(e, c, t))
            });
        }
    }

    /// Evicts the oldest live entry that has not replied, handing it to `reclaimed`; false when there is none.
    fn evict_unreplied(&mut self) -> bool {
        while let Some((i, created, tag)) = self.unreplied.pop_front() {
            let candidate = self.slot(EntryId(i)).is_some_and(|e| is_record_of(e, created, tag));
            if candidate {
                if let Some(e) = self.take(EntryId(i)) {
                    self.stats.evicted += 1;
                    self.reclaimed.push(e);
                    return true;
                }
            }
        }
        false
    }

    /// The configuration.
    pub fn config(&self) -> &ConntrackConfig {
        &self.cfg
    }

    /// The live connection `t` belongs to at `now`, and which direction `t` is.
    #[inline]
    pub fn lookup(&self, t: &Tuple, now: Nanos) -> Option<(EntryId, Direction)> {
        self.lookup_hashed(t, self.index.hash(t.key()), now)
    }

    /// As [`Conntrack::lookup`], for a tuple already hashed by [`Conntrack::probe`].
    #[inline(always)]
    pub fn lookup_probe(&self, t: &Tuple, p: Probe, now: Nanos) -> Option<(EntryId, Direction)> {
        // The candidate is right when its entry holds `t` in its direction (a tuple is indexed at most once, so
        // that entry is the one); otherwise, or without one, the index is searched.
        if let Some(r) = p.candidate {
            let (id, dir) = (ref_id(r), ref_dir(r));
            if let Some(e) = self.slot(id) {
                if e.tuple(dir) == t {
                    return e.is_live(now).then_some((id, dir));
                }
            }
        }
        self.lookup_hashed(t, p.hash, now)
    }

    #[inline(always)]
    fn lookup_hashed(&self, t: &Tuple, h: Hash, now: Nanos) -> Option<(EntryId, Direction)> {
        let (id, dir) = self.find(t, h)?;
        self.slot(id)?.is_live(now).then_some((id, dir))
    }

    /// Hashes `t` for [`Conntrack::lookup_probe`] and starts loading the index line the lookup will read first
    /// (a hint, see [`crate::buffer::prefetch`]). A batch probes all its packets, then calls
    /// [`Conntrack::prefetch_entry`] for each, then looks them up: their memory accesses overlap instead of
    /// stalling one after the other. A probe depends only on the tuple (and the table's seed), so it stays valid
    /// whatever the table does meanwhile.
    #[inline]
    pub fn probe(&self, t: &Tuple) -> Probe {
        let hash = self.index.hash(t.key());
        self.index.prefetch(hash);
        Probe { hash, candidate: None }
    }

    /// Starts loading the entry (or entries) that the probe's index line points to, without waiting for it;
    /// call after [`Conntrack::probe`] had time to bring in the index line. Returns false when the line holds
    /// no candidate at all (the tuple is not tracked: a new connection). The first candidate is remembered in
    /// the probe, so the lookup can check it without scanning the line again.
    #[inline]
    pub fn prefetch_entry(&self, p: &mut Probe) -> bool {
        self.index.candidates(p.hash, |r| {
            if p.candidate.is_none() {
                p.candidate = Some(r);
            }
            if let Some(s) = self.slots.get(ref_id(r).0 as usize) {
                crate::buffer::prefetch(s);
            }
        });
        p.candidate.is_some()
    }

    /// The entry the probe's candidate (from [`Conntrack::prefetch_entry`]) points to, with the direction `t` is
    /// in it, if the candidate holds `t` — live or not: a guess for hints (the batch's later stages prefetch
    /// what the packet will need after translation), never a decision; [`Conntrack::lookup_probe`] decides.
    #[inline]
    pub fn peek(&self, t: &Tuple, p: &Probe) -> Option<(&Entry, Direction)> {
        let r = p.candidate?;
        let (e, dir) = (self.slot(ref_id(r))?, ref_dir(r));
        (e.tuple(dir) == t).then_some((e, dir))
    }

    /// Starts loading the index line tuple `t` would be looked up or inserted in (e.g. the reply tuple of a
    /// connection about to be created).
    #[inline]
    pub fn prefetch_tuple(&self, t: &Tuple) {
        self.index.prefetch(self.index.hash(t.key()));
    }

    /// The entry and direction indexed under `key` (whose hash is `h`), live or not.
    #[inline(always)]
    fn find(&self, t: &Tuple, h: Hash) -> Option<(EntryId, Direction)> {
        let r = self.index.find(h, |r| self.slot(ref_id(r)).is_some_and(|e| e.tuple(ref_dir(r)) == t))?;
        Some((ref_id(r), ref_dir(r)))
    }

    /// The state a new connection starts in when its first packet (original direction) has `flags` (TCP; any
    /// value for UDP and ICMP), or `None` if that packet cannot open a connection under the policy (counted as
    /// invalid). TCP: a SYN opens in SYN_SENT; a plain ACK is picked up as ESTABLISHED under the loose policy.
    pub fn new_state(&mut self, proto: Proto, flags: TcpFlags) -> Option<ProtoState> {
        let state = match proto {
            Proto::Udp => Some(ProtoState::Udp(UdpState::Unreplied)),
            Proto::Icmp => Some(ProtoState::Icmp(IcmpState::Requested)),
            Proto::Tcp => match tcp_step(None, Direction::Original, flags, self.cfg.strict) {
                Step::Go(s) => Some(ProtoState::Tcp(s)),
                Step::Ignore | Step::Invalid => None,
            },
        };
        if state.is_none() {
            self.stats.invalid += 1;
        }
        state
    }

    /// Tracks a new connection whose first packet looked like `orig` and whose replies will look like `reply`
    /// (`orig.inverse()` without NAT; after NAT it may also be in another zone, e.g. that of a routed port),
    /// starting in `state` at `now`. Expired entries holding either tuple, or room in the table, are reclaimed
    /// first (and handed out by the next [`Conntrack::expire_with`]).
    pub fn insert(&mut self, orig: Tuple, reply: Tuple, state: ProtoState, now: Nanos) -> Result<EntryId, InsertError> {
        self.insert_nat(orig, reply, state, None, now)
    }

    /// As [`Conntrack::insert`], recording the connection's translation (handed back with the entry when it
    /// dies, so the caller can release its port).
    pub fn insert_nat(
        &mut self,
        orig: Tuple,
        reply: Tuple,
        state: ProtoState,
        nat: Option<NatBinding>,
        now: Nanos,
    ) -> Result<EntryId, InsertError> {
        let (ko, kr) = (orig.key(), reply.key());
        if ko == kr || orig.proto != reply.proto || state.proto() != orig.proto {
            return Err(InsertError::BadTuples);
        }
        let expires = now.saturating_add(self.expiry.of_entry(state, false));
        let entry = Entry { orig, reply, state, created: now, expires, nat, replied: false };
        let group = nat.and_then(|n| n.group);
        let (ho, hr) = (self.index.hash(ko), self.index.hash(kr));
        for (t, h) in [(&orig, ho), (&reply, hr)] {
            if let Some((id, _)) = self.find(t, h) {
                if self.slot(id).is_some_and(|e| e.is_live(now)) {
                    self.stats.clash += 1;
                    return Err(InsertError::Clash(id));
                }
                if let Some(e) = self.take(id) {
                    self.stats.expired += 1;
                    self.reclaimed.push(e);
                }
            }
        }
        let crowded = self.count >= self.cfg.limit || self.group_at_limit(group);
        if crowded && now > self.earliest {
            let mut reclaimed = std::mem::take(&mut self.reclaimed);
            self.sweep(now, |e| reclaimed.push(e));
            self.reclaimed = reclaimed;
        }
        if self.group_at_limit(group) {
            self.stats.group_full += 1;
            return Err(InsertError::GroupFull);
        }
        if self.count >= self.cfg.limit && !self.evict_unreplied() {
            self.stats.table_full += 1;
            return Err(InsertError::Full);
        }
        if self.index.needs_rebuild(2) {
            let items = self.slots.iter().enumerate().filter_map(|(i, s)| s.0.as_ref().map(|e| (slot_id(i), e)));
            let keys = items.flat_map(|(id, e)| {
                [(e.orig.key(), entry_ref(id, Direction::Original)), (e.reply.key(), entry_ref(id, Direction::Reply))]
            });
            self.index.rebuild(keys, 2 * self.count, 2);
        }
        // The slab never exceeds the limit (at most 2^24), so ids fit the index's 31 bits.
        let id = self.place(entry).ok_or(InsertError::Full)?;
        self.index.insert(ho, entry_ref(id, Direction::Original));
        self.index.insert(hr, entry_ref(id, Direction::Reply));
        Ok(id)
    }

    /// Tracks a connection carried over from a snapshot of an earlier process (`crate::snapshot`): as
    /// [`Conntrack::insert_nat`] at `now`, then with the entry's `created`, `expires` (its age and remaining
    /// lifetime as they were, on this table's clock) and `replied` (an assured connection stays assured).
    pub fn restore(&mut self, e: &Entry, now: Nanos) -> Result<EntryId, InsertError> {
        let id = self.insert_nat(e.orig, e.reply, e.state, e.nat, now)?;
        if let Some(slot) = self.slots.get_mut(id.0 as usize).and_then(|s| s.0.as_mut()) {
            slot.created = e.created;
            slot.expires = e.expires;
            slot.replied = e.replied;
            // The eviction record `insert_nat` made names the creation time it had; one with the restored time
            // replaces it (the old one is skipped as stale).
            if !e.replied {
                self.unreplied.push_back((id.0, e.created, record_tag(&e.orig)));
            }
        }
        self.earliest = self.earliest.min(e.expires);
        Ok(id)
    }

    /// Puts a new entry into a free slot (the last one freed, else a new one at the end) and counts it; the
    /// caller indexes it. `None` (nothing changed) if the slab cannot grow.
    #[inline]
    fn place(&mut self, entry: Entry) -> Option<EntryId> {
        let (expires, created, group) = (entry.expires, entry.created, entry.nat.and_then(|n| n.group));
        let tag = record_tag(&entry.orig);
        let id = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Slot(Some(entry));
                EntryId(i)
            }
            None => {
                let i = u32::try_from(self.slots.len()).ok().filter(|&i| i <= MAX_ID)?;
                // Grown into huge pages (`crate::hugepage`): a million entries are 64 MiB of random reads.
                crate::hugepage::push(&mut self.slots, Slot(Some(entry)));
                EntryId(i)
            }
        };
        self.count += 1;
        self.earliest = self.earliest.min(expires);
        self.stats.created += 1;
        if let Some(c) = group.and_then(|g| self.group_counts.get_mut(usize::from(g))) {
            *c += 1;
        }
        self.compact_records();
        self.unreplied.push_back((id.0, created, tag));
        Some(id)
    }

    /// Runs a packet of connection `id` going `dir` through its protocol's state machine at `now`. `flags` are
    /// the TCP flags ([`TcpFlags::NONE`] for UDP and ICMP). Invalid packets change nothing and are counted; so
    /// is a packet for an id that no longer exists or an entry expired at `now` (it is not resurrected).
    pub fn update(&mut self, id: EntryId, dir: Direction, flags: TcpFlags, now: Nanos) -> Verdict {
        match self.update_entry(id, dir, flags, now) {
            Some(_) => Verdict::Accept,
            None => Verdict::Invalid,
        }
    }

    /// As [`Conntrack::update`], returning the entry after the step when the packet is accepted (`None`: invalid,
    /// counted), so the caller reads the entry's tuples without a second lookup.
    #[inline(always)]
    pub fn update_entry(&mut self, id: EntryId, dir: Direction, flags: TcpFlags, now: Nanos) -> Option<&Entry> {
        let strict = self.cfg.strict;
        let Some(e) = self.slots.get_mut(id.0 as usize).and_then(|s| s.0.as_mut()).filter(|e| e.is_live(now)) else {
            self.stats.invalid += 1;
            return None;
        };
        let next = match (e.state, dir) {
            (ProtoState::Tcp(s), _) => match tcp_step(Some(s), dir, flags, strict) {
                Step::Go(n) => Some(ProtoState::Tcp(n)),
                Step::Ignore => None,
                Step::Invalid => {
                    self.stats.invalid += 1;
                    return None;
                }
            },
            (ProtoState::Udp(s), Direction::Original) => Some(ProtoState::Udp(s)),
            (ProtoState::Udp(_), Direction::Reply) => Some(ProtoState::Udp(UdpState::Assured)),
            (ProtoState::Icmp(s), Direction::Original) => Some(ProtoState::Icmp(s)),
            (ProtoState::Icmp(_), Direction::Reply) => Some(ProtoState::Icmp(IcmpState::Replied)),
        };
        // Only a packet that moves the state machine (not one the loose policy ignores) makes it assured.
        let newly_replied = dir == Direction::Reply && !e.replied && next.is_some();
        if newly_replied {
            e.replied = true;
        }
        if let Some(n) = next {
            e.state = n;
            e.expires = now.saturating_add(self.expiry.of_entry(n, e.replied));
            self.earliest = self.earliest.min(e.expires);
        }
        Some(e)
    }

    /// The entry `id`, expired or not (until it is removed).
    pub fn get(&self, id: EntryId) -> Option<&Entry> {
        self.slot(id)
    }

    /// Removes entry `id` from the table and both indexes, and returns it.
    pub fn remove(&mut self, id: EntryId) -> Option<Entry> {
        self.take(id)
    }

    /// Removes the entries expired at `now`; returns how many. See [`Conntrack::expire_with`].
    pub fn expire(&mut self, now: Nanos) -> usize {
        self.expire_with(now, |_| {})
    }

    /// Removes the entries expired at `now` from both indexes and hands each to `dead`, after the entries that
    /// `insert` reclaimed since the last call. Returns how many were handed out. Call off the hot path.
    pub fn expire_with(&mut self, now: Nanos, mut dead: impl FnMut(Entry)) -> usize {
        let mut n = self.reclaimed.len();
        self.reclaimed.drain(..).for_each(&mut dead);
        // Nothing can have expired before the lower bound of every expiry: then the O(slots) sweep is skipped, so
        // a table of long-lived connections costs housekeeping nothing. Each sweep makes the bound exact.
        if now > self.earliest {
            n += self.sweep(now, &mut dead);
        }
        n
    }

    /// Removes every entry (`conntrack flush`), handing each, and the reclaimed ones, to `dead`.
    pub fn flush(&mut self, mut dead: impl FnMut(Entry)) -> usize {
        let mut n = self.reclaimed.len();
        self.reclaimed.drain(..).for_each(&mut dead);
        // Every slot is emptied and the index cleared at once (no key-by-key removal); the free list ends up as
        // if each entry had been removed in slot order.
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(e) = slot.0.take() {
                self.free.push(slot_id(i).0);
                dead(e);
                n += 1;
            }
        }
        self.count = 0;
        self.earliest = Nanos::MAX;
        self.index.clear();
        self.unreplied.clear();
        self.group_counts.iter_mut().for_each(|c| *c = 0);
        n
    }

    /// The live entries at `now`, in slot order.
    pub fn entries(&self, now: Nanos) -> impl Iterator<Item = (EntryId, &Entry)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(move |(i, s)| s.0.as_ref().filter(|e| e.is_live(now)).map(|e| (slot_id(i), e)))
    }

    /// The live entries at `now` among slots `from..from + len` (for reading the table in bounded chunks), and
    /// the slot to continue from (`None`: the end).
    pub fn entries_chunk(
        &self,
        now: Nanos,
        from: usize,
        len: usize,
    ) -> (impl Iterator<Item = (EntryId, &Entry)> + '_, Option<usize>) {
        let end = from.saturating_add(len).min(self.slots.len());
        let start = from.min(end);
        let it = self.slots[start..end]
            .iter()
            .enumerate()
            .filter_map(move |(i, s)| s.0.as_ref().filter(|e| e.is_live(now)).map(|e| (slot_id(start + i), e)));
        (it, (end < self.slots.len()).then_some(end))
    }

    /// Entries `insert` reclaimed after they expired, removed from the table but not yet handed out by
    /// [`Conntrack::expire_with`] (their NAT ports are still held).
    pub fn pending_dead(&self) -> &[Entry] {
        &self.reclaimed
    }

    /// Every entry in the table, live or expired (until swept), in slot order.
    pub fn all_entries(&self) -> impl Iterator<Item = (EntryId, &Entry)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.0.as_ref().map(|e| (slot_id(i), e)))
    }

    /// Number of entries (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The table's counters.
    pub fn stats(&self) -> ConntrackStats {
        ConntrackStats { entries: self.count, ..self.stats }
    }

    /// Checks the table's internal consistency: every entry's original and reply keys map to it with the
    /// right direction, the index holds nothing else, the slab's free list and count agree, the count is
    /// within the limit and the expiry bound is below every expiry.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut live = 0;
        for (i, s) in self.slots.iter().enumerate() {
            let Some(e) = &s.0 else { continue };
            live += 1;
            let id = slot_id(i);
            for dir in [Direction::Original, Direction::Reply] {
                let t = e.tuple(dir);
                match self.find(t, self.index.hash(t.key())) {
                    Some((got, d)) if got == id && d == dir => {}
                    other => return Err(format!("entry {i} {dir:?} tuple {t:?} indexed as {other:?}")),
                }
            }
            if e.orig.proto != e.reply.proto || e.state.proto() != e.orig.proto {
                return Err(format!("entry {i} mixes protocols: {e:?}"));
            }
            if e.expires < self.earliest {
                return Err(format!("entry {i} expires at {} before the bound {}", e.expires, self.earliest));
            }
        }
        if live != self.count {
            return Err(format!("count {} but {live} entries", self.count));
        }
        let mut groups = vec![0u32; self.group_counts.len()];
        for e in self.slots.iter().filter_map(|s| s.0.as_ref()) {
            if let Some(c) = e.nat.and_then(|n| n.group).and_then(|g| groups.get_mut(usize::from(g))) {
                *c += 1;
            }
        }
        if groups != self.group_counts {
            return Err(format!("group counts {:?} but entries say {groups:?}", self.group_counts));
        }
        if self.unreplied.len() > 2 * self.count + 64 + 2 * self.reclaimed.len() + 1 {
            return Err(format!("{} eviction records for {} entries", self.unreplied.len(), self.count));
        }
        if self.index.len() != 2 * live {
            return Err(format!("{} index entries for {live} entries", self.index.len()));
        }
        self.index.check(|r| self.slot(ref_id(r)).map(|e| e.tuple(ref_dir(r)).key()))?;
        if self.count > self.cfg.limit || self.slots.len() > self.cfg.limit {
            return Err(format!("{} entries in {} slots, limit {}", self.count, self.slots.len(), self.cfg.limit));
        }
        let mut free = self.free.clone();
        free.sort_unstable();
        free.dedup();
        if free.len() != self.free.len() {
            return Err("free list has duplicates".into());
        }
        if free.len() + live != self.slots.len() || free.iter().any(|&i| self.slots[i as usize].0.is_some()) {
            return Err("free list does not match the empty slots".into());
        }
        Ok(())
    }

    #[inline(always)]
    fn slot(&self, id: EntryId) -> Option<&Entry> {
        self.slots.get(id.0 as usize)?.0.as_ref()
    }

    /// Removes an entry from the slab and both indexes.
    fn take(&mut self, id: EntryId) -> Option<Entry> {
        let e = self.slots.get_mut(id.0 as usize)?.0.take()?;
        let (ho, hr) = (self.index.hash(e.orig.key()), self.index.hash(e.reply.key()));
        self.index.remove(ho, entry_ref(id, Direction::Original));
        self.index.remove(hr, entry_ref(id, Direction::Reply));
        self.free.push(id.0);
        self.count -= 1;
        if let Some(c) = e.nat.and_then(|n| n.group).and_then(|g| self.group_counts.get_mut(usize::from(g))) {
            *c = c.saturating_sub(1);
        }
        Some(e)
    }

    /// Removes the entries expired at `now`, handing each to `dead`, and makes the expiry bound exact.
    fn sweep(&mut self, now: Nanos, mut dead: impl FnMut(Entry)) -> usize {
        let mut n = 0;
        let mut earliest = Nanos::MAX;
        for i in 0..self.slots.len() {
            match &self.slots[i].0 {
                Some(e) if !e.is_live(now) => {
                    if let Some(e) = self.take(slot_id(i)) {
                        dead(e);
                        n += 1;
                    }
                }
                Some(e) => earliest = earliest.min(e.expires),
                None => {}
            }
        }
        self.earliest = earliest;
        self.stats.expired += n as u64;
        self.compact_records();
        n
    }
}

/// The tag an eviction record keeps of its entry's original tuple: its key folded to 32 bits.
#[inline]
#[allow(clippy::cast_possible_truncation)] // folding 128 bits to 32 on purpose
fn record_tag(orig: &Tuple) -> u32 {
    let k = orig.key();
    let k = k ^ (k >> 64);
    (k ^ (k >> 32)) as u32
}

/// True when the eviction record `(created, tag)` names live entry `e`, which has not replied.
#[inline]
fn is_record_of(e: &Entry, created: Nanos, tag: u32) -> bool {
    e.created == created && !e.replied && record_tag(&e.orig) == tag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::NANOS_PER_SEC;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const S: Nanos = NANOS_PER_SEC;
    const A: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

    const SYN: TcpFlags = TcpFlags(TcpFlags::SYN);
    const SYN_ACK: TcpFlags = TcpFlags(TcpFlags::SYN | TcpFlags::ACK);
    const ACK: TcpFlags = TcpFlags(TcpFlags::ACK);
    const PSH_ACK: TcpFlags = TcpFlags(TcpFlags::PSH | TcpFlags::ACK);
    const FIN_ACK: TcpFlags = TcpFlags(TcpFlags::FIN | TcpFlags::ACK);
    const RST: TcpFlags = TcpFlags(TcpFlags::RST);

    #[test]
    fn a_tuple_is_two_words_with_each_address_inside_one_and_an_entry_one_line() {
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!((size_of::<Tuple>(), align_of::<Tuple>()), (16, 8));
        assert_eq!((offset_of!(Tuple, src), offset_of!(Tuple, dst)), (4, 8));
        assert_eq!(size_of::<Slot>(), 64);
    }

    #[test]
    fn tuples_are_equal_exactly_when_every_field_is() {
        let base = Tuple::new(1, Proto::Tcp, (A, 1000), (B, 80));
        assert_eq!(base, base);
        let differing = [
            Tuple { zone: 2, ..base },
            Tuple { proto: Proto::Udp, ..base },
            Tuple { src: B, ..base },
            Tuple { dst: A, ..base },
            Tuple { sport: 1001, ..base },
            Tuple { dport: 81, ..base },
        ];
        for t in differing {
            assert_ne!(t, base, "{t:?}");
            assert_ne!(t.key(), base.key(), "the index key tells them apart too");
        }
        assert_eq!(base.inverse().inverse(), base);
    }

    fn tcp(sport: u16) -> Tuple {
        Tuple::new(1, Proto::Tcp, (A, sport), (B, 80))
    }

    fn udp(sport: u16) -> Tuple {
        Tuple::new(1, Proto::Udp, (A, sport), (B, 53))
    }

    fn table(cfg: ConntrackConfig) -> Conntrack {
        Conntrack::new(cfg)
    }

    /// Opens a TCP connection with a SYN at `now`.
    fn open(ct: &mut Conntrack, t: Tuple, now: Nanos) -> EntryId {
        let st = ct.new_state(Proto::Tcp, SYN).unwrap();
        ct.insert(t, t.inverse(), st, now).unwrap()
    }

    fn tcp_state(ct: &Conntrack, id: EntryId) -> TcpState {
        match ct.get(id).unwrap().state {
            ProtoState::Tcp(s) => s,
            other => panic!("not tcp: {other:?}"),
        }
    }

    #[test]
    fn tcp_handshake_data_close_time_wait_and_expiry() {
        use Direction::{Original as O, Reply as R};
        let mut ct = table(ConntrackConfig::default());
        let t = tcp(40000);
        let id = open(&mut ct, t, 0);
        assert_eq!(tcp_state(&ct, id), TcpState::SynSent);
        assert_eq!(ct.get(id).unwrap().expires, 120 * S);
        // Each packet is looked up the way the pipeline will: by the tuple it carries.
        let step = |ct: &mut Conntrack, dir: Direction, flags: TcpFlags, now: Nanos, want: TcpState| {
            let seen = if dir == O { t } else { t.inverse() };
            assert_eq!(ct.lookup(&seen, now), Some((id, dir)));
            assert_eq!(ct.update(id, dir, flags, now), Verdict::Accept, "{dir:?} {flags:?}");
            assert_eq!(tcp_state(ct, id), want);
            assert!(ct.check_invariants().is_ok());
        };
        step(&mut ct, R, SYN_ACK, S, TcpState::SynRecv);
        assert_eq!(ct.get(id).unwrap().expires, 61 * S);
        step(&mut ct, O, ACK, 2 * S, TcpState::Established);
        step(&mut ct, O, PSH_ACK, 3 * S, TcpState::Established);
        step(&mut ct, R, PSH_ACK, 4 * S, TcpState::Established);
        assert_eq!(ct.get(id).unwrap().expires, 4 * S + 432_000 * S);
        // Five days of silence are fine; one nanosecond more is not.
        let quiet = 4 * S + 432_000 * S;
        assert!(ct.lookup(&t, quiet).is_some());
        step(&mut ct, O, FIN_ACK, quiet, TcpState::FinWait);
        step(&mut ct, R, ACK, quiet + S, TcpState::CloseWait);
        step(&mut ct, R, FIN_ACK, quiet + 2 * S, TcpState::LastAck);
        assert_eq!(ct.get(id).unwrap().expires, quiet + 32 * S);
        step(&mut ct, O, ACK, quiet + 3 * S, TcpState::TimeWait);
        let end = quiet + 3 * S + 120 * S;
        assert_eq!(ct.get(id).unwrap().expires, end);
        assert_eq!(ct.lookup(&t, end), Some((id, O)));
        assert_eq!(ct.lookup(&t, end + 1), None, "expired at lookup, before any sweep");
        assert_eq!(ct.lookup(&t.inverse(), end + 1), None);
        assert_eq!(ct.expire(end), 0);
        assert_eq!(ct.expire(end + 1), 1);
        assert!(ct.is_empty());
        let s = ct.stats();
        assert_eq!((s.entries, s.created, s.expired, s.invalid), (0, 1, 1, 0));
        ct.check_invariants().unwrap();
    }

    #[test]
    fn syn_ack_without_syn_or_in_the_original_direction_is_invalid() {
        for strict in [false, true] {
            let mut ct = table(ConntrackConfig { strict, ..ConntrackConfig::default() });
            assert_eq!(ct.new_state(Proto::Tcp, SYN_ACK), None, "a SYN-ACK opens nothing");
            assert_eq!(ct.new_state(Proto::Tcp, FIN_ACK), None);
            assert_eq!(ct.new_state(Proto::Tcp, RST), None);
            assert_eq!(ct.new_state(Proto::Tcp, TcpFlags(TcpFlags::SYN | TcpFlags::FIN)), None);
            let id = open(&mut ct, tcp(1), 0);
            assert_eq!(ct.update(id, Direction::Original, SYN_ACK, 1), Verdict::Invalid);
            assert_eq!(ct.update(id, Direction::Original, ACK, 1), Verdict::Invalid, "ACK before SYN-ACK");
            assert_eq!(ct.update(id, Direction::Reply, TcpFlags::NONE, 1), Verdict::Invalid, "no flags");
            assert_eq!(tcp_state(&ct, id), TcpState::SynSent);
            assert_eq!(ct.get(id).unwrap().expires, 120 * S, "invalid packets do not refresh");
            assert_eq!(ct.stats().invalid, 7);
        }
    }

    #[test]
    fn rst_closes_from_any_state() {
        let mut ct = table(ConntrackConfig::default());
        let refused = open(&mut ct, tcp(1), 0);
        assert_eq!(ct.update(refused, Direction::Reply, TcpFlags(TcpFlags::RST | TcpFlags::ACK), S), Verdict::Accept);
        assert_eq!(tcp_state(&ct, refused), TcpState::Close);
        assert_eq!(ct.get(refused).unwrap().expires, 11 * S);
        let est = open(&mut ct, tcp(2), 0);
        ct.update(est, Direction::Reply, SYN_ACK, 0);
        ct.update(est, Direction::Original, ACK, 0);
        assert_eq!(ct.update(est, Direction::Original, RST, S), Verdict::Accept);
        assert_eq!(tcp_state(&ct, est), TcpState::Close);
        // A closed tuple can be reopened by a new SYN from the client.
        assert_eq!(ct.update(est, Direction::Original, SYN, 2 * S), Verdict::Accept);
        assert_eq!(tcp_state(&ct, est), TcpState::SynSent);
        assert_eq!(ct.expire(11 * S + 1), 1);
        assert!(ct.get(refused).is_none());
    }

    #[test]
    fn loose_and_strict_policies() {
        let mut loose = table(ConntrackConfig::default());
        assert!(!loose.config().strict, "loose by default, like netfilter");
        assert_eq!(loose.new_state(Proto::Tcp, ACK), Some(ProtoState::Tcp(TcpState::Established)), "mid-stream pickup");
        let id = open(&mut loose, tcp(1), 0);
        assert_eq!(loose.update(id, Direction::Reply, ACK, S), Verdict::Accept);
        assert_eq!(tcp_state(&loose, id), TcpState::SynSent, "ignored, not a transition");
        assert_eq!(loose.get(id).unwrap().expires, 120 * S, "ignored packets do not refresh");

        let mut strict = table(ConntrackConfig { strict: true, ..ConntrackConfig::default() });
        assert_eq!(strict.new_state(Proto::Tcp, ACK), None);
        let id = open(&mut strict, tcp(1), 0);
        assert_eq!(strict.update(id, Direction::Reply, ACK, S), Verdict::Invalid);
        strict.update(id, Direction::Reply, SYN_ACK, S);
        assert_eq!(strict.update(id, Direction::Reply, PSH_ACK, S), Verdict::Invalid, "server data before final ACK");
        assert_eq!(strict.update(id, Direction::Reply, SYN_ACK, S), Verdict::Accept, "retransmitted SYN-ACK");
        assert_eq!(strict.update(id, Direction::Original, ACK, 2 * S), Verdict::Accept);
        assert_eq!(tcp_state(&strict, id), TcpState::Established);
        assert_eq!(strict.update(id, Direction::Original, SYN, 3 * S), Verdict::Invalid, "SYN once established");
        assert_eq!(strict.stats().invalid, 4);
    }

    #[test]
    fn udp_unreplied_then_assured_changes_timeout() {
        let mut ct = table(ConntrackConfig::default());
        let t = udp(5353);
        let st = ct.new_state(Proto::Udp, TcpFlags::NONE).unwrap();
        let id = ct.insert(t, t.inverse(), st, 0).unwrap();
        assert_eq!(ct.get(id).unwrap().expires, 30 * S);
        assert_eq!(ct.update(id, Direction::Original, TcpFlags::NONE, 10 * S), Verdict::Accept);
        assert_eq!(ct.get(id).unwrap().state, ProtoState::Udp(UdpState::Unreplied));
        assert_eq!(ct.get(id).unwrap().expires, 40 * S);
        let (rid, dir) = ct.lookup(&t.inverse(), 20 * S).unwrap();
        assert_eq!((rid, dir), (id, Direction::Reply));
        assert_eq!(ct.update(id, dir, TcpFlags::NONE, 20 * S), Verdict::Accept);
        assert_eq!(ct.get(id).unwrap().state, ProtoState::Udp(UdpState::Assured));
        assert_eq!(ct.get(id).unwrap().expires, 140 * S);
        assert_eq!(ct.update(id, Direction::Original, TcpFlags::NONE, 30 * S), Verdict::Accept);
        assert_eq!(ct.get(id).unwrap().state, ProtoState::Udp(UdpState::Assured), "stays assured");
        assert_eq!(ct.get(id).unwrap().expires, 150 * S);
        assert!(ct.lookup(&t, 150 * S + 1).is_none());
    }

    #[test]
    fn icmp_echo_request_and_reply() {
        let mut ct = table(ConntrackConfig::default());
        let req = Tuple::icmp_echo_request(1, A, B, 7);
        let rep = Tuple::icmp_echo_reply(1, B, A, 7);
        assert_eq!(req.inverse(), rep);
        let st = ct.new_state(Proto::Icmp, TcpFlags::NONE).unwrap();
        let id = ct.insert(req, req.inverse(), st, 0).unwrap();
        assert_eq!(ct.lookup(&rep, S), Some((id, Direction::Reply)));
        assert_eq!(ct.lookup(&Tuple::icmp_echo_request(1, B, A, 7), S), None, "B pinging A is another flow");
        assert_eq!(ct.lookup(&Tuple::icmp_echo_reply(1, B, A, 8), S), None, "other identifier");
        ct.update(id, Direction::Reply, TcpFlags::NONE, S);
        assert_eq!(ct.get(id).unwrap().state, ProtoState::Icmp(IcmpState::Replied));
        assert_eq!(ct.get(id).unwrap().expires, 31 * S);
    }

    #[test]
    fn reverse_lookup_and_natted_reply_tuple() {
        let mut ct = table(ConntrackConfig::default());
        // Plain: the reply is the inverse.
        let plain = open(&mut ct, tcp(1000), 0);
        assert_eq!(ct.lookup(&tcp(1000), 0), Some((plain, Direction::Original)));
        assert_eq!(ct.lookup(&tcp(1000).inverse(), 0), Some((plain, Direction::Reply)));
        // Masqueraded: A:2000 -> B:80 leaves as EXT:61000, so replies come B:80 -> EXT:61000 in zone 0.
        let orig = tcp(2000);
        let reply = Tuple::new(0, Proto::Tcp, (B, 80), (EXT, 61000));
        let st = ct.new_state(Proto::Tcp, SYN).unwrap();
        let nat = ct.insert(orig, reply, st, 0).unwrap();
        assert_eq!(ct.lookup(&reply, 0), Some((nat, Direction::Reply)));
        assert_eq!(ct.lookup(&orig, 0), Some((nat, Direction::Original)));
        assert_eq!(ct.lookup(&orig.inverse(), 0), None, "the untranslated inverse is not a key");
        assert_eq!(ct.get(nat).unwrap().tuple(Direction::Reply), &reply);
        // Another client cannot take the same external tuple while it is live.
        let st = ct.new_state(Proto::Tcp, SYN).unwrap();
        assert_eq!(ct.insert(tcp(3000), reply, st, 0), Err(InsertError::Clash(nat)));
        assert_eq!(ct.insert(tcp(3000), tcp(3000), st, 0), Err(InsertError::BadTuples));
        assert_eq!(ct.insert(udp(3000), udp(3000).inverse(), st, 0), Err(InsertError::BadTuples));
        assert_eq!(ct.stats().clash, 1);
        ct.check_invariants().unwrap();
    }

    #[test]
    fn a_full_table_evicts_the_oldest_unreplied_and_refuses_only_when_all_replied() {
        let mut ct = table(ConntrackConfig { limit: 3, ..ConntrackConfig::default() });
        let st = ProtoState::Udp(UdpState::Unreplied);
        let a = ct.insert(udp(1), udp(1).inverse(), st, 0).unwrap();
        let b = ct.insert(udp(2), udp(2).inverse(), st, S).unwrap();
        let c = ct.insert(udp(3), udp(3).inverse(), st, 2 * S).unwrap();
        // a is the oldest but has replied (assured): b, the oldest unreplied, makes room.
        assert_eq!(ct.update(a, Direction::Reply, TcpFlags::NONE, 3 * S), Verdict::Accept);
        assert!(ct.get(a).unwrap().replied);
        let d = ct.insert(udp(4), udp(4).inverse(), st, 4 * S).unwrap();
        assert_eq!(ct.lookup(&udp(2), 4 * S), None, "b evicted");
        assert_eq!(ct.lookup(&udp(1), 4 * S), Some((a, Direction::Original)), "the replied one stays");
        assert_eq!(ct.stats().evicted, 1);
        ct.check_invariants().unwrap();
        // The evicted entry is handed out by the next sweep, so its NAT port can be released.
        let mut dead = Vec::new();
        assert_eq!(ct.expire_with(4 * S, |e| dead.push(e.orig)), 1);
        assert_eq!(dead, vec![udp(2)]);
        // Every entry replied: nothing to evict, the new connection is refused.
        ct.update(c, Direction::Reply, TcpFlags::NONE, 5 * S);
        ct.update(d, Direction::Reply, TcpFlags::NONE, 5 * S);
        assert_eq!(ct.insert(udp(5), udp(5).inverse(), st, 6 * S), Err(InsertError::Full));
        assert_eq!(ct.stats().table_full, 1);
        // Until one expires (assured UDP: 120 s after its last packet); the insert reclaims it.
        let e = ct.insert(udp(5), udp(5).inverse(), st, 123 * S + 1).unwrap();
        assert_eq!(ct.lookup(&udp(1), 123 * S + 1), None);
        ct.check_invariants().unwrap();
        let _ = (b, e);
    }

    #[test]
    fn eviction_goes_oldest_first_and_records_stay_bounded() {
        let mut ct = table(ConntrackConfig { limit: 100, ..ConntrackConfig::default() });
        let st = ProtoState::Udp(UdpState::Unreplied);
        for i in 0..10_000u16 {
            ct.insert(udp(i), udp(i).inverse(), st, u64::from(i) * 1000).unwrap();
            ct.check_invariants().unwrap();
            // The 100 newest are the ones left.
            let oldest = i.saturating_sub(99);
            assert!(ct.lookup(&udp(oldest), u64::from(i) * 1000).is_some());
            if i >= 100 {
                assert!(ct.lookup(&udp(oldest - 1), u64::from(i) * 1000).is_none());
            }
        }
        assert_eq!(ct.stats().evicted, 9_900);
    }

    #[test]
    fn a_mid_stream_pickup_has_a_short_timeout_until_it_sees_a_reply() {
        let mut ct = table(ConntrackConfig::default());
        let st = ct.new_state(Proto::Tcp, ACK).unwrap();
        let id = ct.insert(tcp(1), tcp(1).inverse(), st, 0).unwrap();
        assert_eq!(ct.get(id).unwrap().expires, 30 * S, "tcp_unreplied, not 5 days");
        ct.update(id, Direction::Original, ACK, S);
        assert_eq!(ct.get(id).unwrap().expires, 31 * S, "traffic one way keeps it short");
        ct.update(id, Direction::Reply, ACK, 2 * S);
        assert_eq!(ct.get(id).unwrap().expires, 2 * S + 432_000 * S, "two-way: established");
    }

    #[test]
    fn group_limits_refuse_only_their_group() {
        let mut ct = table(ConntrackConfig::default());
        ct.set_group_limits(&[Some(2), None]);
        let st = ProtoState::Udp(UdpState::Unreplied);
        let nat = |g| Some(NatBinding { kind: NatKind::Snat, allocator: None, group: Some(g) });
        ct.insert_nat(udp(1), udp(1).inverse(), st, nat(0), 0).unwrap();
        ct.insert_nat(udp(2), udp(2).inverse(), st, nat(0), 0).unwrap();
        assert_eq!(ct.insert_nat(udp(3), udp(3).inverse(), st, nat(0), 0), Err(InsertError::GroupFull));
        ct.insert_nat(udp(4), udp(4).inverse(), st, nat(1), 0).unwrap();
        assert_eq!(ct.group_count(0), 2);
        assert_eq!(ct.stats().group_full, 1);
        // Expiry frees the group's room.
        ct.insert_nat(udp(3), udp(3).inverse(), st, nat(0), 31 * S).unwrap();
        assert_eq!(ct.group_count(0), 1);
        ct.check_invariants().unwrap();
    }

    #[test]
    fn insert_reclaims_an_expired_entry_holding_its_key() {
        let mut ct = table(ConntrackConfig::default());
        let st = ProtoState::Udp(UdpState::Unreplied);
        ct.insert(udp(1), udp(1).inverse(), st, 0).unwrap();
        assert!(matches!(ct.insert(udp(1), udp(1).inverse(), st, 30 * S), Err(InsertError::Clash(_))));
        let id = ct.insert(udp(1), udp(1).inverse(), st, 30 * S + 1).unwrap();
        assert_eq!(ct.get(id).unwrap().created, 30 * S + 1);
        assert_eq!(ct.len(), 1);
        ct.check_invariants().unwrap();
        assert_eq!(ct.expire(30 * S + 1), 1, "the reclaimed one");
    }

    #[test]
    fn a_probe_candidate_is_checked_against_the_entry_before_use() {
        let mut ct = table(ConntrackConfig::default());
        let st = ProtoState::Udp(UdpState::Unreplied);
        let a = ct.insert(udp(1), udp(1).inverse(), st, 0).unwrap();
        let mut p = ct.probe(&udp(1));
        assert!(ct.prefetch_entry(&mut p));
        assert_eq!(ct.lookup_probe(&udp(1), p, 0), Some((a, Direction::Original)));
        // The reply direction's probe finds the same entry, the other way.
        let mut r = ct.probe(&udp(1).inverse());
        assert!(ct.prefetch_entry(&mut r));
        assert_eq!(ct.lookup_probe(&udp(1).inverse(), r, 0), Some((a, Direction::Reply)));
        // The entry goes and another connection takes its slot: the stale candidate must not answer for it.
        ct.remove(a).unwrap();
        let b = ct.insert(udp(2), udp(2).inverse(), st, 0).unwrap();
        assert_eq!(b, a, "the slot is reused");
        assert_eq!(ct.lookup_probe(&udp(1), p, 0), None);
        // udp(1) comes back in another slot: found through the index despite the stale candidate.
        let c = ct.insert(udp(1), udp(1).inverse(), st, 0).unwrap();
        assert_ne!(c, a);
        assert_eq!(ct.lookup_probe(&udp(1), p, 0), Some((c, Direction::Original)));
        // A new tuple has no candidate.
        let mut n = ct.probe(&udp(3));
        assert!(!ct.prefetch_entry(&mut n));
        assert_eq!(ct.lookup_probe(&udp(3), n, 0), None);
    }

    #[test]
    fn expire_removes_from_both_indexes_and_flush_empties() {
        let mut ct = table(ConntrackConfig::default());
        let st = ProtoState::Icmp(IcmpState::Requested);
        for id in 0..10u16 {
            let t = Tuple::icmp_echo_request(1, A, B, id);
            ct.insert(t, t.inverse(), st, u64::from(id) * S).unwrap();
        }
        assert_eq!(ct.entries(35 * S).count(), 5, "ids 5..10 live at 35 s");
        assert_eq!(ct.expire(35 * S), 5);
        ct.check_invariants().unwrap();
        assert_eq!(ct.index.len(), 10);
        for id in 0..5u16 {
            let t = Tuple::icmp_echo_request(1, A, B, id);
            for t in [t, t.inverse()] {
                assert_eq!(ct.find(&t, ct.index.hash(t.key())), None);
            }
        }
        assert_eq!(ct.flush(|_| {}), 5);
        assert!(ct.is_empty() && ct.index.len() == 0);
        ct.check_invariants().unwrap();
        assert_eq!(ct.stats().expired, 5);
    }

    #[test]
    fn stale_or_expired_ids_are_invalid() {
        let mut ct = table(ConntrackConfig::default());
        let id = open(&mut ct, tcp(1), 0);
        assert_eq!(ct.update(id, Direction::Reply, SYN_ACK, 120 * S + 1), Verdict::Invalid, "expired: not revived");
        assert_eq!(ct.get(id).unwrap().expires, 120 * S);
        assert!(ct.remove(id).is_some());
        assert_eq!(ct.update(id, Direction::Reply, SYN_ACK, S), Verdict::Invalid, "removed");
        assert_eq!(ct.update(EntryId(99), Direction::Original, ACK, S), Verdict::Invalid, "never existed");
        assert!(ct.remove(id).is_none());
        assert_eq!(ct.stats().invalid, 3);
        ct.check_invariants().unwrap();
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert { sport: u16, dport: u16, nat: Option<u16>, flags: u8, icmp: bool },
        Lookup { sport: u16, dport: u16, reply: bool },
        Update { slot: u32, reply: bool, flags: u8 },
        Remove { slot: u32 },
        Expire,
        Advance(Nanos),
    }

    fn op() -> impl Strategy<Value = Op> {
        let flags = prop_oneof![
            Just(TcpFlags::SYN),
            Just(TcpFlags::SYN | TcpFlags::ACK),
            Just(TcpFlags::ACK),
            Just(TcpFlags::FIN | TcpFlags::ACK),
            Just(TcpFlags::RST),
            any::<u8>()
        ];
        prop_oneof![
            4 => (0..6u16, 0..3u16, proptest::option::of(0..4u16), flags.clone(), any::<bool>())
                .prop_map(|(sport, dport, nat, flags, icmp)| Op::Insert { sport, dport, nat, flags, icmp }),
            2 => (0..6u16, 0..3u16, any::<bool>()).prop_map(|(sport, dport, reply)| Op::Lookup { sport, dport, reply }),
            3 => (0..10u32, any::<bool>(), flags).prop_map(|(slot, reply, flags)| Op::Update { slot, reply, flags }),
            1 => (0..10u32).prop_map(|slot| Op::Remove { slot }),
            1 => Just(Op::Expire),
            2 => prop_oneof![0..S, 0..200 * S].prop_map(Op::Advance),
        ]
    }

    proptest! {
        #[test]
        fn random_operations_keep_invariants(
            limit in 1..8usize,
            strict in any::<bool>(),
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let mut ct = table(ConntrackConfig { limit, strict, ..ConntrackConfig::default() });
            let mut now: Nanos = 0;
            for op in ops {
                match op {
                    Op::Insert { sport, dport, nat, flags, icmp } => {
                        let proto = if icmp { Proto::Icmp } else { Proto::Tcp };
                        let orig = Tuple::new(1, proto, (A, sport), (B, dport));
                        let reply = match nat {
                            Some(p) => Tuple::new(0, proto, (B, dport), (EXT, p)),
                            None => orig.inverse(),
                        };
                        if let Some(st) = ct.new_state(proto, TcpFlags(flags)) {
                            let live_before = ct.entries(now).count();
                            let unreplied_before = ct.entries(now).filter(|(_, e)| !e.replied).count();
                            let evicted_before = ct.stats().evicted;
                            match ct.insert(orig, reply, st, now) {
                                Ok(id) => {
                                    // Room, or an unreplied connection evicted for it.
                                    prop_assert!(live_before < limit || ct.stats().evicted == evicted_before + 1);
                                    prop_assert_eq!(ct.lookup(&orig, now), Some((id, Direction::Original)));
                                    prop_assert_eq!(ct.lookup(&reply, now), Some((id, Direction::Reply)));
                                }
                                Err(InsertError::Full) => prop_assert!(live_before >= limit && unreplied_before == 0),
                                Err(InsertError::GroupFull) => prop_assert!(false, "no group limits here"),
                                Err(InsertError::Clash(id)) => prop_assert!(ct.get(id).unwrap().is_live(now)),
                                Err(InsertError::BadTuples) => prop_assert_eq!(orig.key(), reply.key()),
                            }
                        }
                    }
                    Op::Lookup { sport, dport, reply } => {
                        let mut t = Tuple::new(1, Proto::Tcp, (A, sport), (B, dport));
                        if reply {
                            t = t.inverse();
                        }
                        if let Some((id, dir)) = ct.lookup(&t, now) {
                            let e = ct.get(id).unwrap();
                            prop_assert!(e.is_live(now));
                            prop_assert_eq!(e.tuple(dir), &t);
                        }
                    }
                    Op::Update { slot, reply, flags } => {
                        let dir = if reply { Direction::Reply } else { Direction::Original };
                        let before = ct.get(EntryId(slot)).copied();
                        let v = ct.update(EntryId(slot), dir, TcpFlags(flags), now);
                        if v == Verdict::Invalid {
                            prop_assert_eq!(ct.get(EntryId(slot)).copied(), before);
                        }
                    }
                    Op::Remove { slot } => {
                        if let Some(e) = ct.remove(EntryId(slot)) {
                            prop_assert_eq!(ct.lookup(&e.orig, now), None);
                            prop_assert_eq!(ct.lookup(&e.reply, now), None);
                        }
                    }
                    Op::Expire => {
                        ct.expire(now);
                        prop_assert!(ct.entries(now).count() == ct.len());
                    }
                    Op::Advance(dt) => now += dt,
                }
                prop_assert!(ct.len() <= limit);
                if let Err(e) = ct.check_invariants() {
                    return Err(TestCaseError::fail(e));
                }
            }
        }

        /// Two tables see the same packets; one is swept at random moments, the other only when it reclaims on
        /// its own. Every outcome is the same, and every entry created is handed out exactly once when it dies.
        #[test]
        fn outcomes_do_not_depend_on_sweep_timing(
            limit in 1..6usize,
            strict in any::<bool>(),
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let cfg = ConntrackConfig { limit, strict, ..ConntrackConfig::default() };
            let (mut swept, mut lazy) = (table(cfg), table(cfg));
            let (mut dead_swept, mut dead_lazy) = (0usize, 0usize);
            let mut now: Nanos = 0;
            let live = |ct: &Conntrack, now: Nanos| {
                let mut v: Vec<Entry> = ct.entries(now).map(|(_, e)| *e).collect();
                v.sort_by_key(|e| e.orig);
                v
            };
            for op in ops {
                match op {
                    Op::Insert { sport, dport, nat, flags, icmp } => {
                        let proto = if icmp { Proto::Icmp } else { Proto::Tcp };
                        let orig = Tuple::new(1, proto, (A, sport), (B, dport));
                        let reply = match nat {
                            Some(p) => Tuple::new(0, proto, (B, dport), (EXT, p)),
                            None => orig.inverse(),
                        };
                        let outcome = |ct: &mut Conntrack| {
                            let st = ct.new_state(proto, TcpFlags(flags))?;
                            Some(ct.insert(orig, reply, st, now).map(|id| *ct.get(id).unwrap()).map_err(|e| match e {
                                InsertError::Clash(id) => Some(*ct.get(id).unwrap()),
                                _ => None,
                            }))
                        };
                        prop_assert_eq!(outcome(&mut swept), outcome(&mut lazy));
                    }
                    Op::Lookup { sport, dport, reply } => {
                        // A packet of one of the flows, in either direction, or towards a NATed tuple.
                        let orig = Tuple::new(1, Proto::Tcp, (A, sport), (B, dport));
                        let t = match (reply, sport < 3) {
                            (false, _) => orig,
                            (true, true) => Tuple::new(0, Proto::Tcp, (B, dport), (EXT, sport)),
                            (true, false) => orig.inverse(),
                        };
                        let packet = |ct: &mut Conntrack| {
                            let (id, dir) = ct.lookup(&t, now)?;
                            let v = ct.update(id, dir, TcpFlags(TcpFlags::ACK), now);
                            Some((dir, v, *ct.get(id).unwrap()))
                        };
                        prop_assert_eq!(packet(&mut swept), packet(&mut lazy));
                    }
                    Op::Update { slot, reply, flags } => {
                        // The slot number picks a flow by source port; the packet goes either way.
                        let orig = Tuple::new(1, Proto::Tcp, (A, (slot % 6) as u16), (B, (slot % 3) as u16));
                        let packet = |ct: &mut Conntrack| {
                            let (id, dir) = ct.lookup(&orig, now)?;
                            let dir = if reply { Direction::Reply } else { dir };
                            let v = ct.update(id, dir, TcpFlags(flags), now);
                            Some((v, *ct.get(id).unwrap()))
                        };
                        prop_assert_eq!(packet(&mut swept), packet(&mut lazy));
                    }
                    Op::Remove { slot } => {
                        let orig = Tuple::new(1, Proto::Tcp, (A, (slot % 6) as u16), (B, (slot % 3) as u16));
                        let remove = |ct: &mut Conntrack| {
                            let (id, _) = ct.lookup(&orig, now)?;
                            ct.remove(id)
                        };
                        let (a, b) = (remove(&mut swept), remove(&mut lazy));
                        prop_assert_eq!(a, b);
                        dead_swept += usize::from(a.is_some());
                        dead_lazy += usize::from(b.is_some());
                    }
                    Op::Expire => dead_swept += swept.expire(now),
                    Op::Advance(dt) => now += dt,
                }
                prop_assert_eq!(live(&swept, now), live(&lazy, now));
                prop_assert!(swept.len() <= limit && lazy.len() <= limit);
                if let Err(e) = swept.check_invariants().and_then(|()| lazy.check_invariants()) {
                    return Err(TestCaseError::fail(e));
                }
            }
            let far = now + 1_000_000 * S;
            dead_swept += swept.expire(far);
            dead_lazy += lazy.expire(far);
            prop_assert!(swept.is_empty() && lazy.is_empty());
            prop_assert_eq!(dead_swept as u64, swept.stats().created);
            prop_assert_eq!(dead_lazy as u64, lazy.stats().created);
            prop_assert_eq!(swept.stats(), lazy.stats());
        }
    }
}
