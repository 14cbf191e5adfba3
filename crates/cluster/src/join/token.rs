//! Join tokens: `<id>.<secret>`, kubeadm's bootstrap-token format.
//!
//! - The **id** is 6 characters and the **secret** 16, both from `[a-z0-9]`.
//!   Sixteen symbols of 36 give about 82 bits, beyond online guessing, and
//!   the alphabet survives shells, YAML and being read out over the phone.
//! - The id is public: it names the record (`tokens/<id>` in the replicated
//!   store), appears in `cairn cluster token list` and in logs. The secret is
//!   shown once, when the token is created, and is never stored, logged or
//!   echoed: the record keeps its SHA-256, [`JoinToken`]'s `Debug` prints
//!   `<redacted>`, and parse errors name positions and lengths, never secret
//!   characters.
//! - A [`TokenRecord`] carries the expiry, an optional use limit, a use count
//!   and a revoked flag. [`TokenRecord::check`] decides whether a presented
//!   token is accepted at `now`; [`TokenRecord::record_use`] counts a use,
//!   and the caller writes the result back with compare-and-set on the
//!   record's revision, so a token with one use left admits one node even
//!   when two join at once.
//!
//! Times in the record are whole **unix seconds** (`u64`): postcard encodes
//! them compactly, every node reads them the same way, and a second is finer
//! than any token lifetime. A token expires *at* `expires_at`: a token
//! presented at exactly that second is refused, so a one-hour token is good
//! for one hour and not one hour and a second.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Key, Namespace};

/// Characters of the token id.
pub const ID_LEN: usize = 6;
/// Characters of the token secret.
pub const SECRET_LEN: usize = 16;
/// Lifetime of a token when the operator does not choose one.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);
/// Shortest lifetime accepted: less cannot reasonably be typed into a
/// joining node's console in time.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// Longest lifetime accepted: a join credential should not outlive a week.
/// Zero-touch edge installs that need longer create a token per batch.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Longest description kept in a record, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 256;

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn is_token_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// The store key of a token's record: `tokens/<id>`.
pub fn store_key(id: &TokenId) -> Key {
    // A token id is six characters of [a-z0-9]: always a valid key.
    Namespace::Tokens
        .key(id.as_str())
        .unwrap_or_else(|_| unreachable!("token ids are valid keys"))
}

/// The public half of a token: six characters of `[a-z0-9]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenId(String);

impl TokenId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({})", self.0)
    }
}

/// Why a text is not a token id (for `cairn cluster token revoke ID`, and
/// for records read back from the store).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseTokenIdError {
    /// The id does not have [`ID_LEN`] characters.
    #[error("token id has {len} characters, expected {ID_LEN}")]
    Length {
        /// Characters found.
        len: usize,
    },
    /// A character outside `[a-z0-9]`.
    #[error("token id has {found:?} at position {position}, only a-z and 0-9 are allowed")]
    Character {
        /// The offending character (the id is public, so it may be shown).
        found: char,
        /// Its 0-based character position in the id.
        position: usize,
    },
}

