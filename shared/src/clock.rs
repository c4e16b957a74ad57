//! Time is injected: domain rules take `now`, handlers hold a `Clock`.

use chrono::{DateTime, Duration, Utc};
use std::sync::Mutex;
use std::time::Instant;

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock, used in Lambda.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Starts at a chosen instant and runs forward in real time (`CALLFY_LOCAL_NOW`).
#[derive(Debug)]
pub struct OffsetClock {
    start: DateTime<Utc>,
    started: Instant,
}

impl OffsetClock {
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Self { start, started: Instant::now() }
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = Duration::from_std(self.started.elapsed()).unwrap_or_else(|_| Duration::zero());
        self.start + elapsed
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    pub fn advance(&self, by: Duration) {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *guard += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_clock_runs_forward_from_its_start() {
        let start: DateTime<Utc> = "2026-06-01T15:00:00Z".parse().unwrap();
        let clock = OffsetClock::starting_at(start);
        let now = clock.now();
        assert!(now >= start && now < start + Duration::seconds(5));
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start: DateTime<Utc> = "2026-06-01T15:00:00Z".parse().unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::minutes(30));
        assert_eq!(clock.now(), start + Duration::minutes(30));
    }
}
