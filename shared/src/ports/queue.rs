//! The work queues: outreach steps, and what must be made durable before it is applied (an
//! inbound opt-out, a key-9 opt-out, a recording to copy).

use super::PortError;
use crate::domain::flow::OutreachJob;
use crate::domain::inbound::InboundMessage;
use crate::domain::voice::{KeyOptOut, RecordingCopy};
use std::future::Future;

/// The outreach queue, as the flow schedules steps on it.
pub trait JobQueue: Send + Sync {
    /// Enqueues `job`, held back `delay_seconds` (0..=900); the message id.
    fn enqueue(&self, job: &OutreachJob, delay_seconds: i32) -> impl Future<Output = Result<String, PortError>> + Send;
    /// Queues a platform's data-subject request (stored as pending) to be carried out now by
    /// the worker; the nightly purge carries out any the worker could not.
    fn enqueue_privacy(&self, work: &PrivacyWork) -> impl Future<Output = Result<String, PortError>> + Send;
    /// Queues the cancellation of a closed account's queued steps, for the worker.
    fn enqueue_closure(
        &self,
        m: &crate::domain::ids::MerchantId,
    ) -> impl Future<Output = Result<String, PortError>> + Send;
    /// Queues the removal of a deletion's copies at the provider (Twilio), for the worker, the
    /// one function that holds the provider's credentials.
    fn enqueue_provider_copies(&self, work: &PrivacyWork) -> impl Future<Output = Result<String, PortError>> + Send;
}

/// A pending data-subject request to carry out, by its merchant and id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyWork {
    pub merchant_id: crate::domain::ids::MerchantId,
    pub id: String,
}

/// Work that is made durable first and applied (or replayed) by the worker.
pub trait WorkQueue: Send + Sync {
    /// Makes an inbound message durable before anything else is done with it.
    fn enqueue_inbound(
        &self,
        msg: &InboundMessage,
        delay_seconds: i32,
    ) -> impl Future<Output = Result<String, PortError>> + Send;
    /// Queues the copy of a recording (on the recordings queue).
    fn enqueue_recording(&self, copy: &RecordingCopy) -> impl Future<Output = Result<String, PortError>> + Send;
    /// Makes a key-9 opt-out durable before it is applied (the worker replays it).
    fn enqueue_key_opt_out(
        &self,
        o: &KeyOptOut,
        delay_seconds: i32,
    ) -> impl Future<Output = Result<String, PortError>> + Send;
}
