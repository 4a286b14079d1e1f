//! Durations written the way operators write them: `250ms`, `2s`, `5m`, `1h 30m`.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::time::Duration;

/// Deserializes a human-readable duration such as `250ms` or `2s`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as 250ms or 2s")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "invalid duration {v}: a unit is required, e.g. {v}ms or {v}s"
            )))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "invalid duration {v}: a unit is required, e.g. {v}ms or {v}s"
            )))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "invalid duration {v}: a unit is required, e.g. {v}s"
            )))
        }
    }
    d.deserialize_any(V)
}

/// Serializes a duration the way it is written in configs (`1s`, `250ms`, `5m`).
pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// The same for optional durations.
pub mod option {
    use serde::{Deserializer, Serializer};
    use std::time::Duration;

    /// Deserializes a duration, or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        /// A duration in the config's syntax, for `Option`'s own null handling.
        struct Written(Duration);
        impl<'de> serde::Deserialize<'de> for Written {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                super::deserialize(d).map(Written)
            }
        }
        <Option<Written> as serde::Deserialize>::deserialize(d).map(|w| w.map(|w| w.0))
    }

    /// Serializes a duration, or nothing.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

/// Longest duration any setting accepts (3650 days): far beyond a sensible timeout or interval, and
/// far from where adding it to a clock reading, or doubling it for a backoff, overflows.
pub const MAX: Duration = Duration::from_secs(3650 * 86_400);

/// Why a written duration is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    /// Not a duration with a unit.
    #[error("invalid duration {text:?} ({reason}); write it like 250ms, 2s or 5m")]
    Invalid {
        /// What was written.
        text: String,
        /// Why it does not parse.
        reason: humantime::DurationError,
    },
    /// Longer than [`MAX`].
    #[error("duration {text:?} is too long: at most 3650 days")]
    TooLong {
        /// What was written.
        text: String,
    },
}

/// Parses a human-readable duration; a bare number is rejected so units are never guessed.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let d = humantime::parse_duration(text.trim()).map_err(|reason| DurationError::Invalid {
        text: text.to_string(),
        reason,
    })?;
    at_most_max(text, d)
}

/// `d` (written as `text`) when it is at most [`MAX`].
pub fn at_most_max(text: &str, d: Duration) -> Result<Duration, DurationError> {
    if d > MAX {
        return Err(DurationError::TooLong {
            text: text.to_string(),
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
    }

    #[test]
    fn rejects_durations_past_the_maximum() {
        assert_eq!(parse("3650d"), Ok(MAX));
        for text in ["3651d", "100000years", "500000000000y"] {
            let e = parse(text).unwrap_err().to_string();
            assert!(
                e.contains("too long") || e.contains("too large"),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn rejects_bare_numbers_and_garbage() {
        assert!(parse("250").is_err());
        assert!(parse("soon").is_err());
    }
}
