//! The state of outreach: step claims and outcomes, the SMS log, the per-phone send counter, and
//! what a claim is conditioned on. Pure types; the DynamoDB adapter maps them to items.

use crate::domain::delivery::status_rank;
use crate::domain::flow::RecentSend;
use crate::domain::ids::{CartToken, MerchantId};
use crate::domain::merchant::{Channel, Merchant};
use crate::domain::phone::Phone;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How long a claim holds its step. Longer than the Twilio timeout (10 s) plus the worker's
/// Lambda timeout (30 s), so a live holder is never overtaken; shorter than the queue's
/// visibility timeout (180 s), so the redelivery of a crashed attempt finds the lease expired.
pub const CLAIM_LEASE_SECONDS: i64 = 120;

pub fn lease_until(now: DateTime<Utc>) -> DateTime<Utc> {
    now + Duration::seconds(CLAIM_LEASE_SECONDS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MerchantStatus {
    Active,
    Closed,
}

impl MerchantStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantRecord {
    pub merchant: Merchant,
    pub status: MerchantStatus,
    pub api_key_sha256: Option<String>,
    pub legal_hold: bool,
    /// How many times its settings were saved: a save conditioned on the version it read loses
    /// to a concurrent one instead of overwriting it.
    pub version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// A worker holds the step (until `lease_until`) and may be calling Twilio.
    Claimed,
    /// Twilio failed in a way worth retrying; the next delivery may claim again.
    Retry,
    Sent,
    Failed,
    Skipped,
}

impl StepState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::Retry => "retry",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub state: StepState,
    #[serde(default)]
    pub claim_id: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message_sid: Option<String>,
    #[serde(default)]
    pub error_code: Option<i64>,
    #[serde(default)]
    pub attempts: u32,
    /// Start of the first attempt whose outcome Twilio did not tell us.
    #[serde(default)]
    pub uncertain_since: Option<DateTime<Utc>>,
    /// SHA-256 of the body the last claim was about to send.
    #[serde(default)]
    pub body_sha256: Option<String>,
    /// When a claim stops protecting its holder.
    #[serde(default)]
    pub lease_until: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// What a worker may do with a step, from the step record it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepAvailability {
    /// Nobody has tried it.
    Fresh,
    /// It may be claimed again, over the record read at `attempts`; `uncertain` when an earlier
    /// attempt may have reached Twilio unanswered.
    Reclaimable { attempts: u32, expired_claim: bool, uncertain: Option<Uncertain> },
    /// Finished, or held by a live claim.
    Taken(StepRecord),
}

impl StepRecord {
    pub fn availability(record: Option<&StepRecord>, now: DateTime<Utc>) -> StepAvailability {
        let Some(r) = record else { return StepAvailability::Fresh };
        match r.state {
            StepState::Retry => StepAvailability::Reclaimable {
                attempts: r.attempts,
                expired_claim: false,
                uncertain: r.uncertain_since.map(|since| Uncertain { since, body_sha256: r.body_sha256.clone() }),
            },
            // A holder that outlived its lease crashed or hung somewhere between the claim and
            // recording the outcome: whether Twilio took the message is unknown.
            StepState::Claimed if r.lease_until.is_none_or(|l| l <= now) => StepAvailability::Reclaimable {
                attempts: r.attempts,
                expired_claim: true,
                uncertain: Some(Uncertain {
                    since: r.uncertain_since.unwrap_or(r.updated_at),
                    body_sha256: r.body_sha256.clone(),
                }),
            },
            _ => StepAvailability::Taken(r.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This worker holds the step. `uncertain` is set when an earlier attempt may have reached
    /// Twilio unanswered: the holder must look for that message before sending.
    Claimed { uncertain: Option<Uncertain> },
    /// Another delivery holds or finished this step.
    Taken(StepRecord),
    /// Something the decision read changed before the claim (an order, an opt-out, a closure,
    /// another send to the phone): decide again.
    Stale,
    /// The merchant's daily send budget is spent: nothing was claimed.
    BudgetSpent,
}

/// An earlier attempt whose outcome Twilio did not tell us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncertain {
    pub since: DateTime<Utc>,
    /// SHA-256 of the body that attempt sent, to recognise it in Twilio's message list.
    pub body_sha256: Option<String>,
}

/// How a claimed step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    Sent {
        message_sid: String,
    },
    Failed {
        error_code: Option<i64>,
        reason: String,
    },
    /// Worth retrying; `uncertain` when Twilio may have accepted the message anyway.
    Retry {
        reason: String,
        uncertain: bool,
    },
}

/// One message counted against a phone's frequency rule: the (cart, step) that claimed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedSend {
    pub cart: CartToken,
    pub step: u8,
    pub at: DateTime<Utc>,
}

/// The per-merchant, per-phone send counter. Every claim rewrites it conditioned on `version`,
/// so two carts of one phone decided in parallel cannot both see "nothing sent today".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendCounter {
    /// 0 = no counter item yet.
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub sends: Vec<CountedSend>,
}

impl SendCounter {
    /// What the frequency rule sees, leaving out the step being decided (its own earlier try).
    pub fn recent(&self, cart: &CartToken, step: u8) -> Vec<RecentSend> {
        self.sends
            .iter()
            .filter(|s| !(s.cart == *cart && s.step == step))
            .map(|s| RecentSend { at: s.at, cart: Some(s.cart.clone()) })
            .collect()
    }

