//! Durations as operators type them (`24h`, `90m`, `1h30m`, `7d`) and as
//! tables show them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A whole number of seconds, written with units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(u64);

/// Text that is not a duration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid duration {text:?}: {reason}, expected a number with a unit such as 90s, 30m, 24h, 7d or 1h30m"
)]
pub struct SpanError {
    text: String,
    reason: &'static str,
}

impl Span {
    /// A span of this many seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Span(secs)
    }

    /// Seconds.
    pub fn as_secs(self) -> u64 {
        self.0
    }

    /// As a `Duration`.
    pub fn to_duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| SpanError {
            text: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(fail("empty"));
        }
        let mut total: u64 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(fail("a unit must follow a number"));
            }
            let (number, after) = rest.split_at(digits);
            let number: u64 = number
                .parse()
                .map_err(|_| fail("the number is too large"))?;
            let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
            let (unit, after) = after.split_at(unit_len);
            let scale = match unit {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                "w" => 7 * 86_400,
                "" => return Err(fail("the unit is missing")),
                _ => return Err(fail("unknown unit")),
            };
            total = number
                .checked_mul(scale)
                .and_then(|n| total.checked_add(n))
                .ok_or_else(|| fail("the number is too large"))?;
            rest = after;
        }
        if total == 0 {
            return Err(fail("it must be longer than zero"));
        }
        Ok(Span(total))
    }
}

impl fmt::Display for Span {
    /// The two largest non-zero units (`1d 2h`, `5m 3s`, `42s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut left = self.0;
        let mut shown = 0;
        for (scale, unit) in UNITS {
            let n = left / scale;
            left %= scale;
            if n > 0 || (shown > 0 && shown < 2) {
                if n > 0 {
                    if shown > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{n}{unit}")?;
                }
                shown += 1;
                if shown == 2 {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn operator_durations_parse_to_seconds() {
        for (text, secs) in [
            ("90s", 90),
            ("30m", 1800),
            ("24h", 86_400),
            ("7d", 604_800),
            ("2w", 1_209_600),
            ("1h30m", 5400),
        ] {
            assert_eq!(text.parse::<Span>(), Ok(Span(secs)), "{text}");
        }
    }

    #[test]
    fn durations_without_a_known_unit_or_of_zero_are_refused() {
        for bad in [
            "",
            "24",
            "h",
            "1x",
            "1h 30m",
            "0s",
            "-1h",
            "99999999999999999999s",
        ] {
            assert!(bad.parse::<Span>().is_err(), "{bad}");
        }
    }

    #[test]
    fn display_shows_the_two_largest_units() {
        assert_eq!(Span(0).to_string(), "0s");
        assert_eq!(Span(42).to_string(), "42s");
        assert_eq!(Span(3 * 60 + 5).to_string(), "3m 5s");
        assert_eq!(Span(86_400 + 2 * 3600 + 7).to_string(), "1d 2h");
        assert_eq!(Span(86_400 + 7).to_string(), "1d");
        assert_eq!(Span(3600 + 7).to_string(), "1h");
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".*") {
            let _ = text.parse::<Span>();
        }

        #[test]
        fn unit_sums_parse_to_their_total(h in 0u64..1000, m in 0u64..1000, s in 1u64..1000) {
            prop_assert_eq!(format!("{h}h{m}m{s}s").parse::<Span>(), Ok(Span(h * 3600 + m * 60 + s)));
        }
    }
}
