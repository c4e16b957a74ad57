//! Deciding and delivering one queued outreach step, at most once.
//!
//! The decision reads the merchant, the cart, the consent state, the phone's send counter and
//! its reachability (concurrently, strongly consistent). The claim that follows is one
//! transaction conditioned on exactly those reads, so an order, an opt-out, a closure or another
//! cart's send acknowledged in between makes it fail, and the step is decided again. The only
//! window left is the Twilio request itself.

use crate::app::consent;
use crate::clock::Clock;
use crate::domain::cart::Cart;
use crate::domain::consent::{ConsentEvent, ConsentState};
use crate::domain::flow::{Decision, OutreachJob, SkipReason, decide, job_for, queue_delay, send_validity};
use crate::domain::merchant::{Channel, Merchant};
use crate::domain::message::{RecoverySms, segments};
use crate::domain::outreach::Uncertain;
use crate::domain::outreach::{
    ClaimGuard, ClaimOutcome, Direction, MerchantRecord, MerchantStatus, SendCounter, SmsLogEntry, StepAvailability,
    StepRecord, StepResult, StepState,
};
use crate::domain::phone::Phone;
use crate::domain::voice::{CallLogEntry, CallRef, RING_TIMEOUT_SECONDS};
use crate::metrics;
use crate::ports::telephony::{ListedCall, ListedMessage, PlaceCall, SendSms, SmsSender, TwilioError};
use crate::ports::{
    Classify, ConsentLedger, ErrorKind, JobQueue, OutreachReads, OutreachWrites, PortError, RecoveryLinks, SmsGateway,
    VoiceGateway,
};
use crate::signature::sha256_hex;
use crate::telemetry::redact;
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;
use thiserror::Error;
use tracing::{info, warn};

/// Twilio: the number has opted out at the carrier / Advanced Opt-Out.
pub const TWILIO_UNSUBSCRIBED: i64 = crate::domain::delivery::UNSUBSCRIBED;
/// Decisions re-made after a stale claim before the job goes back to the queue.
const DECIDE_ATTEMPTS: usize = 5;

/// The outreach use case and its ports.
#[derive(Clone)]
pub struct Outreach<S, G, Q> {
    pub store: S,
    /// Twilio: messages and calls.
    pub twilio: G,
    pub queue: Q,
    pub clock: Arc<dyn Clock>,
    pub public_base_url: String,
}

#[derive(Debug, Error)]
pub enum OutreachError {
    #[error("message is not an outreach job: {0}")]
    BadMessage(String),
    /// The store or the queue failed.
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("Twilio failed, will retry: {0}")]
    TwilioRetry(#[source] TwilioError),
    #[error("what the decision read kept changing; will retry")]
    Contention,
}

impl Classify for OutreachError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::BadMessage(_) => ErrorKind::Permanent,
            Self::Port(e) => e.kind(),
            Self::TwilioRetry(_) | Self::Contention => ErrorKind::Transient,
        }
    }
}

/// What one job came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Sent {
        message_sid: String,
    },
    /// A recovery call was placed.
    Called {
        call_sid: String,
    },
    Skipped(SkipReason),
    Waiting {
        until: DateTime<Utc>,
    },
    /// Another delivery already finished this step.
    Duplicate,
    /// Twilio refused for good; recorded, not retried.
    Rejected {
        error_code: Option<i64>,
    },
    CartMissing,
    /// A queued inbound message was applied (again); `changed` merchants' consent moved.
    InboundApplied {
        changed: usize,
    },
}

/// One pass of decide-then-claim.
enum Pass {
    Done(JobOutcome),
    /// The claim found something changed since the reads: decide again.
    Stale,
}

/// What the decision was made from, beyond merchant and cart.
struct Reads {
    /// When the number's undeliverable mark was set, if it has one (that did not block).
    reach_at: Option<DateTime<Utc>>,
    consent: ConsentState,
    counter: SendCounter,
    step: StepAvailability,
    first_contact: bool,
}

