//! Content digests: the `sha256:<hex>` names every blob is stored and
//! verified under, and the streaming readers/writers that compute them.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// The only algorithm Cairn accepts (the one every registry and skopeo use).
pub const SHA256_PREFIX: &str = "sha256:";

/// A `sha256:<64 lowercase hex>` content digest, checked once when parsed.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a digest Cairn accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} has no algorithm prefix (expected sha256:<64 hex digits>)")]
    NoAlgorithm(String),
    #[error("digest {value:?} uses algorithm {algorithm:?}; only sha256 is supported")]
    UnsupportedAlgorithm { value: String, algorithm: String },
    #[error("digest {value:?} has {len} hex digits after sha256:, expected 64")]
    WrongLength { value: String, len: usize },
    #[error("digest {0:?} has a character that is not a lowercase hex digit")]
    NotLowercaseHex(String),
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let Some((algorithm, hex)) = value.split_once(':') else {
            return Err(DigestError::NoAlgorithm(value.to_owned()));
        };
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm {
                value: value.to_owned(),
                algorithm: algorithm.to_owned(),
            });
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::NotLowercaseHex(value.to_owned()));
        }
        if hex.len() != 64 {
            return Err(DigestError::WrongLength {
                value: value.to_owned(),
                len: hex.len(),
            });
        }
        Ok(Self {
            hex: hex.to_owned(),
        })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    fn from_hasher(hasher: Sha256) -> Self {
        Self {
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// The 64 hex digits, which name the blob file under `blobs/sha256/`.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Converts from oci-spec's more permissive digest type.
    pub fn from_spec(spec: &oci_spec::image::Digest) -> Result<Self, DigestError> {
        Self::parse(spec.as_ref())
    }

    /// The oci-spec form, for building descriptors.
    pub fn to_spec(&self) -> oci_spec::image::Digest {
        oci_spec::image::Digest::from(
            oci_spec::image::Sha256Digest::from_str(&self.hex).unwrap_or_else(|_| {
                unreachable!("a parsed digest is always 64 lowercase hex digits")
            }),
        )
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, DigestError> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for Digest {
    type Error = DigestError;
    fn try_from(s: &str) -> Result<Self, DigestError> {
        Self::parse(s)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHA256_PREFIX}{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The content does not match what its descriptor promised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("content has digest {actual}, expected {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("content is {actual} bytes, expected {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("content is longer than the {expected} bytes declared")]
    LongerThanDeclared { expected: u64 },
}

/// What is expected of a stream: its digest, and its size when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub digest: Digest,
    pub size: Option<u64>,
}

/// Hashes everything read through it; [`HashingReader::verify`] then
/// compares against what was expected. Reading past an expected size is an
/// error at once, so a lying descriptor cannot make us read forever.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: Option<u64>,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit: None,
        }
    }

    /// Refuses (with an I/O error of kind `InvalidData`) to yield more than
    /// `limit` bytes.
    pub fn with_limit(inner: R, limit: u64) -> Self {
        Self {
            limit: Some(limit),
            ..Self::new(inner)
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Reads the rest of the stream (so trailing padding is hashed too).
    pub fn drain(&mut self) -> io::Result<u64> {
        io::copy(self, &mut io::sink())
    }

    /// The digest and size of what was read.
    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_hasher(self.hasher), self.count)
    }

    /// Drains the stream, then checks digest and size.
    pub fn verify(mut self, expected: &Expected) -> io::Result<Result<(), VerifyError>> {
        self.drain()?;
        let (actual, size) = self.finish();
        Ok(check(expected, &actual, size))
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

/// Compares a computed digest and size with the expected ones.
pub fn check(expected: &Expected, actual: &Digest, size: u64) -> Result<(), VerifyError> {
    if let Some(want) = expected.size
        && want != size
    {
        return Err(VerifyError::SizeMismatch {
            expected: want,
            actual: size,
        });
    }
    if &expected.digest != actual {
        return Err(VerifyError::DigestMismatch {
            expected: expected.digest.clone(),
            actual: actual.clone(),
        });
    }
    Ok(())
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = buf.get(..n).unwrap_or_default();
        self.hasher.update(got);
        self.count = self.count.saturating_add(n as u64);
        if let Some(limit) = self.limit
            && self.count > limit
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("stream is longer than the {limit} bytes its descriptor declares"),
            ));
        }
        Ok(n)
    }
}

/// Hashes everything written through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The digest and size of what was written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (Digest::from_hasher(self.hasher), self.count, self.inner)
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        self.count = self.count.saturating_add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn the_digest_of_nothing_is_the_well_known_one() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
        assert_eq!(Digest::parse(EMPTY).unwrap(), Digest::of(b""));
    }

    #[test]
    fn errors_name_what_is_wrong() {
        assert!(matches!(
            Digest::parse("abc"),
            Err(DigestError::NoAlgorithm(_))
        ));
        assert!(matches!(
            Digest::parse("sha512:00"),
            Err(DigestError::UnsupportedAlgorithm { .. })
        ));
        assert!(matches!(
            Digest::parse("sha256:00"),
            Err(DigestError::WrongLength { len: 2, .. })
        ));
        let upper = EMPTY.to_uppercase().replace("SHA256", "sha256");
        assert!(matches!(
            Digest::parse(&upper),
            Err(DigestError::NotLowercaseHex(_))
        ));
    }

    #[test]
    fn a_reader_with_the_wrong_content_fails_verification() {
        let expected = Expected {
            digest: Digest::of(b"hello"),
            size: Some(5),
        };
        let ok = HashingReader::new(&b"hello"[..]).verify(&expected).unwrap();
        assert_eq!(ok, Ok(()));
        let bad = HashingReader::new(&b"hellO"[..]).verify(&expected).unwrap();
        assert!(matches!(bad, Err(VerifyError::DigestMismatch { .. })));
        let short = HashingReader::new(&b"hell"[..]).verify(&expected).unwrap();
        assert!(matches!(short, Err(VerifyError::SizeMismatch { .. })));
    }

    #[test]
    fn reading_past_the_declared_size_is_an_error() {
        let mut r = HashingReader::with_limit(&b"0123456789"[..], 4);
        let err = r.drain().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn writer_and_reader_agree() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"layer bytes").unwrap();
        let (d, n, inner) = w.finish();
        assert_eq!(n, 11);
        assert_eq!(d, Digest::of(&inner));
        assert_eq!(d.to_spec().to_string(), d.to_string());
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic_and_valid_ones_round_trip(s in ".{0,80}") {
            if let Ok(d) = Digest::parse(&s) {
                prop_assert_eq!(d.to_string(), s);
            }
        }

        #[test]
        fn every_hex_digest_round_trips(bytes in proptest::collection::vec(any::<u8>(), 32)) {
            let text = format!("sha256:{}", hex::encode(&bytes));
            let d = Digest::parse(&text).unwrap();
            prop_assert_eq!(d.to_string(), text.clone());
            prop_assert_eq!(Digest::from_spec(&d.to_spec()).unwrap(), d);
        }
    }
}
