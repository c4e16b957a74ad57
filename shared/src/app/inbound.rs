//! One inbound text. It is first stored as received (its SMS log entry, in the person's partition
//! under every merchant it reached); only then is it classified and applied: a keyword opt-out
//! for the channels its words cover, an opt-in, queued outreach cancelled; and it is marked
//! applied last. sms-inbound stores it, puts a copy on the queue and applies it inline; the
//! worker replays the copy, classifying again what was stored, for every merchant that has not
//! applied it. So neither a storage failure nor a crash between storing and classifying loses a
//! revocation (Twilio does not retry inbound webhooks), and a classifier change never meets a
//! message that was not kept.

use crate::app::consent;
use crate::domain::consent::{ConsentAction, ConsentStatus};
use crate::domain::ids::MerchantId;
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
    /// False when every merchant had applied this message before (a redelivery, a second copy).
    pub first: bool,
}

/// The merchants a message reaches: those on its sender now, and every merchant that texted this
/// person from that sender before (a number or Messaging Service it no longer uses), by id.
pub async fn merchants_for<S: InboundStore>(store: &S, msg: &InboundMessage) -> Result<Vec<MerchantRecord>, PortError> {
    let senders = msg.senders();
    let mut out = store.merchants_for_senders(&senders).await?;
    for id in store.merchants_that_texted(&msg.from, &senders).await? {
        if out.iter().any(|r| r.merchant.id == id) {
            continue;
        }
        if let Some(record) = store.get_merchant(&id).await? {
            out.push(record);
        }
    }
    out.sort_by(|a, b| a.merchant.id.cmp(&b.merchant.id));
    Ok(out)
}

/// Stores `msg` as received under each of `merchants`, before anything is made of it: the first
/// durable write. `false` when it was stored before (a redelivery).
pub async fn receive<S: InboundStore>(
    store: &S,
    msg: &InboundMessage,
    merchants: &[MerchantRecord],
) -> Result<bool, PortError> {
    let entries: Vec<SmsLogEntry> = merchants.iter().map(|r| msg.log_entry(r)).collect();
    store.record_inbound(&entries, msg.received_at).await
}

/// Classifies a stored message and applies it for each of `merchants` that has not applied it
/// yet, then marks it applied there, last. Every step is idempotent, so an attempt that failed
/// half-way is finished by the next one; a merchant marked applied is skipped, and a copy that
/// never applied is ordered by its time of receipt (`ConsentState::verdict`), so a late copy
/// cannot undo a START texted since, nor a START's late copy a STOP texted since.
pub async fn apply<S: InboundStore>(
    store: &S,
    msg: &InboundMessage,
    merchants: &[MerchantRecord],
) -> Result<Applied, PortError> {
    let mut pending = Vec::new();
    for record in merchants {
        if !store.inbound_applied(&record.merchant.id, &msg.message_sid).await? {
            pending.push(record);
        }
    }
    let classified = classify(&msg.body);
    let mut affected = Vec::new();
    for record in &pending {
        let changed = match classified.intent {
            Intent::OptOut => opt_out(store, record, msg, &classified).await?,
            Intent::OptIn => opt_in(store, record, msg, &classified).await?,
            Intent::Help | Intent::Other => false,
        };
        if changed {
            affected.push((*record).clone());
        }
    }
    let ids: Vec<MerchantId> = pending.iter().map(|r| r.merchant.id.clone()).collect();
    let first = store.finish_inbound(&ids, &msg.message_sid).await?;
    Ok(Applied { classified, affected, first })
}

/// A texted revocation ends what its words cover ("stop calling": calls; "stop texting": texts;
/// "stop": both), and cancels what is queued on those channels.
async fn opt_out<S: InboundStore>(
    store: &S,
    record: &MerchantRecord,
    msg: &InboundMessage,
    c: &Classified,
) -> Result<bool, PortError> {
    let (m, from, now) = (&record.merchant, &msg.from, msg.received_at);
    let mut changed = false;
    for channel in c.scope.channels() {
        let event = msg.event(c, ConsentAction::OptOut, *channel);
        changed |= consent::record(store, m, from, &event, now).await?.state.is_some();
    }
    info!(merchant = %m.id, phone = %from.log_id(), scope = ?c.scope, changed, "opt-out by SMS");
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

/// The worker's replay of a queued copy: stores the message if the inline attempt did not get
/// that far, then classifies what is stored (its body and time of receipt) and applies it for
/// every merchant that has not.
pub async fn replay<S: InboundStore>(store: &S, msg: &InboundMessage) -> Result<Applied, PortError> {
    let merchants = merchants_for(store, msg).await?;
    receive(store, msg, &merchants).await?;
    let stored = match merchants.first() {
        Some(r) => store.inbound_sms(&r.merchant.id, &msg.from, &msg.message_sid).await?,
        None => None,
    };
    let msg = match stored {
        Some(entry) => InboundMessage { body: entry.body, received_at: entry.created_at, ..msg.clone() },
        None => msg.clone(),
    };
    let applied = apply(store, &msg, &merchants).await?;
    info!(sid = %msg.message_sid, phone = %msg.from.log_id(), changed = applied.affected.len(), first = applied.first, "queued inbound message applied");
    Ok(applied)
}