impl<S, G, Q> Outreach<S, G, Q>
where
    S: OutreachReads + OutreachWrites + ConsentLedger + RecoveryLinks,
    G: SmsGateway + VoiceGateway,
    Q: JobQueue,
{
    pub async fn process_job(&self, job: &OutreachJob) -> Result<JobOutcome, OutreachError> {
        for _ in 0..DECIDE_ATTEMPTS {
            let now = self.clock.now();
            match self.pass(job, now).await? {
                Pass::Done(outcome) => return Ok(outcome),
                Pass::Stale => {
                    info!(merchant = %job.merchant_id, step = job.step, "claim found newer state; deciding again")
                }
            }
        }
        Err(OutreachError::Contention)
    }

    async fn pass(&self, job: &OutreachJob, mut now: DateTime<Utc>) -> Result<Pass, OutreachError> {
        let (m, token, step) = (&job.merchant_id, &job.cart_token, job.step);
        let (merchant, cart, step_record) =
            tokio::try_join!(self.store.merchant(m), self.store.cart(m, token), self.store.step(m, token, step))?;
        let Some(cart) = cart else {
            info!(merchant = %m, step, "cart no longer exists; job dropped");
            return Ok(Pass::Done(JobOutcome::CartMissing));
        };
        let seen = StepRecord::availability(step_record.as_ref(), now);
        let Some(merchant) = merchant else {
            return self.skip(m, &cart, step, &seen, SkipReason::MerchantClosed, now).await;
        };
        // The step's own channel: a call reads (and its claim is conditioned on) the voice ledger.
        let channel = merchant.merchant.flow.get(step as usize).map_or(Channel::Sms, |d| d.channel);
        match &seen {
            // Sent, or held by a live lease: nothing to decide. A skipped or failed step is still
            // decided, so a redelivery reports why nothing goes out.
            StepAvailability::Taken(record) if matches!(record.state, StepState::Sent | StepState::Claimed) => {
                return self.taken(&merchant, &cart, step, record, now).await;
            }
            // An earlier attempt went unanswered, or its holder vanished: before anything else
            // is decided, ask Twilio whether it took that message. This is read-only, so the
            // window between the claim and the send stays one request wide.
            StepAvailability::Reclaimable { uncertain: Some(earlier), .. } => {
                if let Some(phone) = &cart.phone {
                    // What earlier steps sent (the last one may be less than a minute old) is
                    // logged, and is never this attempt's.
                    let logged = self.store.logged_sids(m, phone).await?;
                    let found = match channel {
                        Channel::Sms => {
                            self.find_earlier(&merchant.merchant, &cart, step, phone, earlier, &logged).await
                        }
                        Channel::Voice => self.find_earlier_call(&merchant.merchant, phone, earlier, &logged).await,
                    };
                    match found {
                        Ok(Some(found)) => return self.record_found(&merchant, &cart, step, &seen, found, now).await,
                        // The lookup may have taken up to Twilio's timeout: what follows (quiet
                        // hours above all) is decided at the time it ended (found by review).
                        Ok(None) => now = self.clock.now(),
                        // Nothing changed: the message returns to the queue.
                        Err(e) => return Err(OutreachError::TwilioRetry(e)),
                    }
                }
            }
            _ => {}
        }
        let (consent, counter, undeliverable, has_outbound) = match &cart.phone {
            Some(phone) => tokio::try_join!(
                self.store.consent(m, phone, channel),
                self.store.counter(m, phone),
                self.store.undeliverable(m, phone),
                self.store.has_outbound(m, phone),
            )?,
            None => Default::default(),
        };
        // A delivery report said this number cannot take texts (landline, not in service); it
        // may still take a call.
        if channel == Channel::Sms && consent.allows_outreach() && undeliverable.as_ref().is_some_and(|u| u.blocks(now))
        {
            return self.skip(m, &cart, step, &seen, SkipReason::Undeliverable, now).await;
        }
        let active = merchant.status == MerchantStatus::Active;
        let recent = counter.recent(token, step);
        match decide(now, &merchant.merchant, active, &cart, &consent, step, &recent) {
            Decision::Wait { until } => {
                let next = OutreachJob { due_at: until, ..job.clone() };
                self.queue.enqueue(&next, queue_delay(now, until)).await?;
                Ok(Pass::Done(JobOutcome::Waiting { until }))
            }
            Decision::Skip(reason) => {
                let pass = self.skip(m, &cart, step, &seen, reason, now).await?;
                // A step its channel cannot serve (no consent to calls, say) does not end the
                // flow; anything else does.
                if reason.continues_flow() && matches!(pass, Pass::Done(_)) {
                    self.schedule_next(&merchant, &cart, step, now).await?;
                }
                Ok(pass)
            }
            Decision::Send { channel } => {
                let reach_at = undeliverable.map(|u| u.at);
                let reads = Reads { reach_at, consent, counter, step: seen, first_contact: !has_outbound };
                match channel {
                    Channel::Sms => self.send_step(&merchant, &cart, step, channel, reads, now).await,
                    Channel::Voice => self.call_step(&merchant, &cart, step, reads, now).await,
                }
            }
        }
    }

    async fn skip(
        &self,
        m: &crate::MerchantId,
        cart: &Cart,
        step: u8,
        seen: &StepAvailability,
        reason: SkipReason,
        now: DateTime<Utc>,
    ) -> Result<Pass, OutreachError> {
        if !self.store.skip((m, &cart.token, step), seen, reason.as_str(), now).await? {
            // The step moved on since it was read (an opt-out's cancellation, another delivery).
            if let Some(record) = self.store.step(m, &cart.token, step).await?
                && !matches!(StepRecord::availability(Some(&record), now), StepAvailability::Taken(_))
            {
                return Ok(Pass::Stale);
            }
        }
        info!(merchant = %m, step, reason = reason.as_str(), "outreach step skipped");
        metrics::count_by(metrics::STEPS_SKIPPED, "Reason", reason.as_str(), 1);
        if matches!(reason, SkipReason::DestinationNotAllowed | SkipReason::DailyBudget) {
            metrics::count_by(metrics::SENDS_REFUSED, "Reason", reason.as_str(), 1);
        }
        Ok(Pass::Done(JobOutcome::Skipped(reason)))
    }

    /// The message an unanswered attempt sent, if Twilio has it: sent to this number since the
    /// attempt began, with the body that attempt rendered, or (should Twilio have re-encoded the
    /// body) from this merchant's sender with this cart's link. Erring towards "found" sends
    /// nothing twice; at worst a step is recorded as another message.
    async fn find_earlier(
        &self,
        merchant: &Merchant,
        cart: &Cart,
        step: u8,
        phone: &Phone,
        earlier: &Uncertain,
        logged: &std::collections::HashSet<String>,
    ) -> Result<Option<Found>, TwilioError> {
        let listed = self.twilio.recent_messages_to(phone.as_str()).await?;
        // The link this step's text carried: ours names the step itself, the store's the cart.
        let link = if crate::domain::link::wraps(merchant) {
            let code = crate::domain::link::LinkCode::for_message(&merchant.id, &cart.token, step, Channel::Sms);
            Some(code.url(&self.public_base_url))
        } else {
            cart.recovery_url.clone()
        };
        let ours = |l: &ListedMessage| {
            l.messaging_service_sid.is_some() && l.messaging_service_sid == merchant.sender.messaging_service_sid
                || l.from.is_some() && l.from.as_deref() == merchant.sender.from.as_ref().map(Phone::as_str)
        };
        Ok(listed
            .into_iter()
            .filter(|l| !logged.contains(&l.sid))
            .find(|l| {
                let body = l.body.as_deref().unwrap_or_default();
                let same_body = earlier.body_sha256.as_deref() == Some(sha256_hex(body.as_bytes()).as_str());
                let same_link = link.as_deref().is_some_and(|u| body.contains(u)) && ours(l);
                (same_body || same_link) && l.created_at().is_some_and(|c| c >= earlier.since - Duration::minutes(1))
            })
            .map(Found::Message))
    }

    /// The call an unanswered attempt placed, if Twilio has it: to this number, from this
    /// merchant's voice number, since the attempt began.
    async fn find_earlier_call(
        &self,
        merchant: &Merchant,
        phone: &Phone,
        earlier: &Uncertain,
        logged: &std::collections::HashSet<String>,
    ) -> Result<Option<Found>, TwilioError> {
        let Some(from) = &merchant.voice_from else { return Ok(None) };
        let listed = self.twilio.recent_calls_to(phone.as_str()).await?;
        Ok(listed
            .into_iter()
            .filter(|c| !logged.contains(&c.sid))
            .find(|c| {
                c.from.as_deref() == Some(from.as_str())
                    && c.created_at().is_some_and(|t| t >= earlier.since - Duration::minutes(1))
            })
            .map(Found::Call))
    }

    /// Records a message an earlier attempt did send, whatever happened since: it cannot be
    /// recalled, and its log is what delivery reports, the frequency rule and audits read.
    async fn record_found(
        &self,
        merchant: &MerchantRecord,
        cart: &Cart,
        step: u8,
        seen: &StepAvailability,
        found: Found,
        now: DateTime<Utc>,
    ) -> Result<Pass, OutreachError> {
        let Some(phone) = &cart.phone else { return Ok(Pass::Stale) };
        let m = &merchant.merchant;
        let claim_id = uuid::Uuid::new_v4().to_string();
        let target = (&m.id, &cart.token, step);
        let attempt = Attempt { app: self, merchant, cart, step, claim_id: &claim_id, phone, now };
        match found {
            Found::Message(found) => {
                info!(merchant = %m.id, step, sid = %found.sid, "an unanswered attempt did reach Twilio; recording it, not sending again");
                let body = found.body.unwrap_or_default();
                if !self.store.take_over(target, seen, &claim_id, &sha256_hex(body.as_bytes()), now).await? {
                    return Ok(Pass::Stale);
                }
                let senders = found.messaging_service_sid.into_iter().chain(found.from).filter(|s| !s.is_empty());
                attempt.record(found.sid, "queued".into(), body, senders.collect()).await.map(Pass::Done)
            }
            Found::Call(call) => {
                info!(merchant = %m.id, step, sid = %call.sid, "an unanswered call attempt did reach Twilio; recording it, not calling again");
                if !self.store.take_over(target, seen, &claim_id, CALL_FINGERPRINT, now).await? {
                    return Ok(Pass::Stale);
                }
                let status = call.status.unwrap_or_else(|| "queued".into());
                attempt.record_call(call.sid, status).await.map(Pass::Done)
            }
        }
    }

    async fn send_step(
        &self,
        merchant: &MerchantRecord,
        cart: &Cart,
        step: u8,
        channel: Channel,
        reads: Reads,
        now: DateTime<Utc>,
    ) -> Result<Pass, OutreachError> {
        let m = &merchant.merchant;
        // `decide` guarantees both; the pattern keeps that promise checked here too.
        let (Some(phone), Some(url)) = (&cart.phone, &cart.recovery_url) else {
            let reason = if cart.phone.is_none() { SkipReason::NoPhone } else { SkipReason::NoRecoveryLink };
            return self.skip(&m.id, cart, step, &reads.step, reason, now).await;
        };
        let sender = match (&m.sender.messaging_service_sid, &m.sender.from) {
            (Some(sid), _) => SmsSender::MessagingService(sid.clone()),
            (None, Some(from)) => SmsSender::From(from.as_str().to_string()),
            (None, None) => return self.skip(&m.id, cart, step, &reads.step, SkipReason::NoSender, now).await,
        };
        let def = &m.flow[step as usize];
        // The store's URL, or ours (`/r/{code}`: BigCommerce's URLs are single-use, or the
        // merchant counts clicks), stored before the claim so a retry renders the same body.
        let link =
            crate::app::links::message_link(&self.store, &self.public_base_url, m, cart, url, step, channel, now)
                .await?;
        let body = RecoverySms {
            merchant_name: &m.name,
            first_name: cart.first_name.as_deref(),
            items: &cart.items,
            recovery_url: &link,
            discount_code: def.discount_code.as_deref(),
            first_contact: reads.first_contact,
        }
        .render();
        let body_sha256 = sha256_hex(body.as_bytes());
        let claim_id = uuid::Uuid::new_v4().to_string();
        let guard = ClaimGuard {
            merchant_id: m.id.clone(),
            cart: cart.token.clone(),
            step,
            phone: phone.clone(),
            channel,
            cart_version: cart.version,
            consent_seq: reads.consent.seq,
            step_seen: reads.step,
            counter: reads.counter,
            reach_at: reads.reach_at,
            daily_budget: m.send_guard.daily_send_budget,
        };
        match self.store.claim(&guard, &claim_id, &body_sha256, now).await? {
            ClaimOutcome::Claimed { .. } => {}
            ClaimOutcome::Stale => return Ok(Pass::Stale),
            ClaimOutcome::Taken(record) => return self.taken(merchant, cart, step, &record, now).await,
            ClaimOutcome::BudgetSpent => {
                return self.skip(&m.id, cart, step, &guard.step_seen, SkipReason::DailyBudget, now).await;
            }
        }
        let attempt = Attempt { app: self, merchant, cart, step, claim_id: &claim_id, phone, now };
        let senders = vec![sender.as_str().to_string()];
        // The one window left: what is acknowledged while this request is in flight.
        let request = SendSms {
            to: phone.as_str().to_string(),
            sender,
            body: body.clone(),
            status_callback: Some(format!("{}/twilio/sms/status", self.public_base_url)),
            // Held in Twilio's queue no longer than the recipient's sending window stays open.
            validity_seconds: Some(send_validity(self.clock.now(), &merchant.merchant, cart)),
        };
        let outcome = match self.twilio.send_sms(&request).await {
            Ok(message) => {
                let status = message.status.clone().unwrap_or_else(|| "queued".into());
                attempt.record(message.sid, status, body, senders).await
            }
            Err(e) => attempt.failed(e).await,
        };
        outcome.map(Pass::Done)
    }

    /// Places the call of a voice step behind the same claim as a text: consent to calls, the
    /// cart, the merchant and the phone's daily count, all as the decision read them.
    async fn call_step(
        &self,
        merchant: &MerchantRecord,
        cart: &Cart,
        step: u8,
        reads: Reads,
        now: DateTime<Utc>,
    ) -> Result<Pass, OutreachError> {
        let m = &merchant.merchant;
        let Some(phone) = &cart.phone else {
            return self.skip(&m.id, cart, step, &reads.step, SkipReason::NoPhone, now).await;
        };
        let Some(from) = &m.voice_from else {
            return self.skip(&m.id, cart, step, &reads.step, SkipReason::NoVoiceSender, now).await;
        };
        let claim_id = uuid::Uuid::new_v4().to_string();
        let guard = ClaimGuard {
            merchant_id: m.id.clone(),
            cart: cart.token.clone(),
            step,
            phone: phone.clone(),
            channel: Channel::Voice,
            cart_version: cart.version,
            consent_seq: reads.consent.seq,
            step_seen: reads.step,
            counter: reads.counter,
            reach_at: reads.reach_at,
            daily_budget: m.send_guard.daily_send_budget,
        };
        match self.store.claim(&guard, &claim_id, CALL_FINGERPRINT, now).await? {
            ClaimOutcome::Claimed { .. } => {}
            ClaimOutcome::Stale => return Ok(Pass::Stale),
            ClaimOutcome::Taken(record) => return self.taken(merchant, cart, step, &record, now).await,
            ClaimOutcome::BudgetSpent => {
                return self.skip(&m.id, cart, step, &guard.step_seen, SkipReason::DailyBudget, now).await;
            }
        }
        let attempt = Attempt { app: self, merchant, cart, step, claim_id: &claim_id, phone, now };
        let reference = CallRef { merchant_id: m.id.clone(), cart_token: cart.token.clone(), step }.query();
        let base = &self.public_base_url;
        let request = PlaceCall {
            to: phone.as_str().to_string(),
            from: from.as_str().to_string(),
            url: format!("{base}/twilio/voice/answer?{reference}"),
            status_callback: format!("{base}/twilio/voice/status?{reference}"),
            // Voicemail is left after the greeting's beep; otherwise a machine is hung up on fast.
            machine_detection: if m.voice.voicemail { "DetectMessageEnd" } else { "Enable" },
            timeout_seconds: RING_TIMEOUT_SECONDS,
            time_limit_seconds: m.voice.time_limit_seconds,
            recording_callback: m.recording.enabled.then(|| format!("{base}/twilio/voice/recording?{reference}")),
        };
        let outcome = match self.twilio.place_call(&request).await {
            Ok(call) => attempt.record_call(call.sid, call.status.unwrap_or_else(|| "queued".into())).await,
            Err(e) => attempt.failed(e).await,
        };
        outcome.map(Pass::Done)
    }

    /// The step was claimed or finished by another delivery.
    async fn taken(
        &self,
        merchant: &MerchantRecord,
        cart: &Cart,
        step: u8,
        record: &StepRecord,
        now: DateTime<Utc>,
    ) -> Result<Pass, OutreachError> {
        match record.state {
            // A redelivery after a send (or a skip that lets the flow go on) whose follow-up
            // scheduling may not have happened.
            StepState::Sent => self.schedule_next(merchant, cart, step, now).await?,
            StepState::Skipped if record.reason.as_deref().is_some_and(SkipReason::continues_flow_named) => {
                self.schedule_next(merchant, cart, step, now).await?
            }
            // A call Twilio refused lets the texts go on, even if the first attempt to queue
            // the next step failed.
            StepState::Failed if self.channel_of(&merchant.merchant, step) == Channel::Voice => {
                self.schedule_next(merchant, cart, step, now).await?
            }
            // Held by a live lease: look again when it ends, in case its holder dies. This
            // message is acknowledged, so waiting does not use up the queue's receive count.
            StepState::Claimed => {
                let until = record.lease_until.unwrap_or(now);
                let job = OutreachJob {
                    merchant_id: cart.merchant_id.clone(),
                    cart_token: cart.token.clone(),
                    step,
                    due_at: until,
                };
                self.queue.enqueue(&job, queue_delay(now, until) + 1).await?;
                info!(merchant = %merchant.merchant.id, step, %until, "step held by another attempt; looking again when its lease ends");
                return Ok(Pass::Done(JobOutcome::Waiting { until }));
            }
            _ => {}
        }
        info!(merchant = %merchant.merchant.id, step, state = ?record.state, "step already taken; duplicate delivery ignored");
        Ok(Pass::Done(JobOutcome::Duplicate))
    }

    fn channel_of(&self, merchant: &Merchant, step: u8) -> Channel {
        merchant.flow.get(step as usize).map_or(Channel::Sms, |d| d.channel)
    }

    async fn schedule_next(
        &self,
        merchant: &MerchantRecord,
        cart: &Cart,
        step: u8,
        now: DateTime<Utc>,
    ) -> Result<(), OutreachError> {
        schedule_step(&self.queue, &merchant.merchant, cart, step + 1, now).await?;
        Ok(())
    }
}

