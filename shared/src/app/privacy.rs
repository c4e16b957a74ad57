//! Data-subject requests: everything held about a person at a merchant (by phone or email),
//! exported as one document, or deleted. A deletion leaves only markers keyed by HMACs of the
//! phones, emails and customer ids it erased (`SubjectKey`), which keep the opt-out honoured and
//! late copies of old checkouts out, and a proof record (the HMAC, time, counts per kind).
//! Under a legal hold a deletion is recorded and carried out when the hold lifts.

use crate::domain::cart::Cart;
use crate::domain::merchant::Merchant;
use crate::domain::outreach::MerchantRecord;
use crate::domain::phone::Phone;
use crate::domain::retention::PurgeKind;
use crate::domain::subject::SubjectKey;
use crate::ports::{
    CartStore, ConsentStore, CustomerData, ItemKey, PendingPrivacy, PortError, PrivacyStatus, PrivacyStore,
    ProviderCopies, ProviderCopy, PurgeStore, RecordingFiles,
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use thiserror::Error;
use tracing::info;

/// When the purger first retries a provider copy the worker has not confirmed removed.
pub const PROVIDER_RETRY_AFTER: chrono::Duration = chrono::Duration::minutes(15);

/// How long an export's links work.
pub const LINK_VALID: std::time::Duration = std::time::Duration::from_secs(3600);

/// The store or the recordings bucket failed.
#[derive(Debug, Error)]
#[error(transparent)]
pub struct PrivacyError(#[from] pub PortError);

impl crate::ports::Classify for PrivacyError {
    fn kind(&self) -> crate::ports::ErrorKind {
        self.0.kind()
    }
}

/// What a data-subject request reads and erases.
pub trait PrivacyData: CartStore + ConsentStore + PrivacyStore + PurgeStore {}
impl<T: CartStore + ConsentStore + PrivacyStore + PurgeStore> PrivacyData for T {}

/// Whom a request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Phone(Phone),
    Email(String),
    /// A platform's customer id (Shopify's `customers/redact`).
    Customer(String),
}

impl Subject {
    /// What the proof of a deletion keeps: an HMAC of the phone, a hash of the email or id.
    pub fn proof_id(&self) -> String {
        self.key().as_str().to_string()
    }

    /// The key of the subject's deletion marker (and of its proof).
    pub fn key(&self) -> SubjectKey {
        match self {
            Self::Phone(p) => SubjectKey::phone(p),
            Self::Email(e) => SubjectKey::email(e),
            Self::Customer(id) => SubjectKey::customer(id),
        }
    }

    /// What the subject's cart pointers are keyed by, when it is not a phone.
    fn pointer(&self) -> Option<String> {
        match self {
            Self::Phone(_) => None,
            Self::Email(e) => Some(e.clone()),
            Self::Customer(id) => Some(crate::domain::cart::customer_ref(id)),
        }
    }
}

/// What a deletion came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    Done {
        id: String,
        counts: BTreeMap<String, u64>,
    },
    /// A legal hold: recorded, carried out when it lifts.
    Held {
        id: String,
    },
}

pub struct Privacy<'a, S, F> {
    pub store: &'a S,
    pub recordings: &'a F,
}

