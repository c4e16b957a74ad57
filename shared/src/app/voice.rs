//! AI voice calls after they are placed: what a call says when answered, the keys pressed, the
//! call's status, and its recording, from Twilio's callback to our encrypted copy in S3.

use crate::app::consent;
use crate::domain::agent::{self, Brief, Outcome, spoken_number};
use crate::domain::cart::{Cart, CartStatus};
use crate::domain::consent::ConsentStatus;
use crate::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, Evidence};
use crate::domain::keywords::Lang;
use crate::domain::merchant::AgentMode;
use crate::domain::merchant::Channel;
use crate::domain::merchant::Merchant;
use crate::domain::message::{RecoverySms, segments};
use crate::domain::outreach::{
    ClaimGuard, ClaimOutcome, Direction, MerchantRecord, MerchantStatus, SmsLogEntry, StepAvailability, StepRecord,
    StepResult, StepState,
};
use crate::domain::phone::Phone;
use crate::domain::twiml::Verb;
use crate::domain::voice::{
    CallLogEntry, CallRecording, CallRef, CallScript, Choice, KeyOptOut, LINK_STEP_BASE, MENU_TRIES, RecordingCopy,
    is_machine, is_sid, recording_key, unanswered,
};
use crate::ports::agent::SessionKey;
use crate::ports::telephony::{SendSms, SmsSender, TwilioError};
use crate::ports::{
    AgentSessions, CallLog, CallUpdate, CartStore, Classify, ConsentLedger, ConsentStore, ErrorKind, MerchantStore,
    MessageLog, PortError, RecordingFiles, RecordingSource, SmsGateway, StepStore, WorkQueue, chain,
};
use crate::signature::sha256_hex;
use crate::telemetry::redact;
use chrono::{DateTime, Duration, Utc};
use std::path::Path;
use thiserror::Error;
use tracing::{info, warn};

#[derive(Debug, Error)]
pub enum VoiceError {
    /// The store, a queue or the recordings bucket failed.
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Twilio(#[from] TwilioError),
    /// The call is not visible yet (the lookup index lags a write by moments): try again.
    #[error("{0} not found yet")]
    NotYet(&'static str),
}

impl Classify for VoiceError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Port(e) => e.kind(),
            Self::Twilio(e) => e.kind(),
            Self::NotYet(_) => ErrorKind::Transient,
        }
    }
}

/// What the voice callbacks (and the voice agent) read and write.
pub trait VoiceStore:
    MerchantStore
    + CartStore
    + ConsentStore
    + ConsentLedger
    + StepStore
    + MessageLog
    + CallLog
    + AgentSessions
    + crate::ports::RecoveryLinks
{
}
impl<
    T: MerchantStore
        + CartStore
        + ConsentStore
        + ConsentLedger
        + StepStore
        + MessageLog
        + CallLog
        + AgentSessions
        + crate::ports::RecoveryLinks,
> VoiceStore for T
{
}

/// Everything a call's answer and menu are made from.
pub(crate) struct CallContext {
    pub(crate) merchant: MerchantRecord,
    pub(crate) cart: Cart,
    pub(crate) phone: Phone,
    /// The person may still be called (consent to calls, open cart, active merchant).
    pub(crate) callable: bool,
    /// The person may be texted (key 1 is offered).
    pub(crate) textable: bool,
}

impl CallContext {
    pub(crate) async fn load(store: &impl VoiceStore, r: &CallRef) -> Result<Option<Self>, PortError> {
        let (merchant, cart) =
            tokio::try_join!(store.get_merchant(&r.merchant_id), store.get_cart(&r.merchant_id, &r.cart_token))?;
        let (Some(merchant), Some(cart)) = (merchant, cart) else { return Ok(None) };
        let Some(phone) = cart.phone.clone() else { return Ok(None) };
        let m = &merchant.merchant.id;
        let (voice, sms) = tokio::try_join!(
            store.consent_state(m, &phone, Channel::Voice),
            store.consent_state(m, &phone, Channel::Sms)
        )?;
        let live = merchant.status == MerchantStatus::Active && cart.status == CartStatus::Open;
        let callable = live && voice.status == ConsentStatus::OptedIn;
        let textable = callable && sms.status == ConsentStatus::OptedIn && cart.recovery_url.is_some();
        Ok(Some(Self { merchant, cart, phone, callable, textable }))
    }

