//! How operators name an image on the API and the command line.

use std::fmt;
use std::str::FromStr;

use oci::{Digest, DigestError, RefName, RefNameError};

/// An image named by reference (`redis:latest`, as in an archive's
/// `org.opencontainers.image.ref.name`) or by its manifest digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// A reference name.
    Name(RefName),
    /// A manifest digest.
    Digest(Digest),
}

/// Why a string names no image.
#[derive(Debug, thiserror::Error)]
pub enum ImageRefError {
    /// It starts like a digest but is not one.
    #[error("{value:?} is not a sha256 digest")]
    Digest {
        /// The input.
        value: String,
        /// The parser's verdict.
        #[source]
        source: DigestError,
    },
    /// It is not a reference name.
    #[error("{value:?} is not an image reference")]
    Name {
        /// The input.
        value: String,
        /// The parser's verdict.
        #[source]
        source: RefNameError,
    },
}

impl FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        // `sha256:…` is also valid reference-name grammar; a digest wins so
        // that a digest can never be shadowed by a name.
        if value.starts_with(oci::digest::SHA256_PREFIX) {
            Digest::parse(value)
                .map(ImageRef::Digest)
                .map_err(|source| ImageRefError::Digest {
                    value: value.to_owned(),
                    source,
                })
        } else {
            RefName::parse(value)
                .map(ImageRef::Name)
                .map_err(|source| ImageRefError::Name {
                    value: value.to_owned(),
                    source,
                })
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Name(name) => name.fmt(f),
            ImageRef::Digest(digest) => digest.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_sha256_prefix_is_always_a_digest() {
        let hex = "a".repeat(64);
        let digest: ImageRef = format!("sha256:{hex}").parse().unwrap();
        assert!(matches!(digest, ImageRef::Digest(_)));
        assert!("sha256:abc".parse::<ImageRef>().is_err());
        assert!(matches!(
            "redis:latest".parse::<ImageRef>().unwrap(),
            ImageRef::Name(_)
        ));
        assert!("".parse::<ImageRef>().is_err());
        assert!("../etc".parse::<ImageRef>().is_err());
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_round_trips(s in "\\PC{0,80}") {
            if let Ok(r) = s.parse::<ImageRef>() {
                prop_assert_eq!(r.to_string(), s);
            }
        }

        #[test]
        fn names_from_the_grammar_parse_as_names(
            name in "[a-z0-9]{1,10}([._-][a-z0-9]{1,10}){0,3}(:[a-z0-9]{1,8})?"
        ) {
            let parsed = name.parse::<ImageRef>();
            prop_assert!(matches!(parsed, Ok(ImageRef::Name(_))), "{:?}", parsed);
        }
    }
}