impl FromStr for TokenId {
    type Err = ParseTokenIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let len = s.chars().count();
        if len != ID_LEN {
            return Err(ParseTokenIdError::Length { len });
        }
        if let Some((position, found)) = s.chars().enumerate().find(|&(_, c)| !is_token_char(c)) {
            return Err(ParseTokenIdError::Character { found, position });
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for TokenId {
    type Error = ParseTokenIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TokenId> for String {
    fn from(id: TokenId) -> Self {
        id.0
    }
}

/// A join token, `<id>.<secret>`. `Display` prints the whole token (that is
/// what the operator copies); `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    id: TokenId,
    secret: String,
}

impl JoinToken {
    /// Draws a new token from `fill`, which must fill its buffer with
    /// uniformly random bytes (the agent passes `getrandom`).
    ///
    /// Bytes are mapped to the alphabet by rejection sampling (bytes ≥ 252
    /// are drawn again), so every character is exactly uniform.
    pub fn generate<E>(
        mut fill: impl FnMut(&mut [u8]) -> Result<(), E>,
    ) -> Result<Self, GenerateTokenError<E>>
    where
        E: std::error::Error + 'static,
    {
        // 252 = 7 * 36: the largest multiple of the alphabet size below 256.
        const ACCEPT_BELOW: u8 = 252;
        // A healthy source rejects 4/256 of its bytes; 64 rounds of 64 bytes
        // without 22 usable ones means the source is broken, not unlucky.
        const ROUNDS: usize = 64;
        let mut chars = String::with_capacity(ID_LEN + SECRET_LEN);
        let mut buf = [0_u8; 64];
        for _ in 0..ROUNDS {
            fill(&mut buf).map_err(GenerateTokenError::Source)?;
            for &b in buf.iter().filter(|&&b| b < ACCEPT_BELOW) {
                chars.push(char::from(ALPHABET[usize::from(b % 36)]));
                if chars.len() == ID_LEN + SECRET_LEN {
                    let secret = chars.split_off(ID_LEN);
                    return Ok(Self {
                        id: TokenId(chars),
                        secret,
                    });
                }
            }
        }
        Err(GenerateTokenError::SourceStuck)
    }

    /// The public id.
    pub fn id(&self) -> &TokenId {
        &self.id
    }

    fn secret_hash(&self) -> SecretHash {
        SecretHash(Sha256::digest(self.secret.as_bytes()).into())
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id.as_str())
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a new token could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum GenerateTokenError<E: std::error::Error + 'static> {
    /// The random source failed.
    #[error("reading random bytes for a join token")]
    Source(#[source] E),
    /// The random source kept returning bytes outside the usable range.
    #[error("random source produced no usable bytes for a join token")]
    SourceStuck,
}

/// Why a text is not a join token. No variant carries or prints any part of
/// the secret: a bad secret character is named by its position only.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseJoinTokenError {
    /// Nothing was given.
    #[error("join token is empty, expected <id>.<secret>")]
    Empty,
    /// No `.` between id and secret.
    #[error("join token has no '.', expected <id>.<secret>")]
    MissingDot,
    /// The part before the first `.` is not a token id.
    #[error("join token id is invalid")]
    Id(#[source] ParseTokenIdError),
    /// The part after the first `.` has the wrong length.
    #[error("join token secret has {len} characters, expected {SECRET_LEN}")]
    SecretLength {
        /// Characters found.
        len: usize,
    },
    /// The secret has a character outside `[a-z0-9]` (including a second
    /// `.`). The character itself is not shown.
    #[error(
        "join token secret has an invalid character at position {position}, only a-z and 0-9 are allowed"
    )]
    SecretCharacter {
        /// 0-based character position in the secret.
        position: usize,
    },
}

impl FromStr for JoinToken {
    type Err = ParseJoinTokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ParseJoinTokenError::Empty);
        }
        let (id, secret) = s.split_once('.').ok_or(ParseJoinTokenError::MissingDot)?;
        let id: TokenId = id.parse().map_err(ParseJoinTokenError::Id)?;
        let len = secret.chars().count();
        if len != SECRET_LEN {
            return Err(ParseJoinTokenError::SecretLength { len });
        }
        if let Some(position) = secret.chars().position(|c| !is_token_char(c)) {
            return Err(ParseJoinTokenError::SecretCharacter { position });
        }
        Ok(Self {
            id,
            secret: secret.to_owned(),
        })
    }
}

/// SHA-256 of a token secret.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SecretHash([u8; 32]);

impl SecretHash {
    /// Compares in time independent of where the digests differ, so response
    /// timing does not tell a guesser how many leading bytes were right.
    fn ct_eq(&self, other: &Self) -> bool {
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0_u8, |acc, (a, b)| acc | (a ^ b));
        // black_box keeps the optimiser from turning the fold back into an
        // early-exit comparison.
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

/// Why a token record could not be made or changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenRecordError {
    /// The lifetime is below [`MIN_TTL`].
    #[error("token lifetime {}s is shorter than the minimum of {}s", ttl.as_secs(), MIN_TTL.as_secs())]
    TtlTooShort {
        /// The lifetime asked for.
        ttl: Duration,
    },
    /// The lifetime is above [`MAX_TTL`].
    #[error("token lifetime {}s is longer than the maximum of {}s (7 days)", ttl.as_secs(), MAX_TTL.as_secs())]
    TtlTooLong {
        /// The lifetime asked for.
        ttl: Duration,
    },
    /// A use limit of zero would make a token that admits nobody.
    #[error("token use limit must be at least 1")]
    ZeroUses,
    /// The description is longer than [`MAX_DESCRIPTION_LEN`] bytes.
    #[error("token description has {len} bytes, at most {MAX_DESCRIPTION_LEN} are allowed")]
    DescriptionTooLong {
        /// Bytes given.
        len: usize,
    },
    /// The description contains a control character (it is printed in
    /// `token list`, where a control character could rewrite the terminal).
    #[error("token description has a control character at byte {position}")]
    DescriptionControlCharacter {
        /// Byte offset of the character.
        position: usize,
    },
}