impl<S: PrivacyData, F: RecordingFiles> Privacy<'_, S, F> {
    /// The person's phones and carts: by phone directly; by email through the carts that carry it.
    async fn find(&self, m: &Merchant, subject: &Subject) -> Result<(Vec<Phone>, Vec<Cart>), PortError> {
        let mut phones: Vec<Phone> = Vec::new();
        let mut carts: Vec<Cart> = Vec::new();
        // Through the carts that carry the email or customer id.
        match (subject, subject.pointer()) {
            (Subject::Phone(p), _) => phones.push(p.clone()),
            (_, Some(e)) => {
                for (token, phone) in self.store.phones_for_email(&m.id, &e).await? {
                    if let Some(c) = self.store.get_cart(&m.id, &token).await? {
                        carts.push(c);
                    }
                    if let Some(p) = phone.filter(|p| !phones.contains(p)) {
                        phones.push(p);
                    }
                }
            }
            (_, None) => {}
        }
        for p in &phones {
            for c in self.store.carts_for_phone(&m.id, p).await? {
                if !carts.iter().any(|k| k.token == c.token) {
                    carts.push(c);
                }
            }
        }
        Ok((phones, carts))
    }

    /// One JSON document of everything held: carts, consent ledgers with their evidence, the
    /// SMS and call logs, and each recording as a link valid for an hour.
    pub async fn export(&self, m: &Merchant, subject: &Subject, now: DateTime<Utc>) -> Result<Value, PrivacyError> {
        let (phones, carts) = self.find(m, subject).await?;
        let mut people = Vec::new();
        for phone in &phones {
            let (mut consent, mut sms, mut calls, mut recordings, mut conversations) =
                (serde_json::Map::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut ledgers: BTreeMap<String, (Value, Vec<Value>)> = BTreeMap::new();
            for record in self.store.customer_records(&m.id, phone).await? {
                match record.data {
                    CustomerData::Sms(entry) => sms.push(serde_json::to_value(entry).unwrap_or_default()),
                    CustomerData::Conversation(c) => conversations.push(json!({
                        "call_sid": c.call_sid, "started_at": c.started_at, "outcome": c.outcome,
                        "tools_used": c.tools_used, "transcript": c.transcript,
                    })),
                    CustomerData::Call(call) => {
                        if let Some(key) = call.recording.as_ref().and_then(|r| r.s3_key.clone()) {
                            let url = self.recordings.presign_get(&key, LINK_VALID).await?;
                            recordings.push(json!({ "call_sid": call.call_sid, "url": url, "expires_at": now + chrono::Duration::seconds(LINK_VALID.as_secs() as i64) }));
                        }
                        calls.push(serde_json::to_value(call).unwrap_or_default());
                    }
                    CustomerData::ConsentEntry { channel, entry } => {
                        let entry = serde_json::to_value(entry).unwrap_or_default();
                        ledgers.entry(channel.as_str().to_string()).or_insert((Value::Null, Vec::new())).1.push(entry);
                    }
                    CustomerData::ConsentState { channel, state } => {
                        let state = serde_json::to_value(state).unwrap_or_default();
                        ledgers.entry(channel.as_str().to_string()).or_insert((Value::Null, Vec::new())).0 = state;
                    }
                    CustomerData::Unreadable(reason) => return Err(PortError::Decode(reason).into()),
                    CustomerData::Recording { .. } | CustomerData::Other => {}
                }
            }
            for (channel, (state, entries)) in ledgers {
                consent.insert(channel, json!({ "state": state, "entries": entries }));
            }
            people.push(json!({
                "phone": phone, "consent": consent, "sms_log": sms, "call_log": calls, "recordings": recordings,
                "conversations": conversations,
            }));
        }
        Ok(json!({
            "merchant": m.id,
            "subject": match subject {
                Subject::Phone(p) => json!({ "phone": p }),
                Subject::Email(e) => json!({ "email": e }),
                Subject::Customer(id) => json!({ "customer_id": id }),
            },
            "generated_at": now,
            "carts": carts,
            "phones": people,
        }))
    }

    /// Deletes everything held about the person, recordings included, and answers with counts;
    /// under a legal hold the request is recorded and carried out when the hold lifts.
    pub async fn delete(
        &self,
        record: &MerchantRecord,
        subject: &Subject,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Deletion, PrivacyError> {
        let m = &record.merchant;
        if record.legal_hold {
            let (phone, email, customer_id) = match subject {
                Subject::Phone(p) => (Some(p.clone()), None, None),
                Subject::Email(e) => (None, Some(e.clone()), None),
                Subject::Customer(c) => (None, None, Some(c.clone())),
            };
            let pending = PendingPrivacy {
                id: id.to_string(),
                action: "delete".into(),
                phone,
                email,
                customer_id,
                requested_at: now,
            };
            self.store.put_pending_privacy(&m.id, &pending, now).await?;
            let status = PrivacyStatus {
                id: id.into(),
                action: "delete".into(),
                status: "held".into(),
                export_key: None,
                counts: BTreeMap::new(),
                updated_at: now,
                provider_copies_pending: None,
            };
            self.store.put_privacy_status(&m.id, &status, Some(&subject.proof_id())).await?;
            info!(merchant = %m.id, id, "deletion recorded under a legal hold");
            return Ok(Deletion::Held { id: id.into() });
        }
        let counts = self.erase(m, subject, id, now).await?;
        let status = PrivacyStatus {
            id: id.into(),
            action: "delete".into(),
            status: "done".into(),
            export_key: None,
            counts: counts.clone(),
            updated_at: now,
            provider_copies_pending: None,
        };
        self.store.put_privacy_status(&m.id, &status, Some(&subject.proof_id())).await?;
        info!(merchant = %m.id, id, ?counts, "data-subject deletion done");
        Ok(Deletion::Done { id: id.into(), counts })
    }

    /// The deletion itself (request `request`): carts with their steps and pointers, each
    /// phone's partition, the recordings; a marker per subject (the request's, and each number,
    /// email and customer id on what it erases) so an opt-out outlives its data and no late copy
    /// of a checkout brings it back; and, recorded before the logs naming them go, the copies
    /// Twilio holds, for the worker to remove.
    pub async fn erase(
        &self,
        m: &Merchant,
        subject: &Subject,
        request: &str,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<String, u64>, PrivacyError> {
        // The markers first, then look again until nothing new turns up: from its marker on, a
        // subject's checkouts and opt-ins from before the deletion are refused (their write is
        // conditioned on the marker as read), and one committed before it is found by the next
        // look. Marked: the request's subject, and every number, email and customer id on the
        // carts found, so a late copy of one of them is refused whatever else it carries. The
        // marker's time covers every cart erased (a run's `now` may be behind a checkout it
        // erases: a copy of that checkout must still be refused), and never moves back.
        let mut marked: Vec<SubjectKey> = Vec::new();
        let mut at = now;
        let mut phones: Vec<Phone> = Vec::new();
        let mut wanted = vec![subject.key()];
        let carts = loop {
            let new: Vec<SubjectKey> = wanted.iter().filter(|k| !marked.contains(k)).cloned().collect();
            for key in new {
                self.store.put_deletion_marker(&m.id, &key, at).await?;
                marked.push(key);
            }
            let (found, carts) = self.find(m, subject).await?;
            for phone in found {
                if !phones.contains(&phone) {
                    phones.push(phone);
                }
            }
            wanted = marked.clone();
            wanted.extend(phones.iter().map(SubjectKey::phone));
            for cart in &carts {
                wanted.extend(SubjectKey::of_checkout(
                    cart.phone.as_ref(),
                    cart.email.as_deref(),
                    cart.customer_id.as_deref(),
                ));
            }
            wanted.sort();
            wanted.dedup();
            let latest = carts.iter().map(|c| c.updated_at).max().unwrap_or(at);
            if latest > at {
                // Marked again, later: each put only ever moves a marker forward.
                at = latest;
                marked.clear();
            }
            if wanted.iter().all(|k| marked.contains(k)) {
                break carts;
            }
        };
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut keys: Vec<ItemKey> = Vec::new();
        for cart in &carts {
            keys.extend(self.store.cart_keys(&m.id, cart).await?);
            *counts.entry(PurgeKind::Cart.as_str().into()).or_default() += 1;
        }
        if let Some(e) = subject.pointer() {
            let tokens: Vec<_> = self.store.phones_for_email(&m.id, &e).await?.into_iter().map(|(t, _)| t).collect();
            keys.extend(self.store.email_pointer_keys(&m.id, &e, &tokens));
        }
        let mut objects = Vec::new();
        let mut copies: Vec<ProviderCopy> = Vec::new();
        for phone in &phones {
            keys.extend(self.store.phone_pointer_keys(&m.id, phone).await?);
        }
        for phone in &phones {
            // The consent states first, each at the sequence read (`erase_states`); read again
            // while a STOP moves one meanwhile.
            let mut read = None;
            for _ in 0..STATE_READS {
                let records = self.store.customer_records(&m.id, phone).await?;
                if erase_states(self.store, &records).await? {
                    read = Some(records);
                    break;
                }
            }
            let Some(records) = read else { return Err(PortError::Conflict.into()) };
            for record in records {
                copies.extend(provider_copy(&record));
                match &record.data {
                    // Deleted above, conditionally: never again in the batch below.
                    CustomerData::ConsentState { .. } => {
                        *counts.entry(record.kind.as_str().into()).or_default() += 1;
                        continue;
                    }
                    CustomerData::Call(call) => {
                        if let Some(key) = call.recording.as_ref().and_then(|r| r.s3_key.clone()) {
                            objects.push(key);
                            *counts.entry(PurgeKind::Recording.as_str().into()).or_default() += 1;
                        }
                    }
                    CustomerData::Recording { s3_key: Some(key) } if !objects.contains(key) => {
                        objects.push(key.clone())
                    }
                    _ => {}
                }
                if record.kind != PurgeKind::Recording {
                    *counts.entry(record.kind.as_str().into()).or_default() += 1;
                }
                keys.push(record.key);
            }
        }
        // Export files made for this person (by the request's subject or any of their numbers).
        let mut subjects = vec![subject.proof_id()];
        subjects.extend(phones.iter().map(|p| Subject::Phone(p.clone()).proof_id()));
        subjects.dedup();
        for proof in &subjects {
            for key in self.store.export_keys_for(&m.id, proof).await? {
                if !objects.contains(&key) {
                    objects.push(key);
                    *counts.entry("export_file".into()).or_default() += 1;
                }
            }
        }
        copies.sort();
        copies.dedup();
        for c in &copies {
            *counts.entry(c.kind().into()).or_default() += 1;
        }
        // Twilio's copies are recorded before the logs naming them go: a crash in between
        // leaves them due for the purger, never forgotten.
        if !copies.is_empty() {
            self.store.put_provider_copies(&m.id, request, &copies, now + PROVIDER_RETRY_AFTER).await?;
        }
        // The recordings, then the items.
        self.recordings.delete_keys(&objects).await?;
        self.store.batch_delete(&keys).await?;
        Ok(counts)
    }
}

/// Reads of a partition (an erasure's page) whose consent state moved while it was being
/// erased, before giving up.
pub const STATE_READS: usize = 3;

/// Deletes the consent states among a partition's `records` before anything else of it, each
/// only at the sequence read with the rest, its opt-out kept first as a suppression record (for
/// ledgers from before those records). A STOP is never refused, not even during a deletion: an
/// append between the read and the delete moves the state on, and deleting it regardless would
/// leave the newer entries under no state, where a later append of that ledger would collide
/// with them for ever and the person's next STOP could never be recorded. `false` when a state
/// moved: nothing else of the partition may go until it is read again. One rule for every
/// erasure: a person's deletion, a shop's redaction and an account's closure. (After a state
/// goes, an append starts the ledger again from its suppression record, and waits until the
/// erasure has deleted the old entries it would overwrite.)
pub async fn erase_states<S: ConsentStore + PurgeStore>(
    store: &S,
    records: &[crate::ports::CustomerRecord],
) -> Result<bool, PortError> {
    for record in records {
        let CustomerData::ConsentState { state, .. } = &record.data else { continue };
        let (pk, sk) = &record.key;
        if let Some(sup) = state.suppression()
            && let Some((m, phone, channel, _)) = store.ledger_head(pk, sk).await?
        {
            match store.keep_suppression(&m, &phone, channel, &sup, state.seq).await {
                Ok(()) => {}
                // Contended (an append this very moment): read again, as for a moved state.
                Err(PortError::Conflict) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if !store.delete_state_at(pk, sk, state.seq).await? {
            info!(kind = "consent_state", "a ledger moved while it was being erased; read again");
            return Ok(false);
        }
    }
    Ok(true)
}

/// The copy Twilio holds of what a record stands for: a message's body (its SID), a call's
/// recording not yet deleted there. One rule for every erasure: a person's deletion, a shop's
/// redaction and an account's closure.
pub fn provider_copy(record: &crate::ports::CustomerRecord) -> Option<ProviderCopy> {
    match &record.data {
        CustomerData::Sms(entry) if !entry.message_sid.is_empty() => {
            Some(ProviderCopy::Message(entry.message_sid.clone()))
        }
        CustomerData::Call(call) => call
            .recording
            .as_ref()
            .filter(|r| !r.twilio_deleted && !r.recording_sid.is_empty())
            .map(|r| ProviderCopy::Recording(r.recording_sid.clone())),
        _ => None,
    }
}

/// A request's status, with what Twilio still holds of it read live (the worker crosses each
/// copy off as it goes).
pub async fn request_status<S: PrivacyStore>(
    store: &S,
    m: &crate::domain::ids::MerchantId,
    id: &str,
) -> Result<Option<PrivacyStatus>, PortError> {
    let Some(mut status) = store.privacy_status(m, id).await? else { return Ok(None) };
    let mut pending = BTreeMap::<String, u64>::new();
    for copy in store.provider_copies(m, id).await? {
        *pending.entry(copy.kind().to_string()).or_default() += 1;
    }
    if status.counts.keys().any(|k| k.starts_with("twilio_")) || !pending.is_empty() {
        status.provider_copies_pending = Some(pending);
    }
    Ok(Some(status))
}

/// What removing a request's provider copies came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopiesRemoved {
    pub removed: u64,
    /// Failed this time; still recorded, retried (the purger queues them again).
    pub pending: u64,
}

/// Removes the copies Twilio holds for a deletion request: message bodies redacted, recordings
/// deleted. Each one confirmed (or already gone) is crossed off; one that fails stays recorded
/// and is retried later, never skipped.
pub async fn remove_provider_copies<S: PrivacyStore, P: ProviderCopies>(
    store: &S,
    provider: &P,
    m: &crate::domain::ids::MerchantId,
    request: &str,
) -> Result<CopiesRemoved, PortError> {
    let mut out = CopiesRemoved::default();
    for copy in store.provider_copies(m, request).await? {
        let done = match &copy {
            ProviderCopy::Message(sid) => provider.redact_message(sid).await,
            ProviderCopy::Recording(sid) => provider.delete_recording(sid).await,
        };
        match done {
            Ok(_) => {
                store.provider_copy_removed(m, request, &copy).await?;
                out.removed += 1;
            }
            Err(e) => {
                tracing::warn!(merchant = %m, request, kind = copy.kind(), error = %crate::telemetry::redact(&e.to_string()), "a provider copy could not be removed; retried later");
                out.pending += 1;
            }
        }
    }
    if out.removed + out.pending > 0 {
        info!(merchant = %m, request, removed = out.removed, pending = out.pending, "provider copies");
    }
    Ok(out)
}

/// A new request id.
pub fn new_request_id() -> String {
    format!("dsr_{}", uuid::Uuid::new_v4().simple())
}

/// Whether a consent signal from a checkout predates a deletion of that phone's data: such an
/// old ticked box must not opt the person back in.
pub fn predates_deletion(deleted_at: Option<DateTime<Utc>>, occurred_at: DateTime<Utc>) -> bool {
    deleted_at.is_some_and(|d| occurred_at <= d)
}
