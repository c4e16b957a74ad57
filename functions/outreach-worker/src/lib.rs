//! outreach-worker: takes queued flow steps and, when consent and the cart still allow, sends
//! at most one SMS per (cart, step); and applies inbound messages sms-inbound queued so that no
//! opt-out is lost. The use cases are `callfy_shared::app::{outreach, inbound}`; this crate maps
//! SQS batches onto them. `main.rs` only wires it.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use callfy_shared::adapters::queue::{OutreachQueue, QueuedWork};
use callfy_shared::adapters::store::Store;
use callfy_shared::adapters::twilio::TwilioClient;
use callfy_shared::app::inbound;
pub use callfy_shared::app::outreach::{JobOutcome, Outreach, OutreachError as WorkerError, TWILIO_UNSUBSCRIBED};
use callfy_shared::domain::flow::OutreachJob;
use callfy_shared::ports::{ConsentLedger, JobQueue, OutreachReads, OutreachWrites, SmsGateway};
use callfy_shared::telemetry::redact;
use futures::future::join_all;
use tracing::warn;

/// The worker as Lambda runs it: DynamoDB, Twilio and SQS behind the use case's ports.
pub type WorkerApp = Outreach<Store, TwilioClient, OutreachQueue>;

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
            warn!(message_id = %id, error = %redact(&e.to_string()), "queued work failed; returned to the queue");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

pub async fn process_record(app: &WorkerApp, record: &SqsMessage) -> Result<JobOutcome, WorkerError> {
    let body = record.body.as_deref().unwrap_or_default();
    match serde_json::from_str::<QueuedWork>(body).map_err(|e| WorkerError::BadMessage(e.to_string()))? {
        QueuedWork::Step(job) => app.process_job(&job).await,
        // Until it holds: a storage error returns the message to the queue.
        QueuedWork::Inbound { inbound: msg } => {
            let applied = inbound::replay(&app.store, &msg).await?;
            Ok(JobOutcome::InboundApplied { changed: applied.affected.len() })
        }
    }
}

pub async fn process_job<S, G, Q>(app: &Outreach<S, G, Q>, job: &OutreachJob) -> Result<JobOutcome, WorkerError>
where
    S: OutreachReads + OutreachWrites + ConsentLedger,
    G: SmsGateway,
    Q: JobQueue,
{
    app.process_job(job).await
}
