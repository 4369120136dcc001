//! Internet checksums: RFC 1071 sums ([`sum`], [`checksum`], [`verify`]; [`sum_long`] for whole segments),
//! pseudo-header sums ([`pseudo_ipv4`], [`pseudo_ipv6`]) and RFC 1624 incremental updates ([`update16`],
//! [`update32`], and [`Delta`] for several changes folded once) — the one place the switch computes them.
//!
//! Sums are "folded, not inverted" 16-bit values; a checksum field holds `!sum`. Pure functions, any thread.

/// One's-complement sum of `data` (big-endian 16-bit words, odd byte padded), folded to 16 bits, not inverted.
#[inline]
// The loop folds until the sum fits 16 bits: the final cast cannot truncate.
#[allow(clippy::cast_possible_truncation)]
pub fn sum(data: &[u8]) -> u16 {
    // 32-bit words into a 64-bit accumulator: since 2^16 = 1 (mod 2^16 - 1), folding their sum gives the
    // one's-complement sum of the 16-bit words, in half the additions (an IPv4 header is five words).
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    match *words.remainder() {
        [a, b, c] => acc += u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        [a, b] => acc += u64::from(u16::from_be_bytes([a, b])),
        [a] => acc += u64::from(a) << 8,
        _ => {}
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// [`sum`] eight bytes at a time (a 64-bit one's-complement sum folds to the same 16-bit sum), about four times
/// faster on a 1500-byte segment: for payloads (segmentation, completing partial checksums), where the per-byte
/// cost matters; [`sum`] stays the cheaper one for a header's few words.
#[inline]
// Two 64-to-32 then two 32-to-16 end-around folds leave at most 0xffff: the final cast cannot truncate.
#[allow(clippy::cast_possible_truncation)]
pub fn sum_long(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let (s, carry) = acc.overflowing_add(u64::from_be_bytes(c.try_into().expect("8 bytes")));
        acc = s + u64::from(carry);
    }
    // The remainder starts at an even offset, so its 16-bit sum adds in directly.
    let (s, carry) = acc.overflowing_add(u64::from(sum(chunks.remainder())));
    acc = s + u64::from(carry);
    acc = (acc >> 32) + (acc & 0xffff_ffff);
    acc = (acc >> 32) + (acc & 0xffff_ffff);
    acc = (acc >> 16) + (acc & 0xffff);
    acc = (acc >> 16) + (acc & 0xffff);
    acc as u16
}

/// One's-complement addition of two folded sums.
#[inline]
// `s` is at most 0x1fffe, so one end-around fold leaves at most 0xffff: cannot truncate.
#[allow(clippy::cast_possible_truncation)]
pub fn add(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// The sum of the IPv4 pseudo-header (RFC 768/793): addresses, protocol, and the transport length `len`.
#[inline]
pub fn pseudo_ipv4(src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr, proto: u8, len: u16) -> u16 {
    let (s, d) = (u32::from(src), u32::from(dst));
    let acc = (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + u32::from(proto) + u32::from(len);
    fold(acc)
}

/// The sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, upper-layer length `len`, next header.
#[inline]
pub fn pseudo_ipv6(src: &std::net::Ipv6Addr, dst: &std::net::Ipv6Addr, proto: u8, len: u32) -> u16 {
    let words = src.segments().into_iter().chain(dst.segments()).map(u32::from);
    let acc: u32 = words.sum::<u32>() + (len >> 16) + (len & 0xffff) + u32::from(proto);
    fold(acc)
}

/// Folds a 32-bit one's-complement accumulator to 16 bits (end-around carry). Two steps always suffice: the
/// first leaves at most 0x1fffe, the second at most 0xffff.
#[inline]
#[allow(clippy::cast_possible_truncation)] // At most 0xffff after the second step (above): cannot truncate.
fn fold(acc: u32) -> u16 {
    let acc = (acc & 0xffff) + (acc >> 16);
    ((acc & 0xffff) + (acc >> 16)) as u16
}

/// The checksum to store for `data` whose checksum field is zero.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// True if `data` (checksum field included) sums to 0xffff, i.e. its checksum is right.
#[inline]
pub fn verify(data: &[u8]) -> bool {
    sum(data) == 0xffff
}

/// [`verify`] for an option-less IPv4 header, the common case on the forwarding path: five 32-bit words summed
/// in native byte order (the one's-complement sum is byte-order independent, RFC 1071 §2(B), and a correct
/// header sums to 0xffff either way round), folded in a fixed number of steps.
#[inline]
pub fn verify_ipv4_header(h: &[u8; 20]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let acc = w(0) + w(4) + w(8) + w(12) + w(16);
    // Five words stay below 2^35: one 64-to-32 fold leaves at most 2^32 + 6, a second fits 32 bits.
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    #[allow(clippy::cast_possible_truncation)] // Fits 32 bits after the second fold (above): cannot truncate.
    let acc = acc as u32;
    fold(acc) == 0xffff
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word changes from `old` to `new`.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

/// As [`update16`] for a 32-bit field (an IPv4 address).
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let ((old_hi, old_lo), (new_hi, new_lo)) = (words(old), words(new));
    update16(update16(check, old_hi, new_hi), old_lo, new_lo)
}

/// The high and low 16-bit words of `x` (a 32-bit field counts in a checksum as these two words).
#[inline(always)]
// Splits `x` in halves: dropping the high half from the low word is the intent.
#[allow(clippy::cast_possible_truncation)]
fn words(x: u32) -> (u16, u16) {
    ((x >> 16) as u16, x as u16)
}

/// Several incremental updates of one checksum gathered and applied at once ([RFC 1624] eqn. 3 summed over
/// every changed 16-bit word): the same result as applying [`update16`]/[`update32`] one after the other, with
/// one fold instead of one per word.
///
/// [RFC 1624]: https://www.rfc-editor.org/rfc/rfc1624
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta(u32);

impl Delta {
    /// Word `old` became `new`.
    #[inline]
    pub fn add16(&mut self, old: u16, new: u16) {
        // At most 8 words per packet rewrite: far from overflowing 32 bits.
        self.0 += u32::from(!old) + u32::from(new);
    }

    /// Two words (an IPv4 address) `old` became `new`.
    #[inline]
    pub fn add32(&mut self, old: u32, new: u32) {
        let ((old_hi, old_lo), (new_hi, new_lo)) = (words(old), words(new));
        self.add16(old_hi, new_hi);
        self.add16(old_lo, new_lo);
    }

    /// The checksum `check` updated for every change added.
    #[inline]
    pub fn apply(self, check: u16) -> u16 {
        // The sum stays far below 2^32 (see `add16`), so one fold covers the checksum and every change.
        !fold(u32::from(!check) + self.0)
    }

    /// A partial checksum (the folded, uncomplemented pseudo-header sum a sender with checksum offload leaves in
    /// the field) updated for every change added: the sum itself moves, where [`Delta::apply`] moves its
    /// complement. Only pseudo-header words (addresses) belong in such a delta: the rest of the transport header
    /// is summed when the checksum is completed.
    #[inline]
    pub fn apply_to_partial(self, sum: u16) -> u16 {
        fold(u32::from(sum) + self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_sum_equals_the_reference_sum() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for start in 0..9 {
            for len in (0..200).chain([1499, 1500, 1501, 2991]) {
                let d = &data[start..start + len];
                assert_eq!(sum_long(d), sum(d), "start {start} len {len}");
            }
        }
        assert_eq!(sum_long(&[0xff; 4096]), sum(&[0xff; 4096]), "carries");
    }

    #[test]
    fn pseudo_headers_equal_the_sum_of_their_bytes() {
        use std::net::{Ipv4Addr, Ipv6Addr};
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(255, 255, 255, 254));
        let mut b = [s.octets(), d.octets()].concat();
        b.extend_from_slice(&[0, 17, 0xff, 0xf0]);
        assert_eq!(pseudo_ipv4(s, d, 17, 0xfff0), sum(&b));
        let (s6, d6): (Ipv6Addr, Ipv6Addr) = ("fd00::ffff:1".parse().unwrap(), "ffff::fffe".parse().unwrap());
        let mut b = [s6.octets(), d6.octets()].concat();
        b.extend_from_slice(&[0, 1, 0xff, 0xfe, 0, 0, 0, 6]);
        assert_eq!(pseudo_ipv6(&s6, &d6, 6, 0x1fffe), sum(&b));
        assert_eq!(add(0xffff, 1), 1);
    }

    #[test]
    fn a_gathered_delta_equals_the_updates_one_by_one() {
        // A UDP-like checksum over pseudo-header words; change an address and a port, as NAT does.
        let words = [0xc0a8u16, 0x0001, 0xcb00, 0x7102, 0x0011, 0x0010, 0x3039, 0x0050, 0x0010, 0x1234];
        let check = !fold(words.iter().map(|&w| u32::from(w)).sum());
        for (old_addr, new_addr, old_port, new_port) in
            [(0xc0a8_0001u32, 0xcb00_7101u32, 0x3039u16, 0x0401u16), (1, 0xffff_fffe, 0xffff, 0), (7, 7, 9, 9)]
        {
            let one_by_one = update16(update32(check, old_addr, new_addr), old_port, new_port);
            let mut d = Delta::default();
            d.add32(old_addr, new_addr);
            d.add16(old_port, new_port);
            assert_eq!(d.apply(check), one_by_one);
        }
    }

    proptest::proptest! {
        /// The word-at-a-time sum equals the textbook one (16-bit words, end-around carry) for any data.
        #[test]
        fn sum_matches_the_16_bit_definition(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)
        ) {
            let mut acc: u32 = 0;
            for c in data.chunks(2) {
                acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
                acc = (acc & 0xffff) + (acc >> 16);
            }
            proptest::prop_assert_eq!(sum(&data), acc as u16);
        }
    }

    proptest::proptest! {
        /// The fixed-size header check agrees with the general one for any 20 bytes, and for any header whose
        /// checksum field was filled in (so the "right" case is exercised, not only random mismatches).
        #[test]
        fn ipv4_header_check_matches_verify(mut h in proptest::prelude::any::<[u8; 20]>(), fill: bool) {
            if fill {
                h[10..12].fill(0);
                let c = checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                proptest::prop_assert!(verify_ipv4_header(&h));
            }
            proptest::prop_assert_eq!(verify_ipv4_header(&h), verify(&h));
        }
    }

    #[test]
    fn ipv4_header_check_edge_sums() {
        // All ones sums to 0xffff (right); all zeros to 0 (wrong, as in the general check).
        assert!(verify_ipv4_header(&[0xff; 20]));
        assert!(!verify_ipv4_header(&[0; 20]));
        let mut h = [0u8; 20];
        h[10..12].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(verify_ipv4_header(&h), verify(&h));
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example bytes: sum is 0xddf2.
        assert_eq!(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0xddf2);
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut hdr = [0x45u8, 0, 0, 60, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 1, 2];
        let c = checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(verify(&hdr));
        // Decrement TTL.
        let old = u16::from_be_bytes([hdr[8], hdr[9]]);
        hdr[8] -= 1;
        let new = u16::from_be_bytes([hdr[8], hdr[9]]);
        let c2 = update16(c, old, new);
        hdr[10..12].copy_from_slice(&c2.to_be_bytes());
        assert!(verify(&hdr));
        // Rewrite the source address.
        let old_src = u32::from_be_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]);
        let new_src = u32::from_be_bytes([203, 0, 113, 2]);
        hdr[12..16].copy_from_slice(&new_src.to_be_bytes());
        let c3 = update32(c2, old_src, new_src);
        hdr[10..12].copy_from_slice(&c3.to_be_bytes());
        assert!(verify(&hdr));
    }
}
