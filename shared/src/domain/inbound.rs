//! An inbound text as Twilio delivered it: what is needed to apply it again later, the consent
//! event a keyword in it makes, and its log entry (the message as received, stored before it is
//! classified).

use crate::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, Evidence};
use crate::domain::keywords::Classified;
use crate::domain::merchant::Channel;
use crate::domain::outreach::{Direction, MerchantRecord, SmsLogEntry};
use crate::domain::phone::Phone;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How long after a keyword its confirmation may still be sent: the FCC's revocation rule allows
/// one confirmation text within five minutes of the request (47 CFR 64.1200(a)(12)), and a
/// confirmation later than that would arrive unexplained.
pub const CONFIRM_WITHIN_SECONDS: i64 = 5 * 60;

/// An inbound message as Twilio delivered it: what is needed to apply it again later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMessage {
    pub message_sid: String,
    pub from: Phone,
    pub to: String,
    #[serde(default)]
    pub messaging_service_sid: String,
    pub body: String,
    pub segments: u32,
    pub received_at: DateTime<Utc>,
}

impl InboundMessage {
    pub fn senders(&self) -> [&str; 2] {
        [self.to.as_str(), self.messaging_service_sid.as_str()]
    }

    pub fn event(&self, c: &Classified, action: ConsentAction, channel: Channel) -> ConsentEvent {
        ConsentEvent {
            channel,
            action,
            source: ConsentSource::Keyword,
            occurred_at: self.received_at,
            recorded_at: self.received_at,
            evidence: Evidence {
                message_sid: Some(self.message_sid.clone()),
                keyword: c.rule.clone(),
                collected_from: Some("sms_reply".into()),
                ..Default::default()
            },
        }
    }

    /// How long a confirmation of this message may still take at `now` (seconds, at least 1);
    /// `None` once its five minutes are over (or before it was received: a clock behind).
    pub fn confirmation_left(&self, now: DateTime<Utc>) -> Option<u32> {
        let left = CONFIRM_WITHIN_SECONDS - (now - self.received_at).num_seconds();
        (now >= self.received_at && left >= 0).then(|| u32::try_from(left).unwrap_or(1).max(1))
    }

    pub fn log_entry(&self, r: &MerchantRecord) -> SmsLogEntry {
        SmsLogEntry {
            merchant_id: r.merchant.id.clone(),
            phone: self.from.clone(),
            direction: Direction::Inbound,
            message_sid: self.message_sid.clone(),
            body: self.body.clone(),
            status: "received".into(),
            cart_token: None,
            step: None,
            segments: self.segments,
            created_at: self.received_at,
            purge_at: self.received_at + Duration::days(i64::from(r.merchant.retention_days.sms_logs)),
            status_history: Default::default(),
            error_code: None,
            senders: self.senders().iter().filter(|s| !s.is_empty()).map(|s| s.to_string()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stop_at(received_at: DateTime<Utc>) -> InboundMessage {
        InboundMessage {
            message_sid: "SM1".into(),
            from: Phone::parse("+14155552671", None).unwrap(),
            to: "+14155550100".into(),
            messaging_service_sid: String::new(),
            body: "STOP".into(),
            segments: 1,
            received_at,
        }
    }

    #[test]
    fn a_confirmation_may_go_out_within_five_minutes_of_the_keyword_only() {
        let t = "2026-12-07T15:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let m = stop_at(t);
        assert!(m.confirmation_left(t).is_some());
        assert!(m.confirmation_left(t + Duration::seconds(CONFIRM_WITHIN_SECONDS)).is_some());
        assert!(
            m.confirmation_left(t + Duration::seconds(CONFIRM_WITHIN_SECONDS + 1)).is_none(),
            "too late to explain itself"
        );
        assert!(m.confirmation_left(t - Duration::seconds(1)).is_none(), "a clock behind the receipt proves nothing");
        assert_eq!(
            m.confirmation_left(t + Duration::seconds(60)),
            Some(240),
            "what is left is what Twilio may hold it"
        );
    }
}
