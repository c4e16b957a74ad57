//! A merchant's fair share of the signed JSON API: a token bucket per merchant (`rate_per_second`
//! refill, `burst` capacity), so one merchant's burst cannot throttle another's.
//!
//! The bucket is kept as one number, GCRA's "theoretical arrival time" (`tat`, microseconds since
//! the epoch): the instant the bucket would be full again. A bucket at `tat` holds
//! `burst - (tat - now) / interval` tokens (all `burst` when `tat <= now`), and taking a token
//! moves `tat` one interval on. One number means a store can apply a take as one conditional
//! write, with no read before it and no lost update between concurrent instances.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const DEFAULT_API_RATE_PER_SECOND: u32 = 10;
pub const DEFAULT_API_BURST: u32 = 50;
/// The HTTP API's own stage limit is far below this; higher would only hide a typo.
pub const MAX_API_RATE_PER_SECOND: u32 = 1_000;
pub const MAX_API_BURST: u32 = 10_000;
const MICROS_PER_SECOND: i64 = 1_000_000;
/// A bucket can never be further ahead of its writer's clock than a burst. One further ahead of
/// ours than that and this margin was written by a clock ahead of ours (or ours was set back, as
/// tests and the local runner do): it is read as full, rather than refusing the merchant until
/// our clock catches up.
const MAX_CLOCK_SKEW_MICROS: i64 = 60 * MICROS_PER_SECOND;

/// The merchant file's `api_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiLimit {
    /// Tokens added a second: the sustained request rate.
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
    /// The bucket's size: requests that may arrive at once after a quiet spell.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_rate() -> u32 {
    DEFAULT_API_RATE_PER_SECOND
}

fn default_burst() -> u32 {
    DEFAULT_API_BURST
}

impl Default for ApiLimit {
    fn default() -> Self {
        Self { rate_per_second: DEFAULT_API_RATE_PER_SECOND, burst: DEFAULT_API_BURST }
    }
}

/// What one request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// A token: the bucket's `tat` afterwards.
    Admit { tat: i64 },
    /// None left: whole seconds until there is one (at least 1).
    Refuse { retry_after_seconds: u32 },
}

/// Where the bucket must be for a step to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TatRange {
    /// Full: no bucket, `tat <= at_most` (refilled), or `tat > stale_above` (see
    /// `MAX_CLOCK_SKEW_MICROS`).
    Full { at_most: i64, stale_above: i64 },
    /// Partly used: `after < tat <= up_to`.
    Between { after: i64, up_to: i64 },
}

/// How a step changes the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TatChange {
    Set(i64),
    Add(i64),
}

/// One guarded change: a store applies it atomically, and only while the bucket is in `when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketStep {
    pub when: TatRange,
    pub change: TatChange,
}

impl BucketStep {
    /// The bucket after this step, or `None` when its guard does not hold (what a store does).
    pub fn apply(&self, tat: Option<i64>) -> Option<i64> {
        let holds = match (self.when, tat) {
            (TatRange::Full { .. }, None) => true,
            (TatRange::Full { at_most, stale_above }, Some(t)) => t <= at_most || t > stale_above,
            (TatRange::Between { .. }, None) => false,
            (TatRange::Between { after, up_to }, Some(t)) => after < t && t <= up_to,
        };
        holds.then(|| match self.change {
            TatChange::Set(v) => v,
            TatChange::Add(d) => tat.unwrap_or_default().saturating_add(d),
        })
    }
}

pub fn micros(now: DateTime<Utc>) -> i64 {
    now.timestamp_micros()
}

