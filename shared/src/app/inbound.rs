//! One inbound text, applied: keyword opt-outs and opt-ins for every merchant on the sender,
//! queued outreach cancelled, the message logged once per merchant. sms-inbound runs it inline;
//! for an opt-out it first puts the raw message on the queue, and the worker replays it until
//! it holds, so a storage failure cannot lose a revocation (Twilio does not retry inbound
//! webhooks).

use crate::app::consent;
use crate::domain::consent::{ConsentAction, ConsentStatus};
pub use crate::domain::inbound::InboundMessage;
use crate::domain::keywords::{Classified, Intent, classify};
use crate::domain::merchant::Channel;
use crate::domain::outreach::{MerchantRecord, SmsLogEntry};
use crate::ports::{ConsentLedger, ConsentStore, MerchantStore, MessageLog, PortError};
use tracing::info;

/// What applying an inbound message reads and writes.
pub trait InboundStore: MerchantStore + MessageLog + ConsentStore + ConsentLedger {}
impl<T: MerchantStore + MessageLog + ConsentStore + ConsentLedger> InboundStore for T {}

/// What applying a message did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub classified: Classified,
    /// Merchants whose consent this message changed.
    pub affected: Vec<MerchantRecord>,
    /// False when every merchant had logged this message before (a redelivery).
    pub first: bool,
}

/// Applies `msg` for `merchants` (those on its sender). Every step is idempotent, so a replay
/// of a message applied before changes nothing; the log marker, written last, tells a first
/// delivery from a redelivery.
pub async fn apply<S: InboundStore>(
    store: &S,
    msg: &InboundMessage,
    merchants: &[MerchantRecord],
) -> Result<Applied, PortError> {
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
async fn opt_out<S: InboundStore>(
    store: &S,
    record: &MerchantRecord,
    msg: &InboundMessage,
    c: &Classified,
) -> Result<bool, PortError> {
    let (m, from, now) = (&record.merchant, &msg.from, msg.received_at);
    consent::record(store, m, from, &msg.event(c, ConsentAction::OptOut, Channel::Voice), now).await?;
    let sms = consent::record(store, m, from, &msg.event(c, ConsentAction::OptOut, Channel::Sms), now).await?;
    let changed = sms.state.is_some();
    info!(merchant = %m.id, phone = %from.log_id(), changed, "opt-out by SMS");
    Ok(changed)
}

/// START re-subscribes a number that opted out; it does not create consent from nothing, and a
/// "yes" from someone already subscribed is conversation, not a keyword to confirm.
async fn opt_in<S: InboundStore>(
    store: &S,
    record: &MerchantRecord,
    msg: &InboundMessage,
    c: &Classified,
) -> Result<bool, PortError> {
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
pub async fn replay<S: InboundStore>(store: &S, msg: &InboundMessage) -> Result<Applied, PortError> {
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
