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
    /// Said to the voice agent (the words are the evidence).
    Spoken,
    CarrierError,
    Admin,
}

impl ConsentSource {
    /// As stored (serde's snake_case), for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Checkout => "checkout",
            Self::PlatformConsentWebhook => "platform_consent_webhook",
            Self::Api => "api",
            Self::Keyword => "keyword",
            Self::KeyPress => "key_press",
            Self::Spoken => "spoken",
            Self::CarrierError => "carrier_error",
            Self::Admin => "admin",
        }
    }

    /// Sources where the person themself acted (as opposed to a platform's record of them).
    pub fn is_from_person(self) -> bool {
        matches!(self, Self::Keyword | Self::KeyPress | Self::Spoken | Self::CarrierError)
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
    /// For keyword events: the classifier rule that matched (e.g. `keyword:stop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<String>,
    /// For spoken opt-outs: the words as transcribed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<String>,
}

impl Evidence {
    /// Evidence that shows what the person agreed to or when: enough to stand on its own.
    pub fn substantiates_opt_in(&self) -> bool {
        self.consent_text.is_some() || self.platform_timestamp.is_some() || self.message_sid.is_some()
    }
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

impl ConsentEvent {
    /// Twilio refused or reported error 21610: the person opted out at the carrier.
    pub fn carrier_opt_out(now: DateTime<Utc>, message_sid: Option<&str>) -> Self {
        Self {
            channel: Channel::Sms,
            action: ConsentAction::OptOut,
            source: ConsentSource::CarrierError,
            occurred_at: now,
            recorded_at: now,
            evidence: Evidence {
                platform_event_id: Some("twilio-error-21610".into()),
                message_sid: message_sid.map(str::to_string),
                ..Default::default()
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    #[default]
    Unknown,
    OptedIn,
    OptedOut,
}

impl ConsentStatus {
    /// As stored (serde's snake_case), for conditions on it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::OptedIn => "opted_in",
            Self::OptedOut => "opted_out",
        }
    }
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
    /// The first entry retention kept (0 or 1: none purged yet); written only by the purger.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub first_seq: u64,
    /// The hash of the last purged entry: where the kept chain starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_hash: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What survives of a channel's opt-out when everything else about the person is gone
/// (retention, a deletion request, `customers/redact`, account closure): its date and source,
/// stored under a keyed hash. No platform consent older than it can turn it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub at: DateTime<Utc>,
    pub source: ConsentSource,
}

impl ConsentState {
    /// The state of a channel whose ledger is gone but whose opt-out was kept: opted out as of
    /// that date, so the usual verdicts refuse any older (or unsubstantiated) opt-in.
    pub fn suppressed(s: &Suppression) -> Self {
        Self {
            status: ConsentStatus::OptedOut,
            seq: 0,
            head_hash: None,
            last_source: Some(s.source),
            last_occurred_at: Some(s.at),
            first_seq: 0,
            checkpoint_hash: None,
        }
    }

    /// The suppression this state implies, if it is an opt-out.
    pub fn suppression(&self) -> Option<Suppression> {
        match (self.status, self.last_occurred_at, self.last_source) {
            (ConsentStatus::OptedOut, Some(at), Some(source)) => Some(Suppression { at, source }),
            _ => None,
        }
    }

    pub fn allows_outreach(&self) -> bool {
        self.status == ConsentStatus::OptedIn
    }

    /// Decides whether an event changes the state. Repeats are not appended.
    pub fn accepts(&self, event: &ConsentEvent) -> bool {
        self.verdict(event) == Verdict::Accept
    }

