//! The ports in memory: the fast tier's stand-in for DynamoDB, SQS, S3 and Twilio. Each method
//! keeps the port's contract as far as the use-case tests rely on it (appends conditional on the
//! sequence they read, idempotent logs); any method can be made to fail, and every call is
//! recorded, so a test injects a fault through a port and checks what did and did not happen.
//! The integration tests run the same use cases against moto.

#![allow(dead_code)]

use callfy_shared::domain::cart::{Cart, customer_ref};
use callfy_shared::domain::consent::{ConsentEvent, ConsentState, LedgerEntry, entry_hash};
use callfy_shared::domain::delivery::Undeliverable;
use callfy_shared::domain::flow::OutreachJob;
use callfy_shared::domain::guard::BurstKind;
use callfy_shared::domain::inbound::InboundMessage;
use callfy_shared::domain::merchant::{Channel, Merchant};
use callfy_shared::domain::outreach::{
    ClaimGuard, ClaimOutcome, Direction, MerchantRecord, MerchantStatus, SendCounter, SmsLogEntry, StepAvailability,
    StepRecord, StepResult,
};
use callfy_shared::domain::retention::{PurgeKind, PurgeReport, shard_of};
use callfy_shared::domain::subject::SubjectKey;
use callfy_shared::domain::voice::{CallLogEntry, CallRecording, KeyOptOut, RecordingCopy};
use callfy_shared::platforms::PlatformRequest;
use callfy_shared::ports::telephony::{
    CallResource, ListedCall, ListedMessage, MessageResource, PlaceCall, SendSms, TwilioError,
};
use callfy_shared::ports::*;
use callfy_shared::{CartToken, MerchantId, Phone};
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

type Key = (String, String);

fn person(m: &MerchantId, phone: &Phone) -> Key {
    (m.to_string(), phone.as_str().to_string())
}

/// A deletion marker's key: the merchant and the subject's HMAC.
pub fn marked(m: &MerchantId, subject: &SubjectKey) -> Key {
    (m.to_string(), subject.as_str().to_string())
}