/// Why a presented token was refused. The caller handles a missing record
/// (an unknown id) itself, and should log and answer every refusal the same
/// way to the joining node, so a guesser learns nothing from the kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    /// The secret does not match the record, or the presented token has
    /// another id than the record (a caller bug, refused all the same).
    #[error("join token secret does not match")]
    WrongSecret,
    /// The token has been revoked.
    #[error("join token was revoked")]
    Revoked,
    /// The token expired at `at` (unix seconds).
    #[error("join token expired at unix time {at}")]
    Expired {
        /// `expires_at` of the record.
        at: u64,
    },
    /// The token has admitted as many nodes as it allows.
    #[error("join token was already used {uses} times, its limit")]
    UsedUp {
        /// Uses recorded.
        uses: u32,
    },
}

/// What the replicated store keeps for one token, under [`store_key`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    id: TokenId,
    secret_sha256: SecretHash,
    created_at: u64,
    expires_at: u64,
    uses_allowed: Option<u32>,
    uses: u32,
    revoked: bool,
    description: Option<String>,
}

/// Whole unix seconds, rounded down; a clock before 1970 reads as 0.
/// Rounding down is exact for comparisons with whole-second expiries:
/// `floor(now) >= at` holds exactly when `now >= at`.
fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl TokenRecord {
    /// The record for a freshly drawn token, valid from `now` for `ttl`
    /// ([`MIN_TTL`]..=[`MAX_TTL`]; sub-second parts are dropped), admitting
    /// `uses` nodes (`None`: any number until it expires).
    pub fn new(
        token: &JoinToken,
        now: SystemTime,
        ttl: Duration,
        uses: Option<u32>,
    ) -> Result<Self, TokenRecordError> {
        if ttl < MIN_TTL {
            return Err(TokenRecordError::TtlTooShort { ttl });
        }
        if ttl > MAX_TTL {
            return Err(TokenRecordError::TtlTooLong { ttl });
        }
        if uses == Some(0) {
            return Err(TokenRecordError::ZeroUses);
        }
        let created_at = unix_seconds(now);
        Ok(Self {
            id: token.id.clone(),
            secret_sha256: token.secret_hash(),
            created_at,
            expires_at: created_at.saturating_add(ttl.as_secs()),
            uses_allowed: uses,
            uses: 0,
            revoked: false,
            description: None,
        })
    }

    /// Attaches an operator's note (who made the token and why).
    pub fn with_description(mut self, description: String) -> Result<Self, TokenRecordError> {
        if description.len() > MAX_DESCRIPTION_LEN {
            return Err(TokenRecordError::DescriptionTooLong {
                len: description.len(),
            });
        }
        if let Some((position, _)) = description.char_indices().find(|(_, c)| c.is_control()) {
            return Err(TokenRecordError::DescriptionControlCharacter { position });
        }
        self.description = Some(description);
        Ok(self)
    }

    /// Decides whether `presented` admits a node at `now`. The secret is
    /// checked first, so a caller without it learns nothing about the
    /// record's state; then revocation, expiry (at `expires_at` exactly the
    /// token is expired) and the use limit.
    pub fn check(&self, presented: &JoinToken, now: SystemTime) -> Result<(), TokenRefused> {
        // Hash and compare even when the id differs, so both paths cost the
        // same.
        let secret_matches = self.secret_sha256.ct_eq(&presented.secret_hash());
        if !secret_matches || presented.id != self.id {
            return Err(TokenRefused::WrongSecret);
        }
        if self.revoked {
            return Err(TokenRefused::Revoked);
        }
        if unix_seconds(now) >= self.expires_at {
            return Err(TokenRefused::Expired {
                at: self.expires_at,
            });
        }
        match self.uses_allowed {
            Some(allowed) if self.uses >= allowed => Err(TokenRefused::UsedUp { uses: self.uses }),
            Some(_) | None => Ok(()),
        }
    }

    /// Counts one admitted node and returns the record to write back with
    /// compare-and-set on the revision it was read at. Call it only after
    /// [`check`](Self::check) accepted the token.
    pub fn record_use(&mut self) -> &Self {
        self.uses = self.uses.saturating_add(1);
        self
    }

    /// Revokes the token (`cairn cluster token revoke`); it admits nobody
    /// from then on. The record is kept until it expires so `token list`
    /// shows what happened.
    pub fn revoke(&mut self) -> &Self {
        self.revoked = true;
        self
    }

    /// Whether the record can be deleted: it admits nobody at `now`, for
    /// any reason other than a wrong secret.
    pub fn is_spent(&self, now: SystemTime) -> bool {
        self.revoked
            || unix_seconds(now) >= self.expires_at
            || self
                .uses_allowed
                .is_some_and(|allowed| self.uses >= allowed)
    }

    /// The token's id.
    pub fn id(&self) -> &TokenId {
        &self.id
    }

    /// Unix seconds at creation.
    pub fn created_at(&self) -> u64 {
        self.created_at
    }

    /// Unix seconds from which the token is refused.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// Nodes admitted so far.
    pub fn uses(&self) -> u32 {
        self.uses
    }

    /// The use limit; `None` means any number until expiry.
    pub fn uses_allowed(&self) -> Option<u32> {
        self.uses_allowed
    }

    /// Whether the token was revoked.
    pub fn revoked(&self) -> bool {
        self.revoked
    }

    /// The operator's note, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// What `cairn cluster token list` shows for this token.
    pub fn summary(&self) -> TokenSummary {
        TokenSummary {
            id: self.id.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            uses: self.uses,
            uses_allowed: self.uses_allowed,
            revoked: self.revoked,
            description: self.description.clone(),
        }
    }
}

