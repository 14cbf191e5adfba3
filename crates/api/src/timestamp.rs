//! A point in time as it crosses the API: RFC 3339 text in UTC.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A UTC instant, written as RFC 3339 (`2026-11-22T03:04:05Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The instant `time` stands for.
    pub fn from_system(time: SystemTime) -> Self {
        Self(OffsetDateTime::from(time))
    }

    /// Seconds since the Unix epoch, or `None` outside `OffsetDateTime`'s
    /// range.
    pub fn from_unix(seconds: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp(seconds).ok().map(Self)
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> i64 {
        self.0.unix_timestamp()
    }

    /// As a `SystemTime`.
    pub fn to_system(self) -> SystemTime {
        self.0.into()
    }

    /// Parses RFC 3339 text; offsets other than `Z` are converted to UTC.
    pub fn parse(text: &str) -> Result<Self, time::error::Parse> {
        OffsetDateTime::parse(text, &Rfc3339).map(|t| Self(t.to_offset(time::UtcOffset::UTC)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Rfc3339 fails only for years outside 0..=9999, which from_system
        // and parse cannot produce for any clock this code will meet.
        match self.0.format(&Rfc3339) {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(f, "@{}", self.0.unix_timestamp()),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(|e| {
            serde::de::Error::custom(format_args!(
                "invalid timestamp {text:?}, expected RFC 3339 such as 2026-11-22T03:04:05Z: {e}"
            ))
        })
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339, UTC",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        let t = Timestamp::from_unix(1_700_000_000).unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2023-11-14T22:13:20Z\""
        );
        let shifted: Timestamp = serde_json::from_str("\"2023-11-14T23:13:20+01:00\"").unwrap();
        assert_eq!(shifted, t);
    }

    #[test]
    fn a_bad_timestamp_is_refused_with_the_reason() {
        let err = serde_json::from_str::<Timestamp>("\"yesterday\"").unwrap_err();
        assert!(err.to_string().contains("invalid"), "{err}");
    }

    proptest! {
        #[test]
        fn timestamps_round_trip(seconds in 0i64..253_402_300_799) {
            let t = Timestamp::from_unix(seconds).unwrap();
            let json = serde_json::to_string(&t).unwrap();
            prop_assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".*") {
            let _ = Timestamp::parse(&text);
        }
    }
}
