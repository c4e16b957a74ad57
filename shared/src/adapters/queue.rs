//! The outreach queue (SQS).

use crate::domain::flow::OutreachJob;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};
use thiserror::Error;

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
        let body = serde_json::to_string(job).map_err(|e| QueueError::Encode(e.to_string()))?;
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