    /// Like `accepts`, with the reason when not. Opt-outs apply, except the person's own that a
    /// later opt-in of theirs has already overtaken (a STOP's late copy after their START). An
    /// opt-in never replaces an opt-out from the same instant or later, whatever the sources;
    /// and one the person made themself also needs the opt-in to carry its own evidence. A
    /// person's repeated opt-out is recorded when it is newer (the ledger's opt-out time moves
    /// on, so a START received before it and applied after is refused).
    pub fn verdict(&self, event: &ConsentEvent) -> Verdict {
        let newer = self.last_occurred_at.is_none_or(|at| event.occurred_at > at);
        // Strictly older: on a tie the opt-out wins (when in doubt we do not text).
        let older = self.last_occurred_at.is_some_and(|at| event.occurred_at < at);
        // What the person said or keyed (not a carrier's report, which always applies).
        let by_person =
            matches!(event.source, ConsentSource::Keyword | ConsentSource::KeyPress | ConsentSource::Spoken);
        match (self.status, event.action) {
            (ConsentStatus::OptedOut, ConsentAction::OptOut) if newer && by_person => Verdict::Accept,
            (ConsentStatus::OptedIn, ConsentAction::OptOut)
                if older && by_person && self.last_source.is_some_and(ConsentSource::is_from_person) =>
            {
                Verdict::Unchanged
            }
            (ConsentStatus::OptedIn, ConsentAction::OptIn) | (ConsentStatus::OptedOut, ConsentAction::OptOut) => {
                Verdict::Unchanged
            }
            (ConsentStatus::OptedOut, ConsentAction::OptIn) => match (self.last_source, self.last_occurred_at) {
                // A tie is refused too: when in doubt we do not text.
                (_, Some(at)) if event.occurred_at <= at => Verdict::OptedOutLater { at },
                (Some(src), Some(at)) if src.is_from_person() && !event.evidence.substantiates_opt_in() => {
                    Verdict::PersonOptedOut { at }
                }
                _ => Verdict::Accept,
            },
            _ => Verdict::Accept,
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
            first_seq: self.first_seq,
            checkpoint_hash: self.checkpoint_hash.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// The state already says this.
    Unchanged,
    /// The opt-out at `at` happened at the same time as this opt-in or after it.
    OptedOutLater {
        at: DateTime<Utc>,
    },
    /// The person opted out themself at `at`; this newer opt-in has no evidence of its own.
    PersonOptedOut {
        at: DateTime<Utc>,
    },
}

/// One stored ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub seq: u64,
    pub hash: String,
    pub prev_hash: Option<String>,
    pub event: ConsentEvent,
}

/// The first place a ledger's chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("entry {seq}: its content does not match its stored hash (altered)")]
    Altered { seq: u64 },
    #[error("entry {seq}: it does not link to entry {prev}'s hash (altered or re-ordered)")]
    Unlinked { seq: u64, prev: u64 },
    #[error("entry {expected} is missing (found {found} in its place)")]
    Missing { expected: u64, found: u64 },
    #[error("the state item says {state_seq} entries ending in {state_hash}, the ledger has {ledger_seq}")]
    StateMismatch { state_seq: u64, state_hash: String, ledger_seq: u64 },
}

/// Re-walks a ledger (oldest first) and the state item on top of it.
pub fn verify_chain(entries: &[LedgerEntry], state: &ConsentState) -> Result<u64, ChainBreak> {
    // Retention purged the entries before `first_seq`; the chain starts at its checkpoint.
    let first = state.first_seq.max(1);
    let mut prev_hash: Option<String> = state.checkpoint_hash.clone();
    for (i, e) in entries.iter().enumerate() {
        let expected = first + i as u64;
        if e.seq != expected {
            return Err(ChainBreak::Missing { expected, found: e.seq });
        }
        if e.prev_hash != prev_hash {
            return Err(ChainBreak::Unlinked { seq: e.seq, prev: expected - 1 });
        }
        if entry_hash(prev_hash.as_deref(), e.seq, &e.event) != e.hash {
            return Err(ChainBreak::Altered { seq: e.seq });
        }
        prev_hash = Some(e.hash.clone());
    }
    let ledger_seq = first - 1 + entries.len() as u64;
    let head = prev_hash;
    if state.seq != ledger_seq || state.head_hash != head {
        return Err(ChainBreak::StateMismatch {
            state_seq: state.seq,
            state_hash: state.head_hash.clone().unwrap_or_else(|| "nothing".into()),
            ledger_seq,
        });
    }
    Ok(ledger_seq)
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
        assert!(matches!(s2.verdict(&fresh), Verdict::PersonOptedOut { .. }), "newer, but no evidence of its own");
        let mut evidenced = fresh.clone();
        evidenced.evidence.consent_text = Some("Text me cart reminders".into());
        assert!(s2.accepts(&evidenced));
        let restart = ConsentEvent {
            evidence: Evidence { message_sid: Some("SM1".into()), ..Default::default() },
            ..ev(ConsentAction::OptIn, ConsentSource::Keyword, "2026-01-03T00:00:00Z")
        };
        assert!(s2.accepts(&restart), "START by text is its own evidence");
    }

