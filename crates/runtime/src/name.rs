//! The container name, parsed once.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A container's name: `[a-z0-9][a-z0-9_.-]{0,62}`.
///
/// It names the container directory, the cgroup and libcontainer's
/// container id, so it must be a safe single path component: no `/`, no
/// leading dot, nothing a shell or a cgroup file would misread.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerName(String);

/// Why a string is not a container name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerNameError {
    #[error("container name is empty")]
    Empty,
    #[error("container name {0:?} is longer than 63 characters")]
    TooLong(String),
    #[error("container name {0:?} must start with a lower-case letter or a digit")]
    BadStart(String),
    #[error("container name {name:?} contains {ch:?}; allowed are a-z, 0-9, '_', '.', '-'")]
    BadChar { name: String, ch: char },
}

impl ContainerName {
    /// The longest name accepted.
    pub const MAX_LEN: usize = 63;

    /// The name as a string (also a valid path component).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ContainerName {
    type Error = ContainerNameError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        let Some(first) = name.chars().next() else {
            return Err(ContainerNameError::Empty);
        };
        if name.len() > Self::MAX_LEN {
            return Err(ContainerNameError::TooLong(name));
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(ContainerNameError::BadStart(name));
        }
        if let Some(ch) = name.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
        }) {
            return Err(ContainerNameError::BadChar { name, ch });
        }
        Ok(Self(name))
    }
}

impl TryFrom<&str> for ContainerName {
    type Error = ContainerNameError;

    fn try_from(name: &str) -> Result<Self, Self::Error> {
        Self::try_from(name.to_owned())
    }
}

impl std::str::FromStr for ContainerName {
    type Err = ContainerNameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::try_from(name)
    }
}

impl From<ContainerName> for String {
    fn from(name: ContainerName) -> Self {
        name.0
    }
}

impl fmt::Display for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ContainerName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_that_are_safe_path_components_are_accepted() {
        for ok in ["a", "0", "redis", "web-1", "a.b_c-d", &"x".repeat(63)] {
            assert!(ContainerName::try_from(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn names_that_could_escape_or_confuse_are_refused() {
        assert_eq!(ContainerName::try_from(""), Err(ContainerNameError::Empty));
        for bad in [
            ".", "..", ".hidden", "-x", "_x", "a/b", "A", "a b", "ü", "a\0",
        ] {
            assert!(ContainerName::try_from(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            ContainerName::try_from("x".repeat(64)),
            Err(ContainerNameError::TooLong(_))
        ));
    }

    #[test]
    fn json_refuses_an_invalid_name() {
        assert!(serde_json::from_str::<ContainerName>("\"../etc\"").is_err());
        let name: ContainerName = serde_json::from_str("\"web\"").expect("valid");
        assert_eq!(serde_json::to_string(&name).expect("serialize"), "\"web\"");
    }

    proptest! {
        #[test]
        fn every_accepted_name_is_a_single_plain_path_component(s in "\\PC{0,70}") {
            if let Ok(name) = ContainerName::try_from(s.as_str()) {
                let p = std::path::Path::new(name.as_str());
                prop_assert_eq!(p.components().count(), 1);
                prop_assert!(!name.as_str().starts_with('.'));
                prop_assert!(name.as_str().len() <= 63);
            }
        }
    }
}
