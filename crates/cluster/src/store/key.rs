//! Keys and the size limits of the store.
//!
//! Limits are checked where outside bytes enter (the API) by parsing into
//! [`Key`] and [`Value`]; the state machine then never sees an oversized
//! write. Values are capped well below the peer transport's message cap so
//! that a batch of appends always fits in one Raft message.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest key a caller may name, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Room for a namespace prefix on top of [`MAX_KEY_BYTES`].
const NAMESPACE_ROOM: usize = 32;

/// The parts of the one store. Each keeps its records under its own
/// prefix, so an operator's `kv` keys can never touch join tokens or node
/// conditions, and a list of one namespace never shows another's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// Operators' keys (`cairn kv`).
    Kv,
    /// Join token records.
    Tokens,
    /// Node conditions recorded by the leader.
    Nodes,
}

impl Namespace {
    /// The prefix of its keys in the store.
    pub const fn prefix(self) -> &'static str {
        match self {
            Namespace::Kv => "kv/",
            Namespace::Tokens => "tokens/",
            Namespace::Nodes => "nodes/",
        }
    }

    /// The store key for `key` in this namespace; `key` is held to the
    /// limits callers see ([`MAX_KEY_BYTES`]).
    pub fn key(self, key: &str) -> Result<Key, KeyError> {
        check_key(key, MAX_KEY_BYTES)?;
        Ok(Key(format!("{}{key}", self.prefix())))
    }

    /// The store prefix for keys starting with `prefix` in this namespace.
    pub fn scan_prefix(self, prefix: &str) -> String {
        format!("{}{prefix}", self.prefix())
    }

    /// The caller's part of a store key of this namespace.
    pub fn strip(self, key: &Key) -> Option<&str> {
        key.as_str().strip_prefix(self.prefix())
    }
}

fn check_key(key: &str, max: usize) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > max {
        return Err(KeyError::TooLong(key.len()));
    }
    if let Some((at, c)) = key.char_indices().find(|(_, c)| c.is_control()) {
        return Err(KeyError::Control(c, at));
    }
    Ok(())
}
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;

/// A key of the replicated store: 1 to [`MAX_KEY_BYTES`] bytes of UTF-8
/// without control characters. Keys are ordered bytewise, so a prefix scan
/// (`kv list PREFIX`) is a range scan.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Key(String);

/// A key that is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is empty.
    #[error("key is empty")]
    Empty,
    /// The key is too long.
    #[error("key is {0} bytes long, the limit is {MAX_KEY_BYTES}")]
    TooLong(usize),
    /// The key holds a control character.
    #[error("key holds control character {0:?} at byte {1}")]
    Control(char, usize),
}

impl Key {
    /// Checks and wraps a whole store key, namespace prefix included (what
    /// snapshots and log entries carry). Callers' keys go through
    /// [`Namespace::key`].
    pub fn new(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        check_key(&key, MAX_KEY_BYTES + NAMESPACE_ROOM)?;
        Ok(Self(key))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Key {
    type Error = KeyError;
    fn try_from(key: String) -> Result<Self, KeyError> {
        Self::new(key)
    }
}

impl From<Key> for String {
    fn from(key: Key) -> String {
        key.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A value of at most [`MAX_VALUE_BYTES`] bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value(Vec<u8>);

/// A value over the limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("value is {0} bytes long, the limit is {MAX_VALUE_BYTES}")]
pub struct ValueTooLarge(pub usize);

impl Value {
    /// Checks and wraps a value.
    pub fn new(value: impl Into<Vec<u8>>) -> Result<Self, ValueTooLarge> {
        let value = value.into();
        if value.len() > MAX_VALUE_BYTES {
            return Err(ValueTooLarge(value.len()));
        }
        Ok(Self(value))
    }

    /// The bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_at_the_limits_are_accepted_and_beyond_them_refused() {
        let kv = Namespace::Kv;
        assert_eq!(kv.key(""), Err(KeyError::Empty));
        assert!(kv.key(&"a".repeat(MAX_KEY_BYTES)).is_ok());
        assert_eq!(
            kv.key(&"a".repeat(MAX_KEY_BYTES + 1)),
            Err(KeyError::TooLong(MAX_KEY_BYTES + 1))
        );
        assert_eq!(kv.key("site/\nx"), Err(KeyError::Control('\n', 5)));
        assert!(kv.key("site/dns/ünïcode").is_ok());
    }

    #[test]
    fn every_namespaced_key_is_a_valid_store_key() {
        for ns in [Namespace::Kv, Namespace::Tokens, Namespace::Nodes] {
            let key = ns.key(&"a".repeat(MAX_KEY_BYTES)).unwrap();
            assert_eq!(Key::new(key.as_str()), Ok(key.clone()));
            assert_eq!(ns.strip(&key), Some("a".repeat(MAX_KEY_BYTES).as_str()));
        }
        let token = Namespace::Tokens.key("abc123").unwrap();
        assert_eq!(Namespace::Kv.strip(&token), None);
    }

    #[test]
    fn a_key_decoded_from_bytes_is_checked_like_one_from_text() {
        let bytes = postcard::to_stdvec(&String::new()).unwrap();
        assert!(postcard::from_bytes::<Key>(&bytes).is_err());
        let bytes = postcard::to_stdvec(&"ok".to_owned()).unwrap();
        assert_eq!(postcard::from_bytes::<Key>(&bytes).unwrap().as_str(), "ok");
    }

    #[test]
    fn values_over_the_limit_are_refused_with_their_size() {
        assert!(Value::new(vec![0; MAX_VALUE_BYTES]).is_ok());
        assert_eq!(
            Value::new(vec![0; MAX_VALUE_BYTES + 1]),
            Err(ValueTooLarge(MAX_VALUE_BYTES + 1))
        );
    }
}
