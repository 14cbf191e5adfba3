//! [`PullRef`]: what `cairn image pull` is given, parsed once.
//!
//! The registry is always explicit (`registry.site.internal:5000/app:1`):
//! Cairn has no implied default registry, so a reference can never reach a
//! registry the operator did not name.

use std::fmt;
use std::str::FromStr;

use oci::{Digest, RefName};

use crate::config::RegistryHost;

/// Tag or digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullTarget {
    /// A tag (`latest` when none is written).
    Tag(String),
    /// A manifest digest; the fetched manifest must hash to it.
    Digest(Digest),
}

/// `host[:port]/repository[:tag|@digest]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRef {
    /// The registry.
    pub registry: RegistryHost,
    /// The repository path (`team/app`).
    pub repository: String,
    /// What in it.
    pub target: PullTarget,
}

/// Why a string is not a pull reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullRefError {
    /// No `host/` in front.
    #[error("{0:?} names no registry: write it as HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]")]
    NoRegistry(String),
    /// The host is not a registry host.
    #[error("{value:?} has an invalid registry host: {why}")]
    Registry {
        /// The input.
        value: String,
        /// Why.
        why: String,
    },
    /// The repository path breaks the distribution spec's grammar.
    #[error("{0:?} has an invalid repository (lower-case components of letters, digits and . _ -)")]
    Repository(String),
    /// The tag breaks the grammar.
    #[error(
        "{0:?} has an invalid tag (up to 128 letters, digits and . _ -, not starting with . or -)"
    )]
    Tag(String),
    /// The digest is not a sha256 digest.
    #[error("{0:?} has an invalid digest (only sha256:<64 hex> is supported)")]
    Digest(String),
    /// Too long to be a reference name in the store.
    #[error("{0:?} is longer than 255 bytes")]
    TooLong(String),
    /// Valid for a registry, but not as the name the store records (the
    /// image-spec ref-name grammar allows one separator between letters
    /// and digits, so a tag such as `v1_` or `a..b` cannot be recorded).
    #[error(
        "{0:?} cannot be recorded as an image name (one of . _ - : between letters and digits)"
    )]
    Unrecordable(String),
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
    if c.is_empty() {
        return false;
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !b.first().copied().is_some_and(alnum) || !b.last().copied().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let x = b.get(i).copied().unwrap_or(0);
        if alnum(x) {
            i += 1;
            continue;
        }
        let run_end = b
            .iter()
            .skip(i)
            .position(|y| alnum(*y))
            .map_or(b.len(), |p| i + p);
        let sep = c.get(i..run_end).unwrap_or("");
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|y| y == b'-');
        if !ok {
            return false;
        }
        i = run_end;
    }
    true
}

/// Whether `name` is a repository path by the distribution spec's
/// grammar (lower-case components separated by `/`).
pub fn valid_repository(name: &str) -> bool {
    !name.is_empty() && name.split('/').all(valid_component)
}

/// Whether `t` is a tag by the distribution spec's grammar.
pub fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
        })
}

impl FromStr for PullRef {
    type Err = PullRefError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let owned = || value.to_owned();
        if value.len() > 255 {
            return Err(PullRefError::TooLong(owned()));
        }
        let (host, rest) = value
            .split_once('/')
            .ok_or_else(|| PullRefError::NoRegistry(owned()))?;
        // As docker does: a first component is a registry only if it looks
        // like one; here anything else is refused instead of defaulted.
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(PullRefError::NoRegistry(owned()));
        }
        let registry =
            RegistryHost::try_from(host.to_owned()).map_err(|e| PullRefError::Registry {
                value: owned(),
                why: e.to_string(),
            })?;
        let (name, target) = match rest.split_once('@') {
            Some((name, digest)) => (
                name,
                PullTarget::Digest(
                    Digest::parse(digest).map_err(|_| PullRefError::Digest(owned()))?,
                ),
            ),
            None => {
                // A ':' after the last '/' starts the tag.
                let last = rest.rfind('/').map_or(0, |i| i + 1);
                match rest.get(last..).and_then(|tail| tail.find(':')) {
                    Some(colon) => {
                        let at = last + colon;
                        let tag = rest.get(at + 1..).unwrap_or("");
                        if !valid_tag(tag) {
                            return Err(PullRefError::Tag(owned()));
                        }
                        (
                            rest.get(..at).unwrap_or(""),
                            PullTarget::Tag(tag.to_owned()),
                        )
                    }
                    None => (rest, PullTarget::Tag("latest".to_owned())),
                }
            }
        };
        if !valid_repository(name) {
            return Err(PullRefError::Repository(owned()));
        }
        let parsed = Self {
            registry,
            repository: name.to_owned(),
            target,
        };
        if parsed.store_name().is_none() {
            return Err(PullRefError::Unrecordable(owned()));
        }
        Ok(parsed)
    }
}