/// Queues flow step `step` of `cart`, held until it is due (as far as the queue allows). `None`
/// when the flow has no such step. Ingest queues step 0 with it, the worker every later one.
pub async fn schedule_step<Q: JobQueue>(
    queue: &Q,
    merchant: &Merchant,
    cart: &Cart,
    step: u8,
    now: DateTime<Utc>,
) -> Result<Option<OutreachJob>, PortError> {
    let Some(job) = job_for(merchant, cart, step) else { return Ok(None) };
    queue.enqueue(&job, queue_delay(now, job.due_at)).await?;
    Ok(Some(job))
}

/// What a claim of a call step records instead of a body's hash.
const CALL_FINGERPRINT: &str = "call";

/// What Twilio has of an attempt whose answer was lost.
enum Found {
    Message(ListedMessage),
    Call(ListedCall),
}

/// One claimed attempt at a step; its ending is recorded by the claim's holder.
struct Attempt<'a, S, G, Q> {
    app: &'a Outreach<S, G, Q>,
    merchant: &'a MerchantRecord,
    cart: &'a Cart,
    step: u8,
    claim_id: &'a str,
    phone: &'a Phone,
    now: DateTime<Utc>,
}

impl<S, G, Q> Attempt<'_, S, G, Q>
where
    S: OutreachReads + OutreachWrites + ConsentLedger + RecoveryLinks,
    G: SmsGateway + VoiceGateway,
    Q: JobQueue,
{
    /// The log entry (with the sender it went out from) and the step's `sent` state, in one write.
    async fn record(
        &self,
        sid: String,
        status: String,
        body: String,
        senders: Vec<String>,
    ) -> Result<JobOutcome, OutreachError> {
        let (app, m, now) = (self.app, &self.merchant.merchant, self.now);
        let entry = SmsLogEntry {
            merchant_id: m.id.clone(),
            phone: self.phone.clone(),
            direction: Direction::Outbound,
            message_sid: sid.clone(),
            segments: segments(&body) as u32,
            body,
            status,
            cart_token: Some(self.cart.token.clone()),
            step: Some(self.step),
            created_at: now,
            purge_at: now + Duration::days(i64::from(m.retention_days.sms_logs)),
            status_history: Default::default(),
            error_code: None,
            senders,
        };
        if !app.store.finish_sent(&entry, &self.cart.token, self.step, self.claim_id, now).await? {
            // Our lease ran out and another attempt holds the step: it finds this message at
            // Twilio by its body and records it.
            warn!(merchant = %m.id, step = self.step, sid = %sid, "sent after the claim's lease ended; the new holder records it");
            return Ok(JobOutcome::Sent { message_sid: sid });
        }
        info!(merchant = %m.id, step = self.step, phone = %self.phone.log_id(), sid = %sid, "recovery SMS sent");
        metrics::count(metrics::MESSAGES_SENT, 1);
        app.schedule_next(self.merchant, self.cart, self.step, now).await?;
        Ok(JobOutcome::Sent { message_sid: sid })
    }

    /// The call log entry and the step's `sent` state, in one write.
    async fn record_call(&self, sid: String, status: String) -> Result<JobOutcome, OutreachError> {
        let (app, m, now) = (self.app, &self.merchant.merchant, self.now);
        let entry = CallLogEntry {
            merchant_id: m.id.clone(),
            phone: self.phone.clone(),
            call_sid: sid.clone(),
            cart_token: self.cart.token.clone(),
            step: self.step,
            status,
            created_at: now,
            purge_at: now + Duration::days(i64::from(m.retention_days.sms_logs)),
            status_history: Default::default(),
            duration_seconds: None,
            answered_by: None,
            error_code: None,
            recording: None,
            outcome: None,
            summary: None,
        };
        if !app.store.finish_called(&entry, self.claim_id, now).await? {
            warn!(merchant = %m.id, step = self.step, sid = %sid, "call placed after the claim's lease ended; the new holder records it");
            return Ok(JobOutcome::Called { call_sid: sid });
        }
        info!(merchant = %m.id, step = self.step, phone = %self.phone.log_id(), sid = %sid, "recovery call placed");
        metrics::count(metrics::CALLS_PLACED, 1);
        app.schedule_next(self.merchant, self.cart, self.step, now).await?;
        Ok(JobOutcome::Called { call_sid: sid })
    }

    async fn failed(&self, e: TwilioError) -> Result<JobOutcome, OutreachError> {
        let (app, m, now) = (self.app, &self.merchant.merchant, self.now);
        let token = &self.cart.token;
        // Stored with the step, outside the customer's partition: never the number.
        let reason = redact(&e.to_string());
        if e.is_retryable() {
            let uncertain = e.may_have_sent();
            let result = StepResult::Retry { reason, uncertain };
            // A send that may have happened keeps its count until the retry finds out. One that
            // certainly did not gives it back while this claim still holds the step: once the
            // step says `Retry`, a duplicate job may claim it and count it again, and a release
            // after that would remove the new claim's count (found by review).
            if !uncertain {
                app.store.release_count(&m.id, self.phone, token, self.step).await?;
            }
            app.store.finish(&m.id, token, self.step, self.claim_id, &result, now).await?;
            return Err(OutreachError::TwilioRetry(e));
        }
        let code = e.code();
        warn!(merchant = %m.id, step = self.step, phone = %self.phone.log_id(), error_code = ?code, "Twilio refused the message; dropped");
        let result = StepResult::Failed { error_code: code, reason };
        app.store.finish(&m.id, token, self.step, self.claim_id, &result, now).await?;
        let channel = app.channel_of(m, self.step);
        if channel == Channel::Voice {
            // A call Twilio refuses (a geo permission, a number that takes no calls) says
            // nothing about texts: the flow goes on (first, so a failure below cannot stop it).
            app.schedule_next(self.merchant, self.cart, self.step, now).await?;
        }
        app.store.release_count(&m.id, self.phone, token, self.step).await?;
        if channel == Channel::Sms && code == Some(TWILIO_UNSUBSCRIBED) {
            // Twilio says the person opted out at the carrier: our ledger says so too, and the
            // rest of the flow is cancelled like after any opt-out.
            let event = ConsentEvent::carrier_opt_out(now, None);
            consent::record(&app.store, m, self.phone, &event, now).await?;
        }
        Ok(JobOutcome::Rejected { error_code: code })
    }
}