    fn opted_out(source: ConsentSource, at: &str) -> ConsentState {
        let e = ev(ConsentAction::OptOut, source, at);
        ConsentState::default().after(&e, entry_hash(None, 1, &e))
    }

    #[test]
    fn an_opt_in_never_replaces_a_later_opt_out() {
        let s = opted_out(ConsentSource::PlatformConsentWebhook, "2026-06-01T10:50:00Z");
        let at = "2026-06-01T10:50:00Z".parse().unwrap();
        let late_webhook = ev(ConsentAction::OptIn, ConsentSource::Checkout, "2026-06-01T10:44:00Z");
        assert_eq!(s.verdict(&late_webhook), Verdict::OptedOutLater { at });
        let newer = ev(ConsentAction::OptIn, ConsentSource::Checkout, "2026-06-01T10:55:00Z");
        assert_eq!(s.verdict(&newer), Verdict::Accept, "a platform opt-out needs no evidence to undo");

        let s = opted_out(ConsentSource::Api, "2026-06-01T10:50:00Z");
        let same_instant = ev(ConsentAction::OptIn, ConsentSource::Api, "2026-06-01T10:50:00Z");
        assert_eq!(s.verdict(&same_instant), Verdict::OptedOutLater { at });
        assert!(!s.accepts(&same_instant));
    }

    #[test]
    fn later_opt_out_is_checked_before_the_persons_own() {
        let s = opted_out(ConsentSource::Keyword, "2026-06-01T10:50:00Z");
        let at = "2026-06-01T10:50:00Z".parse().unwrap();
        let mut older = ev(ConsentAction::OptIn, ConsentSource::Api, "2026-06-01T10:49:00Z");
        older.evidence.consent_text = Some("Text me".into());
        assert_eq!(s.verdict(&older), Verdict::OptedOutLater { at }, "evidence does not make an older opt-in newer");
        let newer = ev(ConsentAction::OptIn, ConsentSource::Api, "2026-06-01T10:51:00Z");
        assert_eq!(s.verdict(&newer), Verdict::PersonOptedOut { at });
    }

    #[test]
    fn opt_outs_apply_whatever_their_time() {
        let e = ev(ConsentAction::OptIn, ConsentSource::Api, "2026-06-01T10:50:00Z");
        let s = ConsentState::default().after(&e, entry_hash(None, 1, &e));
        let older_out = ev(ConsentAction::OptOut, ConsentSource::PlatformConsentWebhook, "2026-06-01T10:00:00Z");
        assert_eq!(s.verdict(&older_out), Verdict::Accept);
    }

