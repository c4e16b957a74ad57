//! What Twilio's delivery reports tell us about a message and about the number it went to.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Twilio: the recipient opted out (carrier or Advanced Opt-Out); later sends are refused.
pub const UNSUBSCRIBED: i64 = 21610;
/// Twilio: unreachable destination handset (may be switched off or roaming).
pub const UNREACHABLE: i64 = 30003;
/// Twilio: unknown destination handset (the number is not in service).
pub const UNKNOWN_HANDSET: i64 = 30005;
/// Twilio: landline or unreachable carrier.
pub const LANDLINE: i64 = 30006;

/// An unreachable phone may come back; retry it after this long.
pub const UNREACHABLE_HOLD_DAYS: i64 = 30;

/// Whether an error code means the number cannot take our texts.
pub fn is_undeliverable(code: i64) -> bool {
    matches!(code, UNREACHABLE | UNKNOWN_HANDSET | LANDLINE)
}

/// Where a status sits in a message's life, so a late "sent" never replaces "delivered".
pub fn status_rank(status: &str) -> u8 {
    match status {
        "queued" | "accepted" | "scheduled" => 1,
        "sending" => 2,
        "sent" => 3,
        "delivered" | "undelivered" | "failed" | "canceled" | "receiving" | "received" => 4,
        "read" => 5,
        _ => 0,
    }
}

/// A number a delivery report said cannot take SMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undeliverable {
    pub error_code: i64,
    pub message_sid: String,
    pub at: DateTime<Utc>,
}

impl Undeliverable {
    /// Landlines and unknown handsets stay blocked; an unreachable phone only for a while.
    pub fn blocks(&self, now: DateTime<Utc>) -> bool {
        match self.error_code {
            UNREACHABLE => now < self.at + Duration::days(UNREACHABLE_HOLD_DAYS),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_order_the_lifecycle() {
        assert!(status_rank("queued") < status_rank("sent"));
        assert!(status_rank("sent") < status_rank("delivered"));
        assert!(status_rank("delivered") < status_rank("read"));
        assert_eq!(status_rank("bogus"), 0);
    }

    #[test]
    fn unreachable_expires_landline_does_not() {
        let at: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let u = |code| Undeliverable { error_code: code, message_sid: "SM1".into(), at };
        assert!(u(UNREACHABLE).blocks(at + Duration::days(29)));
        assert!(!u(UNREACHABLE).blocks(at + Duration::days(31)));
        assert!(u(LANDLINE).blocks(at + Duration::days(3650)));
        assert!(u(UNKNOWN_HANDSET).blocks(at + Duration::days(3650)));
        assert!(is_undeliverable(30006) && is_undeliverable(30003) && !is_undeliverable(30007));
    }
}
