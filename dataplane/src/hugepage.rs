//! Transparent huge pages for the big tables: the FIB's chunk pool, the MAC tables, the connection table and its
//! index ask the kernel to back their storage with 2 MiB pages (`madvise(MADV_HUGEPAGE)`).
//!
//! **Why**: a lookup into a table of tens or hundreds of MiB that misses the caches also misses the TLB when the
//! table sits on 4 KiB pages (a 2,048-entry TLB covers 8 MiB of them), and on a virtual machine every TLB miss is
//! a two-dimensional page walk that can cost more than the cache miss itself. Batching a burst's lookups
//! overlaps the cache misses, but the page walks do not overlap as well. With 2 MiB pages the same TLB covers
//! 4 GiB: a 1M-entry table costs one cache miss per lookup, not a miss and a page walk.
//!
//! **How**: the storage stays an ordinary `Vec` from the global allocator (a large allocation is its own
//! anonymous mapping in glibc); [`advise_vec`] marks the part of its allocation that covers whole, aligned
//! 2 MiB pages, before anything is written there, so the kernel faults huge pages in on first touch. The
//! helpers allocate, advise, then fill ([`filled`], [`with_capacity`]) and grow by moving into a new advised
//! allocation ([`reserve`]) rather than by `realloc`, whose `mremap` would carry over the 4 KiB pages already
//! touched. Allocations smaller than a huge page are left alone.
//!
//! It is a hint and changes nothing else: with transparent huge pages set to `never`
//! (`/sys/kernel/mm/transparent_hugepage/enabled`), when no huge page is free, or off Linux, tables work exactly
//! as before on small pages. With `madvise` (the usual default) or `always`, the advised ranges show as `hg` in
//! the mapping's `VmFlags` and their resident huge pages as `AnonHugePages` in `/proc/PID/smaps`.
//!
//! Threads: any; called where a table allocates (control side, or a worker growing its own table).

/// The size (and alignment) of a transparent huge page on x86-64 and arm64 with 4 KiB base pages.
pub const HUGE_PAGE: usize = 2 << 20;

/// Asks for huge pages under the whole 2 MiB pages inside `v`'s allocation (its capacity, not its length).
/// Returns whether a range was advised (false: the allocation holds no whole aligned huge page, or the kernel
/// refused, e.g. without transparent huge page support).
// The capacity is what is advised, which a slice does not carry.
#[allow(clippy::ptr_arg)]
pub fn advise_vec<T>(v: &Vec<T>) -> bool {
    let bytes = v.capacity().saturating_mul(std::mem::size_of::<T>());
    advise_range(v.as_ptr() as usize, bytes)
}

/// `madvise(MADV_HUGEPAGE)` on the whole huge pages inside `[addr, addr + len)`.
fn advise_range(addr: usize, len: usize) -> bool {
    let start = addr.next_multiple_of(HUGE_PAGE);
    let end = addr.saturating_add(len) / HUGE_PAGE * HUGE_PAGE;
    if end <= start {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `[start, end)` lies inside one live allocation the caller owns (rounded inward to huge-page
        // boundaries, so it touches no neighbouring object). MADV_HUGEPAGE only changes how the kernel backs the
        // range with physical pages: it never changes the memory's contents or its validity, and it fails
        // (returns -1, handled) rather than doing anything else when huge pages are unsupported.
        let r = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        r == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// An empty `Vec` with room for `capacity` elements, its storage advised for huge pages.
pub fn with_capacity<T>(capacity: usize) -> Vec<T> {
    let v = Vec::with_capacity(capacity);
    advise_vec(&v);
    v
}

/// `vec![x; n]`, its storage advised for huge pages before it is written.
pub fn filled<T: Clone>(n: usize, x: T) -> Vec<T> {
    let mut v = with_capacity(n);
    v.resize(n, x);
    v
}

/// Makes room for `additional` more elements of `v`: when it is full, its elements move into a new advised
/// allocation at least twice as large (amortised O(1) per element, like `Vec`'s own growth).
pub fn reserve<T>(v: &mut Vec<T>, additional: usize) {
    let needed = v.len().saturating_add(additional);
    if needed <= v.capacity() {
        return;
    }
    let mut grown = with_capacity(needed.max(v.capacity().saturating_mul(2)).max(4));
    grown.append(v);
    *v = grown;
}

/// `v.push(x)`, growing through [`reserve`].
#[inline]
pub fn push<T>(v: &mut Vec<T>, x: T) {
    if v.len() == v.capacity() {
        reserve(v, 1);
    }
    v.push(x);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `VmFlags` of the mapping holding `addr`, from `/proc/self/smaps`.
    fn vm_flags(addr: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let head = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = head.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                    inside = (a..b).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return Some(flags.trim().to_string());
                }
            }
        }
        None
    }

    fn thp_available() -> bool {
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| s.contains("[always]") || s.contains("[madvise]"))
    }

    #[test]
    fn large_tables_are_advised_and_small_ones_left_alone() {
        let small: Vec<u64> = filled(1000, 7);
        assert!(!advise_vec(&small), "8 KB hold no whole huge page");
        assert_eq!(small, vec![7; 1000]);
        let big: Vec<u64> = filled(3 * HUGE_PAGE / 8, 9);
        assert!(big.iter().all(|&x| x == 9) && big.len() == 3 * HUGE_PAGE / 8);
        if !cfg!(target_os = "linux") || !thp_available() {
            return;
        }
        assert!(advise_vec(&big));
        // The whole huge page in the middle of the allocation is in a mapping marked for huge pages.
        let mid = (big.as_ptr() as usize).next_multiple_of(HUGE_PAGE);
        let flags = vm_flags(mid).expect("the table's mapping is in smaps");
        assert!(flags.split_whitespace().any(|f| f == "hg"), "VmFlags: {flags}");
    }

    #[test]
    fn growth_keeps_every_element_and_stays_advised() {
        let mut v: Vec<u32> = Vec::new();
        for i in 0..(HUGE_PAGE as u32) {
            push(&mut v, i);
        }
        assert!(v.iter().enumerate().all(|(i, &x)| x as usize == i));
        assert!(v.capacity() >= v.len() && v.capacity() <= 2 * v.len());
        reserve(&mut v, 10);
        assert!(v.capacity() >= v.len() + 10);
        if cfg!(target_os = "linux") && thp_available() {
            let mid = (v.as_ptr() as usize).next_multiple_of(HUGE_PAGE);
            let flags = vm_flags(mid).expect("mapping in smaps");
            assert!(flags.split_whitespace().any(|f| f == "hg"), "VmFlags: {flags}");
        }
        let mut s: Vec<String> = vec!["a".into()];
        reserve(&mut s, 100);
        assert_eq!(s, ["a"]);
    }
}
