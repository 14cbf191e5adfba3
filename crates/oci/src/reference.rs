//! Reference names as stored in an OCI layout's
//! `org.opencontainers.image.ref.name` annotation (`busybox:latest`,
//! `library/redis:7`).

use std::fmt;

/// The annotation an OCI layout uses to name an image in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// A reference name following the image-spec grammar:
/// `component ("/" component)*`, `component = alnum+ (separator alnum+)*`,
/// `separator = [-._:@+] | "--"`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RefName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefNameError {
    #[error("reference name is empty")]
    Empty,
    #[error("reference name {0:?} is longer than 255 bytes")]
    TooLong(String),
    #[error(
        "reference name {0:?} is not `name[:tag]` made of letters, digits and -._:@+ separators"
    )]
    Invalid(String),
}

fn valid_component(c: &str) -> bool {
    // alnum runs separated by exactly one separator char, or "--".
    let bytes = c.as_bytes();
    let mut i = 0;
    let mut need_alnum = true;
    while i < bytes.len() {
        let b = bytes.get(i).copied().unwrap_or(0);
        if b.is_ascii_alphanumeric() {
            need_alnum = false;
            i += 1;
            continue;
        }
        if need_alnum {
            return false;
        }
        if b == b'-' && bytes.get(i + 1) == Some(&b'-') {
            i += 2;
        } else if matches!(b, b'-' | b'.' | b'_' | b':' | b'@' | b'+') {
            i += 1;
        } else {
            return false;
        }
        need_alnum = true;
    }
    !need_alnum
}

impl RefName {
    pub fn parse(s: &str) -> Result<Self, RefNameError> {
        if s.is_empty() {
            return Err(RefNameError::Empty);
        }
        if s.len() > 255 {
            return Err(RefNameError::TooLong(s.to_owned()));
        }
        if s.split('/').all(valid_component) {
            Ok(Self(s.to_owned()))
        } else {
            Err(RefNameError::Invalid(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for RefName {
    type Error = RefNameError;
    fn try_from(s: &str) -> Result<Self, RefNameError> {
        Self::parse(s)
    }
}

impl std::str::FromStr for RefName {
    type Err = RefNameError;
    fn from_str(s: &str) -> Result<Self, RefNameError> {
        Self::parse(s)
    }
}

impl fmt::Display for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn usual_references_are_accepted() {
        for ok in [
            "busybox:latest",
            "library/redis:7.0",
            "etcd-server:3.4",
            "a",
            "x--y",
            "v1.0+build",
        ] {
            assert!(RefName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            ":tag",
            "name:",
            "a//b",
            "a..b",
            "white space",
            "/abs",
            "a---b",
        ] {
            assert!(RefName::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_names_never_panic(s in ".{0,300}") {
            if let Ok(r) = RefName::parse(&s) {
                prop_assert_eq!(r.as_str(), s.as_str());
            }
        }
    }
}
