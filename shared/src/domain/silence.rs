//! Silence is an alarm (issue 21): a merchant whose platform stops delivering (a WooCommerce
//! webhook disabled after failures, an uninstalled app) is reported by the daily check. The
//! delivery stamp is a UTC day, written at most once a day per merchant, so the rule reads it as
//! "delivered by the end of that day" and never reports a merchant too early.

use crate::domain::merchant::Merchant;
use crate::domain::outreach::MerchantStatus;
use chrono::{DateTime, Duration, NaiveDate, Utc};

/// What the check knows about one merchant.
#[derive(Debug, Clone)]
pub struct Watched {
    pub merchant: Merchant,
    pub status: MerchantStatus,
    /// When the profile was created: the clock of a merchant with no delivery yet starts here.
    pub created_at: Option<DateTime<Utc>>,
    /// The UTC day of the last accepted platform delivery.
    pub last_delivery_day: Option<NaiveDate>,
}

/// The UTC day of `now`, as the delivery stamp stores it (`YYYY-MM-DD`).
pub fn day_of(now: DateTime<Utc>) -> String {
    now.format("%Y-%m-%d").to_string()
}

/// Since when the merchant has been silent as of `now`, when that is longer than its threshold;
/// `None` for a merchant that is fine, closed, or has the check off (`alerts.silence_hours: 0`).
pub fn silent_since(w: &Watched, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if w.status == MerchantStatus::Closed {
        return None;
    }
    let threshold = w.merchant.alerts.silence_threshold()?;
    // The latest the last delivery can have been: the end of its day.
    let delivered =
        w.last_delivery_day.and_then(|d| d.succ_opt()).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc());
    let since = match (delivered, w.created_at) {
        (Some(d), Some(c)) => d.max(c),
        (Some(d), None) => d,
        (None, Some(c)) => c,
        // Neither a delivery nor a creation time: nothing to measure from.
        (None, None) => return None,
    };
    (now - since > threshold).then_some(since)
}

/// Whole hours from `since` to `now`, for the log line.
pub fn hours_between(since: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (now - since).num_hours().max(0)
}

/// The threshold the rule applied, for the log line.
pub fn threshold_hours(m: &Merchant) -> Option<i64> {
    m.alerts.silence_threshold().map(|d: Duration| d.num_hours())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(last: Option<&str>, created: &str) -> Watched {
        let merchant = Merchant::from_json(include_str!("../../../events/demo-merchant.json")).unwrap();
        Watched {
            merchant,
            status: MerchantStatus::Active,
            created_at: Some(created.parse().unwrap()),
            last_delivery_day: last.map(|d| d.parse().unwrap()),
        }
    }

    #[test]
    fn a_day_without_deliveries_is_silence() {
        let now: DateTime<Utc> = "2026-12-06T06:00:00Z".parse().unwrap();
        // Delivered yesterday: at most 6 hours of silence.
        assert_eq!(silent_since(&watched(Some("2026-12-05"), "2026-11-01T00:00:00Z"), now), None);
        // Delivered the day before: at least 30 hours.
        let w = watched(Some("2026-12-04"), "2026-11-01T00:00:00Z");
        assert_eq!(silent_since(&w, now), Some("2026-12-05T00:00:00Z".parse().unwrap()));
        // Never delivered: the clock starts at creation.
        assert_eq!(silent_since(&watched(None, "2026-12-05T12:00:00Z"), now), None);
        assert!(silent_since(&watched(None, "2026-12-04T12:00:00Z"), now).is_some());
        // Closed, or the check turned off: never.
        let mut closed = watched(Some("2026-11-01"), "2026-10-01T00:00:00Z");
        closed.status = MerchantStatus::Closed;
        assert_eq!(silent_since(&closed, now), None);
        let mut off = watched(Some("2026-11-01"), "2026-10-01T00:00:00Z");
        off.merchant.alerts.silence_hours = Some(0);
        assert_eq!(silent_since(&off, now), None);
        // A longer threshold waits longer.
        let mut weekly = watched(Some("2026-12-01"), "2026-10-01T00:00:00Z");
        weekly.merchant.alerts.silence_hours = Some(24 * 7);
        assert_eq!(silent_since(&weekly, now), None);
        assert_eq!(day_of(now), "2026-12-06");
    }
}
