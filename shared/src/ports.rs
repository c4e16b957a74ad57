//! Ports: the small capabilities the use cases call. The adapters implement them; a test wraps
//! one to inject a fault or to act between two steps of a use case (between a decision and its
//! claim, between a send and its record).

use crate::adapters::dynamo::{Store, StoreError};
use crate::adapters::queue::{OutreachQueue, QueueError};
use crate::adapters::twilio::{
    CallResource, ListedCall, ListedMessage, MessageResource, PlaceCall, SendSms, TwilioClient, TwilioError,
};
use crate::domain::cart::Cart;
use crate::domain::consent::{ConsentEvent, ConsentState};
use crate::domain::delivery::Undeliverable;
use crate::domain::flow::OutreachJob;
use crate::domain::ids::{CartToken, MerchantId};
use crate::domain::merchant::{Channel, Merchant};
use crate::domain::outreach::StepAvailability;
use crate::domain::outreach::{
    ClaimGuard, ClaimOutcome, MerchantRecord, SendCounter, SmsLogEntry, StepRecord, StepResult,
};
use crate::domain::phone::Phone;
use crate::domain::voice::CallLogEntry;
use chrono::{DateTime, Utc};
use std::future::Future;

/// What the outreach use case reads before deciding (every read strongly consistent).
pub trait OutreachReads: Send + Sync {
    fn merchant(&self, id: &MerchantId) -> impl Future<Output = Result<Option<MerchantRecord>, StoreError>> + Send;
    fn cart(&self, m: &MerchantId, token: &CartToken) -> impl Future<Output = Result<Option<Cart>, StoreError>> + Send;
    fn step(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
    ) -> impl Future<Output = Result<Option<StepRecord>, StoreError>> + Send;
    fn consent(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
    ) -> impl Future<Output = Result<ConsentState, StoreError>> + Send;
    fn counter(&self, m: &MerchantId, phone: &Phone) -> impl Future<Output = Result<SendCounter, StoreError>> + Send;
    fn undeliverable(
        &self,
        m: &MerchantId,
        phone: &Phone,
    ) -> impl Future<Output = Result<Option<Undeliverable>, StoreError>> + Send;
    fn has_outbound(&self, m: &MerchantId, phone: &Phone) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The SIDs of every message and call already logged to this phone: none of them can be an
    /// unanswered attempt's, so a lookup at Twilio must not take one for it.
    fn logged_sids(
        &self,
        m: &MerchantId,
        phone: &Phone,
    ) -> impl Future<Output = Result<std::collections::HashSet<String>, StoreError>> + Send;
}

