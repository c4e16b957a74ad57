//! The outreach queue (SQS).

use crate::app::inbound::InboundMessage;
use crate::domain::flow::OutreachJob;
use crate::domain::voice::{KeyOptOut, RecordingCopy};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What travels on the worker's queues: a flow step or an inbound message to apply (again) on
/// the outreach queue; a recording to copy on the recordings queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QueuedWork {
    Step(OutreachJob),
    Inbound { inbound: InboundMessage },
    Recording { recording: RecordingCopy },
    KeyOptOut { key_opt_out: KeyOptOut },
}

#[derive(Debug, Error)]
pub enum QueueError {
    #[error("SQS {op} failed: {code}: {message}")]
    Aws { op: &'static str, code: String, message: String },
    #[error("job could not be encoded: {0}")]
    Encode(String),
}

#[derive(Clone, Debug)]
pub struct OutreachQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl OutreachQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self { client, url: url.into() }
    }

    /// Enqueues `job`, held back `delay_seconds` (0..=900).
    pub async fn enqueue(&self, job: &OutreachJob, delay_seconds: i32) -> Result<String, QueueError> {
        self.send(&QueuedWork::Step(job.clone()), delay_seconds).await
    }

    /// Makes an inbound message durable before anything else is done with it.
    pub async fn enqueue_inbound(&self, msg: &InboundMessage, delay_seconds: i32) -> Result<String, QueueError> {
        self.send(&QueuedWork::Inbound { inbound: msg.clone() }, delay_seconds).await
    }

    /// Queues the copy of a recording (on the recordings queue).
    pub async fn enqueue_recording(&self, copy: &RecordingCopy) -> Result<String, QueueError> {
        self.send(&QueuedWork::Recording { recording: copy.clone() }, 0).await
    }

    /// Makes a key-9 opt-out durable before it is applied (the worker replays it).
    pub async fn enqueue_key_opt_out(&self, o: &KeyOptOut, delay_seconds: i32) -> Result<String, QueueError> {
        self.send(&QueuedWork::KeyOptOut { key_opt_out: o.clone() }, delay_seconds).await
    }

    async fn send(&self, work: &QueuedWork, delay_seconds: i32) -> Result<String, QueueError> {
        let body = serde_json::to_string(work).map_err(|e| QueueError::Encode(e.to_string()))?;
        let out = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay_seconds.clamp(0, 900))
            .send()
            .await
            .map_err(|e| QueueError::Aws {
                op: "SendMessage",
                code: e.code().unwrap_or("unknown").to_string(),
                message: DisplayErrorContext(&e).to_string(),
            })?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }
}
