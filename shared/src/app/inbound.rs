//! One inbound text, applied: keyword opt-outs and opt-ins for every merchant on the sender,
//! queued outreach cancelled, the message logged once per merchant. sms-inbound runs it inline;
//! for an opt-out it first puts the raw message on the queue, and the worker replays it until
//! it holds, so a storage failure cannot lose a revocation (Twilio does not retry inbound
//! webhooks).

use crate::adapters::dynamo::{Store, StoreError};
use crate::app::consent;
use crate::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, ConsentStatus, Evidence};
use crate::domain::keywords::{Classified, Intent, classify};
use crate::domain::merchant::Channel;
use crate::domain::outreach::{Direction, MerchantRecord, SmsLogEntry};
use crate::domain::phone::Phone;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tracing::info;

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

/// What applying a message did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub classified: Classified,
    /// Merchants whose consent this message changed.
    pub affected: Vec<MerchantRecord>,
    /// False when every merchant had logged this message before (a redelivery).
    pub first: bool,
}

impl InboundMessage {
    pub fn senders(&self) -> [&str; 2] {
        [self.to.as_str(), self.messaging_service_sid.as_str()]
    }

    fn event(&self, c: &Classified, action: ConsentAction, channel: Channel) -> ConsentEvent {
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

    fn log_entry(&self, r: &MerchantRecord) -> SmsLogEntry {
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
        }
    }
}

/// Applies `msg` for `merchants` (those on its sender). Every step is idempotent, so a replay
/// of a message applied before changes nothing; the log marker, written last, tells a first
/// delivery from a redelivery.
pub async fn apply(store: &Store, msg: &InboundMessage, merchants: &[MerchantRecord]) -> Result<Applied, StoreError> {
    let classified = classify(&msg.body);
    let mut affected = Vec::new();
    for record in merchants {
        let changed = match classified.intent {
            Intent::OptOut => opt_out(store, record, msg, &classified).await?,
            Intent::OptIn => opt_in(store, record, msg, &classified).await?,
            Intent::Help | Intent::Other => false,
        };
        if changed {
            affected.push(record.clone());
        }
    }
    let entries: Vec<SmsLogEntry> = merchants.iter().map(|r| msg.log_entry(r)).collect();
    let first = store.record_inbound(&entries, msg.received_at).await?;
    Ok(Applied { classified, affected, first })
}

/// A texted revocation ends SMS and voice outreach alike, and cancels what is queued.
async fn opt_out(
    store: &Store,
    record: &MerchantRecord,
    msg: &InboundMessage,
    c: &Classified,
) -> Result<bool, StoreError> {
    let (m, from, now) = (&record.merchant, &msg.from, msg.received_at);
    consent::record(store, m, from, &msg.event(c, ConsentAction::OptOut, Channel::Voice), now).await?;
    let sms = consent::record(store, m, from, &msg.event(c, ConsentAction::OptOut, Channel::Sms), now).await?;
    let changed = sms.state.is_some();
    info!(merchant = %m.id, phone = %from.log_id(), changed, "opt-out by SMS");
    Ok(changed)
}

/// START re-subscribes a number that opted out; it does not create consent from nothing, and a
/// "yes" from someone already subscribed is conversation, not a keyword to confirm.
async fn opt_in(
    store: &Store,
    record: &MerchantRecord,
    msg: &InboundMessage,
    c: &Classified,
) -> Result<bool, StoreError> {
    let (m, from, now) = (&record.merchant, &msg.from, msg.received_at);
    let state = store.consent_state(&m.id, from, Channel::Sms).await?;
    match state.status {
        ConsentStatus::Unknown | ConsentStatus::OptedIn => Ok(false),
        ConsentStatus::OptedOut => {
            let event = msg.event(c, ConsentAction::OptIn, Channel::Sms);
            let changed = consent::record(store, m, from, &event, now).await?.state.is_some();
            info!(merchant = %m.id, phone = %from.log_id(), changed, "opt-in by SMS");
            Ok(changed)
        }
    }
}

/// The worker's replay of a queued message: applies it for the merchants whose inline attempt
/// did not finish. The log marker is written last, so a merchant that has it has the whole
/// message applied; replaying it there could undo a START texted since.
pub async fn replay(store: &Store, msg: &InboundMessage) -> Result<Applied, StoreError> {
    let mut pending = Vec::new();
    for record in store.merchants_for_senders(&msg.senders()).await? {
        if !store.inbound_seen(&record.merchant.id, &msg.message_sid).await? {
            pending.push(record);
        }
    }
    let applied = apply(store, msg, &pending).await?;
    info!(sid = %msg.message_sid, phone = %msg.from.log_id(), changed = applied.affected.len(), first = applied.first, "queued inbound message applied");
    Ok(applied)
}
