//! The store's ports, implemented by the DynamoDB adapter: each method is the adapter's own,
//! so the item mapping stays next to its queries.

use super::*;
use crate::domain::guard::BurstKind;
use crate::domain::retention::PurgeReport;
use crate::domain::voice::{CallLogEntry, CallRecording};
use crate::platforms::PlatformRequest;
use crate::ports::{
    ApiBuckets, BurstGuard, CallLog, CallUpdate, CartStore, ConsentLedger, ConsentStore, CustomerRecord, DueItem,
    Erasure, IdempotencyStore, ItemKey, MerchantStore, MessageLog, OutreachReads, OutreachWrites, PendingPrivacy,
    PlatformRequests, PortError, PrivacyStatus, PrivacyStore, ProviderCopy, PurgeCursor, PurgeStore, StepStore,
    TenantCursor,
};

impl MerchantStore for Store {
    async fn get_merchant(&self, id: &MerchantId) -> Result<Option<MerchantRecord>, PortError> {
        Store::get_merchant(self, id).await
    }
    async fn merchants_for_senders(&self, senders: &[&str]) -> Result<Vec<MerchantRecord>, PortError> {
        Store::merchants_for_senders(self, senders).await
    }
    async fn put_merchant(&self, merchant: &Merchant, now: DateTime<Utc>) -> Result<(), PortError> {
        Store::put_merchant(self, merchant, now).await
    }
    async fn put_merchant_if(
        &self,
        merchant: &Merchant,
        now: DateTime<Utc>,
        read: Option<u64>,
        redate: Option<(&crate::domain::retention::Redate, DateTime<Utc>)>,
    ) -> Result<(), PortError> {
        Store::put_merchant_if(self, merchant, now, read, redate).await
    }
    async fn set_legal_hold(&self, id: &MerchantId, on: bool) -> Result<(), PortError> {
        Store::set_legal_hold(self, id, on).await
    }
}

