//! outreach-worker: takes queued flow steps and, when consent and the cart still allow, sends
//! exactly one SMS per (cart, step). `handle_batch` is the handler; `main.rs` only wires it.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use callfy_shared::adapters::queue::{OutreachQueue, QueueError};
use callfy_shared::adapters::store::{
    ClaimOutcome, Direction, MerchantRecord, MerchantStatus, SmsLogEntry, StepResult, StepState, Store, StoreError,
};
use callfy_shared::adapters::twilio::{SendSms, SmsSender, TwilioClient, TwilioError};
use callfy_shared::domain::cart::Cart;
use callfy_shared::domain::consent::ConsentEvent;
use callfy_shared::domain::flow::{Decision, OutreachJob, RecentSend, SkipReason, decide, job_for, queue_delay};
use callfy_shared::domain::merchant::Channel;
use callfy_shared::domain::message::{RecoverySms, segments};
use callfy_shared::signature::sha256_hex;
use callfy_shared::telemetry::redact;
use callfy_shared::{Clock, Phone};
use chrono::{DateTime, Duration, Utc};
use futures::future::join_all;
use std::sync::Arc;
use thiserror::Error;
use tracing::{info, warn};

/// Twilio: the number has opted out at the carrier / Advanced Opt-Out.
pub const TWILIO_UNSUBSCRIBED: i64 = callfy_shared::domain::delivery::UNSUBSCRIBED;

pub struct WorkerApp {
    pub store: Store,
    pub queue: OutreachQueue,
    pub twilio: TwilioClient,
    pub clock: Arc<dyn Clock>,
    pub public_base_url: String,
}

#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("message is not an outreach job: {0}")]
    BadMessage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("Twilio failed, will retry: {0}")]
    TwilioRetry(TwilioError),
}

/// What one job came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Sent {
        message_sid: String,
    },
    Skipped(SkipReason),
    Waiting {
        until: DateTime<Utc>,
    },
    /// Another delivery already holds or finished this step.
    Duplicate,
    /// Twilio refused for good; recorded, not retried.
    Rejected {
        error_code: Option<i64>,
    },
    CartMissing,
}

