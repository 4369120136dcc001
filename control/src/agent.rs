//! The config agent's logic, apart from its process plumbing (`src/bin/vswitch-agent.rs`): read and validate the
//! desired state ([`load_desired`]), and bring a switch to it ([`sync`]): ask for the running configuration,
//! compute the [`diff`](crate::diff), and send the whole desired configuration in **one** `apply` request, which
//! vswitchd carries out as one transaction (all or nothing). The agent never applies piecemeal.
//!
//! The switch is reached through the [`Switch`] trait, implemented by the socket client
//! ([`crate::client::SocketSwitch`]) and by fakes in tests.
//!
//! Invariants: an invalid desired state is never sent (it is rejected by [`load_desired`] before any request); a
//! sync that finds the running configuration equal to the desired one sends nothing.
//!
//! Threads: called from the agent's single main loop.

use crate::diff::{diff, Change};
use std::path::Path;
use vswitch_api::config::{Config, ConfigError};

/// The running state as the switch reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    /// The configuration the switch runs.
    pub config: Config,
    /// The switch's configuration generation: bumped by every applied change, so the agent can tell a switch that
    /// changed (or restarted) since it last looked.
    pub generation: u64,
}

/// The two requests the agent needs from a switch.
pub trait Switch {
    /// The error of a failed request (connection, protocol or server error).
    type Error: std::fmt::Display;
    /// The running configuration and its generation.
    fn running(&mut self) -> Result<Running, Self::Error>;
    /// Replaces the running configuration with `desired` in one transaction, provided the switch is still at
    /// `generation`; returns the new generation.
    fn apply(&mut self, desired: &Config, generation: u64) -> Result<u64, Self::Error>;
}

/// Reads and validates the desired state. Every error is returned (not only the first), each naming the file,
/// the line and the object and field, in line order; a file that cannot be read is one error.
pub fn load_desired(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![ConfigError { origin: origin.clone(), line: None, message: format!("cannot read: {e}") }])?;
    Config::parse_all_errors(&text, &origin)
}

/// What a [`sync`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    /// The switch already runs the desired configuration (at this generation); nothing was sent.
    InSync {
        /// The switch's generation.
        generation: u64,
    },
    /// The changes were applied as one transaction.
    Applied {
        /// What changed.
        changes: Vec<Change>,
        /// The switch's generation after the apply.
        generation: u64,
    },
    /// Dry run: what would change; nothing was sent.
    WouldApply {
        /// What would change.
        changes: Vec<Change>,
    },
}

/// Why a [`sync`] failed.
#[derive(Debug)]
pub enum SyncError<E> {
    /// Asking for the running state failed (the switch is unreachable or answered with an error).
    Running(E),
    /// The apply request failed: the switch refused the configuration or could not carry it out; the transaction
    /// leaves its running configuration as it was. `changes` is what was attempted.
    Apply {
        /// The request's error.
        error: E,
        /// What the apply would have changed.
        changes: Vec<Change>,
        /// The running generation the apply was based on (still running, as the apply changed nothing).
        generation: u64,
    },
}

impl<E: std::fmt::Display> std::fmt::Display for SyncError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Running(e) => write!(f, "cannot read the running configuration: {e}"),
            SyncError::Apply { error, .. } => write!(f, "apply failed (running configuration unchanged): {error}"),
        }
    }
}

/// Brings `switch` to `desired`: one `running` request, then, when the configurations differ and this is not a
/// dry run, one `apply` of the whole desired configuration.
pub fn sync<S: Switch>(switch: &mut S, desired: &Config, dry_run: bool) -> Result<SyncOutcome, SyncError<S::Error>> {
    let running = switch.running().map_err(SyncError::Running)?;
    if running.config == *desired {
        return Ok(SyncOutcome::InSync { generation: running.generation });
    }
    let changes = diff(&running.config, desired);
    if dry_run {
        return Ok(SyncOutcome::WouldApply { changes });
    }
    match switch.apply(desired, running.generation) {
        Ok(generation) => Ok(SyncOutcome::Applied { changes, generation }),
        Err(error) => Err(SyncError::Apply { error, changes, generation: running.generation }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A switch in memory that records the requests it gets.
    #[derive(Default)]
    struct FakeSwitch {
        running: Config,
        generation: u64,
        applies: usize,
        refuse: Option<String>,
    }

    impl Switch for FakeSwitch {
        type Error = String;
        fn running(&mut self) -> Result<Running, String> {
            Ok(Running { config: self.running.clone(), generation: self.generation })
        }
        fn apply(&mut self, desired: &Config, generation: u64) -> Result<u64, String> {
            self.applies += 1;
            if let Some(e) = &self.refuse {
                return Err(e.clone());
            }
            assert_eq!(generation, self.generation, "the agent passes the generation it read");
            self.running = desired.clone();
            self.generation += 1;
            Ok(self.generation)
        }
    }

    fn desired() -> Config {
        Config::parse("[[network]]\nname = \"a\"\n", "d.toml").unwrap()
    }

    #[test]
    fn a_different_running_config_is_applied_once_as_a_whole() {
        let mut sw = FakeSwitch::default();
        let out = sync(&mut sw, &desired(), false).unwrap();
        let SyncOutcome::Applied { changes, generation } = out else { panic!("{out:?}") };
        assert_eq!(crate::diff::render(&changes), "+ network a\n");
        assert_eq!((generation, sw.applies), (1, 1));
        assert_eq!(sw.running, desired());
        // Again: nothing to do, nothing sent.
        assert_eq!(sync(&mut sw, &desired(), false).unwrap(), SyncOutcome::InSync { generation: 1 });
        assert_eq!(sw.applies, 1);
    }

    #[test]
    fn a_dry_run_sends_nothing() {
        let mut sw = FakeSwitch::default();
        let out = sync(&mut sw, &desired(), true).unwrap();
        assert!(matches!(out, SyncOutcome::WouldApply { ref changes } if changes.len() == 1), "{out:?}");
        assert_eq!((sw.applies, sw.running.clone()), (0, Config::default()));
    }

    #[test]
    fn a_refused_apply_is_an_error_with_the_attempted_changes() {
        let mut sw = FakeSwitch { refuse: Some("port c1: cannot open".into()), ..FakeSwitch::default() };
        let err = sync(&mut sw, &desired(), false).unwrap_err();
        assert_eq!(err.to_string(), "apply failed (running configuration unchanged): port c1: cannot open");
        assert!(matches!(err, SyncError::Apply { ref changes, .. } if changes.len() == 1));
    }

    #[test]
    fn load_desired_reports_every_error_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[[network]]\nname = \"a\"\nmac_limit = 0\n\n[[port]]\nname = \"c1\"\nkind = \"tap\"\nifname = \"x\"\nnetwork = \"nope\"\n").unwrap();
        let errors = load_desired(&path).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let origin = path.display().to_string();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].starts_with(&format!("{origin}:3: network a: mac_limit")), "{text:?}");
        assert!(text[1].starts_with(&format!("{origin}:9: port c1: network \"nope\"")), "{text:?}");
        let missing = load_desired(&dir.path().join("missing.toml")).unwrap_err();
        assert_eq!(missing.len(), 1);
        assert!(missing[0].to_string().contains("missing.toml: cannot read"), "{missing:?}");
    }
}