impl CartStore for Store {
    async fn get_cart(&self, m: &MerchantId, token: &CartToken) -> Result<Option<Cart>, PortError> {
        Store::get_cart(self, m, token).await
    }
    async fn cart_token_for_checkout(&self, m: &MerchantId, checkout_id: &str) -> Result<Option<CartToken>, PortError> {
        Store::cart_token_for_checkout(self, m, checkout_id).await
    }
    async fn write_ingest(&self, w: &IngestWrite) -> Result<IngestOutcome, PortError> {
        Store::write_ingest(self, w).await
    }
    async fn forget_event(&self, m: &MerchantId, event_key: &str) -> Result<(), PortError> {
        Store::forget_event(self, m, event_key).await
    }
    async fn set_outreach_scheduled(
        &self,
        m: &MerchantId,
        token: &CartToken,
        scheduled: bool,
    ) -> Result<(), PortError> {
        Store::set_outreach_scheduled(self, m, token, scheduled).await
    }
    async fn mark_first_step_queued(&self, m: &MerchantId, token: &CartToken) -> Result<(), PortError> {
        Store::mark_first_step_queued(self, m, token).await
    }
    async fn carts_for_phone(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<Cart>, PortError> {
        Store::carts_for_phone(self, m, phone).await
    }
    async fn phones_for_email(
        &self,
        m: &MerchantId,
        email: &str,
    ) -> Result<Vec<(CartToken, Option<Phone>)>, PortError> {
        Store::phones_for_email(self, m, email).await
    }
}

impl ConsentStore for Store {
    async fn keep_suppression(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
        sup: &crate::domain::consent::Suppression,
        seq: u64,
    ) -> Result<(), PortError> {
        Store::keep_suppression(self, m, phone, channel, sup, seq).await
    }
    async fn consent_state(&self, m: &MerchantId, phone: &Phone, channel: Channel) -> Result<ConsentState, PortError> {
        Store::consent_state(self, m, phone, channel).await
    }
    async fn append_consent_answered(
        &self,
        c: &ConsentAppend,
        idempotency_key: Option<&str>,
        deletions_seen: &[(SubjectKey, Option<DateTime<Utc>>)],
        answer: impl FnOnce(&LedgerEntry, &ConsentState) -> IdempotencyRecord + Send,
    ) -> Result<IdempotencyRecord, PortError> {
        Store::append_consent_answered(self, c, idempotency_key, deletions_seen, answer).await
    }
    async fn record_consent(
        &self,
        m: &MerchantId,
        phone: &Phone,
        event: &ConsentEvent,
        purge_at: DateTime<Utc>,
    ) -> Result<Option<ConsentState>, PortError> {
        Store::record_consent(self, m, phone, event, purge_at).await
    }
    async fn consent_ledger(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
    ) -> Result<Vec<LedgerEntry>, PortError> {
        Store::consent_ledger(self, m, phone, channel).await
    }
}

impl IdempotencyStore for Store {
    async fn get_idempotency(&self, m: &MerchantId, key: &str) -> Result<Option<IdempotencyRecord>, PortError> {
        Store::get_idempotency(self, m, key).await
    }
    async fn put_idempotency(&self, m: &MerchantId, key: &str, record: &IdempotencyRecord) -> Result<bool, PortError> {
        Store::put_idempotency(self, m, key, record).await
    }
}

impl MessageLog for Store {
    async fn sms_by_sid(&self, sid: &str) -> Result<Option<SmsLogEntry>, PortError> {
        Store::sms_by_sid(self, sid).await
    }
    async fn outbound_sms(&self, m: &MerchantId, phone: &Phone, sid: &str) -> Result<Option<SmsLogEntry>, PortError> {
        Store::outbound_sms(self, m, phone, sid).await
    }
    async fn update_sms_status(
        &self,
        entry: &SmsLogEntry,
        status: &str,
        error_code: Option<i64>,
        at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        Store::update_sms_status(self, entry, status, error_code, at).await
    }
    async fn mark_undeliverable(
        &self,
        m: &MerchantId,
        phone: &Phone,
        u: &Undeliverable,
        purge_at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        Store::mark_undeliverable(self, m, phone, u, purge_at).await
    }
    async fn record_inbound(
        &self,
        entries: &[(SmsLogEntry, crate::ports::MarkerGuard)],
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        Store::record_inbound(self, entries, now).await
    }
    async fn inbound_applied(&self, m: &MerchantId, message_sid: &str) -> Result<bool, PortError> {
        Store::inbound_applied(self, m, message_sid).await
    }
    async fn finish_inbound(&self, merchants: &[MerchantId], message_sid: &str) -> Result<bool, PortError> {
        Store::finish_inbound(self, merchants, message_sid).await
    }
    async fn inbound_sms(&self, m: &MerchantId, phone: &Phone, sid: &str) -> Result<Option<SmsLogEntry>, PortError> {
        Store::inbound_sms(self, m, phone, sid).await
    }
    async fn merchants_that_texted(&self, phone: &Phone, senders: &[&str]) -> Result<Vec<MerchantId>, PortError> {
        Store::merchants_that_texted(self, phone, senders).await
    }
    async fn undeliverable(&self, m: &MerchantId, phone: &Phone) -> Result<Option<Undeliverable>, PortError> {
        Store::undeliverable(self, m, phone).await
    }
    async fn has_outbound_sms(&self, m: &MerchantId, phone: &Phone) -> Result<bool, PortError> {
        Store::has_outbound_sms(self, m, phone).await
    }
}

impl StepStore for Store {
    async fn get_step(&self, m: &MerchantId, token: &CartToken, step: u8) -> Result<Option<StepRecord>, PortError> {
        Store::get_step(self, m, token, step).await
    }
    async fn send_counter(&self, m: &MerchantId, phone: &Phone) -> Result<SendCounter, PortError> {
        Store::send_counter(self, m, phone).await
    }
    async fn claim(
        &self,
        guard: &ClaimGuard,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimOutcome, PortError> {
        Store::claim(self, guard, claim_id, body_sha256, now).await
    }
    async fn release_count(&self, m: &MerchantId, phone: &Phone, token: &CartToken, step: u8) -> Result<(), PortError> {
        Store::release_count(self, m, phone, token, step).await
    }
    async fn finish_sent(
        &self,
        entry: &SmsLogEntry,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        Store::finish_sent(self, entry, token, step, claim_id, now).await
    }
    async fn finish_step(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        result: &StepResult,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        Store::finish_step(self, m, token, step, claim_id, result, now).await
    }
}

impl CallLog for Store {
    async fn call_by_sid(&self, sid: &str) -> Result<Option<CallLogEntry>, PortError> {
        Store::call_by_sid(self, sid).await
    }
    async fn call_in_partition(
        &self,
        m: &MerchantId,
        phone: &Phone,
        sid: &str,
    ) -> Result<Option<CallLogEntry>, PortError> {
        Store::call_in_partition(self, m, phone, sid).await
    }
    async fn update_call_status(
        &self,
        entry: &CallLogEntry,
        u: &CallUpdate<'_>,
        at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        Store::update_call_status(self, entry, u, at).await
    }
    async fn note_recording(&self, entry: &CallLogEntry, rec: &CallRecording) -> Result<bool, PortError> {
        Store::note_recording(self, entry, rec).await
    }
    async fn recording_stored(&self, entry: &CallLogEntry, sid: &str, s3_key: &str) -> Result<(), PortError> {
        Store::recording_stored(self, entry, sid, s3_key).await
    }
    async fn recording_released(&self, entry: &CallLogEntry, sid: &str) -> Result<(), PortError> {
        Store::recording_released(self, entry, sid).await
    }
    async fn note_outcome(
        &self,
        entry: &CallLogEntry,
        outcome: crate::domain::agent::Outcome,
        summary: &str,
    ) -> Result<(), PortError> {
        Store::note_outcome(self, entry, outcome, summary).await
    }
}

impl BurstGuard for Store {
    async fn bump_burst(
        &self,
        m: &MerchantId,
        kind: BurstKind,
        hashed: &str,
        window_start: DateTime<Utc>,
        window: Duration,
    ) -> Result<u64, PortError> {
        Store::bump_burst(self, m, kind, hashed, window_start, window).await
    }
}

impl ApiBuckets for Store {
    async fn take_step(
        &self,
        m: &MerchantId,
        steps: &[crate::domain::ratelimit::BucketStep],
        now: DateTime<Utc>,
    ) -> Result<Option<usize>, PortError> {
        Store::take_api_step(self, m, steps, now).await
    }
    async fn bucket(&self, m: &MerchantId) -> Result<Option<i64>, PortError> {
        Store::api_bucket(self, m).await
    }
}

impl PlatformRequests for Store {
    async fn record_platform_request(
        &self,
        merchant: &Merchant,
        event_key: &str,
        request: &PlatformRequest,
        pending: Option<&PendingPrivacy>,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        Store::record_platform_request(self, merchant, event_key, request, pending, now).await
    }
    async fn request_shop_redaction(&self, id: &MerchantId, at: DateTime<Utc>) -> Result<(), PortError> {
        Store::request_shop_redaction(self, id, at).await
    }
    async fn close_merchant(&self, id: &MerchantId, at: DateTime<Utc>) -> Result<(), PortError> {
        Store::close_merchant(self, id, at).await
    }
    async fn cancel_merchant_outreach(&self, merchant: &Merchant, now: DateTime<Utc>) -> Result<usize, PortError> {
        Store::cancel_merchant_outreach(self, merchant, now).await
    }
}

impl PrivacyStore for Store {
    async fn put_provider_copies(
        &self,
        m: &MerchantId,
        request: &str,
        copies: &[ProviderCopy],
        retry_at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        Store::put_provider_copies(self, m, request, copies, retry_at).await
    }
    async fn provider_copies(&self, m: &MerchantId, request: &str) -> Result<Vec<ProviderCopy>, PortError> {
        Store::provider_copies(self, m, request).await
    }
    async fn privacy_status(&self, m: &MerchantId, id: &str) -> Result<Option<PrivacyStatus>, PortError> {
        Store::privacy_status(self, m, id).await
    }
    async fn provider_copy_removed(&self, m: &MerchantId, request: &str, copy: &ProviderCopy) -> Result<(), PortError> {
        Store::provider_copy_removed(self, m, request, copy).await
    }
    async fn export_keys_for(&self, m: &MerchantId, subject: &str) -> Result<Vec<String>, PortError> {
        Store::export_keys_for(self, m, subject).await
    }
    async fn customer_records(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<CustomerRecord>, PortError> {
        Store::customer_records(self, m, phone).await
    }
    async fn cart_keys(&self, m: &MerchantId, cart: &Cart) -> Result<Vec<ItemKey>, PortError> {
        Store::cart_keys(self, m, cart).await
    }
    async fn phone_pointer_keys(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<ItemKey>, PortError> {
        Store::phone_pointer_keys(self, m, phone).await
    }
    fn email_pointer_keys(&self, m: &MerchantId, email: &str, tokens: &[CartToken]) -> Vec<ItemKey> {
        tokens.iter().map(|t| (keys::email_pk(m, email), keys::cart_lookup_sk(t))).collect()
    }
    async fn put_deletion_marker(
        &self,
        m: &MerchantId,
        subject: &SubjectKey,
        at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        Store::put_deletion_marker(self, m, subject, at).await
    }
    async fn deletion_marker(&self, m: &MerchantId, subject: &SubjectKey) -> Result<Option<DateTime<Utc>>, PortError> {
        Store::deletion_marker(self, m, subject).await
    }
    async fn put_privacy_status(
        &self,
        m: &MerchantId,
        status: &PrivacyStatus,
        subject: Option<&str>,
    ) -> Result<(), PortError> {
        Store::put_privacy_status(self, m, status, subject).await
    }
    async fn put_pending_privacy(
        &self,
        m: &MerchantId,
        p: &PendingPrivacy,
        at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        Store::put_pending_privacy(self, m, p, at).await
    }
    async fn pending_privacy(&self, pk: &str, sk: &str) -> Result<Option<PendingPrivacy>, PortError> {
        Store::pending_privacy(self, pk, sk).await
    }
    fn pending_privacy_key(&self, m: &MerchantId, id: &str) -> ItemKey {
        Store::pending_privacy_key(m, id)
    }
}

impl PurgeStore for Store {
    async fn ledger_head(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<Option<(MerchantId, Phone, Channel, ConsentState)>, PortError> {
        Store::ledger_head(self, pk, sk).await
    }
    async fn put_purge_report(&self, report: &PurgeReport) -> Result<(), PortError> {
        Store::put_purge_report(self, report).await
    }
    async fn redate(
        &self,
        m: &MerchantId,
        job: &crate::domain::retention::Redate,
        from: Option<TenantCursor>,
        page: usize,
        deadline: Option<std::time::Instant>,
    ) -> Result<(u64, Option<TenantCursor>), PortError> {
        Store::redate(self, m, job, from, page, deadline).await
    }
    async fn redate_stopped_at(&self, m: &MerchantId, id: &str, at: &TenantCursor) -> Result<(), PortError> {
        Store::redate_stopped_at(self, m, id, at).await
    }
    async fn put_redate(
        &self,
        m: &MerchantId,
        job: &crate::domain::retention::Redate,
        at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        Store::put_redate(self, m, job, at).await
    }
    async fn redate_job(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<Option<(MerchantId, crate::domain::retention::Redate, Option<TenantCursor>)>, PortError> {
        Store::redate_job(self, pk, sk).await
    }
    async fn redate_done(&self, m: &MerchantId, id: &str) -> Result<(), PortError> {
        Store::redate_done(self, m, id).await
    }
    async fn due_page(
        &self,
        shard: u32,
        as_of: DateTime<Utc>,
        after: Option<PurgeCursor>,
    ) -> Result<(Vec<DueItem>, Option<PurgeCursor>), PortError> {
        Store::due_page(self, shard, as_of, after).await
    }
    async fn repurge(&self, pk: &str, sk: &str, purge_at: DateTime<Utc>) -> Result<(), PortError> {
        Store::repurge(self, pk, sk, purge_at).await
    }
    async fn delete_if_due(&self, pk: &str, sk: &str, purge_at: &str) -> Result<bool, PortError> {
        Store::delete_if_due(self, pk, sk, purge_at).await
    }
    async fn delete_cart_if_due(
        &self,
        pk: &str,
        sk: &str,
        purge_at: &str,
        with: &[ItemKey],
    ) -> Result<bool, PortError> {
        Store::delete_cart_if_due(self, pk, sk, purge_at, with).await
    }
    async fn partition_keys(&self, pk: &str) -> Result<Vec<ItemKey>, PortError> {
        Store::partition_keys(self, pk).await
    }
    async fn recording_purged(&self, pk: &str, rec_sk: &str, log_sk: Option<&str>) -> Result<(), PortError> {
        Store::recording_purged(self, pk, rec_sk, log_sk).await
    }
    async fn purge_consent_entry(&self, pk: &str, sk: &str, seq: u64, hash: &str) -> Result<bool, PortError> {
        Store::purge_consent_entry(self, pk, sk, seq, hash).await
    }
    async fn batch_delete(&self, keys: &[ItemKey]) -> Result<(), PortError> {
        Store::batch_delete(self, keys).await
    }
    async fn batch_delete_any(&self, keys: &[ItemKey]) -> Result<(), PortError> {
        Store::batch_delete_any(self, keys).await
    }
    async fn erasure_page(
        &self,
        id: &MerchantId,
        scope: Erasure,
        after: Option<TenantCursor>,
        limit: usize,
    ) -> Result<(Vec<Vec<CustomerRecord>>, Option<TenantCursor>), PortError> {
        Store::erasure_page(self, id, scope, after, limit).await
    }
    async fn erasure_tail(&self, id: &MerchantId, scope: Erasure) -> Result<Vec<ItemKey>, PortError> {
        Store::erasure_tail(self, id, scope).await
    }
    async fn last_activity(&self, pk: &str) -> Result<Option<DateTime<Utc>>, PortError> {
        Store::last_activity(self, pk).await
    }
    async fn prefix_keys(&self, pk: &str, prefix: &str) -> Result<Vec<ItemKey>, PortError> {
        Store::prefix_keys(self, pk, prefix).await
    }
    async fn delete_state_at(&self, pk: &str, sk: &str, seq: u64) -> Result<bool, PortError> {
        Store::delete_state_at(self, pk, sk, seq).await
    }
}

impl OutreachReads for Store {
    async fn merchant(&self, id: &MerchantId) -> Result<Option<MerchantRecord>, PortError> {
        self.get_merchant(id).await
    }
    async fn cart(&self, m: &MerchantId, token: &CartToken) -> Result<Option<Cart>, PortError> {
        self.get_cart(m, token).await
    }
    async fn step(&self, m: &MerchantId, token: &CartToken, step: u8) -> Result<Option<StepRecord>, PortError> {
        self.get_step(m, token, step).await
    }
    async fn consent(&self, m: &MerchantId, phone: &Phone, channel: Channel) -> Result<ConsentState, PortError> {
        self.consent_state(m, phone, channel).await
    }
    async fn counter(&self, m: &MerchantId, phone: &Phone) -> Result<SendCounter, PortError> {
        self.send_counter(m, phone).await
    }
    async fn undeliverable(&self, m: &MerchantId, phone: &Phone) -> Result<Option<Undeliverable>, PortError> {
        Store::undeliverable(self, m, phone).await
    }
    async fn has_outbound(&self, m: &MerchantId, phone: &Phone) -> Result<bool, PortError> {
        self.has_outbound_sms(m, phone).await
    }
    async fn logged_sids(&self, m: &MerchantId, phone: &Phone) -> Result<std::collections::HashSet<String>, PortError> {
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
    ) -> Result<ClaimOutcome, PortError> {
        Store::claim(self, guard, claim_id, body_sha256, now).await
    }
    async fn finish_sent(
        &self,
        entry: &SmsLogEntry,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        Store::finish_sent(self, entry, token, step, claim_id, now).await
    }
    async fn finish_called(&self, entry: &CallLogEntry, claim_id: &str, now: DateTime<Utc>) -> Result<bool, PortError> {
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
    ) -> Result<(), PortError> {
        self.finish_step(m, token, step, claim_id, result, now).await
    }
    async fn release_count(&self, m: &MerchantId, phone: &Phone, token: &CartToken, step: u8) -> Result<(), PortError> {
        Store::release_count(self, m, phone, token, step).await
    }
    async fn skip(
        &self,
        target: (&MerchantId, &CartToken, u8),
        seen: &StepAvailability,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        self.skip_seen(target, seen, reason, now).await
    }
    async fn take_over(
        &self,
        target: (&MerchantId, &CartToken, u8),
        seen: &StepAvailability,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
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
    ) -> Result<Option<ConsentState>, PortError> {
        self.record_consent(m, phone, event, purge_at).await
    }
    async fn record_opt_in(
        &self,
        m: &MerchantId,
        phone: &Phone,
        event: &ConsentEvent,
        purge_at: DateTime<Utc>,
        deleted_at_seen: Option<DateTime<Utc>>,
    ) -> Result<Option<ConsentState>, PortError> {
        let seen = (crate::domain::subject::SubjectKey::phone(phone), deleted_at_seen);
        self.record_consent_while(m, phone, event, purge_at, Some(&seen)).await
    }
    async fn cancel_outreach(
        &self,
        merchant: &Merchant,
        phone: &Phone,
        channel: Channel,
        now: DateTime<Utc>,
    ) -> Result<usize, PortError> {
        Store::cancel_outreach(self, merchant, phone, channel, now).await
    }
}

impl crate::ports::AgentSessions for Store {
    async fn bind_connection(
        &self,
        connection_id: &str,
        call: &crate::domain::voice::CallRef,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        Store::bind_connection(self, connection_id, call, now).await
    }
    async fn connection(
        &self,
        connection_id: &str,
    ) -> Result<Option<crate::ports::agent::ConnectionBinding>, PortError> {
        Store::connection(self, connection_id).await
    }
    async fn open_session(
        &self,
        connection_id: &str,
        session: &crate::domain::agent::AgentSession,
    ) -> Result<crate::domain::agent::AgentSession, PortError> {
        Store::open_session(self, connection_id, session).await
    }
    async fn session(
        &self,
        key: &crate::ports::agent::SessionKey,
    ) -> Result<Option<crate::domain::agent::AgentSession>, PortError> {
        Store::session(self, key).await
    }
    async fn next_turn(
        &self,
        key: &crate::ports::agent::SessionKey,
        seen: u32,
        line: Option<&crate::domain::agent::TranscriptLine>,
    ) -> Result<bool, PortError> {
        Store::next_turn(self, key, seen, line).await
    }
    async fn say(
        &self,
        key: &crate::ports::agent::SessionKey,
        line: &crate::domain::agent::TranscriptLine,
    ) -> Result<bool, PortError> {
        Store::say(self, key, line).await
    }
    async fn append_line(
        &self,
        key: &crate::ports::agent::SessionKey,
        line: &crate::domain::agent::TranscriptLine,
    ) -> Result<(), PortError> {
        Store::append_line(self, key, line).await
    }
    async fn use_tool(&self, key: &crate::ports::agent::SessionKey, tool: &str, once: bool) -> Result<bool, PortError> {
        Store::use_tool(self, key, tool, once).await
    }
    async fn spend(&self, key: &crate::ports::agent::SessionKey, tokens: u32) -> Result<u32, PortError> {
        Store::spend(self, key, tokens).await
    }
    async fn malformed(&self, connection_id: &str) -> Result<u32, PortError> {
        Store::malformed(self, connection_id).await
    }
    async fn finish_session(
        &self,
        key: &crate::ports::agent::SessionKey,
        outcome: crate::domain::agent::Outcome,
        overwrite: bool,
        end: bool,
    ) -> Result<(), PortError> {
        Store::finish_session(self, key, outcome, overwrite, end).await
    }
    async fn merchant_spend(&self, m: &MerchantId, day: &str, tokens: u32) -> Result<u64, PortError> {
        Store::merchant_spend(self, m, day, tokens).await
    }
}

impl crate::ports::RecoveryLinks for Store {
    async fn save_link(&self, link: &crate::domain::link::RecoveryLink) -> Result<(), PortError> {
        Store::save_link(self, link).await
    }
    async fn find_link(
        &self,
        code: &crate::domain::link::LinkCode,
    ) -> Result<Option<crate::domain::link::RecoveryLink>, PortError> {
        Store::find_link(self, code).await
    }
    async fn count_click(
        &self,
        link: &crate::domain::link::RecoveryLink,
        at: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        Store::count_click(self, link, at).await
    }
}
