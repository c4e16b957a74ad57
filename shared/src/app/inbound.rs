//! One inbound text. It is first stored as received (its SMS log entry, in the person's partition
//! under every merchant it reached); only then is it classified and applied: a keyword opt-out
//! for the channels its words cover, an opt-in, queued outreach cancelled; and it is marked
//! applied last. sms-inbound stores it, puts a copy on the queue and applies it inline; the
//! worker replays the copy, classifying again what was stored, for every merchant that has not
//! applied it. So neither a storage failure nor a crash between storing and classifying loses a
//! revocation (Twilio does not retry inbound webhooks), and a classifier change never meets a
//! message that was not kept.

use crate::app::consent;
use crate::app::privacy::predates_deletion;
use crate::domain::consent::{ConsentAction, ConsentStatus};
use crate::domain::ids::MerchantId;
pub use crate::domain::inbound::InboundMessage;
use crate::domain::keywords::{Classified, Intent, classify};
use crate::domain::merchant::Channel;
use crate::domain::message::{HelpInfo, help_reply, opt_out_reply, start_confirmation};
use crate::domain::outreach::MerchantRecord;
use crate::domain::subject::SubjectKey;
use crate::ports::telephony::{SendSms, SmsSender};
use crate::ports::{
    ConsentLedger, ConsentStore, MarkerGuard, MerchantStore, MessageLog, PortError, PrivacyStore, SmsGateway,
};
use chrono::{DateTime, Utc};
use tracing::{info, warn};

/// What applying an inbound message reads and writes.
pub trait InboundStore: MerchantStore + MessageLog + ConsentStore + ConsentLedger + PrivacyStore {}
impl<T: MerchantStore + MessageLog + ConsentStore + ConsentLedger + PrivacyStore> InboundStore for T {}

/// Reads of a deletion marker that moved while a write waited on it, before giving up.
const MARKER_READS: usize = 3;