/// Handles one SQS batch; failed messages are reported individually and return to the queue.
pub async fn handle_batch(app: &WorkerApp, event: SqsEvent) -> SqsBatchResponse {
    let results = join_all(event.records.into_iter().map(|record| async move {
        let id = record.message_id.clone().unwrap_or_default();
        (id, process_record(app, &record).await)
    }))
    .await;
    let mut response = SqsBatchResponse::default();
    for (id, result) in results {
        if let Err(e) = result {
            warn!(message_id = %id, error = %redact(&e.to_string()), "outreach job failed; returned to the queue");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

pub async fn process_record(app: &WorkerApp, record: &SqsMessage) -> Result<JobOutcome, WorkerError> {
    let body = record.body.as_deref().unwrap_or_default();
    let job: OutreachJob = serde_json::from_str(body).map_err(|e| WorkerError::BadMessage(e.to_string()))?;
    process_job(app, &job).await
}

pub async fn process_job(app: &WorkerApp, job: &OutreachJob) -> Result<JobOutcome, WorkerError> {
    let now = app.clock.now();
    let (m, token, step) = (&job.merchant_id, &job.cart_token, job.step);
    let merchant = app.store.get_merchant(m).await?;
    let Some(cart) = app.store.get_cart(m, token).await? else {
        info!(merchant = %m, step, "cart no longer exists; job dropped");
        return Ok(JobOutcome::CartMissing);
    };
    let Some(merchant) = merchant else {
        app.store.skip_step(m, token, step, SkipReason::MerchantClosed.as_str(), now).await?;
        return Ok(JobOutcome::Skipped(SkipReason::MerchantClosed));
    };
    let consent = match &cart.phone {
        Some(phone) => app.store.consent_state(m, phone, Channel::Sms).await?,
        None => Default::default(),
    };
    let recent: Vec<RecentSend> = match &cart.phone {
        Some(phone) => app
            .store
            .outbound_since(m, phone, now - Duration::hours(24))
            .await?
            .into_iter()
            .map(|e| RecentSend { at: e.created_at, cart: e.cart_token })
            .collect(),
        None => Vec::new(),
    };
    // A delivery report said this number cannot take texts (landline, not in service).
    if let Some(phone) = &cart.phone
        && consent.allows_outreach()
        && app.store.undeliverable(m, phone).await?.is_some_and(|u| u.blocks(now))
    {
        app.store.skip_step(m, token, step, SkipReason::Undeliverable.as_str(), now).await?;
        info!(merchant = %m, step, reason = SkipReason::Undeliverable.as_str(), "outreach step skipped");
        return Ok(JobOutcome::Skipped(SkipReason::Undeliverable));
    }
    let active = merchant.status == MerchantStatus::Active;
    match decide(now, &merchant.merchant, active, &cart, &consent, step, &recent) {
        Decision::Wait { until } => {
            let next = OutreachJob { due_at: until, ..job.clone() };
            app.queue.enqueue(&next, queue_delay(now, until)).await?;
            Ok(JobOutcome::Waiting { until })
        }
        Decision::Skip(reason) => {
            app.store.skip_step(m, token, step, reason.as_str(), now).await?;
            info!(merchant = %m, step, reason = reason.as_str(), "outreach step skipped");
            // A step the channel cannot serve does not end the flow; anything else does.
            if reason == SkipReason::ChannelNotAvailable {
                schedule_next(app, &merchant, &cart, step, now).await?;
            }
            Ok(JobOutcome::Skipped(reason))
        }
        Decision::Send { .. } => send_step(app, &merchant, &cart, step, now).await,
    }
}

async fn send_step(
    app: &WorkerApp,
    merchant: &MerchantRecord,
    cart: &Cart,
    step: u8,
    now: DateTime<Utc>,
) -> Result<JobOutcome, WorkerError> {
    let m = &merchant.merchant;
    // `decide` guarantees both; the pattern keeps that promise checked here too.
    let (Some(phone), Some(url)) = (&cart.phone, &cart.recovery_url) else {
        let reason = if cart.phone.is_none() { SkipReason::NoPhone } else { SkipReason::NoRecoveryLink };
        app.store.skip_step(&m.id, &cart.token, step, reason.as_str(), now).await?;
        return Ok(JobOutcome::Skipped(reason));
    };
    let sender = match (&m.sender.messaging_service_sid, &m.sender.from) {
        (Some(sid), _) => SmsSender::MessagingService(sid.clone()),
        (None, Some(from)) => SmsSender::From(from.as_str().to_string()),
        (None, None) => {
            app.store.skip_step(&m.id, &cart.token, step, SkipReason::NoSender.as_str(), now).await?;
            return Ok(JobOutcome::Skipped(SkipReason::NoSender));
        }
    };
    let first_contact = !app.store.has_outbound_sms(&m.id, phone).await?;
    let def = &m.flow[step as usize];
    let body = RecoverySms {
        merchant_name: &m.name,
        first_name: cart.first_name.as_deref(),
        recovery_url: url,
        discount_code: def.discount_code.as_deref(),
        first_contact,
    }
    .render();
    let body_sha256 = sha256_hex(body.as_bytes());
    let claim_id = uuid::Uuid::new_v4().to_string();
    let uncertain = match app.store.claim_step(&m.id, &cart.token, step, &claim_id, &body_sha256, now).await? {
        ClaimOutcome::Claimed { uncertain } => uncertain,
        ClaimOutcome::Taken(record) => {
            // A redelivery after a send whose follow-up scheduling may not have happened.
            if record.state == StepState::Sent {
                schedule_next(app, merchant, cart, step, now).await?;
            }
            info!(merchant = %m.id, step, state = ?record.state, "step already claimed; duplicate delivery ignored");
            return Ok(JobOutcome::Duplicate);
        }
    };
    let attempt = Attempt { app, merchant, cart, step, claim_id: &claim_id, phone, now };

    // An earlier attempt went unanswered: if Twilio took it after all, it must not go twice.
    if let Some(earlier) = uncertain {
        let wanted = earlier.body_sha256.unwrap_or_else(|| body_sha256.clone());
        match app.twilio.recent_messages_to(phone.as_str()).await {
            Ok(listed) => {
                let found = listed.into_iter().find(|l| {
                    l.body.as_deref().is_some_and(|b| sha256_hex(b.as_bytes()) == wanted)
                        && l.created_at().is_some_and(|c| c >= earlier.since - Duration::minutes(1))
                });
                if let Some(found) = found {
                    info!(merchant = %m.id, step, sid = %found.sid, "an unanswered attempt did reach Twilio; not sending again");
                    let sent_body = found.body.unwrap_or(body);
                    return attempt.record(found.sid, "queued".into(), sent_body).await;
                }
            }
            Err(e) => return attempt.failed(e).await,
        }
    }

    let request = SendSms {
        to: phone.as_str().to_string(),
        sender,
        body: body.clone(),
        status_callback: Some(format!("{}/twilio/sms/status", app.public_base_url)),
    };
    match app.twilio.send_sms(&request).await {
        Ok(message) => {
            let status = message.status.clone().unwrap_or_else(|| "queued".into());
            attempt.record(message.sid, status, body).await
        }
        Err(e) => attempt.failed(e).await,
    }
}

/// One claimed attempt at a step; its ending is recorded by the claim's holder.
struct Attempt<'a> {
    app: &'a WorkerApp,
    merchant: &'a MerchantRecord,
    cart: &'a Cart,
    step: u8,
    claim_id: &'a str,
    phone: &'a Phone,
    now: DateTime<Utc>,
}

impl Attempt<'_> {
    async fn record(&self, sid: String, status: String, body: String) -> Result<JobOutcome, WorkerError> {
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
        };
        app.store.put_sms_log(&entry).await?;
        let result = StepResult::Sent { message_sid: sid.clone() };
        app.store.finish_step(&m.id, &self.cart.token, self.step, self.claim_id, &result, now).await?;
        app.store.set_last_message_at(&m.id, &self.cart.token, now).await?;
        info!(merchant = %m.id, step = self.step, phone = %self.phone.log_id(), sid = %sid, "recovery SMS sent");
        schedule_next(app, self.merchant, self.cart, self.step, now).await?;
        Ok(JobOutcome::Sent { message_sid: sid })
    }

    async fn failed(&self, e: TwilioError) -> Result<JobOutcome, WorkerError> {
        let (app, m, now) = (self.app, &self.merchant.merchant, self.now);
        if e.is_retryable() {
            let result = StepResult::Retry { reason: e.to_string(), uncertain: e.may_have_sent() };
            app.store.finish_step(&m.id, &self.cart.token, self.step, self.claim_id, &result, now).await?;
            return Err(WorkerError::TwilioRetry(e));
        }
        let code = e.code();
        warn!(merchant = %m.id, step = self.step, phone = %self.phone.log_id(), error_code = ?code, "Twilio refused the message; dropped");
        let result = StepResult::Failed { error_code: code, reason: e.to_string() };
        app.store.finish_step(&m.id, &self.cart.token, self.step, self.claim_id, &result, now).await?;
        if code == Some(TWILIO_UNSUBSCRIBED) {
            record_carrier_opt_out(app, &m.id, self.phone, now, m.retention_days.consent_records).await?;
        }
        Ok(JobOutcome::Rejected { error_code: code })
    }
}

/// Twilio says the person opted out at the carrier: our ledger must say so too.
async fn record_carrier_opt_out(
    app: &WorkerApp,
    m: &callfy_shared::MerchantId,
    phone: &Phone,
    now: DateTime<Utc>,
    retention_days: u32,
) -> Result<(), WorkerError> {
    let event = ConsentEvent::carrier_opt_out(now, None);
    app.store.record_consent(m, phone, &event, now + Duration::days(i64::from(retention_days))).await?;
    Ok(())
}

async fn schedule_next(
    app: &WorkerApp,
    merchant: &MerchantRecord,
    cart: &Cart,
    step: u8,
    now: DateTime<Utc>,
) -> Result<(), WorkerError> {
    if let Some(job) = job_for(&merchant.merchant, cart, step + 1) {
        app.queue.enqueue(&job, queue_delay(now, job.due_at)).await?;
    }
    Ok(())
}
