//! [`IfName`]: a Linux network interface name, checked once. The configuration reports a bad `ifname` with
//! these rules, and the port back-ends that create or attach to an interface take an `IfName`, so they never
//! see a name the kernel would refuse or misread.
//!
//! Threads: a plain value.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A valid Linux interface name: 1 to [`IfName::MAX_LEN`] bytes, not `.` or `..`, without `/`, `:`, whitespace
/// or NUL (the rules of the kernel's `dev_valid_name`, plus `:`, which would name an alias).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfName(String);

/// Why a string is not an interface name ([`IfName::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadIfName {
    /// The empty string.
    #[error("an interface name must not be empty")]
    Empty,
    /// Longer than [`IfName::MAX_LEN`] bytes.
    #[error("an interface name is at most {} bytes", IfName::MAX_LEN)]
    TooLong,
    /// `.` or `..`.
    #[error("`.` and `..` are not interface names")]
    Reserved,
    /// Contains `/`, `:`, whitespace or NUL.
    #[error("an interface name must not contain '/', ':', whitespace or NUL")]
    BadChar,
}

impl IfName {
    /// Longest name, in bytes: the kernel's `IFNAMSIZ` (16) minus the terminating NUL.
    pub const MAX_LEN: usize = 15;

    /// `name`, if it is a valid interface name.
    pub fn new(name: &str) -> Result<IfName, BadIfName> {
        if name.is_empty() {
            Err(BadIfName::Empty)
        } else if name.len() > IfName::MAX_LEN {
            Err(BadIfName::TooLong)
        } else if name == "." || name == ".." {
            Err(BadIfName::Reserved)
        } else if name.chars().any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace()) {
            Err(BadIfName::BadChar)
        } else {
            Ok(IfName(name.to_string()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for IfName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl FromStr for IfName {
    type Err = BadIfName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IfName::new(s)
    }
}

impl TryFrom<&str> for IfName {
    type Error = BadIfName;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        IfName::new(s)
    }
}

impl TryFrom<&String> for IfName {
    type Error = BadIfName;
    fn try_from(s: &String) -> Result<Self, Self::Error> {
        IfName::new(s)
    }
}

impl Serialize for IfName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IfName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IfName::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_linux_accepts_and_refuses_the_rest() {
        for good in ["eth0", "vs-c1", "a", "x.y_z-1", "fifteen-bytes15", "é"] {
            assert_eq!(IfName::new(good).map(|n| n.to_string()), Ok(good.to_string()), "{good:?}");
        }
        let bad = [
            ("", BadIfName::Empty),
            ("sixteen-bytes-16", BadIfName::TooLong),
            ("éééééééé", BadIfName::TooLong),
            (".", BadIfName::Reserved),
            ("..", BadIfName::Reserved),
            ("a/b", BadIfName::BadChar),
            ("eth0:1", BadIfName::BadChar),
            ("a b", BadIfName::BadChar),
            ("a\tb", BadIfName::BadChar),
            ("a\0b", BadIfName::BadChar),
        ];
        for (name, why) in bad {
            assert_eq!(IfName::new(name), Err(why), "{name:?}");
        }
    }

    #[test]
    fn serde_form_is_the_string_and_is_checked() {
        let n = IfName::new("vs-c1").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"vs-c1\"");
        assert_eq!(serde_json::from_str::<IfName>("\"vs-c1\"").unwrap(), n);
        assert!(serde_json::from_str::<IfName>("\"a/b\"").is_err());
    }
}