    fn script(&self, step: u8) -> CallScript<'_> {
        let m = &self.merchant.merchant;
        CallScript {
            merchant_name: &m.name,
            first_name: self.cart.first_name.as_deref(),
            items: &self.cart.items,
            recorded: m.recording.enabled,
            lang: self.lang(),
            offer_link: self.textable,
            discount_code: m.flow.get(step as usize).and_then(|d| d.discount_code.as_deref()),
            callback: m.support.phone.as_ref().map(spoken_number),
            opt_out_line: m.voice_from.as_ref().map(spoken_number),
        }
    }

    pub(crate) fn lang(&self) -> Lang {
        let m = &self.merchant.merchant;
        CallScript::lang_for(self.cart.locale.as_deref(), m.voice.spanish)
    }

    /// What the voice agent knows: the cart and the merchant, never the number, email or address.
    pub(crate) fn brief(&self, step: u8) -> Brief {
        let m = &self.merchant.merchant;
        Brief {
            merchant_name: m.name.clone(),
            first_name: self.cart.first_name.clone(),
            items: self.cart.items.clone(),
            total: self.cart.total_price.clone(),
            currency: self.cart.currency.clone(),
            discount_code: m.flow.get(step as usize).and_then(|d| d.discount_code.clone()),
            can_text: self.textable && sms_sender(self).is_some(),
            support_phone: m.support.phone.as_ref().map(spoken_number),
            can_transfer: m.voice.transfer_to_support && m.support.phone.is_some(),
            lang: self.lang(),
        }
    }
}

/// The queued copy of a key-9 opt-out waits this long, so the inline attempt normally finishes
/// first and the copy only finds work when that attempt failed.
pub const KEY_OPT_OUT_REPLAY_DELAY_SECONDS: i32 = 60;

/// The voice use case: DynamoDB, Twilio (to text a link), the queue recordings are copied from,
/// and the outreach queue a key-9 opt-out is made durable on.
pub struct Voice<'a, S, G, W> {
    pub store: &'a S,
    pub sms: &'a G,
    pub recordings_queue: &'a W,
    pub outreach_queue: &'a W,
    /// How long the queued copy of a key-9 opt-out waits (`KEY_OPT_OUT_REPLAY_DELAY_SECONDS`).
    pub replay_delay_seconds: i32,
    pub public_base_url: &'a str,
    /// The voice agent's WebSocket URL (the answer TwiML connects calls to it).
    pub public_ws_url: &'a str,
}

/// Applies an opt-out heard on a call (inline, or its queued copy), on every channel it covers.
/// A copy whose inline attempt finished on a channel (its ledger holds an entry with this call's
/// SID) changes nothing there, so it can never undo a newer opt-in made since. `true` when any
/// channel changed.
pub async fn apply_key_opt_out(
    store: &(impl ConsentStore + ConsentLedger),
    merchant: &Merchant,
    o: &KeyOptOut,
    replay: bool,
) -> Result<bool, PortError> {
    let mut changed = false;
    for channel in &o.channels {
        if replay {
            let ledger = store.consent_ledger(&merchant.id, &o.phone, *channel).await?;
            if ledger.iter().any(|e| e.event.evidence.message_sid.as_deref() == Some(o.call_sid.as_str())) {
                continue;
            }
        }
        let recorded = consent::record(store, merchant, &o.phone, &o.event(*channel), o.at).await?;
        changed |= recorded.state.is_some();
    }
    Ok(changed)
}

fn gather_url(base: &str, r: &CallRef) -> String {
    format!("{base}/twilio/voice/gather?{}", r.query())
}

