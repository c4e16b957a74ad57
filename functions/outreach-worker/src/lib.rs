//! outreach-worker: takes queued flow steps and, when consent and the cart still allow, sends
//! at most one SMS per (cart, step). The use case is `callfy_shared::app::outreach`; this crate
//! maps SQS batches onto it. `main.rs` only wires it.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use callfy_shared::adapters::queue::OutreachQueue;
use callfy_shared::adapters::store::Store;
use callfy_shared::adapters::twilio::TwilioClient;
pub use callfy_shared::app::outreach::{JobOutcome, Outreach, OutreachError as WorkerError, TWILIO_UNSUBSCRIBED};
use callfy_shared::domain::flow::OutreachJob;
use callfy_shared::ports::{ConsentLedger, JobQueue, OutreachReads, OutreachWrites, SmsGateway};
use callfy_shared::telemetry::redact;
use futures::future::join_all;
use tracing::warn;

/// The worker as Lambda runs it: DynamoDB, Twilio and SQS behind the use case's ports.
pub type WorkerApp = Outreach<Store, TwilioClient, OutreachQueue>;

/// Handles one SQS batch; failed messages are reported individually and return to the queue.
pub async fn handle_batch<S, G, Q>(app: &Outreach<S, G, Q>, event: SqsEvent) -> SqsBatchResponse
where
    S: OutreachReads + OutreachWrites + ConsentLedger,
    G: SmsGateway,
    Q: JobQueue,
{
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

pub async fn process_record<S, G, Q>(app: &Outreach<S, G, Q>, record: &SqsMessage) -> Result<JobOutcome, WorkerError>
where
    S: OutreachReads + OutreachWrites + ConsentLedger,
    G: SmsGateway,
    Q: JobQueue,
{
    let body = record.body.as_deref().unwrap_or_default();
    let job: OutreachJob = serde_json::from_str(body).map_err(|e| WorkerError::BadMessage(e.to_string()))?;
    app.process_job(&job).await
}

pub async fn process_job<S, G, Q>(app: &Outreach<S, G, Q>, job: &OutreachJob) -> Result<JobOutcome, WorkerError>
where
    S: OutreachReads + OutreachWrites + ConsentLedger,
    G: SmsGateway,
    Q: JobQueue,
{
    app.process_job(job).await
}