    #[test]
    fn a_persons_keywords_apply_in_the_order_they_were_received() {
        // STOP at :00, START at :02 (applied), then the STOP's late copy: the START stands.
        let stop = ev(ConsentAction::OptOut, ConsentSource::Keyword, "2026-06-01T10:00:00Z");
        let s = ConsentState::default().after(&stop, entry_hash(None, 1, &stop));
        let start = ConsentEvent {
            evidence: Evidence { message_sid: Some("SM2".into()), ..Default::default() },
            ..ev(ConsentAction::OptIn, ConsentSource::Keyword, "2026-06-01T10:02:00Z")
        };
        assert_eq!(s.verdict(&start), Verdict::Accept);
        let s = s.after(&start, entry_hash(s.head_hash.as_deref(), 2, &start));
        let late_stop = ev(ConsentAction::OptOut, ConsentSource::Keyword, "2026-06-01T10:01:00Z");
        assert_eq!(s.verdict(&late_stop), Verdict::Unchanged, "overtaken by the person's own START");
        let tie = ev(ConsentAction::OptOut, ConsentSource::Keyword, "2026-06-01T10:02:00Z");
        assert_eq!(s.verdict(&tie), Verdict::Accept, "on a tie the opt-out wins");
        let platform = ev(ConsentAction::OptOut, ConsentSource::PlatformConsentWebhook, "2026-06-01T10:01:00Z");
        assert_eq!(s.verdict(&platform), Verdict::Accept, "only the person's own opt-out can be overtaken");

        // Out since :00; STOP again at :05 is recorded, so a START received at :03 and applied
        // late is older than the last opt-out and refused.
        let s = ConsentState::default().after(&stop, entry_hash(None, 1, &stop));
        let again = ev(ConsentAction::OptOut, ConsentSource::Keyword, "2026-06-01T10:05:00Z");
        assert_eq!(s.verdict(&again), Verdict::Accept);
        let s = s.after(&again, entry_hash(s.head_hash.as_deref(), 2, &again));
        let late_start = ev(ConsentAction::OptIn, ConsentSource::Keyword, "2026-06-01T10:03:00Z");
        assert!(matches!(s.verdict(&late_start), Verdict::OptedOutLater { .. }));
        let platform_again = ev(ConsentAction::OptOut, ConsentSource::Checkout, "2026-06-01T10:06:00Z");
        assert_eq!(s.verdict(&platform_again), Verdict::Unchanged, "a platform's repeat is not a new record");
    }

    fn chain(n: usize) -> (Vec<LedgerEntry>, ConsentState) {
        let mut state = ConsentState::default();
        let mut entries = Vec::new();
        for i in 0..n {
            let action = if i % 2 == 0 { ConsentAction::OptIn } else { ConsentAction::OptOut };
            let e = ev(action, ConsentSource::Api, "2026-01-01T00:00:00Z");
            let hash = entry_hash(state.head_hash.as_deref(), state.seq + 1, &e);
            entries.push(LedgerEntry {
                seq: state.seq + 1,
                hash: hash.clone(),
                prev_hash: state.head_hash.clone(),
                event: e.clone(),
            });
            state = state.after(&e, hash);
        }
        (entries, state)
    }

    #[test]
    fn verify_names_the_first_broken_link() {
        let (entries, state) = chain(4);
        assert_eq!(verify_chain(&entries, &state), Ok(4));
        assert_eq!(verify_chain(&[], &ConsentState::default()), Ok(0));

        let mut altered = entries.clone();
        altered[1].event.evidence.ip = Some("6.6.6.6".into());
        assert_eq!(verify_chain(&altered, &state), Err(ChainBreak::Altered { seq: 2 }));

        let mut rehashed = altered.clone();
        rehashed[1].hash = entry_hash(rehashed[0].hash.as_str().into(), 2, &rehashed[1].event);
        assert_eq!(verify_chain(&rehashed, &state), Err(ChainBreak::Unlinked { seq: 3, prev: 2 }));

        let mut gap = entries.clone();
        gap.remove(2);
        assert_eq!(verify_chain(&gap, &state), Err(ChainBreak::Missing { expected: 3, found: 4 }));

        let truncated = &entries[..3];
        assert!(matches!(verify_chain(truncated, &state), Err(ChainBreak::StateMismatch { .. })));
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
