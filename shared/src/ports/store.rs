//! The store's ports, one small trait per aggregate (as in aws-samples/serverless-rust-demo):
//! a use case names only the capabilities it uses, so a test can pause or fail any one of them.
//! Every read a decision depends on is strongly consistent; every write that follows a read is
//! conditional on what was read (`PortError::Conflict` when it changed).

use super::PortError;
use super::records::{
    CallUpdate, ConsentAppend, CustomerRecord, DueItem, Erasure, IdempotencyRecord, IngestOutcome, IngestWrite,
    ItemKey, MarkerGuard, PendingPrivacy, PrivacyStatus, ProviderCopy, PurgeCursor, TenantCursor,
};
use crate::domain::cart::Cart;
use crate::domain::consent::{ConsentEvent, ConsentState, LedgerEntry};
use crate::domain::delivery::Undeliverable;
use crate::domain::guard::BurstKind;
use crate::domain::ids::{CartToken, MerchantId};
use crate::domain::merchant::{Channel, Merchant};
use crate::domain::outreach::{
    ClaimGuard, ClaimOutcome, MerchantRecord, SendCounter, SmsLogEntry, StepRecord, StepResult,
};
use crate::domain::phone::Phone;
use crate::domain::ratelimit::BucketStep;
use crate::domain::retention::PurgeReport;
use crate::domain::subject::SubjectKey;
use crate::domain::voice::{CallLogEntry, CallRecording};
use crate::platforms::PlatformRequest;
use chrono::{DateTime, Duration, Utc};
use std::future::Future;

