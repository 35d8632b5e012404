//! One reading of every "retry after" a server sends (model providers'
//! `retry-after` header, Telegram's `parameters.retry_after`, Discord's
//! body `retry_after` and header), so a malformed or hostile value can
//! neither panic (`Duration::from_secs_f64` panics on NaN, infinities,
//! negatives and values past `u64::MAX` seconds) nor park a chat for years.

use std::time::Duration;

/// The longest wait soloist takes from a server. Telegram's flood waits
/// run to minutes; a longer one is capped here and, if the server still
/// refuses, asked again then.
pub const MAX: Duration = Duration::from_secs(15 * 60);

/// A wait given in seconds, fractional or not: NaN and negatives are no
/// wait, infinities and anything past [`MAX`] are [`MAX`].
pub fn from_secs(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else if secs >= MAX.as_secs_f64() {
        MAX
    } else {
        Duration::from_secs_f64(secs)
    }
}

/// A `retry-after` header value in seconds ("2", "0.5"). None when it is
/// not a number (the HTTP-date form is rare from these servers and is
/// treated as absent) or not a finite, non-negative one.
pub fn parse(value: &str) -> Option<Duration> {
    let secs = value.trim().parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| from_secs(secs))
        .or_else(|| (secs == f64::INFINITY).then_some(MAX))
}

/// A wait the server gave as a duration already (teloxide parses
/// Telegram's), capped at [`MAX`].
pub fn cap(wait: Duration) -> Duration {
    wait.min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_numbers_never_panic_and_stay_within_the_cap() {
        for secs in [1e20, f64::INFINITY, f64::MAX, 1e300] {
            assert_eq!(from_secs(secs), MAX, "{secs}");
        }
        for secs in [f64::NAN, -1.0, f64::NEG_INFINITY, -1e20, 0.0] {
            assert_eq!(from_secs(secs), Duration::ZERO, "{secs}");
        }
        assert_eq!(from_secs(1.5), Duration::from_millis(1500));
    }

    #[test]
    fn header_values_parse_as_seconds_with_the_cap() {
        assert_eq!(parse("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse(" 0.25 "), Some(Duration::from_millis(250)));
        assert_eq!(parse("1e20"), Some(MAX));
        assert_eq!(parse("inf"), Some(MAX));
        assert_eq!(parse("99999999999999999999999"), Some(MAX));
        assert_eq!(parse("NaN"), None);
        assert_eq!(parse("-3"), None);
        assert_eq!(parse("-inf"), None);
        assert_eq!(parse("Wed, 21 Oct 2026 07:28:00 GMT"), None);
    }

    #[test]
    fn a_duration_from_a_client_library_is_capped() {
        assert_eq!(cap(Duration::from_secs(u64::from(u32::MAX))), MAX);
        assert_eq!(cap(Duration::from_secs(3)), Duration::from_secs(3));
    }
}