impl ApiLimit {
    /// Checks the settings a merchant saves.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if !(1..=MAX_API_RATE_PER_SECOND).contains(&self.rate_per_second) {
            return Err(("api_limit.rate_per_second", "must be 1 to 1000"));
        }
        if !(1..=MAX_API_BURST).contains(&self.burst) {
            return Err(("api_limit.burst", "must be 1 to 10000"));
        }
        Ok(())
    }

    /// Microseconds between two tokens (at least 1 000, since the rate is at most 1 000).
    pub fn interval(&self) -> i64 {
        MICROS_PER_SECOND / i64::from(self.rate_per_second.max(1))
    }

    /// How far ahead of `now` the bucket's `tat` may be and still give a token: `burst - 1`
    /// intervals (a full bucket gives `burst` tokens at one instant).
    fn tolerance(&self) -> i64 {
        i64::from(self.burst.max(1) - 1) * self.interval()
    }

    /// Past this, a stored `tat` cannot have been written by a clock like ours.
    fn stale_above(&self, now: i64) -> i64 {
        now + self.tolerance() + self.interval() + MAX_CLOCK_SKEW_MICROS
    }

    /// The rule: a request at `now` against a bucket at `tat` (`None`: never used, or expired).
    pub fn take(&self, tat: Option<i64>, now: DateTime<Utc>) -> Take {
        let now = micros(now);
        let tat = tat.filter(|&t| t <= self.stale_above(now)).unwrap_or(now).max(now);
        if tat <= now + self.tolerance() {
            Take::Admit { tat: tat + self.interval() }
        } else {
            Take::Refuse { retry_after_seconds: self.wait_seconds(tat, now) }
        }
    }

    /// The same rule as guarded steps, for a store to try in order, each as one atomic
    /// conditional write: a quiet bucket restarts from `now`; a busy one within its burst moves
    /// on one interval. Together they cover every bucket that has a token, and only those.
    pub fn steps(&self, now: DateTime<Utc>) -> [BucketStep; 2] {
        let now = micros(now);
        [
            BucketStep {
                when: TatRange::Full { at_most: now, stale_above: self.stale_above(now) },
                change: TatChange::Set(now + self.interval()),
            },
            BucketStep {
                when: TatRange::Between { after: now, up_to: now + self.tolerance() },
                change: TatChange::Add(self.interval()),
            },
        ]
    }

    /// Whole seconds until a bucket at `tat` has a token again; `None` when it has one now.
    pub fn retry_after(&self, tat: Option<i64>, now: DateTime<Utc>) -> Option<u32> {
        match self.take(tat, now) {
            Take::Admit { .. } => None,
            Take::Refuse { retry_after_seconds } => Some(retry_after_seconds),
        }
    }

    /// Rounded up, so a client that waits this long finds a token.
    fn wait_seconds(&self, tat: i64, now: i64) -> u32 {
        let wait = (tat - self.tolerance() - now).max(1);
        let seconds = (wait + MICROS_PER_SECOND - 1) / MICROS_PER_SECOND;
        u32::try_from(seconds).unwrap_or(u32::MAX).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t0() -> DateTime<Utc> {
        "2026-11-28T19:00:00Z".parse().unwrap()
    }

    /// Takes through the steps, as a store would.
    fn through_steps(limit: &ApiLimit, tat: &mut Option<i64>, now: DateTime<Utc>) -> bool {
        for step in limit.steps(now) {
            if let Some(next) = step.apply(*tat) {
                *tat = Some(next);
                return true;
            }
        }
        false
    }

    #[test]
    fn a_full_bucket_gives_its_burst_at_once_then_refills_at_the_rate() {
        let limit = ApiLimit { rate_per_second: 10, burst: 50 };
        let mut tat = None;
        let mut admitted = 0;
        for _ in 0..80 {
            match limit.take(tat, t0()) {
                Take::Admit { tat: next } => {
                    tat = Some(next);
                    admitted += 1;
                }
                Take::Refuse { retry_after_seconds } => assert_eq!(retry_after_seconds, 1),
            }
        }
        assert_eq!(admitted, 50);
        // A tenth of a second later, one more token; a second later, ten.
        assert!(matches!(limit.take(tat, t0() + Duration::milliseconds(100)), Take::Admit { .. }));
        let mut later = tat;
        let mut n = 0;
        while let Take::Admit { tat } = limit.take(later, t0() + Duration::seconds(1)) {
            later = Some(tat);
            n += 1;
        }
        assert_eq!(n, 10);
        // A quiet minute fills it again, to its size and no more.
        let mut quiet = tat;
        let mut n = 0;
        while let Take::Admit { tat } = limit.take(quiet, t0() + Duration::minutes(1)) {
            quiet = Some(tat);
            n += 1;
        }
        assert_eq!(n, 50);
    }

    #[test]
    fn retry_after_is_whole_seconds_until_the_next_token() {
        let limit = ApiLimit { rate_per_second: 1, burst: 2 };
        let mut tat = None;
        for _ in 0..2 {
            let Take::Admit { tat: next } = limit.take(tat, t0()) else { panic!("the burst") };
            tat = Some(next);
        }
        assert_eq!(limit.retry_after(tat, t0()), Some(1));
        assert_eq!(limit.retry_after(tat, t0() + Duration::milliseconds(999)), Some(1));
        assert_eq!(limit.retry_after(tat, t0() + Duration::seconds(1)), None);
        let slow = ApiLimit { rate_per_second: 1, burst: 1 };
        assert_eq!(slow.retry_after(Some(micros(t0()) + 5_500_000), t0()), Some(6), "rounded up");
    }

    #[test]
    fn the_guarded_steps_decide_exactly_as_the_rule() {
        for limit in [
            ApiLimit::default(),
            ApiLimit { rate_per_second: 3, burst: 1 },
            ApiLimit { rate_per_second: 1000, burst: 7 },
        ] {
            let (mut by_rule, mut by_steps) = (None, None);
            // Requests at uneven times, bursts and pauses, and now and then a clock set back.
            let mut now = t0();
            for i in 0..500i64 {
                now += Duration::microseconds((i * 7919) % 230_000);
                if i % 97 == 96 {
                    now -= Duration::minutes(10);
                }
                let admitted = match limit.take(by_rule, now) {
                    Take::Admit { tat } => {
                        by_rule = Some(tat);
                        true
                    }
                    Take::Refuse { .. } => false,
                };
                assert_eq!(through_steps(&limit, &mut by_steps, now), admitted, "request {i}");
                assert_eq!(by_rule, by_steps);
            }
        }
    }

    #[test]
    fn a_bucket_from_a_clock_far_ahead_of_ours_is_read_as_full() {
        let limit = ApiLimit { rate_per_second: 1, burst: 2 };
        // Written a day "later" (a clock set back since): not a day of refusals.
        let ahead = Some(micros(t0() + Duration::days(1)));
        assert_eq!(limit.take(ahead, t0()), Take::Admit { tat: micros(t0()) + limit.interval() });
        let mut through = ahead;
        assert!(through_steps(&limit, &mut through, t0()));
        assert_eq!(through, Some(micros(t0()) + limit.interval()));
        // Within a burst and a minute of skew, it still counts.
        let near = Some(micros(t0()) + 30 * MICROS_PER_SECOND);
        assert_eq!(limit.retry_after(near, t0()), Some(29));
    }

    #[test]
    fn settings_are_checked() {
        assert!(ApiLimit::default().validate().is_ok());
        assert_eq!(ApiLimit { rate_per_second: 0, burst: 5 }.validate().unwrap_err().0, "api_limit.rate_per_second");
        assert_eq!(ApiLimit { rate_per_second: 5, burst: 0 }.validate().unwrap_err().0, "api_limit.burst");
        let parsed: ApiLimit = serde_json::from_str(r#"{"burst": 5}"#).unwrap();
        assert_eq!(parsed, ApiLimit { rate_per_second: DEFAULT_API_RATE_PER_SECOND, burst: 5 });
        assert!(serde_json::from_str::<ApiLimit>(r#"{"rate": 5}"#).is_err());
    }
}
