//! Durations as people write them in `runnel.toml`: `"10m"`, `"1s"`, `"1h30m"`, `"250ms"`.
//!
//! Window sizes, out-of-orderness, lateness and idle timeouts are all durations; one type
//! parses and prints them so the configuration reads the same everywhere. Stored in whole
//! microseconds, the unit of [`runnel_clock::Micros`] and of event times in this crate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A non-negative duration written as one or more `<integer><unit>` parts, largest unit first:
/// `ms`, `s`, `m`, `h`, `d`. `"0s"` is zero; `"1h30m"` is ninety minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration {
    micros: u64,
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{text}`: {reason} (write e.g. `500ms`, `10s`, `5m`, `1h30m`, `1d`)")]
pub struct InvalidDuration {
    /// The text as written.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000_000),
    ("h", 3_600_000_000),
    ("m", 60_000_000),
    ("s", 1_000_000),
    ("ms", 1_000),
];

impl HumanDuration {
    /// Zero.
    pub const ZERO: Self = Self { micros: 0 };

    /// A duration of `micros` microseconds.
    pub const fn from_micros(micros: u64) -> Self {
        Self { micros }
    }

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self {
            micros: millis.saturating_mul(1_000),
        }
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self {
            micros: secs.saturating_mul(1_000_000),
        }
    }

    /// A duration of `mins` minutes.
    pub const fn from_mins(mins: u64) -> Self {
        Self {
            micros: mins.saturating_mul(60_000_000),
        }
    }

    /// The length in microseconds.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }

    /// Whether this is zero.
    pub const fn is_zero(self) -> bool {
        self.micros == 0
    }
}

impl FromStr for HumanDuration {
    type Err = InvalidDuration;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidDuration {
            text: text.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        let mut rest = text;
        let mut total: u64 = 0;
        // Index into UNITS of the last unit used: each part must use a smaller unit.
        let mut last_unit: Option<usize> = None;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(invalid("each part starts with a whole number"));
            }
            let amount: u64 = rest[..digits]
                .parse()
                .map_err(|_| invalid("a number is too large"))?;
            rest = &rest[digits..];
            let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..letters];
            rest = &rest[letters..];
            let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
                return Err(invalid(if unit.is_empty() {
                    "a number has no unit"
                } else {
                    "unknown unit"
                }));
            };
            if last_unit.is_some_and(|last| index <= last) {
                return Err(invalid("units must go from largest to smallest, once each"));
            }
            last_unit = Some(index);
            total = amount
                .checked_mul(UNITS[index].1)
                .and_then(|part| total.checked_add(part))
                .ok_or_else(|| invalid("it is too long"))?;
        }
        Ok(Self { micros: total })
    }
}

impl fmt::Display for HumanDuration {
    /// The shortest form that parses back to the same value; sub-millisecond remainders (which
    /// the parser cannot produce) are written as a fraction of a millisecond.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.micros == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.micros;
        for (name, unit) in UNITS {
            if rest >= unit {
                write!(f, "{}{name}", rest / unit)?;
                rest %= unit;
            }
        }
        if rest > 0 {
            write!(f, "{rest}us")?;
        }
        Ok(())
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_from_the_units_people_write() {
        let cases = [
            ("0s", 0),
            ("250ms", 250_000),
            ("1s", 1_000_000),
            ("10m", 600_000_000),
            ("1h30m", 5_400_000_000),
            ("1d", 86_400_000_000),
            ("1m30s500ms", 90_500_000),
        ];
        for (text, micros) in cases {
            let parsed: HumanDuration = text.parse().unwrap();
            assert_eq!(parsed.as_micros(), micros, "{text}");
            assert_eq!(parsed.to_string(), text, "{text} prints back");
        }
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        for (text, reason) in [
            ("", "it is empty"),
            ("10", "a number has no unit"),
            ("10x", "unknown unit"),
            ("m", "each part starts with a whole number"),
            ("30s1m", "units must go from largest to smallest, once each"),
            ("1s1s", "units must go from largest to smallest, once each"),
            ("-1s", "each part starts with a whole number"),
            ("99999999999999999999d", "a number is too large"),
            ("999999999d", "it is too long"),
        ] {
            let err = text.parse::<HumanDuration>().unwrap_err();
            assert_eq!(err.reason, reason, "{text}");
            assert!(err.to_string().contains(&format!("`{text}`")));
        }
    }
}
