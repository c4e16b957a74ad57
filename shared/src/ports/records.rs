//! What the use cases hand the store and get back: plain data, no storage types. The adapter
//! maps each to its items (attribute names, keys) next to its queries.

use crate::domain::cart::Cart;
use crate::domain::consent::{ConsentEvent, ConsentState, LedgerEntry};
use crate::domain::ids::MerchantId;
use crate::domain::merchant::Channel;
use crate::domain::outreach::SmsLogEntry;
use crate::domain::phone::Phone;
use crate::domain::retention::PurgeKind;
use crate::domain::subject::SubjectKey;
use crate::domain::voice::CallLogEntry;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The address of one stored record (partition, sort key): opaque to the use cases, which only
/// pass it back to delete or re-date the record.
pub type ItemKey = (String, String);

/// A consent event to append on top of `state` (read beforehand, strongly consistent).
#[derive(Debug, Clone)]
pub struct ConsentAppend {
    pub merchant_id: MerchantId,
    pub phone: Phone,
    pub state: ConsentState,
    pub event: ConsentEvent,
    pub purge_at: DateTime<Utc>,
}

/// What an inbound message's log entry is written on, at one merchant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerGuard {
    /// Whatever a deletion did since: an opt-out, which outlives the person's data.
    Unconditional,
    /// Only while the sender's deletion marker there is as read (`None`: no marker).
    AsRead(Option<DateTime<Utc>>),
}

/// Everything one webhook delivery changes, written in one transaction with its dedupe marker.
#[derive(Debug, Clone)]
pub struct IngestWrite {
    pub merchant_id: MerchantId,
    /// `{source}#{event id}`, unique per platform delivery.
    pub event_key: String,
    pub received_at: DateTime<Utc>,
    /// The cart to store and the version it was read at (`None` = must not exist yet).
    pub cart: Option<(Cart, Option<u64>)>,
    /// Ledger appends (SMS, and calls where the checkout carries that consent too).
    pub consents: Vec<ConsentAppend>,
    /// Each data-subject deletion marker the checkout names (number, email, customer id), as read
    /// for this write (`None`: no deletion): the write applies only while every one is still so,
    /// so a deletion landing between the read and the write refuses it (a conflict) and the
    /// retry sees the marker.
    pub deletions_seen: Vec<(SubjectKey, Option<DateTime<Utc>>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    Applied,
    Duplicate,
}

/// How long an `Idempotency-Key` replays its answer: the use case's rule, and the store's TTL.
pub const IDEMPOTENCY_WINDOW_HOURS: i64 = 24;

/// The answer to a request made with an `Idempotency-Key`, replayed for its retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub request_sha256: String,
    pub status: u16,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

/// What a data-subject request asks for, stored while it waits (a legal hold, a platform's
/// request handled by the next purge run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPrivacy {
    pub id: String,
    /// `export` or `delete`.
    pub action: String,
    #[serde(default)]
    pub phone: Option<Phone>,
    #[serde(default)]
    pub email: Option<String>,
    /// The platform's customer id (Shopify `customers/redact`).
    #[serde(default)]
    pub customer_id: Option<String>,
    pub requested_at: DateTime<Utc>,
}

/// The status of a data-subject request, as `GET /v1/privacy/requests/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyStatus {
    pub id: String,
    pub action: String,
    /// `pending`, `held`, `done`.
    pub status: String,
    #[serde(default)]
    pub export_key: Option<String>,
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    pub updated_at: DateTime<Utc>,
    /// The provider's copies (Twilio messages and recordings) still to remove, per kind: read
    /// live from the store when the status is asked for, never stored with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_copies_pending: Option<BTreeMap<String, u64>>,
}

/// A copy the provider (Twilio) keeps of a person's data, removed when the person is deleted:
/// a message's body (redacted) or a recording (deleted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderCopy {
    Message(String),
    Recording(String),
}

impl ProviderCopy {
    /// The kind, as request statuses count it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Message(_) => "twilio_message",
            Self::Recording(_) => "twilio_recording",
        }
    }

    pub fn sid(&self) -> &str {
        match self {
            Self::Message(s) | Self::Recording(s) => s,
        }
    }
}

/// One record of a customer's partition, read back for an export or an erasure.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRecord {
    pub key: ItemKey,
    pub kind: PurgeKind,
    pub data: CustomerData,
}

/// What a customer record holds, as far as an export or an erasure needs to know.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomerData {
    Sms(Box<SmsLogEntry>),
    Call(Box<CallLogEntry>),
    ConsentEntry {
        channel: Channel,
        entry: Box<LedgerEntry>,
    },
    ConsentState {
        channel: Channel,
        state: Box<ConsentState>,
    },
    /// A voice agent conversation: the session and its transcript.
    Conversation(Box<crate::domain::agent::AgentSession>),
    /// A recording's own record (its S3 object, when known).
    Recording {
        s3_key: Option<String>,
    },
    /// Counters, markers and the rest: erased, not exported.
    Other,
    /// A record that could not be decoded: an erasure still deletes it by its key; an export
    /// fails rather than leave it out.
    Unreadable(String),
}

/// One item the purge index says is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueItem {
    pub pk: String,
    pub sk: String,
    pub purge_at: String,
    /// The merchant whose record it is, when the key names one.
    pub merchant: Option<String>,
    /// What else the purger needs from the item (S3 key, sequence, hash, cart token …).
    pub attrs: HashMap<String, String>,
}

impl DueItem {
    pub fn merchant(&self) -> Option<&str> {
        self.merchant.as_deref()
    }

    pub fn key(&self) -> ItemKey {
        (self.pk.clone(), self.sk.clone())
    }
}

/// Where a purge shard's next page starts: the last item read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeCursor {
    pub pk: String,
    pub sk: String,
    pub purge_at: String,
}

/// Where the next page of a merchant's `tenant` index entries starts: the index shard, and the
/// last entry read in it (none: the shard's start).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantCursor {
    pub shard: u32,
    pub after: Option<ItemKey>,
}

/// What an account-wide erasure removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erasure {
    /// A closed account after its grace period: everything, the profile last.
    Account,
    /// Shopify `shop/redact`: every customer's data; the account itself stays.
    CustomerData,
}

/// What a call status callback reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallUpdate<'a> {
    pub status: &'a str,
    pub duration_seconds: Option<u32>,
    pub answered_by: Option<&'a str>,
    pub error_code: Option<i64>,
}
