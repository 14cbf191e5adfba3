//! Signals by name, without a dependency on nix.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A signal number in 1..=64, written as its name (`"SIGTERM"`) when it has
/// one and as a number otherwise. Parsing accepts `SIGTERM`, `TERM`,
/// `term` and `15`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "SignalRepr", into = "String")]
pub struct Signal(i32);

#[derive(Deserialize)]
#[serde(untagged)]
enum SignalRepr {
    Number(i32),
    Name(String),
}

/// Why a value is not a signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    #[error("unknown signal {0:?}")]
    Unknown(String),
    #[error("signal number {0} is outside 1..=64")]
    OutOfRange(i32),
}

const NAMES: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

impl Signal {
    pub const TERM: Self = Self(15);
    pub const KILL: Self = Self(9);
    pub const INT: Self = Self(2);

    /// Builds a signal from its number.
    ///
    /// # Errors
    /// When the number is outside 1..=64.
    pub fn from_number(n: i32) -> Result<Self, SignalError> {
        if (1..=64).contains(&n) {
            Ok(Self(n))
        } else {
            Err(SignalError::OutOfRange(n))
        }
    }

    /// The signal's number.
    #[must_use]
    pub fn number(self) -> i32 {
        self.0
    }

    /// `SIGTERM` etc., if the signal has a classic name.
    #[must_use]
    pub fn name(self) -> Option<&'static str> {
        NAMES
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(name, _)| *name)
    }
}

impl std::str::FromStr for Signal {
    type Err = SignalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(n) = s.parse::<i32>() {
            return Self::from_number(n);
        }
        let upper = s.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        NAMES
            .iter()
            .find(|(name, _)| *name == bare)
            .map(|(_, n)| Self(*n))
            .ok_or_else(|| SignalError::Unknown(s.to_owned()))
    }
}

impl TryFrom<SignalRepr> for Signal {
    type Error = SignalError;

    fn try_from(repr: SignalRepr) -> Result<Self, Self::Error> {
        match repr {
            SignalRepr::Number(n) => Self::from_number(n),
            SignalRepr::Name(s) => s.parse(),
        }
    }
}

impl From<Signal> for String {
    fn from(signal: Signal) -> Self {
        signal.to_string()
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "SIG{name}"),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_short_name_and_number() {
        for s in ["SIGTERM", "TERM", "term", "15"] {
            assert_eq!(s.parse::<Signal>(), Ok(Signal::TERM), "{s}");
        }
        assert_eq!("34".parse::<Signal>().map(Signal::number), Ok(34));
        assert!("SIGNOPE".parse::<Signal>().is_err());
        assert!("0".parse::<Signal>().is_err());
        assert!("65".parse::<Signal>().is_err());
    }

    #[test]
    fn signals_round_trip_through_json_as_names() {
        let json = serde_json::to_string(&Signal::KILL).expect("serialize");
        assert_eq!(json, "\"SIGKILL\"");
        assert_eq!(
            serde_json::from_str::<Signal>(&json).ok(),
            Some(Signal::KILL)
        );
        assert_eq!(serde_json::from_str::<Signal>("9").ok(), Some(Signal::KILL));
        assert_eq!(
            serde_json::from_str::<Signal>("\"40\"")
                .map(Signal::number)
                .ok(),
            Some(40)
        );
    }
}
