//! [`FileWatch`]: notices that the agent's configuration file changed, by polling its metadata, and reports a
//! change only once the file has stayed the same for a settle time (the debounce).
//!
//! Why polling and not inotify: editors save by writing a new file and renaming it over the old one (or by
//! truncating and rewriting in several `write()`s); an inotify watch on the file follows the old inode and must be
//! re-armed, a watch on the directory sees a burst of events. Polling the *path* with `stat()` follows renames for
//! free and costs one system call per interval. A file's identity for this purpose is (device, inode, size,
//! mtime with nanoseconds, ctime): a write-rename changes the inode, an in-place write the size or mtime.
//!
//! Debounce: a changed stamp must be seen unchanged for `settle` before [`FileWatch::poll`] reports it, so a save
//! in several steps (truncate, write, write, rename) is read once, complete. A file that disappears (between the
//! unlink and the rename of some editors) is a stamp like any other: if it is still missing after `settle` the
//! change is reported and reading it fails, which the agent reports without touching the running configuration.
//!
//! Threads: owned by the agent's main loop; not shared.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What identifies one version of the file (`None`: the file is missing or unreadable).
type Stamp = Option<(u64, u64, u64, i64, i64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
}

/// Polls one path for changes, with a debounce.
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    settle: Duration,
    /// The version last reported (or seen at creation).
    current: Stamp,
    /// A different version, and when it was first seen as it is now.
    pending: Option<(Stamp, Instant)>,
}

impl FileWatch {
    /// Starts watching `path` as it is now: only later changes are reported.
    pub fn new(path: &Path, settle: Duration) -> FileWatch {
        FileWatch { path: path.to_path_buf(), settle, current: stamp(path), pending: None }
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True once when the file has changed and then stayed unchanged for the settle time; call it regularly
    /// (every interval shorter than the settle time).
    pub fn poll(&mut self, now: Instant) -> bool {
        let seen = stamp(&self.path);
        if seen == self.current {
            self.pending = None;
            return false;
        }
        match self.pending {
            Some((pending, since)) if pending == seen => {
                if now.duration_since(since) >= self.settle {
                    self.current = seen;
                    self.pending = None;
                    true
                } else {
                    false
                }
            }
            _ => {
                self.pending = Some((seen, now));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const SETTLE: Duration = Duration::from_millis(100);

    #[test]
    fn an_unchanged_file_is_never_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "a").unwrap();
        let mut w = FileWatch::new(&path, SETTLE);
        let t0 = Instant::now();
        assert!(!w.poll(t0));
        assert!(!w.poll(t0 + SETTLE * 3));
    }

    #[test]
    fn a_change_is_reported_once_after_it_settles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "a").unwrap();
        let mut w = FileWatch::new(&path, SETTLE);
        std::fs::write(&path, "bb").unwrap();
        let t0 = Instant::now();
        assert!(!w.poll(t0), "first sight of the change starts the settle time");
        assert!(!w.poll(t0 + SETTLE / 2));
        assert!(w.poll(t0 + SETTLE));
        assert!(!w.poll(t0 + SETTLE * 2), "reported once");
    }

    #[test]
    fn a_write_in_steps_is_reported_once_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "a").unwrap();
        let mut w = FileWatch::new(&path, SETTLE);
        let t0 = Instant::now();
        let mut f = std::fs::File::create(&path).unwrap(); // truncate
        assert!(!w.poll(t0));
        f.write_all(b"half").unwrap();
        f.sync_all().unwrap();
        assert!(!w.poll(t0 + SETTLE * 2 / 3), "a new stamp restarts the settle time");
        f.write_all(b" and the rest").unwrap();
        f.sync_all().unwrap();
        assert!(!w.poll(t0 + SETTLE * 4 / 3));
        assert!(w.poll(t0 + SETTLE * 7 / 3));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "half and the rest");
    }

    #[test]
    fn write_then_rename_over_the_file_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "same").unwrap();
        let mut w = FileWatch::new(&path, SETTLE);
        let tmp = dir.path().join(".c.toml.swp");
        std::fs::write(&tmp, "same").unwrap(); // same size, possibly same mtime: the inode tells
        std::fs::rename(&tmp, &path).unwrap();
        let t0 = Instant::now();
        assert!(!w.poll(t0));
        assert!(w.poll(t0 + SETTLE));
    }

    #[test]
    fn a_missing_file_is_a_change_and_so_is_its_return() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "a").unwrap();
        let mut w = FileWatch::new(&path, SETTLE);
        std::fs::remove_file(&path).unwrap();
        let t0 = Instant::now();
        assert!(!w.poll(t0));
        assert!(w.poll(t0 + SETTLE));
        std::fs::write(&path, "b").unwrap();
        assert!(!w.poll(t0 + SETTLE * 2));
        assert!(w.poll(t0 + SETTLE * 3));
        assert_eq!(w.path(), path);
    }
}