#[derive(Default)]
pub struct State {
    pub merchants: HashMap<String, MerchantRecord>,
    pub carts: HashMap<Key, Cart>,
    pub events: HashSet<(String, String)>,
    pub consent: HashMap<(Key, &'static str), (ConsentState, Vec<LedgerEntry>)>,
    pub idempotency: HashMap<Key, IdempotencyRecord>,
    pub sms: Vec<SmsLogEntry>,
    /// Inbound messages stored (their markers), and those applied.
    pub inbound_seen: HashSet<Key>,
    pub inbound_applied: HashSet<Key>,
    pub undeliverable: HashMap<Key, Undeliverable>,
    pub calls: Vec<CallLogEntry>,
    pub deletion_markers: HashMap<Key, DateTime<Utc>>,
    pub privacy: Vec<PrivacyStatus>,
    pub pending_privacy: Vec<PendingPrivacy>,
    pub requests: Vec<String>,
    pub cancelled: Vec<(Key, &'static str)>,
    pub due: Vec<DueItem>,
    pub provider_copies: std::collections::BTreeSet<(String, String, ProviderCopy)>,
    pub deleted: Vec<ItemKey>,
    pub reports: Vec<PurgeReport>,
    pub claims: Vec<(String, u8)>,
    pub steps: HashMap<(Key, u8), StepRecord>,
    pub bursts: HashMap<String, u64>,
    /// Agent connections: the call reference and, after `setup`, the session's call SID.
    pub connections: HashMap<String, (callfy_shared::domain::voice::CallRef, Option<String>, u32)>,
    pub sessions: HashMap<String, callfy_shared::domain::agent::AgentSession>,
    pub merchant_tokens: HashMap<(String, String), u64>,
    pub suppressions: HashMap<(Key, &'static str), callfy_shared::domain::consent::Suppression>,
    /// Merchants' API buckets (`tat`).
    pub api_buckets: HashMap<String, i64>,
    /// Our recovery links, by code.
    pub links: HashMap<String, callfy_shared::domain::link::RecoveryLink>,
}

/// Every port in memory, behind one lock; clones share the state.
#[derive(Clone, Default)]
pub struct Memory {
    pub state: Arc<Mutex<State>>,
    faults: Arc<Mutex<HashMap<&'static str, usize>>>,
    calls: Arc<Mutex<Vec<&'static str>>>,
    hooks: Arc<Mutex<HashMap<&'static str, Hook>>>,
}

type Hook = Box<dyn FnOnce(&Memory) + Send>;

impl Memory {
    /// The next `times` calls of `method` fail as an outage would (transient).
    pub fn fail(&self, method: &'static str, times: usize) {
        self.faults.lock().unwrap().insert(method, times);
    }

    /// Runs `f` once, the next time `method` is called, before it reads or writes: another
    /// request's write landing between a use case's read and its conditional write.
    pub fn before(&self, method: &'static str, f: impl FnOnce(&Memory) + Send + 'static) {
        self.hooks.lock().unwrap().insert(method, Box::new(f));
    }

    /// How often `method` was called.
    pub fn called(&self, method: &str) -> usize {
        self.calls.lock().unwrap().iter().filter(|m| **m == method).count()
    }

    fn enter(&self, method: &'static str) -> Result<(), PortError> {
        self.calls.lock().unwrap().push(method);
        let hook = self.hooks.lock().unwrap().remove(method);
        if let Some(hook) = hook {
            hook(self);
        }
        let mut faults = self.faults.lock().unwrap();
        match faults.get_mut(method) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Err(PortError::unavailable("memory", method, "injected outage"))
            }
            _ => Ok(()),
        }
    }

    fn s(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn add_merchant(&self, merchant: Merchant) {
        let record = MerchantRecord {
            merchant,
            status: MerchantStatus::Active,
            api_key_sha256: None,
            legal_hold: false,
            version: 0,
        };
        self.s().merchants.insert(record.merchant.id.to_string(), record);
    }

    pub fn add_cart(&self, cart: Cart) {
        self.s().carts.insert((cart.merchant_id.to_string(), cart.token.to_string()), cart);
    }

    pub fn add_sms(&self, entry: SmsLogEntry) {
        self.s().sms.push(entry);
    }

    pub fn add_call(&self, entry: CallLogEntry) {
        self.s().calls.push(entry);
    }

    pub fn ledger(&self, m: &MerchantId, phone: &Phone, channel: Channel) -> (ConsentState, Vec<LedgerEntry>) {
        self.s().consent.get(&(person(m, phone), channel.as_str())).cloned().unwrap_or_default()
    }

    /// Appends as the adapter does: only on top of the sequence the caller read.
    pub fn append(&self, c: &ConsentAppend) -> Result<(LedgerEntry, ConsentState), PortError> {
        append_in(&mut self.s(), c)
    }
}

/// One append, under the caller's lock (a transaction holds it for all its appends).
fn append_in(s: &mut State, c: &ConsentAppend) -> Result<(LedgerEntry, ConsentState), PortError> {
    let slot = s.consent.entry((person(&c.merchant_id, &c.phone), c.event.channel.as_str())).or_default();
    if slot.0.seq != c.state.seq {
        return Err(PortError::Conflict);
    }
    let seq = c.state.seq + 1;
    let hash = entry_hash(c.state.head_hash.as_deref(), seq, &c.event);
    let entry = LedgerEntry { seq, hash: hash.clone(), prev_hash: c.state.head_hash.clone(), event: c.event.clone() };
    let next = c.state.after(&c.event, hash);
    slot.0 = next.clone();
    slot.1.push(entry.clone());
    Ok((entry, next))
}

impl MerchantStore for Memory {
    async fn set_legal_hold(&self, id: &MerchantId, on: bool) -> Result<(), PortError> {
        self.enter("set_legal_hold")?;
        if let Some(r) = self.s().merchants.get_mut(id.as_str()) {
            r.legal_hold = on;
        }
        Ok(())
    }
    async fn put_merchant_if(
        &self,
        merchant: &Merchant,
        now: DateTime<Utc>,
        read: Option<u64>,
        _: Option<(&callfy_shared::domain::retention::Redate, DateTime<Utc>)>,
    ) -> Result<(), PortError> {
        let current = self.s().merchants.get(merchant.id.as_str()).map(|r| r.version);
        if current != read {
            return Err(PortError::Conflict);
        }
        self.put_merchant(merchant, now).await?;
        if let Some(r) = self.s().merchants.get_mut(merchant.id.as_str()) {
            r.version += 1;
        }
        Ok(())
    }
    async fn put_merchant(&self, merchant: &Merchant, _: DateTime<Utc>) -> Result<(), PortError> {
        self.enter("put_merchant")?;
        let mut s = self.s();
        match s.merchants.get_mut(merchant.id.as_str()) {
            Some(r) => r.merchant = merchant.clone(),
            None => {
                s.merchants.insert(
                    merchant.id.to_string(),
                    MerchantRecord {
                        merchant: merchant.clone(),
                        status: MerchantStatus::Active,
                        api_key_sha256: None,
                        legal_hold: false,
                        version: 0,
                    },
                );
            }
        }
        Ok(())
    }
    async fn get_merchant(&self, id: &MerchantId) -> Result<Option<MerchantRecord>, PortError> {
        self.enter("get_merchant")?;
        Ok(self.s().merchants.get(id.as_str()).cloned())
    }
    async fn merchants_for_senders(&self, senders: &[&str]) -> Result<Vec<MerchantRecord>, PortError> {
        self.enter("merchants_for_senders")?;
        let s = self.s();
        let mut out: Vec<MerchantRecord> = s
            .merchants
            .values()
            .filter(|r| {
                let m = &r.merchant;
                let mut ids: Vec<String> = m.sender.messaging_service_sid.iter().cloned().collect();
                ids.extend(m.sender.from.iter().chain(m.voice_from.iter()).map(|p| p.as_str().to_string()));
                senders.iter().any(|x| !x.is_empty() && ids.iter().any(|i| i == x))
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| a.merchant.id.as_str().cmp(b.merchant.id.as_str()));
        Ok(out)
    }
}

impl CartStore for Memory {
    async fn get_cart(&self, m: &MerchantId, token: &CartToken) -> Result<Option<Cart>, PortError> {
        self.enter("get_cart")?;
        Ok(self.s().carts.get(&(m.to_string(), token.to_string())).cloned())
    }
    async fn cart_token_for_checkout(&self, m: &MerchantId, checkout_id: &str) -> Result<Option<CartToken>, PortError> {
        self.enter("cart_token_for_checkout")?;
        let s = self.s();
        Ok(s.carts
            .values()
            .find(|c| c.merchant_id == *m && c.checkout_id.as_deref() == Some(checkout_id))
            .map(|c| c.token.clone()))
    }
    async fn write_ingest(&self, w: &IngestWrite) -> Result<IngestOutcome, PortError> {
        self.enter("write_ingest")?;
        // One lock for the whole transaction, as DynamoDB checks and writes every item at once.
        let mut s = self.s();
        let event = (w.merchant_id.to_string(), w.event_key.clone());
        if s.events.contains(&event) {
            return Ok(IngestOutcome::Duplicate);
        }
        if let Some((cart, read_at)) = &w.cart
            && s.carts.get(&(cart.merchant_id.to_string(), cart.token.to_string())).map(|c| c.version) != *read_at
        {
            return Err(PortError::Conflict);
        }
        let seqs = |s: &State, c: &ConsentAppend| {
            s.consent.get(&(person(&c.merchant_id, &c.phone), c.event.channel.as_str())).map_or(0, |l| l.0.seq)
        };
        if w.consents.iter().any(|c| c.state.seq != seqs(&s, c)) {
            return Err(PortError::Conflict);
        }
        if w.deletions_seen.iter().any(|(k, seen)| s.deletion_markers.get(&marked(&w.merchant_id, k)) != seen.as_ref())
        {
            return Err(PortError::Conflict);
        }
        for c in &w.consents {
            append_in(&mut s, c)?;
        }
        if let Some((cart, _)) = &w.cart {
            // Stored as given: the use case has set the version it writes.
            s.carts.insert((cart.merchant_id.to_string(), cart.token.to_string()), cart.clone());
        }
        s.events.insert(event);
        Ok(IngestOutcome::Applied)
    }
    async fn forget_event(&self, m: &MerchantId, event_key: &str) -> Result<(), PortError> {
        self.enter("forget_event")?;
        self.s().events.remove(&(m.to_string(), event_key.to_string()));
        Ok(())
    }
    async fn set_outreach_scheduled(&self, _: &MerchantId, _: &CartToken, _: bool) -> Result<(), PortError> {
        self.enter("set_outreach_scheduled")
    }
    async fn mark_first_step_queued(&self, m: &MerchantId, token: &CartToken) -> Result<(), PortError> {
        self.enter("mark_first_step_queued")?;
        if let Some(c) = self.s().carts.get_mut(&(m.to_string(), token.to_string())) {
            c.first_step_queued = true;
        }
        Ok(())
    }
    async fn carts_for_phone(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<Cart>, PortError> {
        self.enter("carts_for_phone")?;
        Ok(self
            .s()
            .carts
            .values()
            .filter(|c| c.merchant_id == *m && c.phone.as_ref() == Some(phone))
            .cloned()
            .collect())
    }
    async fn phones_for_email(
        &self,
        m: &MerchantId,
        email: &str,
    ) -> Result<Vec<(CartToken, Option<Phone>)>, PortError> {
        self.enter("phones_for_email")?;
        // As the store keys its pointers: the email trimmed and lower-cased, or a customer's ref.
        let wanted = email.trim().to_lowercase();
        let norm = |v: &str| v.trim().to_lowercase();
        let s = self.s();
        Ok(s.carts
            .values()
            .filter(|c| c.merchant_id == *m)
            .filter(|c| {
                c.email.as_deref().map(norm).as_ref() == Some(&wanted)
                    || c.customer_id.as_deref().map(|id| norm(&customer_ref(id))).as_ref() == Some(&wanted)
            })
            .map(|c| (c.token.clone(), c.phone.clone()))
            .collect())
    }
}

impl ConsentStore for Memory {
    async fn consent_state(&self, m: &MerchantId, phone: &Phone, channel: Channel) -> Result<ConsentState, PortError> {
        self.enter("consent_state")?;
        Ok(self.ledger(m, phone, channel).0)
    }
    async fn append_consent_answered(
        &self,
        c: &ConsentAppend,
        idempotency_key: Option<&str>,
        deletions_seen: &[(SubjectKey, Option<DateTime<Utc>>)],
        answer: impl FnOnce(&LedgerEntry, &ConsentState) -> IdempotencyRecord + Send,
    ) -> Result<IdempotencyRecord, PortError> {
        self.enter("append_consent_answered")?;
        let mut s = self.s();
        // A create-only put in the same transaction: a key already used cancels it all.
        let k = idempotency_key.map(|key| (c.merchant_id.to_string(), key.to_string()));
        if k.as_ref().is_some_and(|k| s.idempotency.contains_key(k)) {
            return Err(PortError::Conflict);
        }
        if deletions_seen.iter().any(|(k, seen)| s.deletion_markers.get(&marked(&c.merchant_id, k)) != seen.as_ref()) {
            return Err(PortError::Conflict);
        }
        let (entry, next) = append_in(&mut s, c)?;
        let record = answer(&entry, &next);
        if let Some(k) = k {
            s.idempotency.insert(k, record.clone());
        }
        Ok(record)
    }
    async fn record_consent(
        &self,
        m: &MerchantId,
        phone: &Phone,
        event: &ConsentEvent,
        purge_at: DateTime<Utc>,
    ) -> Result<Option<ConsentState>, PortError> {
        self.enter("record_consent")?;
        let state = self.ledger(m, phone, event.channel).0;
        if !state.accepts(event) {
            return Ok(None);
        }
        let append =
            ConsentAppend { merchant_id: m.clone(), phone: phone.clone(), state, event: event.clone(), purge_at };
        Ok(Some(self.append(&append)?.1))
    }
    async fn consent_ledger(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
    ) -> Result<Vec<LedgerEntry>, PortError> {
        self.enter("consent_ledger")?;
        Ok(self.ledger(m, phone, channel).1)
    }
    async fn keep_suppression(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
        sup: &callfy_shared::domain::consent::Suppression,
        _: u64,
    ) -> Result<(), PortError> {
        self.enter("keep_suppression")?;
        let mut s = self.s();
        let kept = s.suppressions.entry((person(m, phone), channel.as_str())).or_insert(*sup);
        if kept.at < sup.at {
            *kept = *sup;
        }
        Ok(())
    }
}

impl ConsentLedger for Memory {
    async fn record(
        &self,
        m: &MerchantId,
        phone: &Phone,
        event: &ConsentEvent,
        purge_at: DateTime<Utc>,
    ) -> Result<Option<ConsentState>, PortError> {
        ConsentStore::record_consent(self, m, phone, event, purge_at).await
    }
    async fn record_opt_in(
        &self,
        m: &MerchantId,
        phone: &Phone,
        event: &ConsentEvent,
        purge_at: DateTime<Utc>,
        deleted_at_seen: Option<DateTime<Utc>>,
    ) -> Result<Option<ConsentState>, PortError> {
        self.enter("record_opt_in")?;
        // As the adapter: a state that refuses the event answers first, then the marker.
        if !self.ledger(m, phone, event.channel).0.accepts(event) {
            return Ok(None);
        }
        if self.s().deletion_markers.get(&marked(m, &SubjectKey::phone(phone))) != deleted_at_seen.as_ref() {
            return Err(PortError::Conflict);
        }
        ConsentStore::record_consent(self, m, phone, event, purge_at).await
    }
    async fn cancel_outreach(
        &self,
        merchant: &Merchant,
        phone: &Phone,
        channel: Channel,
        _: DateTime<Utc>,
    ) -> Result<usize, PortError> {
        self.enter("cancel_outreach")?;
        self.s().cancelled.push((person(&merchant.id, phone), channel.as_str()));
        Ok(0)
    }
}

impl IdempotencyStore for Memory {
    async fn get_idempotency(&self, m: &MerchantId, key: &str) -> Result<Option<IdempotencyRecord>, PortError> {
        self.enter("get_idempotency")?;
        Ok(self.s().idempotency.get(&(m.to_string(), key.to_string())).cloned())
    }
    async fn put_idempotency(&self, m: &MerchantId, key: &str, record: &IdempotencyRecord) -> Result<bool, PortError> {
        self.enter("put_idempotency")?;
        let mut s = self.s();
        let k = (m.to_string(), key.to_string());
        if s.idempotency.contains_key(&k) {
            return Ok(false);
        }
        s.idempotency.insert(k, record.clone());
        Ok(true)
    }
}

impl MessageLog for Memory {
    async fn sms_by_sid(&self, sid: &str) -> Result<Option<SmsLogEntry>, PortError> {
        self.enter("sms_by_sid")?;
        Ok(self.s().sms.iter().find(|e| e.message_sid == sid).cloned())
    }
    async fn outbound_sms(&self, m: &MerchantId, phone: &Phone, sid: &str) -> Result<Option<SmsLogEntry>, PortError> {
        self.enter("outbound_sms")?;
        Ok(self.s().sms.iter().find(|e| e.merchant_id == *m && e.phone == *phone && e.message_sid == sid).cloned())
    }
    async fn update_sms_status(
        &self,
        entry: &SmsLogEntry,
        status: &str,
        error_code: Option<i64>,
        _: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.enter("update_sms_status")?;
        if let Some(e) = self.s().sms.iter_mut().find(|e| e.message_sid == entry.message_sid) {
            e.status = status.to_string();
            e.error_code = error_code;
        }
        Ok(())
    }
    async fn mark_undeliverable(
        &self,
        m: &MerchantId,
        phone: &Phone,
        u: &Undeliverable,
        _: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.enter("mark_undeliverable")?;
        self.s().undeliverable.insert(person(m, phone), u.clone());
        Ok(())
    }
    async fn record_inbound(
        &self,
        entries: &[(SmsLogEntry, MarkerGuard)],
        _: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        self.enter("record_inbound")?;
        let mut s = self.s();
        let mut first = false;
        // Entry by entry, as the adapter falls back to: those before a moved marker stay stored.
        for (e, guard) in entries {
            if let MarkerGuard::AsRead(seen) = guard
                && s.deletion_markers.get(&marked(&e.merchant_id, &SubjectKey::phone(&e.phone))) != seen.as_ref()
            {
                return Err(PortError::Conflict);
            }
            if s.inbound_seen.insert((e.merchant_id.to_string(), e.message_sid.clone())) {
                s.sms.push(e.clone());
                first = true;
            }
        }
        Ok(first)
    }
    async fn inbound_applied(&self, m: &MerchantId, message_sid: &str) -> Result<bool, PortError> {
        self.enter("inbound_applied")?;
        Ok(self.s().inbound_applied.contains(&(m.to_string(), message_sid.to_string())))
    }
    async fn finish_inbound(&self, merchants: &[MerchantId], message_sid: &str) -> Result<bool, PortError> {
        self.enter("finish_inbound")?;
        let mut s = self.s();
        let mut first = false;
        for m in merchants {
            let key = (m.to_string(), message_sid.to_string());
            // Only a stored message is marked (DynamoDB's update is conditional on its marker).
            if s.inbound_seen.contains(&key) && s.inbound_applied.insert(key) {
                first = true;
            }
        }
        Ok(first)
    }
    async fn inbound_sms(&self, m: &MerchantId, phone: &Phone, sid: &str) -> Result<Option<SmsLogEntry>, PortError> {
        self.enter("inbound_sms")?;
        let s = self.s();
        let found = s.sms.iter().find(|e| {
            e.merchant_id == *m && e.phone == *phone && e.message_sid == sid && e.direction == Direction::Inbound
        });
        Ok(found.cloned())
    }
    async fn merchants_that_texted(&self, phone: &Phone, senders: &[&str]) -> Result<Vec<MerchantId>, PortError> {
        self.enter("merchants_that_texted")?;
        let s = self.s();
        let mut ids: Vec<MerchantId> = s
            .sms
            .iter()
            .filter(|e| e.direction == Direction::Outbound && e.phone == *phone)
            .filter(|e| e.senders.iter().any(|x| !x.is_empty() && senders.contains(&x.as_str())))
            .map(|e| e.merchant_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
    async fn undeliverable(&self, m: &MerchantId, phone: &Phone) -> Result<Option<Undeliverable>, PortError> {
        self.enter("undeliverable")?;
        Ok(self.s().undeliverable.get(&person(m, phone)).cloned())
    }
    async fn has_outbound_sms(&self, m: &MerchantId, phone: &Phone) -> Result<bool, PortError> {
        self.enter("has_outbound_sms")?;
        Ok(self.s().sms.iter().any(|e| e.merchant_id == *m && e.phone == *phone))
    }
}

impl CallLog for Memory {
    async fn call_by_sid(&self, sid: &str) -> Result<Option<CallLogEntry>, PortError> {
        self.enter("call_by_sid")?;
        Ok(self.s().calls.iter().find(|c| c.call_sid == sid).cloned())
    }
    async fn call_in_partition(
        &self,
        m: &MerchantId,
        phone: &Phone,
        sid: &str,
    ) -> Result<Option<CallLogEntry>, PortError> {
        self.enter("call_in_partition")?;
        Ok(self.s().calls.iter().find(|c| c.merchant_id == *m && c.phone == *phone && c.call_sid == sid).cloned())
    }
    async fn update_call_status(
        &self,
        entry: &CallLogEntry,
        u: &CallUpdate<'_>,
        _: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.enter("update_call_status")?;
        if let Some(c) = self.s().calls.iter_mut().find(|c| c.call_sid == entry.call_sid) {
            c.status = u.status.to_string();
        }
        Ok(())
    }
    async fn note_recording(&self, entry: &CallLogEntry, rec: &CallRecording) -> Result<bool, PortError> {
        self.enter("note_recording")?;
        let mut s = self.s();
        let Some(c) = s.calls.iter_mut().find(|c| c.call_sid == entry.call_sid) else { return Ok(false) };
        let first = c.recording.is_none();
        if first {
            c.recording = Some(rec.clone());
        }
        Ok(first)
    }
    async fn recording_stored(&self, entry: &CallLogEntry, _: &str, s3_key: &str) -> Result<(), PortError> {
        self.enter("recording_stored")?;
        if let Some(r) =
            self.s().calls.iter_mut().find(|c| c.call_sid == entry.call_sid).and_then(|c| c.recording.as_mut())
        {
            r.s3_key = Some(s3_key.to_string());
        }
        Ok(())
    }
    async fn recording_released(&self, entry: &CallLogEntry, _: &str) -> Result<(), PortError> {
        self.enter("recording_released")?;
        if let Some(r) =
            self.s().calls.iter_mut().find(|c| c.call_sid == entry.call_sid).and_then(|c| c.recording.as_mut())
        {
            r.twilio_deleted = true;
        }
        Ok(())
    }
    async fn note_outcome(
        &self,
        entry: &CallLogEntry,
        outcome: callfy_shared::domain::agent::Outcome,
        summary: &str,
    ) -> Result<(), PortError> {
        self.enter("note_outcome")?;
        if let Some(c) = self.s().calls.iter_mut().find(|c| c.call_sid == entry.call_sid) {
            c.outcome = Some(outcome);
            c.summary = Some(summary.to_string());
        }
        Ok(())
    }
}

impl AgentSessions for Memory {
    async fn bind_connection(
        &self,
        connection_id: &str,
        call: &callfy_shared::domain::voice::CallRef,
        _: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.enter("bind_connection")?;
        self.s().connections.insert(connection_id.to_string(), (call.clone(), None, 0));
        Ok(())
    }
    async fn connection(&self, connection_id: &str) -> Result<Option<agent::ConnectionBinding>, PortError> {
        self.enter("connection")?;
        let s = self.s();
        let Some((call, sid, _)) = s.connections.get(connection_id) else { return Ok(None) };
        let session = sid.as_ref().and_then(|sid| s.sessions.get(sid)).map(|x| agent::SessionKey {
            merchant_id: x.merchant_id.clone(),
            phone: x.phone.clone(),
            call_sid: x.call_sid.clone(),
        });
        Ok(Some(agent::ConnectionBinding { call: call.clone(), session }))
    }
    async fn open_session(
        &self,
        connection_id: &str,
        session: &callfy_shared::domain::agent::AgentSession,
    ) -> Result<callfy_shared::domain::agent::AgentSession, PortError> {
        self.enter("open_session")?;
        let mut s = self.s();
        let stored = s.sessions.entry(session.call_sid.clone()).or_insert_with(|| session.clone()).clone();
        if let Some(c) = s.connections.get_mut(connection_id) {
            c.1 = Some(session.call_sid.clone());
        }
        Ok(stored)
    }
    async fn session(
        &self,
        key: &agent::SessionKey,
    ) -> Result<Option<callfy_shared::domain::agent::AgentSession>, PortError> {
        self.enter("session")?;
        Ok(self.s().sessions.get(&key.call_sid).cloned())
    }
    async fn next_turn(
        &self,
        key: &agent::SessionKey,
        seen: u32,
        line: Option<&callfy_shared::domain::agent::TranscriptLine>,
    ) -> Result<bool, PortError> {
        self.enter("next_turn")?;
        let mut s = self.s();
        let Some(x) = s.sessions.get_mut(&key.call_sid) else { return Ok(false) };
        if x.turn != seen || x.ended {
            return Ok(false);
        }
        x.turn = seen + 1;
        x.transcript.extend(line.cloned());
        Ok(true)
    }
    async fn say(
        &self,
        key: &agent::SessionKey,
        line: &callfy_shared::domain::agent::TranscriptLine,
    ) -> Result<bool, PortError> {
        self.enter("say")?;
        let mut s = self.s();
        let Some(x) = s.sessions.get_mut(&key.call_sid) else { return Ok(false) };
        if x.turn != line.turn || x.ended {
            return Ok(false);
        }
        x.transcript.push(line.clone());
        Ok(true)
    }
    async fn append_line(
        &self,
        key: &agent::SessionKey,
        line: &callfy_shared::domain::agent::TranscriptLine,
    ) -> Result<(), PortError> {
        self.enter("append_line")?;
        if let Some(x) = self.s().sessions.get_mut(&key.call_sid) {
            x.transcript.push(line.clone());
        }
        Ok(())
    }
    async fn use_tool(&self, key: &agent::SessionKey, tool: &str, once: bool) -> Result<bool, PortError> {
        self.enter("use_tool")?;
        let mut s = self.s();
        let Some(x) = s.sessions.get_mut(&key.call_sid) else { return Ok(false) };
        if once && x.tools_used.iter().any(|t| t == tool) {
            return Ok(false);
        }
        x.tools_used.push(tool.to_string());
        Ok(true)
    }
    async fn spend(&self, key: &agent::SessionKey, tokens: u32) -> Result<u32, PortError> {
        self.enter("spend")?;
        let mut s = self.s();
        let Some(x) = s.sessions.get_mut(&key.call_sid) else { return Ok(0) };
        x.tokens_used += tokens;
        Ok(x.tokens_used)
    }
    async fn malformed(&self, connection_id: &str) -> Result<u32, PortError> {
        self.enter("malformed")?;
        let mut s = self.s();
        let Some(c) = s.connections.get_mut(connection_id) else { return Ok(u32::MAX) };
        c.2 += 1;
        Ok(c.2)
    }
    async fn finish_session(
        &self,
        key: &agent::SessionKey,
        outcome: callfy_shared::domain::agent::Outcome,
        overwrite: bool,
        end: bool,
    ) -> Result<(), PortError> {
        self.enter("finish_session")?;
        let mut s = self.s();
        if let Some(x) = s.sessions.get_mut(&key.call_sid) {
            if overwrite || x.outcome.is_none() {
                x.outcome = Some(outcome);
            }
            x.ended |= end;
        }
        Ok(())
    }
    async fn merchant_spend(&self, m: &MerchantId, day: &str, tokens: u32) -> Result<u64, PortError> {
        self.enter("merchant_spend")?;
        let mut s = self.s();
        let total = s.merchant_tokens.entry((m.to_string(), day.to_string())).or_default();
        *total += u64::from(tokens);
        Ok(*total)
    }
}

impl BurstGuard for Memory {
    async fn bump_burst(
        &self,
        m: &MerchantId,
        kind: BurstKind,
        hashed: &str,
        start: DateTime<Utc>,
        _: Duration,
    ) -> Result<u64, PortError> {
        self.enter("bump_burst")?;
        let mut s = self.s();
        let n = s.bursts.entry(format!("{m}#{kind:?}#{hashed}#{start}")).or_default();
        *n += 1;
        Ok(*n)
    }
}

impl ApiBuckets for Memory {
    /// Each step is its own atomic write, as in DynamoDB: another request may land between two.
    async fn take_step(
        &self,
        m: &MerchantId,
        steps: &[callfy_shared::domain::ratelimit::BucketStep],
        _: DateTime<Utc>,
    ) -> Result<Option<usize>, PortError> {
        self.enter("take_step")?;
        for (i, step) in steps.iter().enumerate() {
            self.enter("bucket_step")?;
            let mut s = self.s();
            if let Some(next) = step.apply(s.api_buckets.get(m.as_str()).copied()) {
                s.api_buckets.insert(m.to_string(), next);
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
    async fn bucket(&self, m: &MerchantId) -> Result<Option<i64>, PortError> {
        self.enter("bucket")?;
        Ok(self.s().api_buckets.get(m.as_str()).copied())
    }
}

impl PlatformRequests for Memory {
    async fn record_platform_request(
        &self,
        m: &Merchant,
        event_key: &str,
        request: &PlatformRequest,
        pending: Option<&PendingPrivacy>,
        _: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        self.enter("record_platform_request")?;
        let mut s = self.s();
        if !s.events.insert((m.id.to_string(), event_key.to_string())) {
            return Ok(false);
        }
        s.requests.push(request.kind().to_string());
        s.pending_privacy.extend(pending.cloned());
        Ok(true)
    }
    async fn request_shop_redaction(&self, _: &MerchantId, _: DateTime<Utc>) -> Result<(), PortError> {
        self.enter("request_shop_redaction")
    }
    async fn close_merchant(&self, id: &MerchantId, _: DateTime<Utc>) -> Result<(), PortError> {
        self.enter("close_merchant")?;
        if let Some(r) = self.s().merchants.get_mut(id.as_str()) {
            r.status = MerchantStatus::Closed;
        }
        Ok(())
    }
    async fn cancel_merchant_outreach(&self, _: &Merchant, _: DateTime<Utc>) -> Result<usize, PortError> {
        self.enter("cancel_merchant_outreach")?;
        Ok(0)
    }
}

impl PrivacyStore for Memory {
    async fn put_provider_copies(
        &self,
        m: &MerchantId,
        request: &str,
        copies: &[ProviderCopy],
        _: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.enter("put_provider_copies")?;
        let mut s = self.s();
        for c in copies {
            s.provider_copies.insert((m.to_string(), request.to_string(), c.clone()));
        }
        Ok(())
    }
    async fn provider_copies(&self, m: &MerchantId, request: &str) -> Result<Vec<ProviderCopy>, PortError> {
        self.enter("provider_copies")?;
        Ok(self
            .s()
            .provider_copies
            .iter()
            .filter(|(mm, r, _)| *mm == m.as_str() && r == request)
            .map(|(_, _, c)| c.clone())
            .collect())
    }
    async fn provider_copy_removed(&self, m: &MerchantId, request: &str, c: &ProviderCopy) -> Result<(), PortError> {
        self.enter("provider_copy_removed")?;
        self.s().provider_copies.remove(&(m.to_string(), request.to_string(), c.clone()));
        Ok(())
    }
    async fn export_keys_for(&self, _: &MerchantId, _: &str) -> Result<Vec<String>, PortError> {
        self.enter("export_keys_for")?;
        Ok(Vec::new())
    }
    async fn customer_records(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<CustomerRecord>, PortError> {
        self.enter("customer_records")?;
        let s = self.s();
        let pk = format!("C#{m}#{}", phone.as_str());
        let mut out = Vec::new();
        for e in s.sms.iter().filter(|e| e.merchant_id == *m && e.phone == *phone) {
            let key = (pk.clone(), format!("SMS#{}", e.message_sid));
            out.push(CustomerRecord { key, kind: PurgeKind::SmsLog, data: CustomerData::Sms(Box::new(e.clone())) });
        }
        for c in s.calls.iter().filter(|c| c.merchant_id == *m && c.phone == *phone) {
            let key = (pk.clone(), format!("CALL#{}", c.call_sid));
            out.push(CustomerRecord { key, kind: PurgeKind::CallLog, data: CustomerData::Call(Box::new(c.clone())) });
        }
        for ((who, name), (state, entries)) in &s.consent {
            if *who != person(m, phone) {
                continue;
            }
            let channel = &if *name == "voice" { Channel::Voice } else { Channel::Sms };
            let key = (pk.clone(), format!("CONSENT#{}", channel.as_str()));
            let data = CustomerData::ConsentState { channel: *channel, state: Box::new(state.clone()) };
            out.push(CustomerRecord { key, kind: PurgeKind::ConsentLedger, data });
            for e in entries {
                let key = (pk.clone(), format!("CONSENT#{}#{:012}", channel.as_str(), e.seq));
                let data = CustomerData::ConsentEntry { channel: *channel, entry: Box::new(e.clone()) };
                out.push(CustomerRecord { key, kind: PurgeKind::ConsentEntry, data });
            }
        }
        Ok(out)
    }
    async fn cart_keys(&self, m: &MerchantId, cart: &Cart) -> Result<Vec<ItemKey>, PortError> {
        self.enter("cart_keys")?;
        Ok(vec![(format!("K#{m}#{}", cart.token), "CART".into())])
    }
    async fn phone_pointer_keys(&self, _: &MerchantId, _: &Phone) -> Result<Vec<ItemKey>, PortError> {
        self.enter("phone_pointer_keys")?;
        Ok(Vec::new())
    }
    fn email_pointer_keys(&self, m: &MerchantId, email: &str, tokens: &[CartToken]) -> Vec<ItemKey> {
        tokens.iter().map(|t| (format!("E#{m}#{email}"), format!("CART#{t}"))).collect()
    }
    async fn put_deletion_marker(
        &self,
        m: &MerchantId,
        subject: &SubjectKey,
        at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.enter("put_deletion_marker")?;
        let mut s = self.s();
        let marker = s.deletion_markers.entry(marked(m, subject)).or_insert(at);
        *marker = (*marker).max(at);
        Ok(())
    }
    async fn deletion_marker(&self, m: &MerchantId, subject: &SubjectKey) -> Result<Option<DateTime<Utc>>, PortError> {
        self.enter("deletion_marker")?;
        Ok(self.s().deletion_markers.get(&marked(m, subject)).copied())
    }
    async fn privacy_status(&self, _: &MerchantId, id: &str) -> Result<Option<PrivacyStatus>, PortError> {
        self.enter("privacy_status")?;
        Ok(self.s().privacy.iter().rev().find(|p| p.id == id).cloned())
    }
    async fn put_privacy_status(
        &self,
        _: &MerchantId,
        status: &PrivacyStatus,
        _: Option<&str>,
    ) -> Result<(), PortError> {
        self.enter("put_privacy_status")?;
        self.s().privacy.push(status.clone());
        Ok(())
    }
    async fn put_pending_privacy(&self, _: &MerchantId, p: &PendingPrivacy, _: DateTime<Utc>) -> Result<(), PortError> {
        self.enter("put_pending_privacy")?;
        self.s().pending_privacy.push(p.clone());
        Ok(())
    }
    async fn pending_privacy(&self, _: &str, sk: &str) -> Result<Option<PendingPrivacy>, PortError> {
        self.enter("pending_privacy")?;
        Ok(self.s().pending_privacy.iter().find(|p| sk.ends_with(&p.id)).cloned())
    }
    fn pending_privacy_key(&self, m: &MerchantId, id: &str) -> ItemKey {
        (format!("V#{m}"), format!("PRIVACY#{id}"))
    }
}

impl PurgeStore for Memory {
    async fn ledger_head(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<(MerchantId, Phone, Channel, ConsentState)>, PortError> {
        self.enter("ledger_head")?;
        Ok(None)
    }
    async fn put_purge_report(&self, report: &PurgeReport) -> Result<(), PortError> {
        self.enter("put_purge_report")?;
        self.s().reports.push(report.clone());
        Ok(())
    }
    async fn redate(
        &self,
        _: &MerchantId,
        _: &callfy_shared::domain::retention::Redate,
        _: Option<TenantCursor>,
        _: usize,
        _: Option<std::time::Instant>,
    ) -> Result<(u64, Option<TenantCursor>), PortError> {
        self.enter("redate")?;
        Ok((0, None))
    }
    async fn redate_stopped_at(&self, _: &MerchantId, _: &str, _: &TenantCursor) -> Result<(), PortError> {
        self.enter("redate_stopped_at")
    }
    async fn put_redate(
        &self,
        _: &MerchantId,
        _: &callfy_shared::domain::retention::Redate,
        _: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.enter("put_redate")?;
        Ok(())
    }
    async fn redate_job(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<(MerchantId, callfy_shared::domain::retention::Redate, Option<TenantCursor>)>, PortError> {
        self.enter("redate_job")?;
        Ok(None)
    }
    async fn redate_done(&self, _: &MerchantId, _: &str) -> Result<(), PortError> {
        self.enter("redate_done")?;
        Ok(())
    }
    async fn due_page(
        &self,
        shard: u32,
        as_of: DateTime<Utc>,
        after: Option<PurgeCursor>,
    ) -> Result<(Vec<DueItem>, Option<PurgeCursor>), PortError> {
        self.enter("due_page")?;
        // One page per shard: everything due in it.
        if after.is_some() {
            return Ok((Vec::new(), None));
        }
        let as_of = as_of.format("%Y-%m-%dT%H:%M:%S").to_string();
        let due = self.s().due.iter().filter(|d| shard_of(&d.pk) == shard && d.purge_at <= as_of).cloned().collect();
        Ok((due, None))
    }
    async fn repurge(&self, pk: &str, sk: &str, _: DateTime<Utc>) -> Result<(), PortError> {
        self.enter("repurge")?;
        self.s().due.retain(|d| !(d.pk == pk && d.sk == sk));
        Ok(())
    }
    async fn delete_if_due(&self, pk: &str, sk: &str, _: &str) -> Result<bool, PortError> {
        self.enter("delete_if_due")?;
        let mut s = self.s();
        s.due.retain(|d| !(d.pk == pk && d.sk == sk));
        s.deleted.push((pk.to_string(), sk.to_string()));
        Ok(true)
    }
    async fn delete_cart_if_due(&self, pk: &str, sk: &str, _: &str, with: &[ItemKey]) -> Result<bool, PortError> {
        self.enter("delete_cart_if_due")?;
        let mut s = self.s();
        s.due.retain(|d| !(d.pk == pk && d.sk == sk));
        s.deleted.push((pk.to_string(), sk.to_string()));
        s.deleted.extend(with.iter().cloned());
        Ok(true)
    }
    async fn partition_keys(&self, _: &str) -> Result<Vec<ItemKey>, PortError> {
        self.enter("partition_keys")?;
        Ok(Vec::new())
    }
    async fn recording_purged(&self, _: &str, _: &str, _: Option<&str>) -> Result<(), PortError> {
        self.enter("recording_purged")
    }
    async fn purge_consent_entry(&self, _: &str, _: &str, _: u64, _: &str) -> Result<bool, PortError> {
        self.enter("purge_consent_entry")?;
        Ok(true)
    }
    async fn batch_delete(&self, keys: &[ItemKey]) -> Result<(), PortError> {
        self.enter("batch_delete")?;
        let mut s = self.s();
        s.due.retain(|d| !keys.contains(&d.key()));
        s.deleted.extend(keys.iter().cloned());
        Ok(())
    }
    async fn batch_delete_any(&self, keys: &[ItemKey]) -> Result<(), PortError> {
        self.batch_delete(keys).await
    }
    async fn erasure_page(
        &self,
        _: &MerchantId,
        _: Erasure,
        _: Option<TenantCursor>,
        _: usize,
    ) -> Result<(Vec<Vec<CustomerRecord>>, Option<TenantCursor>), PortError> {
        self.enter("erasure_page")?;
        Ok((Vec::new(), None))
    }
    async fn erasure_tail(&self, _: &MerchantId, _: Erasure) -> Result<Vec<ItemKey>, PortError> {
        self.enter("erasure_tail")?;
        Ok(Vec::new())
    }
    async fn last_activity(&self, _: &str) -> Result<Option<DateTime<Utc>>, PortError> {
        self.enter("last_activity")?;
        Ok(None)
    }
    async fn prefix_keys(&self, _: &str, _: &str) -> Result<Vec<ItemKey>, PortError> {
        self.enter("prefix_keys")?;
        Ok(Vec::new())
    }
    async fn delete_state_at(&self, _: &str, _: &str, _: u64) -> Result<bool, PortError> {
        self.enter("delete_state_at")?;
        Ok(true)
    }
}

impl OutreachReads for Memory {
    async fn merchant(&self, id: &MerchantId) -> Result<Option<MerchantRecord>, PortError> {
        MerchantStore::get_merchant(self, id).await
    }
    async fn cart(&self, m: &MerchantId, token: &CartToken) -> Result<Option<Cart>, PortError> {
        CartStore::get_cart(self, m, token).await
    }
    async fn step(&self, m: &MerchantId, token: &CartToken, step: u8) -> Result<Option<StepRecord>, PortError> {
        self.enter("step")?;
        Ok(self.s().steps.get(&((m.to_string(), token.to_string()), step)).cloned())
    }
    async fn consent(&self, m: &MerchantId, phone: &Phone, channel: Channel) -> Result<ConsentState, PortError> {
        ConsentStore::consent_state(self, m, phone, channel).await
    }
    async fn counter(&self, _: &MerchantId, _: &Phone) -> Result<SendCounter, PortError> {
        self.enter("counter")?;
        Ok(SendCounter::default())
    }
    async fn undeliverable(&self, m: &MerchantId, phone: &Phone) -> Result<Option<Undeliverable>, PortError> {
        MessageLog::undeliverable(self, m, phone).await
    }
    async fn has_outbound(&self, m: &MerchantId, phone: &Phone) -> Result<bool, PortError> {
        MessageLog::has_outbound_sms(self, m, phone).await
    }
    async fn logged_sids(&self, m: &MerchantId, phone: &Phone) -> Result<HashSet<String>, PortError> {
        self.enter("logged_sids")?;
        let s = self.s();
        let texts = s.sms.iter().filter(|e| e.merchant_id == *m && e.phone == *phone).map(|e| e.message_sid.clone());
        let calls = s.calls.iter().filter(|c| c.merchant_id == *m && c.phone == *phone).map(|c| c.call_sid.clone());
        Ok(texts.chain(calls).collect())
    }
}

impl StepStore for Memory {
    async fn get_step(&self, m: &MerchantId, token: &CartToken, step: u8) -> Result<Option<StepRecord>, PortError> {
        OutreachReads::step(self, m, token, step).await
    }
    async fn send_counter(&self, m: &MerchantId, phone: &Phone) -> Result<SendCounter, PortError> {
        OutreachReads::counter(self, m, phone).await
    }
    async fn claim(
        &self,
        guard: &ClaimGuard,
        id: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimOutcome, PortError> {
        OutreachWrites::claim(self, guard, id, body, now).await
    }
    async fn release_count(&self, m: &MerchantId, phone: &Phone, token: &CartToken, step: u8) -> Result<(), PortError> {
        OutreachWrites::release_count(self, m, phone, token, step).await
    }
    async fn finish_sent(
        &self,
        entry: &SmsLogEntry,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        OutreachWrites::finish_sent(self, entry, token, step, claim_id, now).await
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
        OutreachWrites::finish(self, m, token, step, claim_id, result, now).await
    }
}

impl WebhookMerchants for Memory {
    async fn merchant_by_shop_domain(&self, domain: &str) -> Result<Option<MerchantRecord>, PortError> {
        self.enter("merchant_by_shop_domain")?;
        Ok(self.s().merchants.values().find(|r| r.merchant.shop_domain.as_deref() == Some(domain)).cloned())
    }
    async fn merchant_with_secrets(&self, id: &MerchantId) -> Result<Option<MerchantRecord>, PortError> {
        self.enter("merchant_with_secrets")?;
        Ok(self.s().merchants.get(id.as_str()).cloned())
    }
    async fn delivery_applied(&self, m: &MerchantId, event_key: &str) -> Result<bool, PortError> {
        self.enter("delivery_applied")?;
        Ok(self.s().events.contains(&(m.to_string(), event_key.to_string())))
    }
}

impl RecoveryLinks for Memory {
    async fn save_link(&self, link: &callfy_shared::domain::link::RecoveryLink) -> Result<(), PortError> {
        self.enter("save_link")?;
        self.s().links.entry(link.code.as_str().to_string()).or_insert_with(|| link.clone());
        Ok(())
    }
    async fn find_link(
        &self,
        code: &callfy_shared::domain::link::LinkCode,
    ) -> Result<Option<callfy_shared::domain::link::RecoveryLink>, PortError> {
        self.enter("find_link")?;
        Ok(self.s().links.get(code.as_str()).cloned())
    }
    async fn count_click(
        &self,
        link: &callfy_shared::domain::link::RecoveryLink,
        _at: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        self.enter("count_click")?;
        Ok(self.s().links.get_mut(link.code.as_str()).map(|l| l.clicks += 1).is_some())
    }
}

impl OutreachWrites for Memory {
    async fn claim(&self, guard: &ClaimGuard, _: &str, _: &str, _: DateTime<Utc>) -> Result<ClaimOutcome, PortError> {
        self.enter("claim")?;
        self.s().claims.push((guard.cart.to_string(), guard.step));
        Ok(ClaimOutcome::Claimed { uncertain: None })
    }
    async fn finish_sent(
        &self,
        entry: &SmsLogEntry,
        _: &CartToken,
        _: u8,
        _: &str,
        _: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        self.enter("finish_sent")?;
        self.s().sms.push(entry.clone());
        Ok(true)
    }
    async fn finish_called(&self, entry: &CallLogEntry, _: &str, _: DateTime<Utc>) -> Result<bool, PortError> {
        self.enter("finish_called")?;
        self.s().calls.push(entry.clone());
        Ok(true)
    }
    async fn finish(
        &self,
        _: &MerchantId,
        _: &CartToken,
        _: u8,
        _: &str,
        _: &StepResult,
        _: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.enter("finish")
    }
    async fn release_count(&self, _: &MerchantId, _: &Phone, _: &CartToken, _: u8) -> Result<(), PortError> {
        self.enter("release_count")
    }
    async fn skip(
        &self,
        _: (&MerchantId, &CartToken, u8),
        _: &StepAvailability,
        _: &str,
        _: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        self.enter("skip")?;
        Ok(true)
    }
    async fn take_over(
        &self,
        _: (&MerchantId, &CartToken, u8),
        _: &StepAvailability,
        _: &str,
        _: &str,
        _: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        self.enter("take_over")?;
        Ok(true)
    }
}

/// The queues in memory: what was enqueued, and an outage switch.
#[derive(Clone, Default)]
pub struct Queue {
    pub jobs: Arc<Mutex<Vec<OutreachJob>>>,
    pub work: Arc<Mutex<Vec<String>>>,
    /// The opt-outs heard on calls, as queued.
    pub opt_outs: Arc<Mutex<Vec<KeyOptOut>>>,
    pub down: Arc<Mutex<bool>>,
}

impl Queue {
    fn check(&self) -> Result<(), PortError> {
        if *self.down.lock().unwrap() {
            Err(PortError::unavailable("memory", "SendMessage", "queue down"))
        } else {
            Ok(())
        }
    }
}

impl JobQueue for Queue {
    async fn enqueue(&self, job: &OutreachJob, _: i32) -> Result<String, PortError> {
        self.check()?;
        self.jobs.lock().unwrap().push(job.clone());
        Ok(format!("msg-{}", self.jobs.lock().unwrap().len()))
    }
    async fn enqueue_privacy(&self, work: &PrivacyWork) -> Result<String, PortError> {
        self.check()?;
        self.work.lock().unwrap().push(work.id.clone());
        Ok("privacy".into())
    }
    async fn enqueue_closure(&self, m: &MerchantId) -> Result<String, PortError> {
        self.check()?;
        self.work.lock().unwrap().push(format!("closure:{m}"));
        Ok("closure".into())
    }
    async fn enqueue_provider_copies(&self, work: &PrivacyWork) -> Result<String, PortError> {
        self.check()?;
        self.work.lock().unwrap().push(format!("copies:{}", work.id));
        Ok("copies".into())
    }
}

impl WorkQueue for Queue {
    async fn enqueue_inbound(&self, msg: &InboundMessage, _: i32) -> Result<String, PortError> {
        self.check()?;
        self.work.lock().unwrap().push(msg.message_sid.clone());
        Ok("inbound".into())
    }
    async fn enqueue_recording(&self, copy: &RecordingCopy) -> Result<String, PortError> {
        self.check()?;
        self.work.lock().unwrap().push(copy.recording_sid.clone());
        Ok("recording".into())
    }
    async fn enqueue_key_opt_out(&self, o: &KeyOptOut, _: i32) -> Result<String, PortError> {
        self.check()?;
        self.work.lock().unwrap().push(o.call_sid.clone());
        self.opt_outs.lock().unwrap().push(o.clone());
        Ok("key".into())
    }
}

/// Twilio and the recordings bucket in memory.
#[derive(Clone, Default)]
pub struct Telephony {
    pub sent: Arc<Mutex<Vec<SendSms>>>,
    pub placed: Arc<Mutex<Vec<PlaceCall>>>,
    pub deleted_recordings: Arc<Mutex<Vec<String>>>,
    pub redacted_messages: Arc<Mutex<Vec<String>>>,
    pub objects: Arc<Mutex<BTreeMap<String, usize>>>,
    /// The bucket refuses writes.
    pub bucket_down: Arc<Mutex<bool>>,
    /// Twilio answers this error to every send.
    pub send_error: Arc<Mutex<Option<(u16, i64)>>>,
}

impl ProviderCopies for Telephony {
    async fn redact_message(&self, message_sid: &str) -> Result<bool, TwilioError> {
        if let Some((status, code)) = *self.send_error.lock().unwrap() {
            return Err(TwilioError::Api { status, code: Some(code), message: String::new() });
        }
        self.redacted_messages.lock().unwrap().push(message_sid.to_string());
        Ok(true)
    }
}

impl SmsGateway for Telephony {
    async fn send_sms(&self, req: &SendSms) -> Result<MessageResource, TwilioError> {
        if let Some((status, code)) = *self.send_error.lock().unwrap() {
            return Err(TwilioError::Api { status, code: Some(code), message: String::new() });
        }
        let mut sent = self.sent.lock().unwrap();
        sent.push(req.clone());
        Ok(MessageResource {
            sid: format!("SM{:032}", sent.len()),
            status: Some("queued".into()),
            num_segments: Some("1".into()),
            error_code: None,
        })
    }
    async fn recent_messages_to(&self, _: &str) -> Result<Vec<ListedMessage>, TwilioError> {
        Ok(Vec::new())
    }
}

impl VoiceGateway for Telephony {
    async fn place_call(&self, req: &PlaceCall) -> Result<CallResource, TwilioError> {
        let mut placed = self.placed.lock().unwrap();
        placed.push(req.clone());
        Ok(CallResource { sid: format!("CA{:032}", placed.len()), status: Some("queued".into()) })
    }
    async fn recent_calls_to(&self, _: &str) -> Result<Vec<ListedCall>, TwilioError> {
        Ok(Vec::new())
    }
}

impl RecordingSource for Telephony {
    async fn download_recording(&self, _: &str, path: &Path) -> Result<u64, TwilioError> {
        std::fs::write(path, b"RIFF....WAVE").map_err(|e| TwilioError::Transport(e.to_string()))?;
        Ok(12)
    }
    async fn delete_recording(&self, recording_sid: &str) -> Result<bool, TwilioError> {
        self.deleted_recordings.lock().unwrap().push(recording_sid.to_string());
        Ok(true)
    }
}

impl RecordingFiles for Telephony {
    async fn move_prefix(&self, from: &str, to: &str) -> Result<usize, PortError> {
        let mut objects = self.objects.lock().unwrap();
        let keys: Vec<String> = objects.keys().filter(|k| k.starts_with(from)).cloned().collect();
        for k in &keys {
            if let Some(size) = objects.remove(k) {
                objects.insert(format!("{to}{}", &k[from.len()..]), size);
            }
        }
        Ok(keys.len())
    }
    async fn presign_get(&self, key: &str, _: std::time::Duration) -> Result<String, PortError> {
        Ok(format!("https://bucket.test/{key}?signed"))
    }
    async fn put_json(&self, key: &str, body: Vec<u8>) -> Result<(), PortError> {
        self.put(key, body.len())
    }
    async fn delete_prefix_page(&self, prefix: &str) -> Result<(usize, bool), PortError> {
        let mut objects = self.objects.lock().unwrap();
        let before = objects.len();
        objects.retain(|k, _| !k.starts_with(prefix));
        Ok((before - objects.len(), false))
    }
    async fn delete_keys(&self, keys: &[String]) -> Result<(), PortError> {
        // As S3's adapter: nothing to delete makes no request.
        if keys.is_empty() {
            return Ok(());
        }
        if *self.bucket_down.lock().unwrap() {
            return Err(PortError::unavailable("memory", "DeleteObjects", "bucket down"));
        }
        let mut objects = self.objects.lock().unwrap();
        for k in keys {
            objects.remove(k);
        }
        Ok(())
    }
    async fn put_file(&self, key: &str, path: &Path, _: &[(&str, String)]) -> Result<(), PortError> {
        let len = std::fs::metadata(path).map_err(PortError::File)?.len() as usize;
        self.put(key, len)
    }
}

impl Telephony {
    fn put(&self, key: &str, len: usize) -> Result<(), PortError> {
        if *self.bucket_down.lock().unwrap() {
            return Err(PortError::unavailable("memory", "PutObject", "bucket down"));
        }
        self.objects.lock().unwrap().insert(key.to_string(), len);
        Ok(())
    }
}

/// The agent's relay connection in memory: every message sent, in order.
#[derive(Clone, Default)]
pub struct Relay {
    pub sent: Arc<Mutex<Vec<(String, callfy_shared::domain::agent::RelayOut)>>>,
}

impl Relay {
    pub fn texts(&self) -> Vec<String> {
        use callfy_shared::domain::agent::RelayOut;
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, m)| match m {
                RelayOut::Text { token, .. } if !token.is_empty() => Some(token.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn ended(&self) -> Option<String> {
        use callfy_shared::domain::agent::RelayOut;
        self.sent.lock().unwrap().iter().find_map(|(_, m)| match m {
            RelayOut::End { handoff_data } => Some(handoff_data.clone()),
            _ => None,
        })
    }
}

impl RelayConnections for Relay {
    async fn post(&self, connection_id: &str, msg: &callfy_shared::domain::agent::RelayOut) -> Result<(), PortError> {
        self.sent.lock().unwrap().push((connection_id.to_string(), msg.clone()));
        Ok(())
    }
}
