//! Keys and the size limits of the store.
//!
//! Limits are checked where outside bytes enter (the API) by parsing into
//! [`Key`] and [`Value`]; the state machine then never sees an oversized
//! write. Values are capped well below the peer transport's message cap so
//! that a batch of appends always fits in one Raft message.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
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
    /// Checks and wraps a key.
    pub fn new(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong(key.len()));
        }
        if let Some((at, c)) = key.char_indices().find(|(_, c)| c.is_control()) {
            return Err(KeyError::Control(c, at));
        }
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
        assert_eq!(Key::new(""), Err(KeyError::Empty));
        assert!(Key::new("a".repeat(MAX_KEY_BYTES)).is_ok());
        assert_eq!(
            Key::new("a".repeat(MAX_KEY_BYTES + 1)),
            Err(KeyError::TooLong(MAX_KEY_BYTES + 1))
        );
        assert_eq!(Key::new("site/\nx"), Err(KeyError::Control('\n', 5)));
        assert!(Key::new("site/dns/ünïcode").is_ok());
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