/// Merchants: their profile and settings, and which merchants an inbound number belongs to.
pub trait MerchantStore: Send + Sync {
    fn get_merchant(&self, id: &MerchantId) -> impl Future<Output = Result<Option<MerchantRecord>, PortError>> + Send;
    /// The merchants whose SMS sender is one of `senders` (numbers or Messaging Service SIDs).
    fn merchants_for_senders(
        &self,
        senders: &[&str],
    ) -> impl Future<Output = Result<Vec<MerchantRecord>, PortError>> + Send;
    /// Sets or lifts the merchant's legal hold (every purge waits while it holds).
    fn set_legal_hold(&self, id: &MerchantId, on: bool) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Creates or replaces a merchant's settings, keeping its status, API key and legal hold.
    fn put_merchant(
        &self,
        merchant: &Merchant,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// `put_merchant`, only while the stored settings are still at version `read` (`None`: no
    /// merchant yet), `PortError::Conflict` otherwise; with `redate`, the shortened retention's
    /// re-dating is recorded in the same write, due at its time.
    fn put_merchant_if(
        &self,
        merchant: &Merchant,
        now: DateTime<Utc>,
        read: Option<u64>,
        redate: Option<(&crate::domain::retention::Redate, DateTime<Utc>)>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Carts, the webhook deliveries that change them (with their dedupe markers), and lookups by checkout, phone and email.
pub trait CartStore: Send + Sync {
    fn get_cart(
        &self,
        m: &MerchantId,
        token: &CartToken,
    ) -> impl Future<Output = Result<Option<Cart>, PortError>> + Send;
    fn cart_token_for_checkout(
        &self,
        m: &MerchantId,
        checkout_id: &str,
    ) -> impl Future<Output = Result<Option<CartToken>, PortError>> + Send;
    /// Writes one webhook delivery atomically: its dedupe marker, the cart, the checkout
    /// pointer and a consent append. A redelivery finds the marker and changes nothing.
    fn write_ingest(&self, w: &IngestWrite) -> impl Future<Output = Result<IngestOutcome, PortError>> + Send;
    /// Forgets a delivery so the platform's retry is processed again (after a later step failed).
    fn forget_event(&self, m: &MerchantId, event_key: &str) -> impl Future<Output = Result<(), PortError>> + Send;
    fn set_outreach_scheduled(
        &self,
        m: &MerchantId,
        token: &CartToken,
        scheduled: bool,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Notes on the cart that step 0's job is queued (`Cart::first_step_queued`); its version
    /// stays, so no claim decided on it goes stale. A cart gone since is no error.
    fn mark_first_step_queued(
        &self,
        m: &MerchantId,
        token: &CartToken,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// The carts of a phone at a merchant.
    fn carts_for_phone(
        &self,
        m: &MerchantId,
        phone: &Phone,
    ) -> impl Future<Output = Result<Vec<Cart>, PortError>> + Send;
    /// The phones an email's carts name (the email pointers written with each cart).
    fn phones_for_email(
        &self,
        m: &MerchantId,
        email: &str,
    ) -> impl Future<Output = Result<Vec<(CartToken, Option<Phone>)>, PortError>> + Send;
}

/// The consent ledger: per (merchant, phone, channel) a state and its hash-chained entries. Every append is conditional on the state it was decided from.
pub trait ConsentStore: Send + Sync {
    /// The current consent state, strongly consistent: every send re-checks it.
    fn consent_state(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
    ) -> impl Future<Output = Result<ConsentState, PortError>> + Send;
    /// Appends, and stores the answer `answer` builds from the new entry under an idempotency
    /// key in the same transaction, so a retry replays exactly what this request was told. With
    /// `deletions_seen`, only while each number's deletion marker is as read (as `IngestWrite`).
    fn append_consent_answered(
        &self,
        c: &ConsentAppend,
        idempotency_key: Option<&str>,
        deletions_seen: &[(SubjectKey, Option<DateTime<Utc>>)],
        answer: impl FnOnce(&LedgerEntry, &ConsentState) -> IdempotencyRecord + Send,
    ) -> impl Future<Output = Result<IdempotencyRecord, PortError>> + Send;
    /// Appends `event` if the current state accepts it, re-reading on concurrent appends.
    /// Returns the new state, or `None` when the ledger already says this (or refuses it).
    fn record_consent(
        &self,
        m: &MerchantId,
        phone: &Phone,
        event: &ConsentEvent,
        purge_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<ConsentState>, PortError>> + Send;
    /// The whole ledger of one channel, oldest first.
    fn consent_ledger(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
    ) -> impl Future<Output = Result<Vec<LedgerEntry>, PortError>> + Send;
    /// Keeps a channel's opt-out (its date and source, under a keyed hash) before its ledger is
    /// removed, only while the ledger's head is at `seq` (an opt-in since keeps the person in);
    /// a newer suppression record is never replaced. Appends keep it up to date.
    fn keep_suppression(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
        sup: &crate::domain::consent::Suppression,
        seq: u64,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Answers given under an `Idempotency-Key`, replayed for the request's retries.
pub trait IdempotencyStore: Send + Sync {
    fn get_idempotency(
        &self,
        m: &MerchantId,
        key: &str,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, PortError>> + Send;
    /// Stores an answer; `false` when the key already holds one.
    fn put_idempotency(
        &self,
        m: &MerchantId,
        key: &str,
        record: &IdempotencyRecord,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
}

/// The SMS log (outbound and inbound) and what delivery reports say about a number.
pub trait MessageLog: Send + Sync {
    fn sms_by_sid(&self, sid: &str) -> impl Future<Output = Result<Option<SmsLogEntry>, PortError>> + Send;
    /// One outbound message, read strongly consistent from the customer's partition: for a
    /// delivery report that arrives before the `SID#` index has caught up.
    fn outbound_sms(
        &self,
        m: &MerchantId,
        phone: &Phone,
        sid: &str,
    ) -> impl Future<Output = Result<Option<SmsLogEntry>, PortError>> + Send;
    /// Records a delivery report on a logged message. The history keeps every status once; the
    /// current status only moves forward, whatever order the callbacks arrive in.
    fn update_sms_status(
        &self,
        entry: &SmsLogEntry,
        status: &str,
        error_code: Option<i64>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    fn mark_undeliverable(
        &self,
        m: &MerchantId,
        phone: &Phone,
        u: &Undeliverable,
        purge_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Stores one inbound message as received, before anything is made of it, under every
    /// merchant it reached, once: a redelivery of the same `MessageSid` returns `false` and writes
    /// nothing. Each merchant's marker (pending until `finish_inbound`), log entry and guard are
    /// written together, in transactions of at most 99 items, so any number of merchants may
    /// share a sender. `true` when any entry was new. An entry guarded `AsRead` is stored only
    /// while the sender's deletion marker at its merchant is as read; a marker moved since is a
    /// `Conflict` (entries before it may be stored), for the caller to read again.
    fn record_inbound(
        &self,
        entries: &[(SmsLogEntry, MarkerGuard)],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// Whether this merchant has applied this inbound message (its marker is no longer pending).
    fn inbound_applied(
        &self,
        m: &MerchantId,
        message_sid: &str,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// Marks a stored inbound message applied for these merchants, last; `true` when any of
    /// them was still pending (so a redelivery, or a second copy, is answered nothing).
    fn finish_inbound(
        &self,
        merchants: &[MerchantId],
        message_sid: &str,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// One inbound message as stored, read strongly consistent from the customer's partition.
    fn inbound_sms(
        &self,
        m: &MerchantId,
        phone: &Phone,
        sid: &str,
    ) -> impl Future<Output = Result<Option<SmsLogEntry>, PortError>> + Send;
    /// The merchants that texted `phone` from one of `senders` (numbers or Messaging Service
    /// SIDs), whichever sender they use now: an index item written with each outbound text,
    /// found by a keyed hash of (sender, phone). Eventually consistent.
    fn merchants_that_texted(
        &self,
        phone: &Phone,
        senders: &[&str],
    ) -> impl Future<Output = Result<Vec<MerchantId>, PortError>> + Send;
    fn undeliverable(
        &self,
        m: &MerchantId,
        phone: &Phone,
    ) -> impl Future<Output = Result<Option<Undeliverable>, PortError>> + Send;
    /// Whether this merchant has ever texted this phone (the first message introduces itself).
    fn has_outbound_sms(&self, m: &MerchantId, phone: &Phone) -> impl Future<Output = Result<bool, PortError>> + Send;
}

/// Flow steps of a cart, their claims, and the per-phone send counter the claims keep.
pub trait StepStore: Send + Sync {
    fn get_step(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
    ) -> impl Future<Output = Result<Option<StepRecord>, PortError>> + Send;
    /// The per-phone send counter, strongly consistent (version 0 when there is none).
    fn send_counter(
        &self,
        m: &MerchantId,
        phone: &Phone,
    ) -> impl Future<Output = Result<SendCounter, PortError>> + Send;
    /// The claim before a send, in one transaction conditioned on everything the decision read:
    /// the step as read, the cart's version (open at that version), the channel's consent state
    /// (opted in at that sequence), the merchant's status (active) and the phone's send counter
    /// (at its version, which the claim bumps). Anything acknowledged before it makes it fail.
    fn claim(
        &self,
        guard: &ClaimGuard,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<ClaimOutcome, PortError>> + Send;
    /// Takes a claimed step's count back off the phone's counter after a send that certainly did
    /// not happen. Best effort: a count left behind only makes the rule stricter.
    fn release_count(
        &self,
        m: &MerchantId,
        phone: &Phone,
        token: &CartToken,
        step: u8,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Records a sent message and the step's `sent` state in one transaction (with the cart's
    /// last-message time), so a sent message is never without its log entry. `false` when the
    /// claim was no longer ours (a lease overtaken): the new holder finds the message at Twilio.
    fn finish_sent(
        &self,
        entry: &SmsLogEntry,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// Records how a claimed step ended; only the claim's holder may.
    fn finish_step(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        result: &StepResult,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// The call log and the state of each call's recording.
pub trait CallLog: Send + Sync {
    /// A call by its SID: the lookup index finds its key (eventually consistent: a caller that
    /// finds nothing right after the call was placed retries), then the item itself is read
    /// strongly consistent, so its recording state is never a stale copy.
    fn call_by_sid(&self, sid: &str) -> impl Future<Output = Result<Option<CallLogEntry>, PortError>> + Send;
    /// A call read strongly consistent from the customer's partition.
    fn call_in_partition(
        &self,
        m: &MerchantId,
        phone: &Phone,
        sid: &str,
    ) -> impl Future<Output = Result<Option<CallLogEntry>, PortError>> + Send;
    /// Records a status callback. The history keeps each status once; the current status only
    /// moves forward, whatever order Twilio's callbacks arrive in.
    fn update_call_status(
        &self,
        entry: &CallLogEntry,
        u: &CallUpdate<'_>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Notes a recording on its call, once: a repeated callback finds it noted and changes
    /// nothing (in particular not a key already stored). `false` when it was noted before.
    fn note_recording(
        &self,
        entry: &CallLogEntry,
        rec: &CallRecording,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// Our copy is in S3 under `s3_key`: noted on the call, and a purge item (`REC#{call}`) put
    /// with the recording's own purge date, in one transaction.
    fn recording_stored(
        &self,
        entry: &CallLogEntry,
        sid: &str,
        s3_key: &str,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Twilio's copy is gone (deleted after ours was stored).
    fn recording_released(&self, entry: &CallLogEntry, sid: &str)
    -> impl Future<Output = Result<(), PortError>> + Send;
    /// How an agent call ended, and a one-line summary (no transcript text).
    fn note_outcome(
        &self,
        entry: &CallLogEntry,
        outcome: crate::domain::agent::Outcome,
        summary: &str,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Counters of the SMS-pumping guard, one per window.
pub trait BurstGuard: Send + Sync {
    /// Counts one more new cart for `hashed` (a keyed hash of the shopper's IP or the number's
    /// prefix) in the window starting at `window_start`; returns the count, this cart included.
    fn bump_burst(
        &self,
        m: &MerchantId,
        kind: BurstKind,
        hashed: &str,
        window_start: DateTime<Utc>,
        window: Duration,
    ) -> impl Future<Output = Result<u64, PortError>> + Send;
}

/// Each merchant's API token bucket (the rule is `domain::ratelimit`; the store keeps one number).
pub trait ApiBuckets: Send + Sync {
    /// Applies the first of `steps` whose guard holds on the merchant's bucket, each step as
    /// one atomic conditional write; its index, or `None` when no guard held.
    fn take_step(
        &self,
        m: &MerchantId,
        steps: &[BucketStep],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<usize>, PortError>> + Send;
    /// The bucket's `tat`, strongly consistent; `None` when there is none.
    fn bucket(&self, m: &MerchantId) -> impl Future<Output = Result<Option<i64>, PortError>> + Send;
}

/// Platform requests (privacy topics, uninstalls) and the account changes they lead to.
pub trait PlatformRequests: Send + Sync {
    /// Stores a privacy request or an uninstall with its delivery's dedupe marker; `false` for
    /// a redelivery. Kept as `pending` until the privacy or account use case carries it out.
    fn record_platform_request(
        &self,
        merchant: &Merchant,
        event_key: &str,
        request: &PlatformRequest,
        pending: Option<&PendingPrivacy>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// Shopify `shop/redact`: the shop's customer data is due at once.
    fn request_shop_redaction(
        &self,
        id: &MerchantId,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Closes a merchant: no more outreach (every claim checks the status), API keys refused,
    /// and its data due for erasure once the grace period has passed (the purger decides when,
    /// from `closed_at`). Idempotent.
    fn close_merchant(&self, id: &MerchantId, at: DateTime<Utc>) -> impl Future<Output = Result<(), PortError>> + Send;
    /// A closed account's steps not yet claimed, on every open cart, are cancelled (skipped as
    /// `merchant_closed`); how many.
    fn cancel_merchant_outreach(
        &self,
        merchant: &Merchant,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<usize, PortError>> + Send;
}

/// What data-subject requests read and leave behind: deletion markers, request status, requests waiting for a legal hold to lift.
pub trait PrivacyStore: Send + Sync {
    /// The export files made for a subject (its proof id), so a deletion removes them too.
    fn export_keys_for(
        &self,
        m: &MerchantId,
        subject: &str,
    ) -> impl Future<Output = Result<Vec<String>, PortError>> + Send;
    /// Every record of a customer's partition (consent, messages, calls, counters), decoded as
    /// far as an export or an erasure needs.
    fn customer_records(
        &self,
        m: &MerchantId,
        phone: &Phone,
    ) -> impl Future<Output = Result<Vec<CustomerRecord>, PortError>> + Send;
    /// Everything stored for one cart: its partition (cart, steps) and its checkout and email
    /// pointers.
    fn cart_keys(&self, m: &MerchantId, cart: &Cart) -> impl Future<Output = Result<Vec<ItemKey>, PortError>> + Send;
    /// Every pointer under a phone's number, stale ones included (a cart whose number changed
    /// since), so a deletion leaves no key naming it.
    fn phone_pointer_keys(
        &self,
        m: &MerchantId,
        phone: &Phone,
    ) -> impl Future<Output = Result<Vec<ItemKey>, PortError>> + Send;
    /// The email pointers of `email` to each of `tokens`.
    fn email_pointer_keys(&self, m: &MerchantId, email: &str, tokens: &[CartToken]) -> Vec<ItemKey>;
    /// After a deletion: a number's opt-out outlives its data, and a checkout from before the
    /// deletion naming the number, email or customer id is not stored again. Only the key (an
    /// HMAC) is kept, with when it was deleted.
    fn put_deletion_marker(
        &self,
        m: &MerchantId,
        subject: &SubjectKey,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// When this subject's data was deleted at the merchant's request, if it was.
    fn deletion_marker(
        &self,
        m: &MerchantId,
        subject: &SubjectKey,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, PortError>> + Send;
    /// Records the provider's copies a deletion must remove (durable before the data naming them
    /// is deleted), due for the purger's retry at `retry_at`.
    fn put_provider_copies(
        &self,
        m: &MerchantId,
        request: &str,
        copies: &[ProviderCopy],
        retry_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// The provider's copies a request still has to remove.
    fn provider_copies(
        &self,
        m: &MerchantId,
        request: &str,
    ) -> impl Future<Output = Result<Vec<ProviderCopy>, PortError>> + Send;
    /// A request's stored status, if there is one.
    fn privacy_status(
        &self,
        m: &MerchantId,
        id: &str,
    ) -> impl Future<Output = Result<Option<PrivacyStatus>, PortError>> + Send;
    /// One copy is gone at the provider.
    fn provider_copy_removed(
        &self,
        m: &MerchantId,
        request: &str,
        copy: &ProviderCopy,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// A request's status (`V#{merchant}` / `DSR#{id}`), with no personal data: the proof of a
    /// deletion is its subject's HMAC, its time and its counts.
    fn put_privacy_status(
        &self,
        m: &MerchantId,
        status: &PrivacyStatus,
        subject: Option<&str>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// A request that waits (a hold; a platform's request for the next purge run), due at `at`.
    fn put_pending_privacy(
        &self,
        m: &MerchantId,
        p: &PendingPrivacy,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    fn pending_privacy(
        &self,
        pk: &str,
        sk: &str,
    ) -> impl Future<Output = Result<Option<PendingPrivacy>, PortError>> + Send;
    /// Where a pending request of `m` with this id is kept (its purge-index item).
    fn pending_privacy_key(&self, m: &MerchantId, id: &str) -> ItemKey;
}

/// The retention purge: the purge index shard by shard, conditional deletes, re-dating and the audit record. Keys are opaque `ItemKey`s.
pub trait PurgeStore: Send + Sync {
    /// The ledger head a due `CONSENT#{channel}` item stands for: whose, which channel, its state.
    fn ledger_head(
        &self,
        pk: &str,
        sk: &str,
    ) -> impl Future<Output = Result<Option<(MerchantId, Phone, Channel, ConsentState)>, PortError>> + Send;
    /// The audit record of one run (counts per merchant and kind; never a phone or a body).
    fn put_purge_report(&self, report: &PurgeReport) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Moves merchant `m`'s stored purge dates of each kind earlier by its shift (a shortened
    /// retention), each conditional on the date read and on not being moved by this `job`
    /// already (a resumed job moves nothing twice), reading the merchant's partitions `page`
    /// `tenant` index entries at a time from `from` (where a stopped one left off; `None`: the
    /// start). How many moved, and where it stopped when `deadline` passed after a page (at
    /// least one a call; `None`: finished).
    fn redate(
        &self,
        m: &MerchantId,
        job: &crate::domain::retention::Redate,
        from: Option<TenantCursor>,
        page: usize,
        deadline: Option<std::time::Instant>,
    ) -> impl Future<Output = Result<(u64, Option<TenantCursor>), PortError>> + Send;
    /// Notes where a re-dating stopped, on its record: the next run goes on from there.
    fn redate_stopped_at(
        &self,
        m: &MerchantId,
        id: &str,
        at: &TenantCursor,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Records a re-dating about to start, due in the purge index at `at`: one that stops
    /// part-way is finished by the next run.
    fn put_redate(
        &self,
        m: &MerchantId,
        job: &crate::domain::retention::Redate,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// The re-dating a due `REDATE#` item records, whose, and where it stopped (if it did).
    fn redate_job(
        &self,
        pk: &str,
        sk: &str,
    ) -> impl Future<
        Output = Result<Option<(MerchantId, crate::domain::retention::Redate, Option<TenantCursor>)>, PortError>,
    > + Send;
    /// A re-dating is finished (or dropped): its record goes.
    fn redate_done(&self, m: &MerchantId, id: &str) -> impl Future<Output = Result<(), PortError>> + Send;
    /// One page of what is due in purge shard `shard` at `as_of`, however old, oldest first,
    /// after `after`; the next page's start when there is more.
    fn due_page(
        &self,
        shard: u32,
        as_of: DateTime<Utc>,
        after: Option<PurgeCursor>,
    ) -> impl Future<Output = Result<(Vec<DueItem>, Option<PurgeCursor>), PortError>> + Send;
    /// Moves an item's purge date (a ledger with recent activity, an item under legal hold).
    fn repurge(
        &self,
        pk: &str,
        sk: &str,
        purge_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Deletes one item only if it still has the purge date that was read (a cart updated since
    /// has a later one and stays); `false` when it changed or is gone.
    fn delete_if_due(&self, pk: &str, sk: &str, purge_at: &str)
    -> impl Future<Output = Result<bool, PortError>> + Send;
    /// A due cart with what hangs off it (its steps, its checkout pointer) in one transaction,
    /// only while the cart still holds the purge date read: `false` when it was updated since
    /// (then nothing is deleted). A crash can never leave steps without their cart or the
    /// reverse.
    fn delete_cart_if_due(
        &self,
        pk: &str,
        sk: &str,
        purge_at: &str,
        with: &[ItemKey],
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// All items of one partition (a cart with its steps), keys only.
    fn partition_keys(&self, pk: &str) -> impl Future<Output = Result<Vec<ItemKey>, PortError>> + Send;
    /// After a recording's object is deleted: its purge item goes, and its call log entry
    /// forgets it (the log itself is kept for as long as call logs are).
    fn recording_purged(
        &self,
        pk: &str,
        rec_sk: &str,
        log_sk: Option<&str>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Deletes a superseded consent entry and moves the ledger's checkpoint past it, in one
    /// transaction: the kept chain verifies from `hash`. Only ever moves the checkpoint forward.
    fn purge_consent_entry(
        &self,
        pk: &str,
        sk: &str,
        seq: u64,
        hash: &str,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// Deletes items by key, 25 to a BatchWriteItem; what DynamoDB leaves unprocessed is retried
    /// with backoff. Deleting an item already gone is no error, so a re-run deletes nothing twice.
    fn batch_delete(&self, keys: &[ItemKey]) -> impl Future<Output = Result<(), PortError>> + Send;
    /// `batch_delete` in no particular order, several batches at once: for items none of which
    /// must outlive another.
    fn batch_delete_any(&self, keys: &[ItemKey]) -> impl Future<Output = Result<(), PortError>> + Send;
    /// One page of merchant `id`'s erasure, read through the `tenant` index (that merchant's
    /// partitions alone, never a scan): the partitions its next `limit` index entries name, each
    /// whole and decoded as far as an erasure needs (a shared partition: only the merchant's own
    /// entry), the items the index names last in each (deleted in this order, a crash leaves the
    /// partition findable). Suppression records and a deletion's Twilio copies are never among
    /// them. The next page's start, `None` after the last.
    fn erasure_page(
        &self,
        id: &MerchantId,
        scope: Erasure,
        after: Option<TenantCursor>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<Vec<CustomerRecord>>, Option<TenantCursor>), PortError>> + Send;
    /// What an erasure deletes after its pages: the merchant's request partition (its Twilio
    /// copies kept) and, for `Account`, the profile's partition, secrets, API bucket and registry
    /// entry.
    fn erasure_tail(
        &self,
        id: &MerchantId,
        scope: Erasure,
    ) -> impl Future<Output = Result<Vec<ItemKey>, PortError>> + Send;
    /// The newest thing that happened in a customer partition (a message, a call, a consent
    /// event): the whole ledger expires only once this is old enough.
    fn last_activity(&self, pk: &str) -> impl Future<Output = Result<Option<DateTime<Utc>>, PortError>> + Send;
    /// The keys of one partition whose sort key starts with `prefix`.
    fn prefix_keys(&self, pk: &str, prefix: &str) -> impl Future<Output = Result<Vec<ItemKey>, PortError>> + Send;
    /// Deletes a ledger's state only at the sequence that was read; `false` when an append came
    /// in between (the ledger is alive again).
    fn delete_state_at(&self, pk: &str, sk: &str, seq: u64) -> impl Future<Output = Result<bool, PortError>> + Send;
}

/// Our own recovery links (`/r/{code}`), kept in their cart's partition: purged, exported and
/// deleted with the cart.
pub trait RecoveryLinks: Send + Sync {
    /// Stores a message's link, unless it is stored already (its clicks are kept).
    fn save_link(&self, link: &crate::domain::link::RecoveryLink)
    -> impl Future<Output = Result<(), PortError>> + Send;
    /// The link a code names; `None` for an unknown code (or one purged with its cart).
    fn find_link(
        &self,
        code: &crate::domain::link::LinkCode,
    ) -> impl Future<Output = Result<Option<crate::domain::link::RecoveryLink>, PortError>> + Send;
    /// Counts one click on a stored link (an atomic counter, only while the link exists):
    /// `false` when it is gone.
    fn count_click(
        &self,
        link: &crate::domain::link::RecoveryLink,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
}