    /// The sends after this claim: this (cart, step) counted once, sends older than a day dropped.
    pub fn with_claim(&self, cart: &CartToken, step: u8, now: DateTime<Utc>) -> Vec<CountedSend> {
        let mut sends: Vec<CountedSend> = self
            .sends
            .iter()
            .filter(|s| s.at > now - Duration::hours(24) && !(s.cart == *cart && s.step == step))
            .cloned()
            .collect();
        sends.push(CountedSend { cart: cart.clone(), step, at: now });
        sends
    }

    /// The sends once a claim that sent nothing is released.
    pub fn without(&self, cart: &CartToken, step: u8) -> Vec<CountedSend> {
        self.sends.iter().filter(|s| !(s.cart == *cart && s.step == step)).cloned().collect()
    }
}

/// Everything a send decision was made from; the claim holds only if none of it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimGuard {
    pub merchant_id: MerchantId,
    pub cart: CartToken,
    pub step: u8,
    pub phone: Phone,
    pub channel: Channel,
    /// The cart's version (its status was open at that version).
    pub cart_version: u64,
    /// The channel's consent state (opted in at that sequence).
    pub consent_seq: u64,
    /// The step record as read.
    pub step_seen: StepAvailability,
    pub counter: SendCounter,
    /// The number's undeliverable mark as read (its time), `None` when it had none.
    pub reach_at: Option<DateTime<Utc>>,
    /// The merchant's daily send budget: the claim counts against it and fails when it is spent.
    pub daily_budget: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outbound,
    Inbound,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsLogEntry {
    pub merchant_id: MerchantId,
    pub phone: Phone,
    pub direction: Direction,
    pub message_sid: String,
    pub body: String,
    pub status: String,
    #[serde(default)]
    pub cart_token: Option<CartToken>,
    #[serde(default)]
    pub step: Option<u8>,
    pub segments: u32,
    pub created_at: DateTime<Utc>,
    /// When retention purges it (merchant's `retention_days.sms_logs`).
    pub purge_at: DateTime<Utc>,
    /// Every status Twilio reported, with when we first heard it.
    #[serde(default)]
    pub status_history: BTreeMap<String, DateTime<Utc>>,
    #[serde(default)]
    pub error_code: Option<i64>,
    /// The sender the message went out from or came in to (a number, a Messaging Service SID):
    /// a reply to a sender the merchant no longer uses still reaches the merchant that used it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub senders: Vec<String>,
}

impl SmsLogEntry {
    pub fn status_rank(&self) -> u8 {
        status_rank(&self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn record(state: StepState, lease: Option<&str>) -> StepRecord {
        StepRecord {
            state,
            claim_id: Some("c1".into()),
            reason: None,
            message_sid: None,
            error_code: None,
            attempts: 1,
            uncertain_since: None,
            body_sha256: Some("h".into()),
            lease_until: lease.map(at),
            updated_at: at("2026-06-01T10:00:00Z"),
        }
    }

    #[test]
    fn an_expired_claim_is_reclaimable_but_uncertain() {
        let now = at("2026-06-01T10:01:00Z");
        assert_eq!(StepRecord::availability(None, now), StepAvailability::Fresh);
        let live = record(StepState::Claimed, Some("2026-06-01T10:02:00Z"));
        assert!(matches!(StepRecord::availability(Some(&live), now), StepAvailability::Taken(_)));
        let expired = record(StepState::Claimed, Some("2026-06-01T10:00:30Z"));
        assert_eq!(
            StepRecord::availability(Some(&expired), now),
            StepAvailability::Reclaimable {
                attempts: 1,
                expired_claim: true,
                uncertain: Some(Uncertain { since: at("2026-06-01T10:00:00Z"), body_sha256: Some("h".into()) })
            }
        );
        let retry = record(StepState::Retry, None);
        assert_eq!(
            StepRecord::availability(Some(&retry), now),
            StepAvailability::Reclaimable { attempts: 1, expired_claim: false, uncertain: None }
        );
        for done in [StepState::Sent, StepState::Failed, StepState::Skipped] {
            assert!(matches!(StepRecord::availability(Some(&record(done, None)), now), StepAvailability::Taken(_)));
        }
    }

    #[test]
    fn the_counter_counts_a_step_once_and_forgets_after_a_day() {
        let (a, b) = (CartToken::parse("a").unwrap(), CartToken::parse("b").unwrap());
        let now = at("2026-06-02T12:00:00Z");
        let c = SendCounter {
            version: 3,
            sends: vec![
                CountedSend { cart: a.clone(), step: 0, at: at("2026-06-01T11:00:00Z") },
                CountedSend { cart: b.clone(), step: 0, at: at("2026-06-02T09:00:00Z") },
                CountedSend { cart: a.clone(), step: 1, at: at("2026-06-02T10:00:00Z") },
            ],
        };
        let next = c.with_claim(&a, 1, now);
        assert_eq!(next.len(), 2, "the old one aged out, a#1 counted once");
        assert!(next.iter().any(|s| s.cart == a && s.step == 1 && s.at == now));
        assert_eq!(c.recent(&a, 1).len(), 2);
        assert_eq!(c.without(&b, 0).len(), 2);
    }
}