/// One line of `cairn cluster token list`: everything about a token except
/// its secret and the secret's hash. Times are unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSummary {
    /// The token's id.
    pub id: TokenId,
    /// Unix seconds at creation.
    pub created_at: u64,
    /// Unix seconds from which the token is refused.
    pub expires_at: u64,
    /// Nodes admitted so far.
    pub uses: u32,
    /// The use limit; `None` means any number until expiry.
    pub uses_allowed: Option<u32>,
    /// Whether the token was revoked.
    pub revoked: bool,
    /// The operator's note, if any.
    pub description: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: &str = "abc123.0123456789abcdef";
    const SECRET: &str = "0123456789abcdef";

    fn token() -> JoinToken {
        TOKEN.parse().expect("valid token")
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn record(uses: Option<u32>) -> TokenRecord {
        TokenRecord::new(&token(), at(1_000_000), DEFAULT_TTL, uses).expect("valid record")
    }

    fn assert_no_secret(err: &ParseJoinTokenError, secret: &str) {
        let shown = format!("{err} {err:?} {:?}", std::error::Error::source(err));
        // Any 4 consecutive secret characters would already leak too much.
        let chars: Vec<char> = secret.chars().collect();
        for window in chars.windows(4) {
            let w: String = window.iter().collect();
            assert!(!shown.contains(&w), "{shown:?} contains secret part {w:?}");
        }
    }

    #[test]
    fn a_token_prints_as_it_was_parsed() {
        let t = token();
        assert_eq!(t.to_string(), TOKEN);
        assert_eq!(t.id().as_str(), "abc123");
        assert_eq!(t.to_string().parse::<JoinToken>(), Ok(t));
    }

    #[test]
    fn debug_shows_the_id_and_hides_the_secret() {
        let shown = format!("{:?} {:#?}", token(), token());
        assert!(shown.contains("abc123"));
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains(SECRET));
        assert!(!shown.contains("0123"));
    }

    #[test]
    fn each_malformed_token_is_refused_with_what_is_wrong() {
        use ParseJoinTokenError as E;
        let cases: &[(&str, E)] = &[
            ("", E::Empty),
            ("abc1230123456789abcdef", E::MissingDot),
            (
                ".0123456789abcdef",
                E::Id(ParseTokenIdError::Length { len: 0 }),
            ),
            (
                "abc12.0123456789abcdef",
                E::Id(ParseTokenIdError::Length { len: 5 }),
            ),
            (
                "abc1234.0123456789abcdef",
                E::Id(ParseTokenIdError::Length { len: 7 }),
            ),
            (
                "abC123.0123456789abcdef",
                E::Id(ParseTokenIdError::Character {
                    found: 'C',
                    position: 2,
                }),
            ),
            (
                "abc12é.0123456789abcdef",
                E::Id(ParseTokenIdError::Character {
                    found: 'é',
                    position: 5,
                }),
            ),
            ("abc123.", E::SecretLength { len: 0 }),
            ("abc123.0123456789abcde", E::SecretLength { len: 15 }),
            ("abc123.0123456789abcdefg", E::SecretLength { len: 17 }),
            (
                "abc123.0123456789Abcdef",
                E::SecretCharacter { position: 10 },
            ),
            (
                "abc123.0123456789abcde.",
                E::SecretCharacter { position: 15 },
            ),
            (
                "abc123.0123456789abcdeé",
                E::SecretCharacter { position: 15 },
            ),
            (
                " abc123.0123456789abcdef",
                E::Id(ParseTokenIdError::Length { len: 7 }),
            ),
            ("abc123.0123456789abcdef\n", E::SecretLength { len: 17 }),
            (
                "abc123.01234 6789abcdef",
                E::SecretCharacter { position: 5 },
            ),
        ];
        for (input, want) in cases {
            let err = input.parse::<JoinToken>().expect_err(input);
            assert_eq!(&err, want, "input {input:?}");
            let (_, secret) = input.split_once('.').unwrap_or(("", ""));
            assert_no_secret(&err, secret);
        }
    }

    #[test]
    fn a_secret_character_error_does_not_show_the_character() {
        let err = "abc123.0123456789Xbcdef"
            .parse::<JoinToken>()
            .expect_err("uppercase");
        assert!(!format!("{err} {err:?}").contains('X'));
    }

    #[test]
    fn token_ids_parse_on_their_own_and_through_serde() {
        assert_eq!(
            "abc123".parse::<TokenId>().map(String::from),
            Ok("abc123".into())
        );
        assert_eq!(
            "abc-23".parse::<TokenId>(),
            Err(ParseTokenIdError::Character {
                found: '-',
                position: 3
            })
        );
        let bad = postcard::to_stdvec("ABC123").expect("encode");
        assert!(postcard::from_bytes::<TokenId>(&bad).is_err());
        assert_eq!(store_key(token().id()).as_str(), "tokens/abc123");
    }

    #[test]
    fn generated_tokens_are_valid_and_use_the_source_bytes() {
        let mut counter = 0_u8;
        let t = JoinToken::generate(|buf: &mut [u8]| {
            for b in buf {
                *b = counter;
                counter = counter.wrapping_add(1);
            }
            Ok::<_, std::io::Error>(())
        })
        .expect("generate");
        // Bytes 0..22 map straight onto the alphabet's first 22 symbols.
        assert_eq!(t.to_string(), "abcdef.ghijklmnopqrstuv");
        assert_eq!(t.to_string().parse::<JoinToken>(), Ok(t));
    }

    #[test]
    fn generation_skips_bytes_that_would_bias_the_alphabet() {
        // 252..=255 would fold onto a-d and make them likelier; they are
        // skipped, and 35 maps to '9'.
        let mut bytes = [252_u8, 253, 254, 255]
            .into_iter()
            .cycle()
            .take(40)
            .chain(std::iter::repeat(35));
        let t = JoinToken::generate(|buf: &mut [u8]| {
            buf.iter_mut().for_each(|b| *b = bytes.next().unwrap_or(35));
            Ok::<_, std::io::Error>(())
        })
        .expect("generate");
        assert_eq!(t.to_string(), "999999.9999999999999999");
    }

    #[test]
    fn generation_reports_a_failing_or_stuck_source() {
        let failed = JoinToken::generate(|_: &mut [u8]| Err(std::io::Error::other("no entropy")));
        assert!(matches!(failed, Err(GenerateTokenError::Source(_))));
        let stuck = JoinToken::generate(|buf: &mut [u8]| {
            buf.fill(255);
            Ok::<_, std::io::Error>(())
        });
        assert!(matches!(stuck, Err(GenerateTokenError::SourceStuck)));
    }

    #[test]
    fn a_fresh_record_admits_its_token() {
        let r = record(Some(1));
        assert_eq!(r.check(&token(), at(1_000_000)), Ok(()));
        assert_eq!(r.created_at(), 1_000_000);
        assert_eq!(r.expires_at(), 1_003_600);
        assert_eq!(r.uses(), 0);
    }

    #[test]
    fn check_refuses_a_wrong_secret_or_another_id() {
        let r = record(None);
        let wrong: JoinToken = "abc123.0123456789abcdee".parse().expect("valid");
        assert_eq!(
            r.check(&wrong, at(1_000_000)),
            Err(TokenRefused::WrongSecret)
        );
        let other_id: JoinToken = "abc124.0123456789abcdef".parse().expect("valid");
        assert_eq!(
            r.check(&other_id, at(1_000_000)),
            Err(TokenRefused::WrongSecret)
        );
    }

    #[test]
    fn a_wrong_secret_is_refused_before_revealing_the_record_state() {
        let mut r = record(Some(1));
        r.revoke();
        r.record_use();
        let wrong: JoinToken = "abc123.zzzzzzzzzzzzzzzz".parse().expect("valid");
        assert_eq!(
            r.check(&wrong, at(9_999_999)),
            Err(TokenRefused::WrongSecret)
        );
    }

    #[test]
    fn a_token_is_expired_from_its_expiry_second_on() {
        let r = record(None);
        let last_good = UNIX_EPOCH + Duration::from_secs(1_003_599) + Duration::from_millis(999);
        assert_eq!(r.check(&token(), last_good), Ok(()));
        let expired = Err(TokenRefused::Expired { at: 1_003_600 });
        assert_eq!(r.check(&token(), at(1_003_600)), expired);
        assert_eq!(r.check(&token(), at(2_000_000)), expired);
    }

    #[test]
    fn a_clock_before_1970_does_not_panic_and_still_admits() {
        let r = record(None);
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(r.check(&token(), before), Ok(()));
    }

    #[test]
    fn a_used_up_token_is_refused_and_uses_are_counted() {
        let mut r = record(Some(2));
        let now = at(1_000_010);
        assert_eq!(r.check(&token(), now), Ok(()));
        assert_eq!(r.record_use().uses(), 1);
        assert_eq!(r.check(&token(), now), Ok(()));
        assert_eq!(r.record_use().uses(), 2);
        assert_eq!(
            r.check(&token(), now),
            Err(TokenRefused::UsedUp { uses: 2 })
        );
        assert!(r.is_spent(now));
    }

    #[test]
    fn an_unlimited_token_admits_until_it_expires() {
        let mut r = record(None);
        for _ in 0..1000 {
            r.record_use();
        }
        assert_eq!(r.check(&token(), at(1_003_599)), Ok(()));
        assert!(!r.is_spent(at(1_003_599)));
        assert!(r.is_spent(at(1_003_600)));
    }

    #[test]
    fn a_revoked_token_is_refused() {
        let mut r = record(None);
        assert!(r.revoke().revoked());
        assert_eq!(r.check(&token(), at(1_000_000)), Err(TokenRefused::Revoked));
        assert!(r.is_spent(at(1_000_000)));
    }

    #[test]
    fn the_stored_record_never_contains_the_secret() {
        let r = record(Some(3))
            .with_description("rack 4".into())
            .expect("ok");
        let bytes = postcard::to_stdvec(&r).expect("encode");
        assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
        assert!(!format!("{r:?}").contains(SECRET));
        let back: TokenRecord = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, r);
        assert_eq!(back.check(&token(), at(1_000_000)), Ok(()));
    }

    #[test]
    fn the_summary_shows_no_secret_and_no_hash() {
        let r = record(Some(3));
        let hash = hex::encode(Sha256::digest(SECRET.as_bytes()));
        let s = r.summary();
        assert_eq!(
            s,
            TokenSummary {
                id: token().id().clone(),
                created_at: 1_000_000,
                expires_at: 1_003_600,
                uses: 0,
                uses_allowed: Some(3),
                revoked: false,
                description: None,
            }
        );
        let shown = format!("{s:?}");
        assert!(!shown.contains(SECRET) && !shown.contains(&hash[..16]));
        let bytes = postcard::to_stdvec(&s).expect("encode");
        let raw: [u8; 32] = Sha256::digest(SECRET.as_bytes()).into();
        assert!(!bytes.windows(32).any(|w| w == raw));
    }

    #[test]
    fn the_lifetime_must_be_between_a_minute_and_a_week() {
        let t = token();
        let now = at(1_000_000);
        let short = Duration::from_secs(59);
        assert_eq!(
            TokenRecord::new(&t, now, short, None),
            Err(TokenRecordError::TtlTooShort { ttl: short })
        );
        let long = MAX_TTL + Duration::from_secs(1);
        assert_eq!(
            TokenRecord::new(&t, now, long, None),
            Err(TokenRecordError::TtlTooLong { ttl: long })
        );
        let min = TokenRecord::new(&t, now, MIN_TTL, None).expect("minimum is allowed");
        assert_eq!(min.expires_at(), 1_000_060);
        let max = TokenRecord::new(&t, now, MAX_TTL, None).expect("maximum is allowed");
        assert_eq!(max.expires_at(), 1_000_000 + 604_800);
    }

    #[test]
    fn a_use_limit_of_zero_is_refused() {
        assert_eq!(
            TokenRecord::new(&token(), at(0), DEFAULT_TTL, Some(0)),
            Err(TokenRecordError::ZeroUses)
        );
        assert!(TokenRecord::new(&token(), at(0), DEFAULT_TTL, Some(1)).is_ok());
    }

    #[test]
    fn descriptions_are_bounded_and_free_of_control_characters() {
        let long = "x".repeat(MAX_DESCRIPTION_LEN + 1);
        assert_eq!(
            record(None).with_description(long),
            Err(TokenRecordError::DescriptionTooLong {
                len: MAX_DESCRIPTION_LEN + 1
            })
        );
        assert_eq!(
            record(None).with_description("ok\u{1b}[2J".into()),
            Err(TokenRecordError::DescriptionControlCharacter { position: 2 })
        );
        let r = record(None)
            .with_description("x".repeat(MAX_DESCRIPTION_LEN))
            .expect("at the limit");
        assert_eq!(r.description().map(str::len), Some(MAX_DESCRIPTION_LEN));
    }

    #[test]
    fn constant_time_compare_finds_a_difference_in_any_byte() {
        let a = SecretHash([7; 32]);
        assert!(a.ct_eq(&a));
        for i in 0..32 {
            let mut b = a;
            b.0[i] ^= 1;
            assert!(!a.ct_eq(&b), "byte {i}");
        }
    }

    proptest! {
        #[test]
        fn parsing_any_text_never_panics_nor_leaks_the_secret(s in any::<String>()) {
            match s.parse::<JoinToken>() {
                Ok(t) => prop_assert_eq!(t.to_string(), s),
                Err(e) => {
                    // Only meaningful when the would-be secret is long
                    // enough to be distinctive.
                    if let Some((_, secret)) = s.split_once('.') {
                        let shown = format!("{e} {e:?}");
                        prop_assert!(secret.chars().count() < 8 || !shown.contains(secret));
                    }
                }
            }
        }

        #[test]
        fn near_tokens_never_panic_nor_leak_the_secret(
            s in "[a-z0-9A-Z.\\- é]{0,30}",
        ) {
            // Shorter strings can occur in the message's own words.
            if let Err(e) = s.parse::<JoinToken>()
                && let Some((_, secret)) = s.split_once('.')
                && secret.len() >= 8
            {
                let shown = format!("{e} {e:?}");
                prop_assert!(!shown.contains(secret), "{} leaks {}", shown, secret);
            }
        }

        #[test]
        fn a_valid_token_always_round_trips(id in "[a-z0-9]{6}", secret in "[a-z0-9]{16}") {
            let text = format!("{id}.{secret}");
            let t: JoinToken = text.parse().expect("valid by construction");
            prop_assert_eq!(t.to_string(), text.clone());
            prop_assert_eq!(t.id().as_str(), id.as_str());
            let shown = format!("{t:?}");
            prop_assert!(!shown.contains(&secret));
            let r = TokenRecord::new(&t, at(1_000), DEFAULT_TTL, None).expect("record");
            let bytes = postcard::to_stdvec(&r).expect("encode");
            prop_assert!(!bytes.windows(SECRET_LEN).any(|w| w == secret.as_bytes()));
        }
    }
}