impl fmt::Display for PullRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        match &self.target {
            PullTarget::Tag(tag) => write!(f, ":{tag}"),
            PullTarget::Digest(digest) => write!(f, "@{digest}"),
        }
    }
}

impl PullRef {
    /// The name the store records the image under: the reference written
    /// out in full (`:latest` made explicit).
    pub fn store_name(&self) -> Option<RefName> {
        RefName::parse(&self.to_string()).ok()
    }

    /// The same repository and target on another registry (a mirror).
    pub fn on(&self, host: &RegistryHost) -> oci_client::Reference {
        match &self.target {
            PullTarget::Tag(tag) => oci_client::Reference::with_tag(
                host.to_string(),
                self.repository.clone(),
                tag.clone(),
            ),
            PullTarget::Digest(digest) => oci_client::Reference::with_digest(
                host.to_string(),
                self.repository.clone(),
                digest.to_string(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tags_digests_and_ports_parse_and_latest_is_explicit() {
        let r: PullRef = "registry.site.internal:5000/team/app:1.2".parse().unwrap();
        assert_eq!(r.registry.as_str(), "registry.site.internal:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.target, PullTarget::Tag("1.2".to_owned()));
        let latest: PullRef = "127.0.0.1:5000/app".parse().unwrap();
        assert_eq!(latest.to_string(), "127.0.0.1:5000/app:latest");
        assert!(latest.store_name().is_some());
        let hex = "a".repeat(64);
        let by_digest: PullRef = format!("registry.site.internal/app@sha256:{hex}")
            .parse()
            .unwrap();
        assert!(matches!(by_digest.target, PullTarget::Digest(_)));
        assert!(by_digest.store_name().is_some());
    }

    #[test]
    fn a_reference_without_a_registry_is_refused_not_defaulted() {
        for bad in ["redis", "redis:7", "library/redis:7", "team/app"] {
            assert!(
                matches!(bad.parse::<PullRef>(), Err(PullRefError::NoRegistry(_))),
                "{bad}"
            );
        }
        for bad in [
            "registry.site.internal/",
            "registry.site.internal/App",
            "registry.site.internal/app:",
            "registry.site.internal/app:-x",
            "registry.site.internal/app@sha256:abc",
            "registry.site.internal/a//b",
            "Registry.site.internal/app",
        ] {
            assert!(bad.parse::<PullRef>().is_err(), "{bad} accepted");
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_round_trips(s in "\\PC{0,120}") {
            if let Ok(r) = s.parse::<PullRef>() {
                let again: PullRef = r.to_string().parse().unwrap();
                prop_assert_eq!(again, r);
            }
        }

        #[test]
        fn generated_references_parse(
            host in "[a-z]{1,8}\\.site\\.internal(:[1-9][0-9]{0,3})?",
            repo in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}",
            tag in "[a-zA-Z0-9]{1,5}([._-][a-zA-Z0-9]{1,5}){0,2}",
        ) {
            let text = format!("{host}/{repo}:{tag}");
            let parsed = text.parse::<PullRef>();
            prop_assert!(parsed.is_ok(), "{:?}", parsed);
            prop_assert!(parsed.unwrap().store_name().is_some());
        }
    }
}
