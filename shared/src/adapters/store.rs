//! DynamoDB adapter: one table, `pk`/`sk` strings (DESIGN.md §7).
//!
//! Layout:
//! - `M#{merchant}` / `PROFILE`                  merchant (GSI `lookup`: `SHOP#{domain}`)
//! - `K#{merchant}#{token}` / `CART`             cart (GSI `lookup`: `P#{merchant}#{phone}`)
//! - `K#{merchant}#{token}` / `STEP#{n}`         outreach step claim / outcome
//! - `X#{merchant}#{checkout id}` / `CHECKOUT`   platform checkout id → token
//! - `E#{merchant}#{source}#{id}` / `EVENT`      webhook dedupe (TTL `expires_at`)
//!
//! Carts, steps and dedupe markers get a partition each, so a large merchant's traffic spreads
//! over the table instead of heating one partition.
//! - `C#{merchant}#{phone}` / `CONSENT#{ch}`     consent state (head of the ledger)
//! - `C#{merchant}#{phone}` / `CONSENT#{ch}#{seq}` consent ledger entry
//! - `C#{merchant}#{phone}` / `SMS#OUT#{at}#{sid}` SMS log (GSI `lookup`: `SID#{sid}`)
//!
//! A customer's consent and SMS log share one partition, so export and deletion are one Query.
//! Items that retention purges carry `purge_bucket` (YYYY-MM) / `purge_at` for the sparse GSI.

use crate::domain::cart::Cart;
pub use crate::domain::consent::LedgerEntry;
use crate::domain::consent::{ConsentEvent, ConsentState, entry_hash};
use crate::domain::delivery::{Undeliverable, status_rank};
use crate::domain::flow::SkipReason;
use crate::domain::ids::{CartToken, MerchantId};
use crate::domain::merchant::{Channel, Merchant};
use crate::domain::phone::Phone;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use thiserror::Error;

pub const LOOKUP_INDEX: &str = "lookup";
pub const PURGE_INDEX: &str = "purge";
/// Shopify retries for 4 hours; a week covers every platform's redelivery.
pub const DEDUPE_TTL_DAYS: i64 = 7;
/// How long an `Idempotency-Key` replays its first answer.
pub const IDEMPOTENCY_TTL_HOURS: i64 = 24;

type Item = HashMap<String, AttributeValue>;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("DynamoDB {op} failed: {code}: {message}")]
    Aws { op: &'static str, code: String, message: String },
    #[error("stored item could not be decoded: {0}")]
    Decode(String),
    #[error("a concurrent write changed the item; retry")]
    Conflict,
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

fn aws<E, R>(op: &'static str, e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Aws {
        op,
        code: e.code().unwrap_or("unknown").to_string(),
        message: DisplayErrorContext(&e).to_string(),
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    item.get(key).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn to_item<T: Serialize>(value: &T) -> Result<Item, StoreError> {
    serde_dynamo::to_item(value).map_err(|e| StoreError::Decode(e.to_string()))
}

fn from_item<T: for<'de> Deserialize<'de>>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Decode(e.to_string()))
}

pub fn merchant_pk(m: &MerchantId) -> String {
    format!("M#{m}")
}

pub fn customer_pk(m: &MerchantId, phone: &Phone) -> String {
    format!("C#{m}#{}", phone.as_str())
}

fn cart_pk(m: &MerchantId, token: &CartToken) -> String {
    format!("K#{m}#{token}")
}

fn step_sk(step: u8) -> String {
    format!("STEP#{step}")
}

fn event_pk(m: &MerchantId, event_key: &str) -> String {
    format!("E#{m}#{event_key}")
}

fn checkout_pk(m: &MerchantId, checkout_id: &str) -> String {
    format!("X#{m}#{checkout_id}")
}

fn sender_pk(sender: &str) -> String {
    format!("S#{sender}")
}

/// What inbound messages to a merchant arrive addressed to: its number, Messaging Service, or
/// the number its calls come from (a person called may text STOP back to it).
fn sender_keys(m: &Merchant) -> Vec<String> {
    let mut keys: Vec<String> = m.sender.messaging_service_sid.iter().cloned().collect();
    keys.extend(m.sender.from.iter().chain(m.voice_from.iter()).map(|p| p.as_str().to_string()));
    keys.sort();
    keys.dedup();
    keys
}

fn consent_state_sk(channel: Channel) -> String {
    format!("CONSENT#{}", channel.as_str())
}