/// What `receive` stored.
#[derive(Debug, Clone)]
pub struct Received {
    /// False when every merchant had it before (a redelivery, a second copy), or when a
    /// deletion racing the write had it read again after part of it was stored.
    pub first: bool,
    /// The merchants it is stored under, which `apply` acts for: those it reached, less any
    /// that deleted this person's data since it was received (a late copy), unless it revokes.
    pub merchants: Vec<MerchantRecord>,
}

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
/// durable write. A merchant that deleted this person's data after the message was received
/// (its late copy, replayed after the deletion) does not get it stored again, unless it is an
/// opt-out, which outlives the person's data and is stored whatever a deletion did. Anything
/// else is written only while the marker is as read, so a deletion racing the write is read
/// again rather than undone.
pub async fn receive<S: InboundStore>(
    store: &S,
    msg: &InboundMessage,
    merchants: &[MerchantRecord],
) -> Result<Received, PortError> {
    let revokes = classify(&msg.body).intent == Intent::OptOut;
    let key = SubjectKey::phone(&msg.from);
    for _ in 0..MARKER_READS {
        let seen = futures::future::try_join_all(merchants.iter().map(|r| store.deletion_marker(&r.merchant.id, &key)))
            .await?;
        let kept: Vec<(&MerchantRecord, _)> = merchants
            .iter()
            .zip(seen)
            .filter(|(r, deleted_at)| {
                let erased = predates_deletion(*deleted_at, msg.received_at);
                if erased && !revokes {
                    info!(merchant = %r.merchant.id, sid = %msg.message_sid, phone = %msg.from.log_id(), "inbound message from before a deletion: not stored again");
                }
                revokes || !erased
            })
            .collect();
        let guard = |deleted_at| if revokes { MarkerGuard::Unconditional } else { MarkerGuard::AsRead(deleted_at) };
        let entries: Vec<_> = kept.iter().map(|(r, deleted_at)| (msg.log_entry(r), guard(*deleted_at))).collect();
        match store.record_inbound(&entries, msg.received_at).await {
            Ok(first) => {
                return Ok(Received { first, merchants: kept.into_iter().map(|(r, _)| r.clone()).collect() });
            }
            Err(PortError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(PortError::Conflict)
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
/// "yes" from someone already subscribed is conversation, not a keyword to confirm. A START
/// received before the merchant deleted this person's data (a late copy) re-subscribes nothing:
/// the opt-out kept through the deletion stands, and the write holds only while the deletion
/// marker is as read.
async fn opt_in<S: InboundStore>(
    store: &S,
    record: &MerchantRecord,
    msg: &InboundMessage,
    c: &Classified,
) -> Result<bool, PortError> {
    let (m, from, now) = (&record.merchant, &msg.from, msg.received_at);
    let state = store.consent_state(&m.id, from, Channel::Sms).await?;
    if state.status != ConsentStatus::OptedOut {
        return Ok(false);
    }
    let event = msg.event(c, ConsentAction::OptIn, Channel::Sms);
    let key = SubjectKey::phone(from);
    for _ in 0..MARKER_READS {
        let deleted_at = store.deletion_marker(&m.id, &key).await?;
        if predates_deletion(deleted_at, msg.received_at) {
            info!(merchant = %m.id, phone = %from.log_id(), "START from before a deletion: not applied");
            return Ok(false);
        }
        match store.record_opt_in(&m.id, from, &event, consent::purge_at(m, now), deleted_at).await {
            Ok(next) => {
                let changed = next.is_some();
                info!(merchant = %m.id, phone = %from.log_id(), changed, "opt-in by SMS");
                return Ok(changed);
            }
            Err(PortError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(PortError::Conflict)
}

/// The worker's replay of a queued copy: stores the message if the inline attempt did not get
/// that far, then classifies what is stored (its body and time of receipt) and applies it for
/// every merchant that has not.
pub async fn replay<S: InboundStore>(store: &S, msg: &InboundMessage) -> Result<Applied, PortError> {
    let merchants = receive(store, msg, &merchants_for(store, msg).await?).await?.merchants;
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

/// What the sender is told of a message whose application this attempt finished first: an
/// opt-out or an opt-in that changed something is confirmed, naming the merchants it changed
/// (one confirmation only: a repeated STOP changes nothing and gets nothing); HELP is answered
/// for every merchant in `merchants`; anything else gets no reply.
pub fn reply(applied: &Applied, merchants: &[MerchantRecord]) -> Option<String> {
    if !applied.first {
        return None;
    }
    match applied.classified.intent {
        Intent::OptOut | Intent::OptIn => confirmation(applied),
        Intent::Help => {
            let info: Vec<HelpInfo<'_>> = merchants
                .iter()
                .map(|r| HelpInfo {
                    merchant_name: &r.merchant.name,
                    support_url: r.merchant.support.url.as_deref(),
                    support_phone: r.merchant.support.phone.as_ref().map(|p| p.as_str()),
                    max_per_cart: r.merchant.max_sms_per_cart(),
                })
                .collect();
            Some(help_reply(&info, applied.classified.lang))
        }
        Intent::Other => None,
    }
}

/// The confirmation an opt-out or opt-in owes, if it changed anything.
fn confirmation(applied: &Applied) -> Option<String> {
    if applied.affected.is_empty() {
        return None;
    }
    let names: Vec<&str> = applied.affected.iter().map(|r| r.merchant.name.as_str()).collect();
    match applied.classified.intent {
        Intent::OptOut => Some(opt_out_reply(&names, applied.classified.lang, applied.classified.scope)),
        Intent::OptIn => {
            let max = applied.affected.iter().map(|r| r.merchant.max_sms_per_cart()).max().unwrap_or(1);
            Some(start_confirmation(&names, max))
        }
        Intent::Help | Intent::Other => None,
    }
}

/// After the worker applied a queued copy: when the copy is what applied an opt-out or opt-in
/// first, sms-inbound's attempt failed and told the sender nothing, so the one confirmation goes
/// out now, as a text from the number or Messaging Service that received the keyword, provided
/// it is still within five minutes of it (`InboundMessage::confirmation_left`). At most once: only
/// the attempt that marked the message applied sees `first`, and a failed send is not tried
/// again (a redelivered copy finds the message applied). Whether a confirmation was sent.
pub async fn confirm_replayed<G: SmsGateway>(
    sms: &G,
    msg: &InboundMessage,
    applied: &Applied,
    now: DateTime<Utc>,
) -> bool {
    if !applied.first {
        return false;
    }
    let Some(body) = confirmation(applied) else { return false };
    let (sid, phone) = (&msg.message_sid, msg.from.log_id());
    // What is left of the five minutes is also how long Twilio may hold it.
    let Some(left) = msg.confirmation_left(now) else {
        info!(sid = %sid, phone = %phone, "keyword applied from its queued copy too late to confirm");
        return false;
    };
    let sender = if msg.messaging_service_sid.is_empty() {
        SmsSender::From(msg.to.clone())
    } else {
        SmsSender::MessagingService(msg.messaging_service_sid.clone())
    };
    let request = SendSms {
        to: msg.from.as_str().to_string(),
        sender,
        body,
        status_callback: None,
        validity_seconds: Some(left),
    };
    match sms.send_sms(&request).await {
        Ok(_) => {
            info!(sid = %sid, phone = %phone, intent = ?applied.classified.intent, "keyword applied from its queued copy; confirmed");
            true
        }
        Err(e) => {
            warn!(sid = %sid, phone = %phone, error = %crate::telemetry::redact(&e.to_string()), "keyword applied from its queued copy; its confirmation could not be sent");
            false
        }
    }
}
