//! The outreach use case's ports: what it reads before deciding, and its guarded writes. Shaped
//! around the decision rather than the tables, so a test can act between a decision and its claim,
//! or between a send and its record.

use super::PortError;
use crate::domain::cart::Cart;
use crate::domain::consent::{ConsentEvent, ConsentState};
use crate::domain::delivery::Undeliverable;
use crate::domain::ids::{CartToken, MerchantId};
use crate::domain::merchant::{Channel, Merchant};
use crate::domain::outreach::{
    ClaimGuard, ClaimOutcome, MerchantRecord, SendCounter, SmsLogEntry, StepAvailability, StepRecord, StepResult,
};
use crate::domain::phone::Phone;
use crate::domain::voice::CallLogEntry;
use chrono::{DateTime, Utc};
use std::future::Future;

/// What the outreach use case reads before deciding (every read strongly consistent).
pub trait OutreachReads: Send + Sync {
    fn merchant(&self, id: &MerchantId) -> impl Future<Output = Result<Option<MerchantRecord>, PortError>> + Send;
    fn cart(&self, m: &MerchantId, token: &CartToken) -> impl Future<Output = Result<Option<Cart>, PortError>> + Send;
    fn step(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
    ) -> impl Future<Output = Result<Option<StepRecord>, PortError>> + Send;
    fn consent(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
    ) -> impl Future<Output = Result<ConsentState, PortError>> + Send;
    fn counter(&self, m: &MerchantId, phone: &Phone) -> impl Future<Output = Result<SendCounter, PortError>> + Send;
    fn undeliverable(
        &self,
        m: &MerchantId,
        phone: &Phone,
    ) -> impl Future<Output = Result<Option<Undeliverable>, PortError>> + Send;
    fn has_outbound(&self, m: &MerchantId, phone: &Phone) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// The SIDs of every message and call already logged to this phone: none of them can be an
    /// unanswered attempt's, so a lookup at Twilio must not take one for it.
    fn logged_sids(
        &self,
        m: &MerchantId,
        phone: &Phone,
    ) -> impl Future<Output = Result<std::collections::HashSet<String>, PortError>> + Send;
}

/// The outreach use case's writes: the guarded claim and the step outcomes.
pub trait OutreachWrites: Send + Sync {
    fn claim(
        &self,
        guard: &ClaimGuard,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<ClaimOutcome, PortError>> + Send;
    fn finish_sent(
        &self,
        entry: &SmsLogEntry,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// A placed call: its log entry and the step's `sent` state in one write.
    fn finish_called(
        &self,
        entry: &CallLogEntry,
        claim_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
    fn finish(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        result: &StepResult,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    fn release_count(
        &self,
        m: &MerchantId,
        phone: &Phone,
        token: &CartToken,
        step: u8,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Records why the step will not go out, over the step as it was read.
    fn skip(
        &self,
        target: (&MerchantId, &CartToken, u8),
        seen: &StepAvailability,
        reason: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// Takes over the step on its own record, to log a message an earlier attempt sent.
    fn take_over(
        &self,
        target: (&MerchantId, &CartToken, u8),
        seen: &StepAvailability,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
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
    ) -> impl Future<Output = Result<Option<ConsentState>, PortError>> + Send;
    /// As `record`, for an opt-in that must not outlive a deletion: appended only while the
    /// phone's deletion marker is as read (`deleted_at_seen`); a marker moved since is a
    /// `Conflict`, for the caller to read again.
    fn record_opt_in(
        &self,
        m: &MerchantId,
        phone: &Phone,
        event: &ConsentEvent,
        purge_at: DateTime<Utc>,
        deleted_at_seen: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<Option<ConsentState>, PortError>> + Send;
    /// Skips every unclaimed step of `channel` of this phone's open carts (every step, for an
    /// SMS opt-out); how many.
    fn cancel_outreach(
        &self,
        merchant: &Merchant,
        phone: &Phone,
        channel: Channel,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<usize, PortError>> + Send;
}
