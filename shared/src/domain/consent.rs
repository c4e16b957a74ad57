//! Consent is an append-only ledger per merchant, phone and channel; the state is derived.

use crate::domain::merchant::Channel;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentAction {
    OptIn,
    OptOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentSource {
    Checkout,
    PlatformConsentWebhook,
    Api,
    Keyword,
    KeyPress,
    CarrierError,
    Admin,
}

impl ConsentSource {
    /// Sources where the person themself acted (as opposed to a platform's record of them).
    pub fn is_from_person(self) -> bool {
        matches!(self, Self::Keyword | Self::KeyPress | Self::CarrierError)
    }
}

/// What proves the event: everything optional, since platforms share different fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_text_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_in_level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collected_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_sid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentEvent {
    pub channel: Channel,
    pub action: ConsentAction,
    pub source: ConsentSource,
    /// When the person consented or revoked, as best known.
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub evidence: Evidence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    #[default]
    Unknown,
    OptedIn,
    OptedOut,
}

/// The derived head of one ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConsentState {
    pub status: ConsentStatus,
    /// Number of entries in the ledger; the next entry gets `seq + 1`.
    pub seq: u64,
    pub head_hash: Option<String>,
    pub last_source: Option<ConsentSource>,
    pub last_occurred_at: Option<DateTime<Utc>>,
}

impl ConsentState {
    pub fn allows_outreach(&self) -> bool {
        self.status == ConsentStatus::OptedIn
    }

    /// Decides whether an event changes the state. Repeats are not appended; an opt-in never
    /// overrides a person's own opt-out unless it happened later.
    pub fn accepts(&self, event: &ConsentEvent) -> bool {
        match (self.status, event.action) {
            (ConsentStatus::OptedIn, ConsentAction::OptIn) | (ConsentStatus::OptedOut, ConsentAction::OptOut) => false,
            (ConsentStatus::OptedOut, ConsentAction::OptIn) => match (self.last_source, self.last_occurred_at) {
                (Some(src), Some(at)) if src.is_from_person() => event.occurred_at > at,
                _ => true,
            },
            (ConsentStatus::Unknown, ConsentAction::OptOut) => true,
            _ => true,
        }
    }

    /// The status an accepted event leads to.
    pub fn status_after(action: ConsentAction) -> ConsentStatus {
        match action {
            ConsentAction::OptIn => ConsentStatus::OptedIn,
            ConsentAction::OptOut => ConsentStatus::OptedOut,
        }
    }

    /// The state after appending `event` whose hash is `hash`.
    pub fn after(&self, event: &ConsentEvent, hash: String) -> Self {
        Self {
            status: Self::status_after(event.action),
            seq: self.seq + 1,
            head_hash: Some(hash),
            last_source: Some(event.source),
            last_occurred_at: Some(event.occurred_at),
        }
    }
}

/// Tamper evidence: each entry's hash covers its content and the previous entry's hash.
pub fn entry_hash(prev_hash: Option<&str>, seq: u64, event: &ConsentEvent) -> String {
    let content = serde_json::to_string(event).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(prev_hash.unwrap_or("genesis").as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(content.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(action: ConsentAction, source: ConsentSource, at: &str) -> ConsentEvent {
        ConsentEvent {
            channel: Channel::Sms,
            action,
            source,
            occurred_at: at.parse().unwrap(),
            recorded_at: at.parse().unwrap(),
            evidence: Evidence::default(),
        }
    }

    #[test]
    fn opt_in_then_out_then_in_again() {
        let s0 = ConsentState::default();
        assert!(!s0.allows_outreach());
        let e1 = ev(ConsentAction::OptIn, ConsentSource::Checkout, "2026-01-01T00:00:00Z");
        assert!(s0.accepts(&e1));
        let s1 = s0.after(&e1, entry_hash(None, 1, &e1));
        assert!(s1.allows_outreach());
        assert!(!s1.accepts(&e1), "repeat opt-in is not appended");

        let e2 = ev(ConsentAction::OptOut, ConsentSource::Keyword, "2026-01-02T00:00:00Z");
        let s2 = s1.after(&e2, entry_hash(s1.head_hash.as_deref(), 2, &e2));
        assert_eq!(s2.status, ConsentStatus::OptedOut);
        assert_eq!(s2.seq, 2);

        let stale = ev(ConsentAction::OptIn, ConsentSource::Checkout, "2026-01-01T12:00:00Z");
        assert!(!s2.accepts(&stale), "an older checkout opt-in cannot undo a STOP");
        let fresh = ev(ConsentAction::OptIn, ConsentSource::Checkout, "2026-01-03T00:00:00Z");
        assert!(s2.accepts(&fresh));
    }

    #[test]
    fn hash_chain_depends_on_content_and_predecessor() {
        let e = ev(ConsentAction::OptIn, ConsentSource::Checkout, "2026-01-01T00:00:00Z");
        let h1 = entry_hash(None, 1, &e);
        assert_eq!(h1, entry_hash(None, 1, &e));
        assert_ne!(h1, entry_hash(Some("x"), 1, &e));
        let mut altered = e.clone();
        altered.evidence.ip = Some("1.2.3.4".into());
        assert_ne!(h1, entry_hash(None, 1, &altered));
    }
}
