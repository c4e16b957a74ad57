//! Rules for instants that come from outside.

use chrono::{DateTime, Duration, Utc};

/// How far ahead of our clock a platform's timestamp may be: ordinary clock skew.
pub const MAX_PLATFORM_SKEW_MINUTES: i64 = 5;

/// A platform's timestamp, capped at `now` plus the allowed skew. A far-future value would
/// otherwise postpone work tied to it (a job re-scheduling itself for days) or win every
/// "newest first" comparison.
pub fn clamp_platform_time(t: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    t.min(now + Duration::minutes(MAX_PLATFORM_SKEW_MINUTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_only_the_future_beyond_skew() {
        let now: DateTime<Utc> = "2026-06-01T10:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(clamp_platform_time(at("2099-01-01T00:00:00Z"), now), at("2026-06-01T10:05:00Z"));
        assert_eq!(clamp_platform_time(at("2026-06-01T10:05:00Z"), now), at("2026-06-01T10:05:00Z"));
        assert_eq!(clamp_platform_time(at("2026-06-01T10:04:59Z"), now), at("2026-06-01T10:04:59Z"));
        assert_eq!(clamp_platform_time(at("2020-01-01T00:00:00Z"), now), at("2020-01-01T00:00:00Z"));
    }
}