impl<S: VoiceStore, G: SmsGateway, W: WorkQueue> Voice<'_, S, G, W> {
    /// The TwiML for an answered call. Nothing is said once the person can no longer be called
    /// (an order or an opt-out acknowledged since the call was placed).
    pub async fn answer(
        &self,
        r: &CallRef,
        call_sid: &str,
        answered_by: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Verb>, VoiceError> {
        let Some(ctx) = CallContext::load(self.store, r).await? else {
            warn!(merchant = %r.merchant_id, step = r.step, call = call_sid, "answered call for an unknown cart; hanging up");
            return Ok(vec![Verb::Hangup]);
        };
        if !ctx.callable {
            info!(merchant = %r.merchant_id, step = r.step, call = call_sid, "the person can no longer be called; hanging up");
            return Ok(vec![Verb::Hangup]);
        }
        let m = &ctx.merchant.merchant;
        let script = ctx.script(r.step);
        if is_machine(answered_by) {
            info!(merchant = %m.id, call = call_sid, voicemail = m.voice.voicemail, "a machine answered");
            return Ok(if m.voice.voicemail { script.voicemail() } else { vec![Verb::Hangup] });
        }
        let agent = m.voice.agent == AgentMode::Callfy;
        info!(merchant = %m.id, step = r.step, call = call_sid, phone = %ctx.phone.log_id(), agent, "call answered");
        // The log learns the call was picked up, and by whom (best effort: the call goes on).
        let answered = CallUpdate { status: "in-progress", answered_by, ..Default::default() };
        if let Err(e) = self.log_status(r, call_sid, &ctx.phone, &answered, now).await {
            warn!(merchant = %m.id, call = call_sid, error = %redact(&chain(&e)), "could not log the answer");
        }
        if !agent {
            return Ok(script.answer(&gather_url(self.public_base_url, r)));
        }
        // Our agent: Twilio speaks the fixed greeting, then relays the call to our WebSocket.
        // Only the call reference travels, never the number or the cart.
        let brief = ctx.brief(r.step);
        Ok(vec![Verb::Relay {
            action: format!("{}/twilio/voice/relay-ended?{}", self.public_base_url, r.query()),
            url: agent::ws_url(self.public_ws_url, r),
            welcome_greeting: agent::greeting(&brief, m.recording.enabled),
            language: script.language(),
            parameters: vec![(agent::WS_REF_PARAM.to_string(), r.query())],
        }])
    }

    /// ConversationRelay's session ended (`<Connect action>`): the outcome and a one-line
    /// summary go to the call log; a transfer the agent agreed to dials the merchant's line.
    pub async fn relay_ended(
        &self,
        r: &CallRef,
        call_sid: &str,
        handoff: Option<&str>,
        session_status: Option<&str>,
    ) -> Result<Vec<Verb>, VoiceError> {
        let (outcome, transfer) = Outcome::from_relay_end(handoff, session_status);
        let Some(entry) = self.find_call(r, call_sid, None).await? else {
            info!(merchant = %r.merchant_id, call = call_sid, "relay ended for a call not logged; hanging up");
            return Ok(vec![Verb::Hangup]);
        };
        let key = SessionKey {
            merchant_id: entry.merchant_id.clone(),
            phone: entry.phone.clone(),
            call_sid: call_sid.into(),
        };
        let session = self.store.session(&key).await?;
        // Our own record of the outcome wins over what came back through Twilio.
        let outcome = session.as_ref().and_then(|s| s.outcome).unwrap_or(outcome);
        let summary = session.as_ref().map_or_else(
            || format!("no conversation, {}", outcome.as_str()),
            |s| {
                let mut s = s.clone();
                s.outcome = Some(outcome);
                s.summarise()
            },
        );
        self.store.note_outcome(&entry, outcome, &summary).await?;
        crate::metrics::count_by(crate::metrics::AGENT_OUTCOMES, "Outcome", outcome.as_str(), 1);
        info!(merchant = %entry.merchant_id, call = call_sid, outcome = outcome.as_str(), transfer, "agent session ended");
        let merchant = self.store.get_merchant(&r.merchant_id).await?;
        let line = merchant
            .as_ref()
            .filter(|m| transfer && m.merchant.voice.transfer_to_support)
            .and_then(|m| m.merchant.support.phone.clone());
        Ok(match line {
            Some(p) => vec![Verb::Dial { number: p.as_str().to_string() }],
            None => vec![Verb::Hangup],
        })
    }

    /// A call to `voice_from`: the automated opt-out line (say stop or press 9), in the name of
    /// the merchants that call from that number.
    pub async fn opt_out_line(&self, called: &Phone) -> Result<Vec<Verb>, VoiceError> {
        let merchants = self.store.merchants_for_senders(&[called.as_str()]).await?;
        let names: Vec<&str> = merchants
            .iter()
            .filter(|m| m.merchant.voice_from.as_ref() == Some(called))
            .map(|m| m.merchant.name.as_str())
            .collect();
        let name = if names.is_empty() { "this store".to_string() } else { names.join(" or ") };
        Ok(CallScript::opt_out_line_menu(&name, &format!("{}/twilio/voice/incoming", self.public_base_url)))
    }

    /// What the opt-out line heard: key 9 or a spoken opt-out stops `caller`'s calls from every
    /// merchant that calls from `called`. Returns whether anything was recorded.
    pub async fn opt_out_line_choice(
        &self,
        called: &Phone,
        caller: &Phone,
        call_sid: &str,
        digits: Option<&str>,
        speech: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Verb>, VoiceError> {
        let by_key = Choice::from_digits(digits) == Choice::StopCalls;
        // The voicemail that gives this number is in English or Spanish: both are heard.
        let spoken = speech.and_then(|s| crate::domain::keywords::classify_spoken(s, Lang::Es));
        if !by_key && spoken.is_none() {
            return Ok(vec![Verb::Say { text: "Goodbye.".into(), language: "en-US" }, Verb::Hangup]);
        }
        let merchants = self.store.merchants_for_senders(&[called.as_str()]).await?;
        let mut names = Vec::new();
        for record in merchants.iter().filter(|m| m.merchant.voice_from.as_ref() == Some(called)) {
            let m = &record.merchant;
            let event = ConsentEvent {
                channel: Channel::Voice,
                action: ConsentAction::OptOut,
                source: if by_key { ConsentSource::KeyPress } else { ConsentSource::Spoken },
                occurred_at: now,
                recorded_at: now,
                evidence: Evidence {
                    message_sid: Some(call_sid.to_string()),
                    keyword: Some(spoken.as_ref().map_or("key:9".to_string(), |(_, rule)| rule.clone())),
                    words: speech.filter(|_| !by_key).map(str::to_string),
                    collected_from: Some("opt_out_line".into()),
                    ..Default::default()
                },
            };
            consent::record(self.store, m, caller, &event, now).await?;
            info!(merchant = %m.id, phone = %caller.log_id(), call = call_sid, "opt-out line: no more calls");
            names.push(m.name.clone());
        }
        let text = if names.is_empty() {
            "This number is not on any call list of ours. Goodbye.".to_string()
        } else {
            format!("You will not receive more calls from {}. Goodbye.", names.join(" or "))
        };
        Ok(vec![Verb::Say { text, language: "en-US" }, Verb::Hangup])
    }

    /// A key pressed in the menu (or none, after the menu's timeout). `called` is the number
    /// Twilio called (its signed `To`): a key acts on that number, whatever the cart says now.
    pub async fn gather(
        &self,
        r: &CallRef,
        call_sid: &str,
        called: Option<&Phone>,
        digits: Option<&str>,
        attempt: u8,
        now: DateTime<Utc>,
    ) -> Result<Vec<Verb>, VoiceError> {
        let choice = Choice::from_digits(digits);
        if choice == Choice::StopCalls {
            return self.stop_calls(r, call_sid, called, now).await;
        }
        let Some(ctx) = CallContext::load(self.store, r).await? else { return Ok(vec![Verb::Hangup]) };
        let script = ctx.script(r.step);
        // The cart's number changed since the call was placed: nothing goes to the new one.
        let same_number = called.is_none_or(|p| *p == ctx.phone);
        match choice {
            Choice::TextLink if ctx.textable && same_number => {
                Ok(match text_link(self.store, self.sms, self.public_base_url, &ctx, r.step, now).await? {
                    LinkOutcome::Sent => script.link_texted(true),
                    LinkOutcome::AlreadySent => script.link_texted(false),
                    LinkOutcome::Unavailable => script.link_unavailable(),
                })
            }
            _ if attempt < MENU_TRIES && ctx.callable => {
                Ok(script.menu_verbs(&gather_url(self.public_base_url, r), attempt + 1))
            }
            _ => Ok(script.goodbye()),
        }
    }

    /// Key 9: the opt-out is queued first (Twilio does not retry a `<Gather>` action), then
    /// applied, and only then confirmed; a storage failure is covered by the queued copy.
    async fn stop_calls(
        &self,
        r: &CallRef,
        call_sid: &str,
        called: Option<&Phone>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Verb>, VoiceError> {
        let ctx = CallContext::load(self.store, r).await?;
        let Some(phone) = called.cloned().or_else(|| ctx.as_ref().map(|c| c.phone.clone())) else {
            return Ok(vec![Verb::Hangup]);
        };
        let merchant = match &ctx {
            Some(c) => Some(c.merchant.clone()),
            None => self.store.get_merchant(&r.merchant_id).await?,
        };
        let Some(merchant) = merchant else { return Ok(vec![Verb::Hangup]) };
        let m = &merchant.merchant;
        let o = KeyOptOut::key_9(m.id.clone(), phone, call_sid.to_string(), now);
        let durable = match self.outreach_queue.enqueue_key_opt_out(&o, self.replay_delay_seconds).await {
            Ok(_) => true,
            Err(e) => {
                warn!(merchant = %m.id, call = call_sid, error = %redact(&chain(&e)), "could not queue the key-9 opt-out; applying it inline only");
                false
            }
        };
        // Tried again at once (a retry is a replay: a channel already recorded is left as is).
        // After the copy is queued (or failed to be): a slow queue must not spend these attempts.
        let deadline = crate::app::retry::deadline();
        let applied = crate::app::retry::transient(deadline, |n| apply_key_opt_out(self.store, m, &o, n > 0)).await;
        let in_force = match applied {
            Ok(_) => {
                info!(merchant = %m.id, call = call_sid, phone = %o.phone.log_id(), "key 9: no more calls");
                true
            }
            Err(e) if durable => {
                warn!(merchant = %m.id, call = call_sid, error = %redact(&chain(&e)), "storage failed during key 9; the queued copy will apply it");
                false
            }
            Err(e) => return Err(e.into()),
        };
        let fallback = CallScript {
            merchant_name: &m.name,
            first_name: None,
            items: &[],
            recorded: false,
            lang: Lang::En,
            offer_link: false,
            discount_code: None,
            callback: None,
            opt_out_line: None,
        };
        let script = ctx.as_ref().map_or(fallback, |c| c.script(r.step));
        // Confirmed as done only once it is: a call placed before the copy applies it would
        // otherwise break what was said.
        Ok(if in_force { script.stopped() } else { script.stop_received() })
    }

    /// A call status callback: the call log moves forward; an unanswered call gives back its
    /// place in the person's daily count.
    pub async fn status(
        &self,
        r: &CallRef,
        call_sid: &str,
        to: Option<&Phone>,
        update: &CallUpdate<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, VoiceError> {
        let Some(entry) = self.find_call(r, call_sid, to).await? else {
            info!(merchant = %r.merchant_id, call = call_sid, status = update.status, "status for a call not logged yet; ignored");
            return Ok(false);
        };
        self.store.update_call_status(&entry, update, now).await?;
        if unanswered(update.status) {
            self.store.release_count(&entry.merchant_id, &entry.phone, &entry.cart_token, entry.step).await?;
        }
        info!(merchant = %entry.merchant_id, call = call_sid, status = update.status, "call status");
        Ok(true)
    }

    async fn log_status(
        &self,
        r: &CallRef,
        call_sid: &str,
        phone: &Phone,
        u: &CallUpdate<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        if let Some(entry) = self.store.call_in_partition(&r.merchant_id, phone, call_sid).await? {
            self.store.update_call_status(&entry, u, now).await?;
        }
        Ok(())
    }

    /// The call a callback is about: in the customer's partition (strongly consistent), else
    /// through the SID index.
    async fn find_call(
        &self,
        r: &CallRef,
        call_sid: &str,
        to: Option<&Phone>,
    ) -> Result<Option<CallLogEntry>, PortError> {
        let phone = match to {
            Some(p) => Some(p.clone()),
            None => self.store.get_cart(&r.merchant_id, &r.cart_token).await?.and_then(|c| c.phone),
        };
        if let Some(phone) = phone
            && let Some(entry) = self.store.call_in_partition(&r.merchant_id, &phone, call_sid).await?
        {
            return Ok(Some(entry));
        }
        Ok(self.store.call_by_sid(call_sid).await?.filter(|e| e.merchant_id == r.merchant_id))
    }

    /// A recording is ready at Twilio: its copy is queued first (the durable part: the copy
    /// notes the recording itself if need be, and retries until the call is logged), then the
    /// recording is noted on its call when the call is already logged. A repeated callback
    /// queues the copy again, which finds the work done.
    pub async fn recording(
        &self,
        r: &CallRef,
        call_sid: &str,
        recording_sid: &str,
        duration_seconds: Option<u32>,
    ) -> Result<bool, VoiceError> {
        let copy = RecordingCopy {
            merchant_id: r.merchant_id.clone(),
            call_sid: call_sid.to_string(),
            recording_sid: recording_sid.to_string(),
            duration_seconds,
        };
        self.recordings_queue.enqueue_recording(&copy).await?;
        let first = match self.find_call(r, call_sid, None).await? {
            Some(entry) => note(self.store, &entry, &copy).await?,
            None => false,
        };
        info!(merchant = %r.merchant_id, call = call_sid, recording = recording_sid, first, "recording copy queued");
        Ok(first)
    }
}

/// Key 1: the recovery link by text, at most once per call step however often 1 is pressed.
/// The text is claimed as the step's own side step (`LINK_STEP_BASE + step`) through the same
/// guarded claim as any text (SMS consent, the cart, the merchant, the phone's counter), so an
/// opt-out or order acknowledged meanwhile stops it.
pub(crate) async fn text_link(
    store: &impl VoiceStore,
    sms: &impl SmsGateway,
    public_base_url: &str,
    ctx: &CallContext,
    step: u8,
    now: DateTime<Utc>,
) -> Result<LinkOutcome, VoiceError> {
    let (m, cart, phone) = (&ctx.merchant.merchant, &ctx.cart, &ctx.phone);
    let link_step = LINK_STEP_BASE + step;
    let (Some(url), Some(sender)) = (cart.recovery_url.as_deref(), sms_sender(ctx)) else {
        return Ok(LinkOutcome::Unavailable);
    };
    for _ in 0..3 {
        let (record, consent, counter, reach, has_outbound) = tokio::try_join!(
            store.get_step(&m.id, &cart.token, link_step),
            store.consent_state(&m.id, phone, Channel::Sms),
            store.send_counter(&m.id, phone),
            store.undeliverable(&m.id, phone),
            store.has_outbound_sms(&m.id, phone),
        )?;
        let seen = StepRecord::availability(record.as_ref(), now);
        match &seen {
            StepAvailability::Taken(r) if matches!(r.state, StepState::Sent | StepState::Claimed) => {
                return Ok(LinkOutcome::AlreadySent);
            }
            // An attempt whose answer was lost may have sent it: never twice.
            StepAvailability::Reclaimable { uncertain: Some(_), .. } => return Ok(LinkOutcome::AlreadySent),
            StepAvailability::Taken(_) => return Ok(LinkOutcome::Unavailable),
            _ => {}
        }
        // A text the person asked for on the call is an answer, not outreach: the daily cap
        // does not hold it back, and it does not count against the flow's later steps.
        if consent.status != ConsentStatus::OptedIn || reach.as_ref().is_some_and(|u| u.blocks(now)) {
            return Ok(LinkOutcome::Unavailable);
        }
        // The link asked for on the call: ours for a BigCommerce cart or a merchant counting
        // clicks (the call's step, channel voice), else the store's.
        let link =
            crate::app::links::message_link(store, public_base_url, m, cart, url, step, Channel::Voice, now).await?;
        let body = RecoverySms {
            merchant_name: &m.name,
            first_name: cart.first_name.as_deref(),
            items: &cart.items,
            recovery_url: &link,
            discount_code: m.flow.get(step as usize).and_then(|d| d.discount_code.as_deref()),
            first_contact: !has_outbound,
        }
        .render();
        let claim_id = uuid::Uuid::new_v4().to_string();
        let guard = ClaimGuard {
            merchant_id: m.id.clone(),
            cart: cart.token.clone(),
            step: link_step,
            phone: phone.clone(),
            channel: Channel::Sms,
            cart_version: cart.version,
            consent_seq: consent.seq,
            step_seen: seen,
            counter,
            reach_at: reach.map(|u| u.at),
            daily_budget: m.send_guard.daily_send_budget,
        };
        match store.claim(&guard, &claim_id, &sha256_hex(body.as_bytes()), now).await? {
            ClaimOutcome::Claimed { .. } => {}
            ClaimOutcome::Taken(_) => return Ok(LinkOutcome::AlreadySent),
            ClaimOutcome::Stale => continue,
            ClaimOutcome::BudgetSpent => {
                crate::metrics::count_by(crate::metrics::SENDS_REFUSED, "Reason", "daily_budget", 1);
                return Ok(LinkOutcome::Unavailable);
            }
        }
        let request = SendSms {
            to: phone.as_str().to_string(),
            sender: sender.clone(),
            body: body.clone(),
            status_callback: Some(format!("{}/twilio/sms/status", public_base_url)),
            // Asked for on the call: no use once Twilio has held it for long.
            validity_seconds: Some(crate::domain::flow::MAX_QUEUED_SECONDS),
        };
        return match sms.send_sms(&request).await {
            Ok(message) => {
                let entry = SmsLogEntry {
                    merchant_id: m.id.clone(),
                    phone: phone.clone(),
                    direction: Direction::Outbound,
                    message_sid: message.sid.clone(),
                    segments: segments(&body) as u32,
                    body,
                    status: message.status.unwrap_or_else(|| "queued".into()),
                    cart_token: Some(cart.token.clone()),
                    step: Some(link_step),
                    created_at: now,
                    purge_at: now + Duration::days(i64::from(m.retention_days.sms_logs)),
                    status_history: Default::default(),
                    error_code: None,
                    senders: vec![sender.as_str().to_string()],
                };
                store.finish_sent(&entry, &cart.token, link_step, &claim_id, now).await?;
                store.release_count(&m.id, phone, &cart.token, link_step).await?;
                info!(merchant = %m.id, step, phone = %phone.log_id(), sid = %message.sid, "key 1: link texted");
                Ok(LinkOutcome::Sent)
            }
            Err(e) => {
                // The person is on the line: no retry later. A send that may have happened
                // keeps its count; one that certainly did not gives it back.
                warn!(merchant = %m.id, step, error = %redact(&e.to_string()), "key 1: the link could not be texted");
                let result = StepResult::Failed { error_code: e.code(), reason: redact(&e.to_string()) };
                store.finish_step(&m.id, &cart.token, link_step, &claim_id, &result, now).await?;
                if !e.may_have_sent() {
                    store.release_count(&m.id, phone, &cart.token, link_step).await?;
                }
                Ok(LinkOutcome::Unavailable)
            }
        };
    }
    Ok(LinkOutcome::Unavailable)
}

/// Notes a recording on its call once, with its purge date (the merchant's
/// `retention_days.recordings` after the call).
async fn note(
    store: &(impl MerchantStore + CallLog),
    entry: &CallLogEntry,
    copy: &RecordingCopy,
) -> Result<bool, PortError> {
    let merchant = store.get_merchant(&entry.merchant_id).await?;
    let days =
        merchant.map_or(crate::domain::merchant::DEFAULT_RETENTION_DAYS, |m| m.merchant.retention_days.recordings);
    let rec = CallRecording {
        recording_sid: copy.recording_sid.clone(),
        duration_seconds: copy.duration_seconds,
        s3_key: None,
        twilio_deleted: false,
        purge_at: entry.created_at + Duration::days(i64::from(days)),
    };
    store.note_recording(entry, &rec).await
}

fn sms_sender(ctx: &CallContext) -> Option<SmsSender> {
    let s = &ctx.merchant.merchant.sender;
    match (&s.messaging_service_sid, &s.from) {
        (Some(sid), _) => Some(SmsSender::MessagingService(sid.clone())),
        (None, Some(from)) => Some(SmsSender::From(from.as_str().to_string())),
        (None, None) => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkOutcome {
    Sent,
    AlreadySent,
    Unavailable,
}

/// What one copy attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyOutcome {
    /// Stored in S3 under this key, and Twilio's copy deleted.
    Copied { key: String, bytes: u64 },
    /// Already stored: only Twilio's copy was (re)deleted.
    AlreadyStored { key: String },
}

/// Copies a recording to S3, then deletes Twilio's copy; never the other way round. Every
/// failure leaves Twilio's copy in place and returns an error, so the queue retries it (and
/// after its receive limit, dead-letters it with an alarm). A copy that ran before finds its key
/// on the call log and is not stored twice.
pub async fn copy_recording(
    store: &(impl MerchantStore + CallLog),
    twilio: &impl RecordingSource,
    bucket: &impl RecordingFiles,
    job: &RecordingCopy,
    scratch: &Path,
) -> Result<CopyOutcome, VoiceError> {
    if !is_sid(&job.call_sid, "CA") || !is_sid(&job.recording_sid, "RE") {
        return Err(VoiceError::NotYet("a call with these SIDs"));
    }
    let Some(mut entry) = store.call_by_sid(&job.call_sid).await? else { return Err(VoiceError::NotYet("call")) };
    if entry.recording.is_none() {
        // The callback came before the call was logged (a lost Calls.json answer): note it now.
        note(store, &entry, job).await?;
        entry = store.call_by_sid(&job.call_sid).await?.ok_or(VoiceError::NotYet("call"))?;
    }
    let Some(rec) = entry.recording.clone().filter(|r| r.recording_sid == job.recording_sid) else {
        return Err(VoiceError::NotYet("recording note"));
    };
    let (key, outcome) = match rec.s3_key.clone() {
        Some(key) => (key.clone(), CopyOutcome::AlreadyStored { key }),
        None => {
            let key = recording_key(&entry.merchant_id, entry.created_at, &entry.call_sid);
            let path = scratch.join(format!("{}-{}.wav", job.recording_sid, uuid::Uuid::new_v4().simple()));
            let stored = async {
                let bytes = twilio.download_recording(&job.recording_sid, &path).await?;
                let metadata = [
                    ("merchant", entry.merchant_id.to_string()),
                    ("call-sid", entry.call_sid.clone()),
                    ("purge-at", rec.purge_at.to_rfc3339()),
                ];
                bucket.put_file(&key, &path, &metadata).await?;
                Ok::<u64, VoiceError>(bytes)
            }
            .await;
            let _ = tokio::fs::remove_file(&path).await;
            let bytes = stored?;
            store.recording_stored(&entry, &job.recording_sid, &key).await?;
            (key.clone(), CopyOutcome::Copied { key, bytes })
        }
    };
    if !rec.twilio_deleted {
        let existed = twilio.delete_recording(&job.recording_sid).await?;
        store.recording_released(&entry, &job.recording_sid).await?;
        info!(merchant = %entry.merchant_id, call = %entry.call_sid, %key, existed, "recording stored; Twilio's copy deleted");
    }
    Ok(outcome)
}
