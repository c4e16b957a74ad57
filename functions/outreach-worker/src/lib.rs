//! outreach-worker: takes queued flow steps and, when consent and the cart still allow, sends
//! at most one SMS or places at most one call per (cart, step); applies inbound messages
//! sms-inbound queued so that no opt-out is lost; verifies and applies the durable copies of
//! platform webhooks webhook-ingest queued; and copies call recordings to S3 from the
//! recordings queue. The use cases are `callfy_shared::app::{outreach, inbound, webhook, voice}`;
//! this crate maps SQS batches onto them. `main.rs` only wires it.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use callfy_shared::adapters::queue::QueuedWork;
pub use callfy_shared::app::outreach::{JobOutcome, Outreach, OutreachError as WorkerError, TWILIO_UNSUBSCRIBED};
use callfy_shared::app::voice::{self, VoiceError};
use callfy_shared::app::webhook::{Replayed, WebhookError};
use callfy_shared::app::{inbound, privacy};
use callfy_shared::domain::flow::OutreachJob;
use callfy_shared::ports::{Classify, ErrorKind};
use callfy_shared::ports::{ConsentLedger, JobQueue, OutreachReads, OutreachWrites, SmsGateway, VoiceGateway};
pub use callfy_shared::startup::{Worker, WorkerApp};
use callfy_shared::telemetry::redact;
use futures::future::join_all;
use tracing::warn;

/// Handles one SQS batch; failed messages are reported individually and return to the queue.
pub async fn handle_batch(app: &Worker, event: SqsEvent) -> SqsBatchResponse {
    let results = join_all(event.records.into_iter().map(|record| async move {
        let id = record.message_id.clone().unwrap_or_default();
        (id, process_record(app, &record).await)
    }))
    .await;
    let mut response = SqsBatchResponse::default();
    for (id, result) in results {
        if let Err(e) = result {
            // Both kinds go back to the queue: a transient failure is retried, a permanent one
            // reaches the dead-letter queue after maxReceiveCount (and its alarm).
            let cause = redact(&callfy_shared::ports::chain(&e));
            match e.kind() {
                ErrorKind::Transient => {
                    warn!(message_id = %id, error = %cause, "queued work failed; returned to the queue")
                }
                ErrorKind::Permanent => {
                    tracing::error!(message_id = %id, error = %cause, "queued work cannot succeed; it will be dead-lettered")
                }
            }
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// Why one queued item failed (it returns to its queue).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Outreach(#[from] WorkerError),
    #[error("recording copy: {0}")]
    Recording(#[from] VoiceError),
    #[error("privacy request: {0}")]
    Privacy(#[from] callfy_shared::app::retention::PurgeError),
    #[error("queued webhook: {0}")]
    Webhook(#[from] WebhookError),
}

impl Classify for RecordError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Outreach(e) => e.kind(),
            Self::Recording(e) => e.kind(),
            Self::Privacy(e) => e.kind(),
            Self::Webhook(e) => e.kind(),
        }
    }
}

/// What one queued item came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    Outreach(JobOutcome),
    Recording(voice::CopyOutcome),
    Privacy,
    Webhook(Replayed),
}

async fn provider_copies(app: &Worker, work: &callfy_shared::ports::PrivacyWork) -> Result<(), RecordError> {
    let o = &app.outreach;
    privacy::remove_provider_copies(&o.store, &o.twilio, &work.merchant_id, &work.id)
        .await
        .map_err(|e| RecordError::Privacy(e.into()))?;
    Ok(())
}

pub async fn process_record(app: &Worker, record: &SqsMessage) -> Result<Processed, RecordError> {
    let body = record.body.as_deref().unwrap_or_default();
    let work = serde_json::from_str::<QueuedWork>(body).map_err(|e| WorkerError::BadMessage(e.to_string()))?;
    let o = &app.outreach;
    Ok(match work {
        QueuedWork::Step(job) => Processed::Outreach(o.process_job(&job).await?),
        // Until it holds: a storage error returns the message to the queue.
        QueuedWork::Inbound { inbound: msg } => {
            let applied = inbound::replay(&o.store, &msg).await.map_err(WorkerError::from)?;
            inbound::confirm_replayed(&o.twilio, &msg, &applied, o.clock.now()).await;
            Processed::Outreach(JobOutcome::InboundApplied { changed: applied.affected.len() })
        }
        QueuedWork::Recording { recording } => Processed::Recording(
            voice::copy_recording(&o.store, &o.twilio, &app.recordings, &recording, &app.scratch).await?,
        ),
        // Until it holds: a storage error returns the message to the queue.
        QueuedWork::KeyOptOut { key_opt_out } => {
            let merchant = o.store.get_merchant(&key_opt_out.merchant_id).await.map_err(WorkerError::from)?;
            let changed = match merchant {
                Some(m) => voice::apply_key_opt_out(&o.store, &m.merchant, &key_opt_out, true)
                    .await
                    .map_err(WorkerError::from)?,
                None => false,
            };
            Processed::Outreach(JobOutcome::InboundApplied { changed: usize::from(changed) })
        }
        // A platform's data-subject request, carried out as soon as it was received.
        QueuedWork::Privacy { privacy } => {
            let purger =
                callfy_shared::app::retention::Purger { store: &o.store, recordings: &app.recordings, queue: &o.queue };
            // A deletion queues its Twilio copies for the next item below.
            purger.carry_out(&privacy, o.clock.now()).await?;
            Processed::Privacy
        }
        // A closed account: what it still had queued is cancelled (claims refuse it meanwhile).
        QueuedWork::Closure { closure } => {
            let record = o.store.get_merchant(&closure).await.map_err(WorkerError::from)?;
            let cancelled = match record {
                Some(r) if r.status == callfy_shared::domain::outreach::MerchantStatus::Closed => {
                    o.store.cancel_merchant_outreach(&r.merchant, o.clock.now()).await.map_err(WorkerError::from)?
                }
                _ => 0,
            };
            Processed::Outreach(JobOutcome::InboundApplied { changed: cancelled })
        }
        // A deletion's copies at Twilio; what fails stays recorded for the purger to queue again.
        QueuedWork::ProviderCopies { provider_copies: work } => {
            provider_copies(app, &work).await?;
            Processed::Privacy
        }
        // A platform webhook's durable copy: verified again, then applied unless it was already.
        QueuedWork::Webhook { webhook } => Processed::Webhook(app.webhooks().replay(&webhook, o.clock.now()).await?),
    })
}

pub async fn process_job<S, G, Q>(app: &Outreach<S, G, Q>, job: &OutreachJob) -> Result<JobOutcome, WorkerError>
where
    S: OutreachReads + OutreachWrites + ConsentLedger + callfy_shared::ports::RecoveryLinks,
    G: SmsGateway + VoiceGateway,
    Q: JobQueue,
{
    app.process_job(job).await
}
