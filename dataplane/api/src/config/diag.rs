//! Collected configuration errors: which object and field each is about, on which line, and the wording
//! shared by the parser ([`super::parse`]) and the rules ([`super::check`]): how objects are labelled
//! (`port c1`, `route 10.0.0.0/8`, `publish #2`), how a user's string is quoted, what a range error says.
//!
//! A field whose value was unusable is marked broken: every later rule about it is skipped, so a value that has
//! the wrong type produces only its type error.

use super::{limits, Config, ConfigError, PortKind};
use crate::ifname::{BadIfName, IfName};
use ipnet::Ipv4Net;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::RangeInclusive;

/// An object of the configuration, by position (ordered as the objects are numbered without lines: switch,
/// networks, ports, routes, publish rules, nat, conntrack).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Obj {
    Switch,
    Network(usize),
    Port(usize),
    Route(usize),
    Publish(usize),
    Nat,
    Conntrack,
    Cluster,
}

/// Collected errors, with the lines of tables and values (none for a configuration built in code) and the
/// fields whose value was unusable (rules about them are skipped).
#[derive(Default)]
pub(super) struct Diags {
    pub(super) tables: HashMap<Obj, usize>,
    pub(super) fields: HashMap<(Obj, &'static str), usize>,
    broken: HashSet<(Obj, &'static str)>,
    errors: Vec<(Option<usize>, String)>,
}

impl Diags {
    /// The line of `field` of `obj`, or of its table when the field is not written.
    pub(super) fn line(&self, obj: Obj, field: &'static str) -> Option<usize> {
        self.fields.get(&(obj, field)).or_else(|| self.tables.get(&obj)).copied()
    }

    pub(super) fn is_broken(&self, obj: Obj, field: &'static str) -> bool {
        self.broken.contains(&(obj, field))
    }

    /// Reports a problem with `field` of `obj`, unless that field's value was already unusable.
    pub(super) fn report(&mut self, obj: Obj, field: &'static str, label: &str, message: String) {
        if !self.is_broken(obj, field) {
            self.errors.push((self.line(obj, field), format!("{label}: {message}")));
        }
    }

    /// Reports an unusable value; later rules about `field` are skipped.
    pub(super) fn report_broken(&mut self, obj: Obj, field: &'static str, label: &str, message: String) {
        self.report(obj, field, label, message);
        self.broken.insert((obj, field));
    }

    /// `label` followed by " (line N)" when known: names another object in a message.
    pub(super) fn other(&self, obj: Obj, label: String) -> String {
        match self.tables.get(&obj) {
            Some(line) => format!("{label} (line {line})"),
            None => label,
        }
    }

    /// Where `obj` is in the file (objects built in code: in the order of [`Obj`]), to tell which of two
    /// objects comes later.
    pub(super) fn position(&self, obj: Obj) -> (usize, Obj) {
        (self.tables.get(&obj).copied().unwrap_or(usize::MAX), obj)
    }

    pub(super) fn finish(mut self, origin: &str) -> Result<(), Vec<ConfigError>> {
        if self.errors.is_empty() {
            return Ok(());
        }
        self.errors.sort_by_key(|(line, _)| line.unwrap_or(usize::MAX));
        Err(self
            .errors
            .into_iter()
            .map(|(line, message)| ConfigError { origin: origin.to_string(), line, message })
            .collect())
    }
}

/// "port c1", or "port #2" when the name is not a valid one (it is reported separately).
pub(super) fn named(what: &str, index: usize, name: &str, max: usize) -> String {
    if name_problem(name, max).is_none() {
        format!("{what} {name}")
    } else {
        format!("{what} #{}", index + 1)
    }
}

/// "route 10.0.0.0/8" (the prefix as written), or "route #2" when the prefix is missing or unusable.
pub(super) fn route_named(index: usize, prefix: Option<Ipv4Net>) -> String {
    match prefix {
        Some(prefix) => format!("route {prefix}"),
        None => format!("route #{}", index + 1),
    }
}

pub(super) fn label(cfg: &Config, d: &Diags, obj: Obj) -> String {
    match obj {
        Obj::Switch => "switch".to_string(),
        Obj::Network(i) => {
            named("network", i, cfg.networks.get(i).map_or("", |n| n.name.as_str()), limits::NETWORK_NAME_MAX)
        }
        Obj::Port(i) => named("port", i, cfg.ports.get(i).map_or("", |p| p.name.as_str()), limits::PORT_NAME_MAX),
        Obj::Route(i) => route_named(i, cfg.routes.get(i).map(|r| r.prefix).filter(|_| !d.is_broken(obj, "prefix"))),
        Obj::Publish(i) => publish_named(i),
        Obj::Nat => "nat".to_string(),
        Obj::Conntrack => "conntrack".to_string(),
        Obj::Cluster => "cluster".to_string(),
    }
}

/// "publish #2": publish rules have no name; they are counted from 1 in file order.
pub(super) fn publish_named(index: usize) -> String {
    format!("publish #{}", index + 1)
}

/// Longest part of a user's string quoted in a message, in characters.
const SHOW_MAX: usize = 40;

pub(super) fn truncate(s: &str) -> String {
    if s.chars().count() > SHOW_MAX {
        format!("{}…", s.chars().take(SHOW_MAX).collect::<String>())
    } else {
        s.to_string()
    }
}

/// A user's string, quoted and escaped, shortened if long.
pub(super) fn show(s: &str) -> String {
    if s.chars().count() > SHOW_MAX {
        format!("{:?}…", s.chars().take(SHOW_MAX).collect::<String>())
    } else {
        format!("{s:?}")
    }
}

pub(super) fn out_of_range<T: fmt::Display>(
    field: &str,
    value: impl fmt::Display,
    range: &RangeInclusive<T>,
) -> String {
    format!("{field} {value} is out of range {}..={}", range.start(), range.end())
}

pub(super) fn kinds_list() -> String {
    PortKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

/// What is wrong with a network or port name, as "name …".
pub(super) fn name_problem(name: &str, max: usize) -> Option<String> {
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() {
        Some("name must not be empty".to_string())
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Some(format!("name {} may only contain letters, digits, '_', '.' and '-'", show(name)))
    } else if !first_ok {
        Some(format!("name {} must start with a letter or digit", show(name)))
    } else if name.len() > max {
        Some(format!("name {} is longer than {max} characters", show(name)))
    } else {
        None
    }
}

/// What is wrong with an interface name, as "ifname …" (the rules are [`IfName::new`]'s).
pub(super) fn ifname_problem(ifname: &str) -> Option<String> {
    let problem = match IfName::new(ifname).err()? {
        BadIfName::Empty => return Some("ifname must not be empty".to_string()),
        BadIfName::TooLong => format!("is longer than {} bytes", IfName::MAX_LEN),
        BadIfName::Reserved => "is not a valid interface name".to_string(),
        BadIfName::BadChar => "must not contain '/', ':', whitespace or NUL".to_string(),
    };
    Some(format!("ifname {} {problem}", show(ifname)))
}
