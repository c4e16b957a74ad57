//! The outreach queue (SQS).

use crate::domain::flow::OutreachJob;
use crate::domain::inbound::InboundMessage;
use crate::domain::voice::{KeyOptOut, RecordingCopy};
use crate::ports::{JobQueue, PortError, QueuedWebhook, WebhookQueue, WorkQueue};
use serde::{Deserialize, Serialize};

/// What travels on the worker's queues: a flow step, or an inbound message or a platform
/// webhook's durable copy to verify and apply (again), on the outreach queue; a recording to copy
/// on the recordings queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QueuedWork {
    Step(OutreachJob),
    Inbound { inbound: InboundMessage },
    Recording { recording: RecordingCopy },
    KeyOptOut { key_opt_out: KeyOptOut },
    Privacy { privacy: crate::ports::PrivacyWork },
    ProviderCopies { provider_copies: crate::ports::PrivacyWork },
    Closure { closure: crate::domain::ids::MerchantId },
    Webhook { webhook: QueuedWebhook },
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
    pub async fn enqueue(&self, job: &OutreachJob, delay_seconds: i32) -> Result<String, PortError> {
        self.send(&QueuedWork::Step(job.clone()), delay_seconds).await
    }

    /// Makes an inbound message durable before anything else is done with it.
    pub async fn enqueue_inbound(&self, msg: &InboundMessage, delay_seconds: i32) -> Result<String, PortError> {
        self.send(&QueuedWork::Inbound { inbound: msg.clone() }, delay_seconds).await
    }

    /// Queues the copy of a recording (on the recordings queue).
    pub async fn enqueue_recording(&self, copy: &RecordingCopy) -> Result<String, PortError> {
        self.send(&QueuedWork::Recording { recording: copy.clone() }, 0).await
    }

    /// Makes a key-9 opt-out durable before it is applied (the worker replays it).
    pub async fn enqueue_key_opt_out(&self, o: &KeyOptOut, delay_seconds: i32) -> Result<String, PortError> {
        self.send(&QueuedWork::KeyOptOut { key_opt_out: o.clone() }, delay_seconds).await
    }

    pub async fn enqueue_privacy(&self, work: &crate::ports::PrivacyWork) -> Result<String, PortError> {
        self.send(&QueuedWork::Privacy { privacy: work.clone() }, 0).await
    }

    /// Queues the cancellation of a closed account's queued steps, for the worker.
    pub async fn enqueue_closure(&self, m: &crate::domain::ids::MerchantId) -> Result<String, PortError> {
        self.send(&QueuedWork::Closure { closure: m.clone() }, 0).await
    }

    /// Queues the removal of a deletion's copies at Twilio, for the worker.
    pub async fn enqueue_provider_copies(&self, work: &crate::ports::PrivacyWork) -> Result<String, PortError> {
        self.send(&QueuedWork::ProviderCopies { provider_copies: work.clone() }, 0).await
    }

    /// Makes a platform webhook durable before it is applied (the worker replays it).
    pub async fn enqueue_webhook(&self, webhook: &QueuedWebhook, delay_seconds: i32) -> Result<String, PortError> {
        self.send(&QueuedWork::Webhook { webhook: webhook.clone() }, delay_seconds).await
    }

    async fn send(&self, work: &QueuedWork, delay_seconds: i32) -> Result<String, PortError> {
        let body = serde_json::to_string(work).map_err(|e| PortError::Encode(e.to_string()))?;
        let out = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay_seconds.clamp(0, 900))
            .send()
            .await
            .map_err(|e| super::aws::sdk_error("SQS", "SendMessage", e))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }
}

impl JobQueue for OutreachQueue {
    async fn enqueue(&self, job: &OutreachJob, delay_seconds: i32) -> Result<String, PortError> {
        OutreachQueue::enqueue(self, job, delay_seconds).await
    }
    async fn enqueue_privacy(&self, work: &crate::ports::PrivacyWork) -> Result<String, PortError> {
        OutreachQueue::enqueue_privacy(self, work).await
    }
    async fn enqueue_provider_copies(&self, work: &crate::ports::PrivacyWork) -> Result<String, PortError> {
        OutreachQueue::enqueue_provider_copies(self, work).await
    }
    async fn enqueue_closure(&self, m: &crate::domain::ids::MerchantId) -> Result<String, PortError> {
        OutreachQueue::enqueue_closure(self, m).await
    }
}

impl WorkQueue for OutreachQueue {
    async fn enqueue_inbound(&self, msg: &InboundMessage, delay_seconds: i32) -> Result<String, PortError> {
        OutreachQueue::enqueue_inbound(self, msg, delay_seconds).await
    }
    async fn enqueue_recording(&self, copy: &RecordingCopy) -> Result<String, PortError> {
        OutreachQueue::enqueue_recording(self, copy).await
    }
    async fn enqueue_key_opt_out(&self, o: &KeyOptOut, delay_seconds: i32) -> Result<String, PortError> {
        OutreachQueue::enqueue_key_opt_out(self, o, delay_seconds).await
    }
}

impl WebhookQueue for OutreachQueue {
    async fn enqueue_webhook(&self, webhook: &QueuedWebhook, delay_seconds: i32) -> Result<String, PortError> {
        OutreachQueue::enqueue_webhook(self, webhook, delay_seconds).await
    }
}