fn consent_entry_sk(channel: Channel, seq: u64) -> String {
    format!("CONSENT#{}#{seq:012}", channel.as_str())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MerchantStatus {
    Active,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantRecord {
    pub merchant: Merchant,
    pub status: MerchantStatus,
    pub api_key_sha256: Option<String>,
    pub legal_hold: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// A worker holds the step and may be calling Twilio.
    Claimed,
    /// Twilio failed in a way worth retrying; the next delivery may claim again.
    Retry,
    Sent,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub state: StepState,
    #[serde(default)]
    pub claim_id: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message_sid: Option<String>,
    #[serde(default)]
    pub error_code: Option<i64>,
    #[serde(default)]
    pub attempts: u32,
    /// Start of the first attempt whose outcome Twilio did not tell us.
    #[serde(default)]
    pub uncertain_since: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This worker holds the step. `uncertain` is set when an earlier attempt may have reached
    /// Twilio unanswered: the holder must look for that message before sending.
    Claimed { uncertain: Option<Uncertain> },
    /// Another delivery holds or finished this step.
    Taken(StepRecord),
}

/// An earlier attempt whose outcome Twilio did not tell us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncertain {
    pub since: DateTime<Utc>,
    /// SHA-256 of the body that attempt sent, to recognise it in Twilio's message list.
    pub body_sha256: Option<String>,
}

/// How a claimed step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    Sent {
        message_sid: String,
    },
    Failed {
        error_code: Option<i64>,
        reason: String,
    },
    /// Worth retrying; `uncertain` when Twilio may have accepted the message anyway.
    Retry {
        reason: String,
        uncertain: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outbound,
    Inbound,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsLogEntry {
    pub merchant_id: MerchantId,
    pub phone: Phone,
    pub direction: Direction,
    pub message_sid: String,
    pub body: String,
    pub status: String,
    #[serde(default)]
    pub cart_token: Option<CartToken>,
    #[serde(default)]
    pub step: Option<u8>,
    pub segments: u32,
    pub created_at: DateTime<Utc>,
    /// When retention purges it (merchant's `retention_days.sms_logs`).
    pub purge_at: DateTime<Utc>,
    /// Every status Twilio reported, with when we first heard it.
    #[serde(default)]
    pub status_history: BTreeMap<String, DateTime<Utc>>,
    #[serde(default)]
    pub error_code: Option<i64>,
}

impl SmsLogEntry {
    fn sk(&self) -> String {
        let dir = match self.direction {
            Direction::Outbound => "OUT",
            Direction::Inbound => "IN",
        };
        format!("SMS#{dir}#{}#{}", sort_time(self.created_at), self.message_sid)
    }
}

/// A consent event to append on top of `state` (read beforehand, strongly consistent).
#[derive(Debug, Clone)]
pub struct ConsentAppend {
    pub merchant_id: MerchantId,
    pub phone: Phone,
    pub state: ConsentState,
    pub event: ConsentEvent,
    pub purge_at: DateTime<Utc>,
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
    pub consent: Option<ConsentAppend>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    Applied,
    Duplicate,
}

/// The answer to a request made with an `Idempotency-Key`, replayed for its retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub request_sha256: String,
    pub status: u16,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    table: String,
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    fn key(pk: String, sk: String) -> Item {
        HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
    }

    async fn get(&self, pk: String, sk: String, op: &'static str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws(op, e))?;
        Ok(out.item)
    }

    /// An unconditional put: the item's last writer wins.
    async fn put_item(&self, item: Item) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| aws("PutItem", e))?;
        Ok(())
    }

    /// A conditional put; `false` when its condition did not hold (nothing was written).
    async fn put_unless_taken(&self, req: PutItemFluentBuilder) -> Result<bool, StoreError> {
        match req.table_name(&self.table).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(aws("PutItem", e)),
        }
    }

    async fn delete(&self, pk: String, sk: String) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .send()
            .await
            .map_err(|e| aws("DeleteItem", e))?;
        Ok(())
    }

    // ---- merchants ----

    /// Creates or replaces a merchant's profile, keeping its status, API key and legal hold.
    pub async fn put_merchant(&self, merchant: &Merchant, now: DateTime<Utc>) -> Result<(), StoreError> {
        merchant.validate().map_err(|e| StoreError::Invalid(e.to_string()))?;
        if let Some(domain) = &merchant.shop_domain
            && let Some(other) = self.merchant_by_shop_domain(domain).await?
            && other.merchant.id != merchant.id
        {
            return Err(StoreError::Invalid(format!(
                "shop_domain {domain} already belongs to merchant {}",
                other.merchant.id
            )));
        }
        let old = self.get_merchant(&merchant.id).await?;
        let profile = serde_json::to_string(merchant).map_err(|e| StoreError::Decode(e.to_string()))?;
        let mut update = "SET profile = :p, updated_at = :now, #st = if_not_exists(#st, :active), \
                          created_at = if_not_exists(created_at, :now), legal_hold = if_not_exists(legal_hold, :f)"
            .to_string();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(merchant_pk(&merchant.id), "PROFILE".into())))
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":p", s(profile))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .expression_attribute_values(":active", s("active"))
            .expression_attribute_values(":f", AttributeValue::Bool(false));
        match &merchant.shop_domain {
            Some(domain) => {
                update.push_str(", gsi1pk = :g, gsi1sk = :gs");
                req = req
                    .expression_attribute_values(":g", s(format!("SHOP#{domain}")))
                    .expression_attribute_values(":gs", s(merchant_pk(&merchant.id)));
            }
            None => update.push_str(" REMOVE gsi1pk, gsi1sk"),
        }
        req.update_expression(update).send().await.map_err(|e| aws("UpdateItem", e))?;
        self.sync_sender_index(merchant, old.as_ref().map(|r| &r.merchant)).await
    }

    fn decode_merchant(item: Item) -> Result<MerchantRecord, StoreError> {
        let profile = get_s(&item, "profile").ok_or_else(|| StoreError::Decode("merchant without profile".into()))?;
        let merchant: Merchant = serde_json::from_str(profile).map_err(|e| StoreError::Decode(e.to_string()))?;
        let status = match get_s(&item, "status") {
            Some("closed") => MerchantStatus::Closed,
            _ => MerchantStatus::Active,
        };
        Ok(MerchantRecord {
            merchant,
            status,
            api_key_sha256: get_s(&item, "api_key_sha256").map(str::to_string),
            legal_hold: item.get("legal_hold").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
        })
    }

    pub async fn get_merchant(&self, id: &MerchantId) -> Result<Option<MerchantRecord>, StoreError> {
        self.get(merchant_pk(id), "PROFILE".into(), "GetItem").await?.map(Self::decode_merchant).transpose()
    }

    pub async fn merchant_by_shop_domain(&self, domain: &str) -> Result<Option<MerchantRecord>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(LOOKUP_INDEX)
            .key_condition_expression("gsi1pk = :g")
            .expression_attribute_values(":g", s(format!("SHOP#{}", domain.to_ascii_lowercase())))
            .limit(2)
            .send()
            .await
            .map_err(|e| aws("Query", e))?;
        out.items.unwrap_or_default().into_iter().next().map(Self::decode_merchant).transpose()
    }

    /// Stores the SHA-256 of a new API key; the key itself is never stored.
    pub async fn set_api_key_hash(&self, id: &MerchantId, sha256_hex: &str) -> Result<(), StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(merchant_pk(id), "PROFILE".into())))
            .update_expression("SET api_key_sha256 = :h")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":h", s(sha256_hex))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(StoreError::NotFound(format!("merchant {id}")))
            }
            Err(e) => Err(aws("UpdateItem", e)),
        }
    }

    // ---- carts ----

    pub async fn get_cart(&self, m: &MerchantId, token: &CartToken) -> Result<Option<Cart>, StoreError> {
        self.get(cart_pk(m, token), "CART".into(), "GetItem").await?.map(from_item).transpose()
    }

    pub async fn cart_token_for_checkout(
        &self,
        m: &MerchantId,
        checkout_id: &str,
    ) -> Result<Option<CartToken>, StoreError> {
        let item = self.get(checkout_pk(m, checkout_id), "CHECKOUT".into(), "GetItem").await?;
        Ok(item.as_ref().and_then(|i| get_s(i, "cart_token")).and_then(|t| CartToken::parse(t).ok()))
    }

    fn cart_item(cart: &Cart) -> Result<Item, StoreError> {
        let mut item = to_item(cart)?;
        item.insert("pk".into(), s(cart_pk(&cart.merchant_id, &cart.token)));
        item.insert("sk".into(), s("CART"));
        if let Some(phone) = &cart.phone {
            item.insert("gsi1pk".into(), s(format!("P#{}#{}", cart.merchant_id, phone.as_str())));
            item.insert("gsi1sk".into(), s(format!("CART#{}", cart.token)));
        }
        Ok(item)
    }

    /// Writes one webhook delivery atomically: its dedupe marker, the cart, the checkout
    /// pointer and a consent append. A redelivery finds the marker and changes nothing.
    pub async fn write_ingest(&self, w: &IngestWrite) -> Result<IngestOutcome, StoreError> {
        let mut items = Vec::with_capacity(5);
        let mut dedupe = Self::key(event_pk(&w.merchant_id, &w.event_key), "EVENT".into());
        dedupe.insert("received_at".into(), s(w.received_at.to_rfc3339()));
        dedupe.insert("expires_at".into(), n((w.received_at + Duration::days(DEDUPE_TTL_DAYS)).timestamp()));
        items.push(put(&self.table, dedupe, Some("attribute_not_exists(pk)"), &[])?);

        if let Some((cart, expected)) = &w.cart {
            let item = Self::cart_item(cart)?;
            let tw = match expected {
                None => put(&self.table, item, Some("attribute_not_exists(pk)"), &[])?,
                Some(v) => put(&self.table, item, Some("version = :v"), &[(":v", n(v))])?,
            };
            items.push(tw);
            if let Some(id) = &cart.checkout_id {
                let mut ptr = Self::key(checkout_pk(&w.merchant_id, id), "CHECKOUT".into());
                ptr.insert("cart_token".into(), s(cart.token.as_str()));
                items.push(put(&self.table, ptr, None, &[])?);
            }
        }
        if let Some(c) = &w.consent {
            items.extend(self.consent_items(c)?.0);
        }
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(IngestOutcome::Applied),
            Err(e) => match cancellation_codes(&e) {
                Some(codes) if codes.first().is_some_and(|c| c == "ConditionalCheckFailed") => {
                    Ok(IngestOutcome::Duplicate)
                }
                Some(codes) if codes.iter().any(|c| c == "ConditionalCheckFailed" || c == "TransactionConflict") => {
                    Err(StoreError::Conflict)
                }
                _ => Err(aws("TransactWriteItems", e)),
            },
        }
    }

    /// Forgets a delivery so the platform's retry is processed again (after a later step failed).
    pub async fn forget_event(&self, m: &MerchantId, event_key: &str) -> Result<(), StoreError> {
        self.delete(event_pk(m, event_key), "EVENT".into()).await
    }

    pub async fn set_outreach_scheduled(
        &self,
        m: &MerchantId,
        token: &CartToken,
        scheduled: bool,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(cart_pk(m, token), "CART".into())))
            .update_expression("SET outreach_scheduled = :s, version = version + :one")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":s", AttributeValue::Bool(scheduled))
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| aws("UpdateItem", e))?;
        Ok(())
    }

    pub async fn set_last_message_at(
        &self,
        m: &MerchantId,
        token: &CartToken,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(cart_pk(m, token), "CART".into())))
            .update_expression("SET last_message_at = :t, version = version + :one")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", s(at.to_rfc3339()))
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| aws("UpdateItem", e))?;
        Ok(())
    }

    // ---- consent ----

    /// The two writes of an append (entry, new head), the entry and the state they leave.
    fn consent_items(
        &self,
        c: &ConsentAppend,
    ) -> Result<(Vec<TransactWriteItem>, LedgerEntry, ConsentState), StoreError> {
        let pk = customer_pk(&c.merchant_id, &c.phone);
        let channel = c.event.channel;
        let seq = c.state.seq + 1;
        let hash = entry_hash(c.state.head_hash.as_deref(), seq, &c.event);
        let entry =
            LedgerEntry { seq, hash: hash.clone(), prev_hash: c.state.head_hash.clone(), event: c.event.clone() };
        let mut entry_item = to_item(&entry)?;
        entry_item.insert("pk".into(), s(pk.clone()));
        entry_item.insert("sk".into(), s(consent_entry_sk(channel, seq)));
        entry_item.insert("purge_bucket".into(), s(c.purge_at.format("%Y-%m").to_string()));
        entry_item.insert("purge_at".into(), s(c.purge_at.to_rfc3339()));

        let next = c.state.after(&c.event, hash);
        let mut state_item = to_item(&next)?;
        state_item.insert("pk".into(), s(pk));
        state_item.insert("sk".into(), s(consent_state_sk(channel)));
        let state_put = if c.state.seq == 0 {
            put(&self.table, state_item, Some("attribute_not_exists(pk)"), &[])?
        } else {
            put(&self.table, state_item, Some("seq = :seq"), &[(":seq", n(c.state.seq))])?
        };
        Ok((vec![put(&self.table, entry_item, Some("attribute_not_exists(pk)"), &[])?, state_put], entry, next))
    }

    /// The current consent state, strongly consistent: every send re-checks it.
    pub async fn consent_state(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
    ) -> Result<ConsentState, StoreError> {
        match self.get(customer_pk(m, phone), consent_state_sk(channel), "GetItem").await? {
            Some(item) => from_item(item),
            None => Ok(ConsentState::default()),
        }
    }

    /// Appends one event on top of the state it was decided against.
    pub async fn append_consent(&self, c: &ConsentAppend) -> Result<ConsentState, StoreError> {
        let (items, _, next) = self.consent_items(c)?;
        self.transact_append(items).await?;
        Ok(next)
    }

    /// Appends, and stores the answer `answer` builds from the new entry under an idempotency
    /// key in the same transaction, so a retry replays exactly what this request was told.
    pub async fn append_consent_answered(
        &self,
        c: &ConsentAppend,
        idempotency_key: Option<&str>,
        answer: impl FnOnce(&LedgerEntry, &ConsentState) -> IdempotencyRecord,
    ) -> Result<IdempotencyRecord, StoreError> {
        let (mut items, entry, next) = self.consent_items(c)?;
        let record = answer(&entry, &next);
        if let Some(key) = idempotency_key {
            let item = self.idempotency_item(&c.merchant_id, key, &record)?;
            items.push(put(&self.table, item, Some("attribute_not_exists(pk)"), &[])?);
        }
        self.transact_append(items).await?;
        Ok(record)
    }

    async fn transact_append(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(()),
            Err(e) if cancellation_codes(&e).is_some() => Err(StoreError::Conflict),
            Err(e) => Err(aws("TransactWriteItems", e)),
        }
    }

    /// Appends `event` if the current state accepts it, re-reading on concurrent appends.
    /// Returns the new state, or `None` when the ledger already says this (or refuses it).
    pub async fn record_consent(
        &self,
        m: &MerchantId,
        phone: &Phone,
        event: &ConsentEvent,
        purge_at: DateTime<Utc>,
    ) -> Result<Option<ConsentState>, StoreError> {
        for _ in 0..4 {
            let state = self.consent_state(m, phone, event.channel).await?;
            if !state.accepts(event) {
                return Ok(None);
            }
            let append =
                ConsentAppend { merchant_id: m.clone(), phone: phone.clone(), state, event: event.clone(), purge_at };
            match self.append_consent(&append).await {
                Ok(next) => return Ok(Some(next)),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict)
    }

    // ---- idempotent API requests ----

    fn idempotency_pk(m: &MerchantId, key: &str) -> String {
        // The client's key is hashed: it is opaque to us and may hold any characters.
        format!("I#{m}#{}", crate::signature::sha256_hex(key.as_bytes()))
    }

    fn idempotency_item(&self, m: &MerchantId, key: &str, r: &IdempotencyRecord) -> Result<Item, StoreError> {
        let mut item = to_item(r)?;
        item.insert("pk".into(), s(Self::idempotency_pk(m, key)));
        item.insert("sk".into(), s("IDEMPOTENCY"));
        item.insert("expires_at".into(), n((r.created_at + Duration::hours(IDEMPOTENCY_TTL_HOURS)).timestamp()));
        Ok(item)
    }

    pub async fn get_idempotency(
        &self,
        m: &MerchantId,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let item = self.get(Self::idempotency_pk(m, key), "IDEMPOTENCY".into(), "GetItem").await?;
        // DynamoDB's TTL deletes late; an expired record no longer binds the key.
        let fresh = item.filter(|i| {
            i.get("expires_at")
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .is_none_or(|t| t > now.timestamp())
        });
        fresh.map(from_item).transpose()
    }

    /// Stores an answer; `false` when the key already holds one.
    pub async fn put_idempotency(
        &self,
        m: &MerchantId,
        key: &str,
        record: &IdempotencyRecord,
    ) -> Result<bool, StoreError> {
        let item = self.idempotency_item(m, key, record)?;
        self.put_unless_taken(
            self.client.put_item().set_item(Some(item)).condition_expression("attribute_not_exists(pk)"),
        )
        .await
    }

    /// The whole ledger of one channel, oldest first.
    pub async fn consent_ledger(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let items = self.query_prefix(customer_pk(m, phone), format!("CONSENT#{}#", channel.as_str())).await?;
        items.into_iter().map(from_item).collect()
    }

    async fn query_prefix(&self, pk: String, prefix: String) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":p", s(prefix))
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws("Query", e))?;
            out.extend(page.items.unwrap_or_default());
        }
        Ok(out)
    }

    // ---- outreach steps ----

    /// Claims (cart, step) before Twilio is called: the guard that makes sends at-most-once.
    pub async fn claim_step(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimOutcome, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(cart_pk(m, token), step_sk(step))))
            .update_expression(
                "SET #st = :claimed, claim_id = :c, body_sha256 = :h, updated_at = :now, \
                 attempts = if_not_exists(attempts, :zero) + :one",
            )
            .condition_expression("attribute_not_exists(pk) OR #st = :retry")
            .expression_attribute_names("#st", "state")
            .expression_attribute_values(":claimed", s("claimed"))
            .expression_attribute_values(":retry", s("retry"))
            .expression_attribute_values(":c", s(claim_id))
            .expression_attribute_values(":h", s(body_sha256))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => {
                let old = out.attributes.unwrap_or_default();
                let uncertain =
                    get_s(&old, "uncertain_since").and_then(|v| DateTime::parse_from_rfc3339(v).ok()).map(|since| {
                        Uncertain {
                            since: since.with_timezone(&Utc),
                            body_sha256: get_s(&old, "body_sha256").map(str::to_string),
                        }
                    });
                Ok(ClaimOutcome::Claimed { uncertain })
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                let record =
                    self.get_step(m, token, step).await?.ok_or_else(|| StoreError::NotFound("step claim".into()))?;
                Ok(ClaimOutcome::Taken(record))
            }
            Err(e) => Err(aws("UpdateItem", e)),
        }
    }

    pub async fn get_step(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
    ) -> Result<Option<StepRecord>, StoreError> {
        self.get(cart_pk(m, token), step_sk(step), "GetItem").await?.map(from_item).transpose()
    }

    /// Records how a claimed step ended; only the claim's holder may.
    pub async fn finish_step(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        result: &StepResult,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(cart_pk(m, token), step_sk(step))))
            .condition_expression("claim_id = :c AND #st = :claimed")
            .expression_attribute_names("#st", "state")
            .expression_attribute_values(":c", s(claim_id))
            .expression_attribute_values(":claimed", s("claimed"))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .return_values(ReturnValue::None);
        req = match result {
            StepResult::Sent { message_sid } => req
                .update_expression("SET #st = :s, message_sid = :sid, updated_at = :now")
                .expression_attribute_values(":s", s("sent"))
                .expression_attribute_values(":sid", s(message_sid)),
            StepResult::Failed { error_code, reason } => {
                let req =
                    req.expression_attribute_values(":s", s("failed")).expression_attribute_values(":r", s(reason));
                match error_code {
                    Some(code) => req
                        .update_expression("SET #st = :s, reason = :r, error_code = :e, updated_at = :now")
                        .expression_attribute_values(":e", n(code)),
                    None => req.update_expression("SET #st = :s, reason = :r, updated_at = :now"),
                }
            }
            StepResult::Retry { reason, uncertain } => {
                let req =
                    req.expression_attribute_values(":s", s("retry")).expression_attribute_values(":r", s(reason));
                if *uncertain {
                    req.update_expression(
                        "SET #st = :s, reason = :r, updated_at = :now, uncertain_since = if_not_exists(uncertain_since, :now)",
                    )
                } else {
                    req.update_expression("SET #st = :s, reason = :r, updated_at = :now")
                }
            }
        };
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(aws("UpdateItem", e)),
        }
    }

    /// Records why a step will never go out; first writer wins.
    pub async fn skip_step(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut item = Self::key(cart_pk(m, token), step_sk(step));
        item.insert("state".into(), s("skipped"));
        item.insert("reason".into(), s(reason));
        item.insert("attempts".into(), n(0));
        item.insert("updated_at".into(), s(now.to_rfc3339()));
        let req = self
            .client
            .put_item()
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR #st = :retry")
            .expression_attribute_names("#st", "state")
            .expression_attribute_values(":retry", s("retry"));
        self.put_unless_taken(req).await
    }

    // ---- SMS log ----

    fn sms_log_item(entry: &SmsLogEntry) -> Result<Item, StoreError> {
        let mut entry = entry.clone();
        entry.status_history.entry(entry.status.clone()).or_insert(entry.created_at);
        let mut item = to_item(&entry)?;
        item.insert("pk".into(), s(customer_pk(&entry.merchant_id, &entry.phone)));
        item.insert("sk".into(), s(entry.sk()));
        item.insert("status_rank".into(), n(status_rank(&entry.status)));
        item.insert("gsi1pk".into(), s(format!("SID#{}", entry.message_sid)));
        item.insert("gsi1sk".into(), s(customer_pk(&entry.merchant_id, &entry.phone)));
        item.insert("purge_bucket".into(), s(entry.purge_at.format("%Y-%m").to_string()));
        item.insert("purge_at".into(), s(entry.purge_at.to_rfc3339()));
        Ok(item)
    }

    pub async fn put_sms_log(&self, entry: &SmsLogEntry) -> Result<(), StoreError> {
        self.put_item(Self::sms_log_item(entry)?).await
    }

    /// Logs one inbound message under every merchant it reached, once: a redelivery of the same
    /// `MessageSid` returns `false` and writes nothing.
    pub async fn record_inbound(&self, entries: &[SmsLogEntry], now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut items = Vec::with_capacity(entries.len() * 2);
        for e in entries {
            let mut marker =
                Self::key(event_pk(&e.merchant_id, &format!("twilio-sms#{}", e.message_sid)), "EVENT".into());
            marker.insert("received_at".into(), s(now.to_rfc3339()));
            marker.insert("expires_at".into(), n((now + Duration::days(DEDUPE_TTL_DAYS)).timestamp()));
            items.push(put(&self.table, marker, Some("attribute_not_exists(pk)"), &[])?);
            items.push(put(&self.table, Self::sms_log_item(e)?, None, &[])?);
        }
        if items.is_empty() {
            return Ok(true);
        }
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(true),
            Err(e) => match cancellation_codes(&e) {
                Some(codes) if codes.iter().any(|c| c == "ConditionalCheckFailed") => Ok(false),
                Some(_) => Err(StoreError::Conflict),
                None => Err(aws("TransactWriteItems", e)),
            },
        }
    }

    /// Records a delivery report on a logged message. The history keeps every status once; the
    /// current status only moves forward, whatever order the callbacks arrive in.
    pub async fn update_sms_status(
        &self,
        entry: &SmsLogEntry,
        status: &str,
        error_code: Option<i64>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let key = Self::key(customer_pk(&entry.merchant_id, &entry.phone), entry.sk());
        let mut history = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key.clone()))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#s", status)
            .expression_attribute_values(":t", s(at.to_rfc3339()));
        history = match error_code {
            Some(code) => history
                .update_expression("SET status_history.#s = if_not_exists(status_history.#s, :t), error_code = :e")
                .expression_attribute_values(":e", n(code)),
            None => history.update_expression("SET status_history.#s = if_not_exists(status_history.#s, :t)"),
        };
        history.send().await.map_err(|e| aws("UpdateItem", e))?;
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET #st = :s, status_rank = :r")
            .condition_expression("attribute_not_exists(status_rank) OR status_rank < :r")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":s", s(status))
            .expression_attribute_values(":r", n(status_rank(status)))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(aws("UpdateItem", e)),
        }
    }

    // ---- reachability ----

    pub async fn mark_undeliverable(
        &self,
        m: &MerchantId,
        phone: &Phone,
        u: &Undeliverable,
        purge_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut item = to_item(u)?;
        item.insert("pk".into(), s(customer_pk(m, phone)));
        item.insert("sk".into(), s("REACH#sms"));
        item.insert("purge_bucket".into(), s(purge_at.format("%Y-%m").to_string()));
        item.insert("purge_at".into(), s(purge_at.to_rfc3339()));
        self.put_item(item).await
    }

    pub async fn undeliverable(&self, m: &MerchantId, phone: &Phone) -> Result<Option<Undeliverable>, StoreError> {
        self.get(customer_pk(m, phone), "REACH#sms".into(), "GetItem").await?.map(from_item).transpose()
    }

    // ---- senders ----

    /// The merchants whose SMS sender is one of `senders` (numbers or Messaging Service SIDs).
    pub async fn merchants_for_senders(&self, senders: &[&str]) -> Result<Vec<MerchantRecord>, StoreError> {
        let mut ids = std::collections::BTreeSet::new();
        for sender in senders.iter().filter(|s| !s.is_empty()) {
            for item in self.query_prefix(sender_pk(sender), "M#".into()).await? {
                if let Some(id) = get_s(&item, "merchant_id").and_then(|v| MerchantId::parse(v).ok()) {
                    ids.insert(id);
                }
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            // The index item may outlive a profile change by a moment; the profile decides.
            if let Some(record) = self.get_merchant(&id).await?
                && sender_keys(&record.merchant).iter().any(|k| senders.contains(&k.as_str()))
            {
                out.push(record);
            }
        }
        Ok(out)
    }

    async fn sync_sender_index(&self, merchant: &Merchant, old: Option<&Merchant>) -> Result<(), StoreError> {
        let new_keys = sender_keys(merchant);
        for key in &new_keys {
            let mut item = Self::key(sender_pk(key), merchant_pk(&merchant.id));
            item.insert("merchant_id".into(), s(merchant.id.as_str()));
            self.put_item(item).await?;
        }
        for key in old.map(sender_keys).unwrap_or_default().into_iter().filter(|k| !new_keys.contains(k)) {
            self.delete(sender_pk(&key), merchant_pk(&merchant.id)).await?;
        }
        Ok(())
    }

    // ---- cancelling outreach ----

    /// After an opt-out: skips every step of the merchant's flow not yet claimed on this phone's
    /// open carts, so queued jobs find the step taken. Returns how many steps were cancelled.
    pub async fn cancel_outreach(
        &self,
        merchant: &Merchant,
        phone: &Phone,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let m = &merchant.id;
        let (steps, reason) = (merchant.flow.len() as u8, SkipReason::OptedOut.as_str());
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(LOOKUP_INDEX)
            .key_condition_expression("gsi1pk = :g")
            .expression_attribute_values(":g", s(format!("P#{m}#{}", phone.as_str())))
            .into_paginator()
            .send();
        let mut tokens = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws("Query", e))?;
            tokens.extend(
                page.items
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|i| get_s(i, "token"))
                    .filter_map(|t| CartToken::parse(t).ok()),
            );
        }
        let mut cancelled = 0;
        for token in tokens {
            let Some(cart) = self.get_cart(m, &token).await? else { continue };
            if cart.status.is_closed() || !cart.outreach_scheduled {
                continue;
            }
            for step in 0..steps {
                if self.skip_step(m, &token, step, reason, now).await? {
                    cancelled += 1;
                }
            }
        }
        Ok(cancelled)
    }
    pub async fn sms_log(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<SmsLogEntry>, StoreError> {
        self.query_prefix(customer_pk(m, phone), "SMS#".into()).await?.into_iter().map(from_item).collect()
    }

    pub async fn sms_by_sid(&self, sid: &str) -> Result<Option<SmsLogEntry>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(LOOKUP_INDEX)
            .key_condition_expression("gsi1pk = :g")
            .expression_attribute_values(":g", s(format!("SID#{sid}")))
            .limit(1)
            .send()
            .await
            .map_err(|e| aws("Query", e))?;
        out.items.unwrap_or_default().into_iter().next().map(from_item).transpose()
    }

    /// One outbound message, read strongly consistent from the customer's partition: for a
    /// delivery report that arrives before the `SID#` index has caught up.
    pub async fn outbound_sms(
        &self,
        m: &MerchantId,
        phone: &Phone,
        sid: &str,
    ) -> Result<Option<SmsLogEntry>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .filter_expression("message_sid = :sid")
            .expression_attribute_values(":pk", s(customer_pk(m, phone)))
            .expression_attribute_values(":p", s("SMS#OUT#"))
            .expression_attribute_values(":sid", s(sid))
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws("Query", e))?;
            if let Some(item) = page.items.unwrap_or_default().into_iter().next() {
                return from_item(item).map(Some);
            }
        }
        Ok(None)
    }

    /// Messages this merchant sent this phone at or after `since`, oldest first (frequency cap).
    pub async fn outbound_since(
        &self,
        m: &MerchantId,
        phone: &Phone,
        since: DateTime<Utc>,
    ) -> Result<Vec<SmsLogEntry>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(customer_pk(m, phone)))
            .expression_attribute_values(":from", s(format!("SMS#OUT#{}", sort_time(since))))
            .expression_attribute_values(":to", s("SMS#OUT#~"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws("Query", e))?;
        out.items.unwrap_or_default().into_iter().map(from_item).collect()
    }

    /// Whether this merchant has ever texted this phone (the first message introduces itself).
    pub async fn has_outbound_sms(&self, m: &MerchantId, phone: &Phone) -> Result<bool, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(customer_pk(m, phone)))
            .expression_attribute_values(":p", s("SMS#OUT#"))
            .consistent_read(true)
            .limit(1)
            .send()
            .await
            .map_err(|e| aws("Query", e))?;
        Ok(out.count > 0)
    }
}

/// Fixed-width UTC time, so sort keys order as time does.
fn sort_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn put(
    table: &str,
    item: Item,
    condition: Option<&str>,
    values: &[(&str, AttributeValue)],
) -> Result<TransactWriteItem, StoreError> {
    let mut p = Put::builder().table_name(table).set_item(Some(item));
    if let Some(c) = condition {
        p = p.condition_expression(c);
    }
    for (k, v) in values {
        p = p.expression_attribute_values(*k, v.clone());
    }
    let p = p.build().map_err(|e| StoreError::Invalid(e.to_string()))?;
    Ok(TransactWriteItem::builder().put(p).build())
}

/// The per-item reasons of a cancelled transaction, if that is what failed.
fn cancellation_codes<R>(
    e: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Option<Vec<String>> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    match e.as_service_error()? {
        E::TransactionCanceledException(c) => {
            Some(c.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None").to_string()).collect())
        }
        _ => None,
    }
}