/// The outreach use case's writes: the guarded claim and the step outcomes.
pub trait OutreachWrites: Send + Sync {
    fn claim(
        &self,
        guard: &ClaimGuard,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<ClaimOutcome, StoreError>> + Send;
    fn finish_sent(
        &self,
        entry: &SmsLogEntry,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// A placed call: its log entry and the step's `sent` state in one write.
    fn finish_called(
        &self,
        entry: &CallLogEntry,
        claim_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn finish(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        result: &StepResult,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn release_count(
        &self,
        m: &MerchantId,
        phone: &Phone,
        token: &CartToken,
        step: u8,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Records why the step will not go out, over the step as it was read.
    fn skip(
        &self,
        target: (&MerchantId, &CartToken, u8),
        seen: &StepAvailability,
        reason: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Takes over the step on its own record, to log a message an earlier attempt sent.
    fn take_over(
        &self,
        target: (&MerchantId, &CartToken, u8),
        seen: &StepAvailability,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Consent changes and what follows them.
pub trait ConsentLedger: Send + Sync {
    /// Appends `event` if the state accepts it (re-reading on conflicts); `None` when it does not.
    fn record(
        &self,
        m: &MerchantId,
        phone: &Phone,
        event: &ConsentEvent,
        purge_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<ConsentState>, StoreError>> + Send;
    /// Skips every unclaimed step of `channel` of this phone's open carts (every step, for an
    /// SMS opt-out); how many.
    fn cancel_outreach(
        &self,
        merchant: &Merchant,
        phone: &Phone,
        channel: Channel,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

/// Where the SMS goes out, and where a lost answer is looked for.
pub trait SmsGateway: Send + Sync {
    fn send_sms(&self, req: &SendSms) -> impl Future<Output = Result<MessageResource, TwilioError>> + Send;
    fn recent_messages_to(&self, to: &str) -> impl Future<Output = Result<Vec<ListedMessage>, TwilioError>> + Send;
}

/// Where calls are placed, and where a lost answer is looked for.
pub trait VoiceGateway: Send + Sync {
    fn place_call(&self, req: &PlaceCall) -> impl Future<Output = Result<CallResource, TwilioError>> + Send;
    fn recent_calls_to(&self, to: &str) -> impl Future<Output = Result<Vec<ListedCall>, TwilioError>> + Send;
}

/// The outreach queue.
pub trait JobQueue: Send + Sync {
    fn enqueue(&self, job: &OutreachJob, delay_seconds: i32)
    -> impl Future<Output = Result<String, QueueError>> + Send;
}

impl OutreachReads for Store {
    async fn merchant(&self, id: &MerchantId) -> Result<Option<MerchantRecord>, StoreError> {
        self.get_merchant(id).await
    }
    async fn cart(&self, m: &MerchantId, token: &CartToken) -> Result<Option<Cart>, StoreError> {
        self.get_cart(m, token).await
    }
    async fn step(&self, m: &MerchantId, token: &CartToken, step: u8) -> Result<Option<StepRecord>, StoreError> {
        self.get_step(m, token, step).await
    }
    async fn consent(&self, m: &MerchantId, phone: &Phone, channel: Channel) -> Result<ConsentState, StoreError> {
        self.consent_state(m, phone, channel).await
    }
    async fn counter(&self, m: &MerchantId, phone: &Phone) -> Result<SendCounter, StoreError> {
        self.send_counter(m, phone).await
    }
    async fn undeliverable(&self, m: &MerchantId, phone: &Phone) -> Result<Option<Undeliverable>, StoreError> {
        Store::undeliverable(self, m, phone).await
    }
    async fn has_outbound(&self, m: &MerchantId, phone: &Phone) -> Result<bool, StoreError> {
        self.has_outbound_sms(m, phone).await
    }
    async fn logged_sids(
        &self,
        m: &MerchantId,
        phone: &Phone,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let (texts, calls) = tokio::try_join!(self.sms_log(m, phone), self.call_log(m, phone))?;
        Ok(texts.into_iter().map(|e| e.message_sid).chain(calls.into_iter().map(|c| c.call_sid)).collect())
    }
}

impl OutreachWrites for Store {
    async fn claim(
        &self,
        guard: &ClaimGuard,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimOutcome, StoreError> {
        Store::claim(self, guard, claim_id, body_sha256, now).await
    }
    async fn finish_sent(
        &self,
        entry: &SmsLogEntry,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Store::finish_sent(self, entry, token, step, claim_id, now).await
    }
    async fn finish_called(
        &self,
        entry: &CallLogEntry,
        claim_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Store::finish_called(self, entry, claim_id, now).await
    }
    async fn finish(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        result: &StepResult,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.finish_step(m, token, step, claim_id, result, now).await
    }
    async fn release_count(
        &self,
        m: &MerchantId,
        phone: &Phone,
        token: &CartToken,
        step: u8,
    ) -> Result<(), StoreError> {
        Store::release_count(self, m, phone, token, step).await
    }
    async fn skip(
        &self,
        target: (&MerchantId, &CartToken, u8),
        seen: &StepAvailability,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.skip_seen(target, seen, reason, now).await
    }
    async fn take_over(
        &self,
        target: (&MerchantId, &CartToken, u8),
        seen: &StepAvailability,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Store::take_over(self, target, seen, claim_id, body_sha256, now).await
    }
}

impl ConsentLedger for Store {
    async fn record(
        &self,
        m: &MerchantId,
        phone: &Phone,
        event: &ConsentEvent,
        purge_at: DateTime<Utc>,
    ) -> Result<Option<ConsentState>, StoreError> {
        self.record_consent(m, phone, event, purge_at).await
    }
    async fn cancel_outreach(
        &self,
        merchant: &Merchant,
        phone: &Phone,
        channel: Channel,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        Store::cancel_outreach(self, merchant, phone, channel, now).await
    }
}

impl SmsGateway for TwilioClient {
    async fn send_sms(&self, req: &SendSms) -> Result<MessageResource, TwilioError> {
        TwilioClient::send_sms(self, req).await
    }
    async fn recent_messages_to(&self, to: &str) -> Result<Vec<ListedMessage>, TwilioError> {
        TwilioClient::recent_messages_to(self, to).await
    }
}

impl VoiceGateway for TwilioClient {
    async fn place_call(&self, req: &PlaceCall) -> Result<CallResource, TwilioError> {
        TwilioClient::place_call(self, req).await
    }
    async fn recent_calls_to(&self, to: &str) -> Result<Vec<ListedCall>, TwilioError> {
        TwilioClient::recent_calls_to(self, to).await
    }
}

impl JobQueue for OutreachQueue {
    async fn enqueue(&self, job: &OutreachJob, delay_seconds: i32) -> Result<String, QueueError> {
        OutreachQueue::enqueue(self, job, delay_seconds).await
    }
}
