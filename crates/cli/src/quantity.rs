//! Quantities as operators type them for container limits: memory
//! (`64M`, `1.5G`, `512Ki`, plain bytes) and CPUs (`0.5`, `2`).
//!
//! Suffixes are binary, as in Docker and Kubernetes' `Mi`/`Gi`: `k`/`Ki`
//! is 1,024 bytes, `M`/`Mi` 1,024², `G`/`Gi` 1,024³, `T`/`Ti` 1,024⁴.
//! A `B` after the unit is allowed (`64MB`, `64MiB`).

use std::str::FromStr;

/// A number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

/// Text that is not a size.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid size {text:?}: {reason}, expected bytes or a number with a unit such as 64M, 512Ki, 1.5G"
)]
pub struct BytesError {
    text: String,
    reason: &'static str,
}

impl FromStr for Bytes {
    type Err = BytesError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| BytesError {
            text: text.to_owned(),
            reason,
        };
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let (whole, fraction) = decimal(number).ok_or_else(|| fail("not a number"))?;
        let unit = unit.strip_suffix('B').unwrap_or(unit);
        let unit = unit.strip_suffix('i').unwrap_or(unit);
        let shift = match unit {
            "" => 0,
            "k" | "K" => 10,
            "m" | "M" => 20,
            "g" | "G" => 30,
            "t" | "T" => 40,
            _ => return Err(fail("unknown unit")),
        };
        // whole * 2^shift + fraction (millionths) * 2^shift / 10^6, in u128
        // so no step can overflow before the final check.
        let scale = 1u128 << shift;
        let bytes = u128::from(whole) * scale + u128::from(fraction) * scale / 1_000_000;
        if shift == 0 && fraction != 0 {
            return Err(fail("a fraction of a byte"));
        }
        let bytes = u64::try_from(bytes).map_err(|_| fail("too large"))?;
        if bytes == 0 {
            return Err(fail("zero"));
        }
        Ok(Bytes(bytes))
    }
}

/// CPUs, kept in thousandths (`0.5` is 500).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cpus(pub u64);

/// Text that is not a CPU count.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid CPU count {text:?}: {reason}, expected a number such as 0.5 or 2 (at most 3 decimals)"
)]
pub struct CpusError {
    text: String,
    reason: &'static str,
}

impl FromStr for Cpus {
    type Err = CpusError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| CpusError {
            text: text.to_owned(),
            reason,
        };
        let (whole, millionths) = decimal(text).ok_or_else(|| fail("not a number"))?;
        if millionths % 1_000 != 0 {
            return Err(fail("more than 3 decimals"));
        }
        let millis = whole
            .checked_mul(1_000)
            .and_then(|m| m.checked_add(millionths / 1_000))
            .ok_or_else(|| fail("too large"))?;
        if millis == 0 {
            return Err(fail("zero"));
        }
        Ok(Cpus(millis))
    }
}

/// `12.5` → (12, 500_000): a whole part and up to six decimals as
/// millionths. `None` for anything else (signs, exponents, empty parts).
fn decimal(text: &str) -> Option<(u64, u64)> {
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let millionths = match fraction {
        None => 0,
        Some(f) if f.is_empty() || f.len() > 6 || !f.bytes().all(|b| b.is_ascii_digit()) => {
            return None;
        }
        Some(f) => {
            let digits: u64 = f.parse().ok()?;
            digits * 10u64.pow(6 - u32::try_from(f.len()).ok()?)
        }
    };
    Some((whole, millionths))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn sizes_use_binary_units_with_optional_i_and_b() {
        for (text, bytes) in [
            ("4096", 4096),
            ("64M", 64 << 20),
            ("64Mi", 64 << 20),
            ("64MiB", 64 << 20),
            ("64MB", 64 << 20),
            ("512k", 512 << 10),
            ("1.5G", 3 << 29),
            ("1T", 1 << 40),
        ] {
            assert_eq!(text.parse::<Bytes>(), Ok(Bytes(bytes)), "{text}");
        }
    }

    #[test]
    fn sizes_that_mean_nothing_are_refused_with_the_reason() {
        for (text, reason) in [
            ("", "not a number"),
            ("M", "not a number"),
            ("-1M", "not a number"),
            ("1X", "unknown unit"),
            ("1.5", "a fraction of a byte"),
            ("0", "zero"),
            ("99999999999T", "too large"),
        ] {
            let err = text.parse::<Bytes>().expect_err(text);
            assert_eq!(err.reason, reason, "{text}");
            assert!(err.to_string().contains(&format!("{text:?}")));
        }
    }

    #[test]
    fn cpus_are_kept_in_thousandths() {
        assert_eq!("0.5".parse::<Cpus>(), Ok(Cpus(500)));
        assert_eq!("2".parse::<Cpus>(), Ok(Cpus(2000)));
        assert_eq!("0.125".parse::<Cpus>(), Ok(Cpus(125)));
        for text in ["0", "0.0001", "", ".5", "1e3", "-1"] {
            assert!(text.parse::<Cpus>().is_err(), "{text}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in "\\PC{0,24}") {
            let _ = text.parse::<Bytes>();
            let _ = text.parse::<Cpus>();
        }

        #[test]
        fn whole_mebibytes_round_trip(n in 1u64..1_000_000) {
            prop_assert_eq!(format!("{n}M").parse::<Bytes>(), Ok(Bytes(n << 20)));
        }
    }
}
