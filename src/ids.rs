//! Typed identifiers. A device name, a PDU name and a job id are all strings on the wire, but
//! mixing them up is a bug the compiler should catch. Names also end up in file paths (journals,
//! sockets), so they are restricted to a safe alphabet when parsed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is longer than {max} characters")]
    TooLong { max: usize },
    #[error(
        "name {0:?} may only contain letters, digits, '.', '_' and '-', and must not start with '.' or '-'"
    )]
    BadCharacter(String),
}

/// Longest name accepted; keeps paths and socket names well under system limits.
pub const MAX_NAME_LEN: usize = 64;

fn check_name(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { max: MAX_NAME_LEN });
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let first_ok = !s.starts_with(['.', '-']);
    if !first_ok || !s.chars().all(ok_char) {
        return Err(NameError::BadCharacter(s.to_string()));
    }
    Ok(())
}

macro_rules! safe_name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `s` as a name usable in paths and on the wire.
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                check_name(&s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

safe_name!(
    /// A device under test, as named in the inventory (`[[device]] name`).
    DeviceName
);
safe_name!(
    /// A power distribution unit, as named in the inventory (`[[pdu]] name`).
    PduName
);
safe_name!(
    /// The worker (dispatcher machine) name, as the LAVA master knows it.
    WorkerName
);

/// A job id as the LAVA master (or `labd run-job`) assigns it: digits, optionally `N.M` for a
/// Multi-Node sub-job's display id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        check_name(&s)?;
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who sent input to a console: shown in the journal next to every input record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientId(pub String);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lab_style_names() {
        for n in ["bbb01", "rpi-4b_02", "qemu.x86", "A1"] {
            assert!(DeviceName::new(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn refuses_names_that_would_escape_paths() {
        for n in ["", "../etc", "a/b", ".hidden", "-rf", "sp ace", "ü"] {
            assert!(DeviceName::new(n).is_err(), "{n}");
        }
        assert_eq!(
            DeviceName::new("x".repeat(65)),
            Err(NameError::TooLong { max: 64 })
        );
    }
}
