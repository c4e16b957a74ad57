//! DynamoDB adapter: one table, `pk`/`sk` strings (DESIGN.md §7). The layout is in `keys`.
//! Every Query goes through `query_all`, which follows `LastEvaluatedKey` to the end.

pub mod keys;

use crate::app::ingest::{PlatformRequest, request_kind};
use crate::domain::cart::Cart;
pub use crate::domain::consent::LedgerEntry;
use crate::domain::consent::{ConsentEvent, ConsentState, ConsentStatus, entry_hash};
use crate::domain::delivery::{Undeliverable, status_rank};
use crate::domain::flow::SkipReason;
use crate::domain::ids::{CartToken, MerchantId};
use crate::domain::merchant::{Channel, Merchant};
use crate::domain::outreach::{
    ClaimGuard, ClaimOutcome, CountedSend, MerchantRecord, MerchantStatus, SendCounter, SmsLogEntry, StepAvailability,
    StepRecord, StepResult, StepState, lease_until,
};
use crate::domain::phone::Phone;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update};
use chrono::{DateTime, Duration, Utc};
use keys::attr;
pub use keys::{LOOKUP_INDEX, PURGE_INDEX, customer_pk, merchant_pk};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use thiserror::Error;

/// Shopify retries for 4 hours; a week covers every platform's redelivery.
pub const DEDUPE_TTL_DAYS: i64 = 7;
/// How long an `Idempotency-Key` replays its first answer.
pub const IDEMPOTENCY_TTL_HOURS: i64 = 24;
/// DynamoDB's limit on the items of one transaction.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

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

fn key(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([(attr::PK.to_string(), s(pk)), (attr::SK.to_string(), s(sk))])
}

fn with_purge(mut item: Item, purge_at: DateTime<Utc>) -> Item {
    item.insert(attr::PURGE_BUCKET.into(), s(keys::purge_bucket(purge_at)));
    item.insert(attr::PURGE_AT.into(), s(purge_at.to_rfc3339()));
    item
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

/// How a transaction ended, item by item.
enum TxOutcome {
    Done,
    /// Cancelled: the reason code of each item, in order ("None" where it was not the cause).
    Cancelled(Vec<String>),
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

/// A platform request as stored: its kind (`data_request`, `customer_redact`, `shop_redact`,
/// `app_uninstalled`) and, for privacy requests, whom it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRequest {
    pub kind: String,
    #[serde(default)]
    pub privacy: Option<crate::platforms::PrivacyRequest>,
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

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn get(&self, pk: String, sk: impl Into<String>, op: &'static str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
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

    async fn delete(&self, pk: String, sk: impl Into<String>) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .send()
            .await
            .map_err(|e| aws("DeleteItem", e))?;
        Ok(())
    }

    /// Every item a Query matches, following `LastEvaluatedKey` page after page.
    async fn query_all(&self, query: QueryFluentBuilder) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut pages = query.table_name(&self.table).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws("Query", e))?;
            out.extend(page.items.unwrap_or_default());
        }
        Ok(out)
    }

    /// The items of one partition whose sort key starts with `prefix`, strongly consistent.
    async fn query_prefix(&self, pk: String, prefix: impl Into<String>) -> Result<Vec<Item>, StoreError> {
        self.query_all(
            self.client
                .query()
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :p)")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#sk", attr::SK)
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":p", s(prefix))
                .consistent_read(true),
        )
        .await
    }

    /// The items of the `lookup` GSI under one key.
    async fn query_lookup(&self, gsi1pk: String) -> Result<Vec<Item>, StoreError> {
        self.query_all(
            self.client
                .query()
                .index_name(LOOKUP_INDEX)
                .key_condition_expression("#g = :g")
                .expression_attribute_names("#g", attr::GSI1PK)
                .expression_attribute_values(":g", s(gsi1pk)),
        )
        .await
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<TxOutcome, StoreError> {
        if items.len() > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::Invalid(format!("{} items exceed one transaction", items.len())));
        }
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(TxOutcome::Done),
            Err(e) => match cancellation_codes(&e) {
                Some(codes) => Ok(TxOutcome::Cancelled(codes)),
                None => Err(aws("TransactWriteItems", e)),
            },
        }
    }

    // ---- merchants ----

    /// Creates or replaces a merchant's profile, keeping its status, API key and legal hold.
    /// The shop domain is claimed by a conditional write in the same transaction, so two
    /// merchants can never own one shop, however their writes interleave.
    pub async fn put_merchant(&self, merchant: &Merchant, now: DateTime<Utc>) -> Result<(), StoreError> {
        merchant.validate().map_err(|e| StoreError::Invalid(e.to_string()))?;
        let old = self.get_merchant(&merchant.id).await?;
        let profile = serde_json::to_string(merchant).map_err(|e| StoreError::Decode(e.to_string()))?;
        let mut update = "SET profile = :p, updated_at = :now, #st = if_not_exists(#st, :active), \
                          created_at = if_not_exists(created_at, :now), legal_hold = if_not_exists(legal_hold, :f)"
            .to_string();
        let mut profile_update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(merchant_pk(&merchant.id), keys::PROFILE)))
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_values(":p", s(profile))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .expression_attribute_values(":active", s(MerchantStatus::Active.as_str()))
            .expression_attribute_values(":f", AttributeValue::Bool(false));
        let domain = merchant.shop_domain.as_deref().map(str::to_ascii_lowercase);
        match &domain {
            Some(d) => {
                update.push_str(", #g = :g, #gs = :gs");
                profile_update = profile_update
                    .expression_attribute_names("#g", attr::GSI1PK)
                    .expression_attribute_names("#gs", attr::GSI1SK)
                    .expression_attribute_values(":g", s(keys::shop_lookup(d)))
                    .expression_attribute_values(":gs", s(merchant_pk(&merchant.id)));
            }
            None => {
                update.push_str(" REMOVE #g, #gs");
                profile_update = profile_update
                    .expression_attribute_names("#g", attr::GSI1PK)
                    .expression_attribute_names("#gs", attr::GSI1SK);
            }
        }
        let mut items =
            vec![TransactWriteItem::builder().update(built(profile_update.update_expression(update).build())?).build()];
        if let Some(d) = &domain {
            let mut owner = key(keys::shop_owner_pk(d), keys::OWNER);
            owner.insert(attr::MERCHANT_ID.into(), s(merchant.id.as_str()));
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(owner))
                .condition_expression("attribute_not_exists(#pk) OR #m = :m")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#m", attr::MERCHANT_ID)
                .expression_attribute_values(":m", s(merchant.id.as_str()));
            items.push(TransactWriteItem::builder().put(built(put.build())?).build());
        }
        let old_domain = old.as_ref().and_then(|r| r.merchant.shop_domain.as_deref()).map(str::to_ascii_lowercase);
        if let Some(od) = old_domain.filter(|od| Some(od) != domain.as_ref()) {
            let del = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(keys::shop_owner_pk(&od), keys::OWNER)))
                .condition_expression("attribute_not_exists(#pk) OR #m = :m")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#m", attr::MERCHANT_ID)
                .expression_attribute_values(":m", s(merchant.id.as_str()));
            items.push(TransactWriteItem::builder().delete(built(del.build())?).build());
        }
        if let TxOutcome::Cancelled(codes) = self.transact(items).await? {
            if codes.iter().any(|c| c == "ConditionalCheckFailed") {
                let owner = match &domain {
                    Some(d) => self.shop_owner(d).await?.map(|m| m.to_string()).unwrap_or_default(),
                    None => String::new(),
                };
                return Err(StoreError::Invalid(format!(
                    "shop_domain {} already belongs to merchant {owner}",
                    domain.unwrap_or_default()
                )));
            }
            return Err(StoreError::Conflict);
        }
        self.sync_sender_index(merchant, old.as_ref().map(|r| &r.merchant)).await
    }

    fn decode_merchant(item: Item) -> Result<MerchantRecord, StoreError> {
        let profile = get_s(&item, "profile").ok_or_else(|| StoreError::Decode("merchant without profile".into()))?;
        let merchant: Merchant = serde_json::from_str(profile).map_err(|e| StoreError::Decode(e.to_string()))?;
        let status = match get_s(&item, attr::STATUS) {
            Some(v) if v == MerchantStatus::Closed.as_str() => MerchantStatus::Closed,
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
        self.get(merchant_pk(id), keys::PROFILE, "GetItem").await?.map(Self::decode_merchant).transpose()
    }

    async fn shop_owner(&self, domain: &str) -> Result<Option<MerchantId>, StoreError> {
        let item = self.get(keys::shop_owner_pk(domain), keys::OWNER, "GetItem").await?;
        Ok(item.as_ref().and_then(|i| get_s(i, attr::MERCHANT_ID)).and_then(|m| MerchantId::parse(m).ok()))
    }

    /// The merchant that owns a shop domain: one strongly consistent read of the ownership
    /// item, then the profile (which must still name the domain).
    pub async fn merchant_by_shop_domain(&self, domain: &str) -> Result<Option<MerchantRecord>, StoreError> {
        let Some(id) = self.shop_owner(domain).await? else { return Ok(None) };
        let record = self.get_merchant(&id).await?;
        Ok(record.filter(|r| r.merchant.shop_domain.as_deref().is_some_and(|d| d.eq_ignore_ascii_case(domain))))
    }

    /// Stores the SHA-256 of a new API key; the key itself is never stored.
    pub async fn set_api_key_hash(&self, id: &MerchantId, sha256_hex: &str) -> Result<(), StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(merchant_pk(id), keys::PROFILE)))
            .update_expression("SET api_key_sha256 = :h")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
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

    /// Sets a merchant's status (closing stops outreach: every claim checks it).
    pub async fn set_merchant_status(&self, id: &MerchantId, status: MerchantStatus) -> Result<(), StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(merchant_pk(id), keys::PROFILE)))
            .update_expression("SET #st = :s")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_values(":s", s(status.as_str()))
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
        self.get(keys::cart_pk(m, token), keys::CART, "GetItem").await?.map(from_item).transpose()
    }

    pub async fn cart_token_for_checkout(
        &self,
        m: &MerchantId,
        checkout_id: &str,
    ) -> Result<Option<CartToken>, StoreError> {
        let item = self.get(keys::checkout_pk(m, checkout_id), keys::CHECKOUT, "GetItem").await?;
        Ok(item.as_ref().and_then(|i| get_s(i, "cart_token")).and_then(|t| CartToken::parse(t).ok()))
    }

    fn cart_item(cart: &Cart) -> Result<Item, StoreError> {
        let mut item = to_item(cart)?;
        item.insert(attr::PK.into(), s(keys::cart_pk(&cart.merchant_id, &cart.token)));
        item.insert(attr::SK.into(), s(keys::CART));
        if let Some(phone) = &cart.phone {
            item.insert(attr::GSI1PK.into(), s(keys::phone_lookup(&cart.merchant_id, phone)));
            item.insert(attr::GSI1SK.into(), s(keys::cart_lookup_sk(&cart.token)));
        }
        Ok(item)
    }

    fn dedupe_marker(
        &self,
        m: &MerchantId,
        event_key: &str,
        at: DateTime<Utc>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut marker = key(keys::event_pk(m, event_key), keys::EVENT);
        marker.insert("received_at".into(), s(at.to_rfc3339()));
        marker.insert(attr::EXPIRES_AT.into(), n((at + Duration::days(DEDUPE_TTL_DAYS)).timestamp()));
        self.put_new(marker)
    }

    /// A put that only creates.
    fn put_new(&self, item: Item) -> Result<TransactWriteItem, StoreError> {
        put(&self.table, item, Some("attribute_not_exists(#pk)"), &[("#pk", attr::PK)], &[])
    }

    /// Writes one webhook delivery atomically: its dedupe marker, the cart, the checkout
    /// pointer and a consent append. A redelivery finds the marker and changes nothing.
    pub async fn write_ingest(&self, w: &IngestWrite) -> Result<IngestOutcome, StoreError> {
        let mut items = Vec::with_capacity(5);
        items.push(self.dedupe_marker(&w.merchant_id, &w.event_key, w.received_at)?);

        if let Some((cart, expected)) = &w.cart {
            let item = Self::cart_item(cart)?;
            let tw = match expected {
                None => self.put_new(item)?,
                Some(v) => put(&self.table, item, Some("#v = :v"), &[("#v", attr::VERSION)], &[(":v", n(v))])?,
            };
            items.push(tw);
            if let Some(id) = &cart.checkout_id {
                let mut ptr = key(keys::checkout_pk(&w.merchant_id, id), keys::CHECKOUT);
                ptr.insert("cart_token".into(), s(cart.token.as_str()));
                items.push(put(&self.table, ptr, None, &[], &[])?);
            }
        }
        if let Some(c) = &w.consent {
            items.extend(self.consent_items(c)?.0);
        }
        match self.transact(items).await? {
            TxOutcome::Done => Ok(IngestOutcome::Applied),
            TxOutcome::Cancelled(codes) if codes.first().is_some_and(|c| c == "ConditionalCheckFailed") => {
                Ok(IngestOutcome::Duplicate)
            }
            TxOutcome::Cancelled(_) => Err(StoreError::Conflict),
        }
    }

    /// Forgets a delivery so the platform's retry is processed again (after a later step failed).
    pub async fn forget_event(&self, m: &MerchantId, event_key: &str) -> Result<(), StoreError> {
        self.delete(keys::event_pk(m, event_key), keys::EVENT).await
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
            .set_key(Some(key(keys::cart_pk(m, token), keys::CART)))
            .update_expression("SET outreach_scheduled = :s, #v = #v + :one")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#v", attr::VERSION)
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
            .set_key(Some(key(keys::cart_pk(m, token), keys::CART)))
            .update_expression("SET last_message_at = :t, #v = #v + :one")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_values(":t", s(at.to_rfc3339()))
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| aws("UpdateItem", e))?;
        Ok(())
    }

    // ---- platform requests ----

    /// Stores a privacy request or an uninstall with its delivery's dedupe marker; `false` for
    /// a redelivery. Kept as `pending` until the privacy or account use case carries it out.
    pub async fn record_platform_request(
        &self,
        merchant: &Merchant,
        event_key: &str,
        request: &PlatformRequest,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let stored = match request {
            PlatformRequest::Privacy(p) => {
                StoredRequest { kind: request_kind(request).into(), privacy: Some(p.clone()) }
            }
            PlatformRequest::AppUninstalled => StoredRequest { kind: request_kind(request).into(), privacy: None },
        };
        let mut item = to_item(&stored)?;
        item.insert(attr::PK.into(), s(keys::request_pk(&merchant.id)));
        item.insert(attr::SK.into(), s(keys::request_sk(now, event_key)));
        item.insert("event_key".into(), s(event_key));
        item.insert("received_at".into(), s(now.to_rfc3339()));
        item.insert(attr::STATUS.into(), s("pending"));
        // The request names a customer: it lives as long as the merchant's consent records.
        let purge_at = now + Duration::days(i64::from(merchant.retention_days.consent_records));
        let items = vec![self.dedupe_marker(&merchant.id, event_key, now)?, self.put_new(with_purge(item, purge_at))?];
        match self.transact(items).await? {
            TxOutcome::Done => Ok(true),
            TxOutcome::Cancelled(codes) if codes.first().is_some_and(|c| c == "ConditionalCheckFailed") => Ok(false),
            TxOutcome::Cancelled(_) => Err(StoreError::Conflict),
        }
    }

    /// A merchant's stored platform requests, oldest first.
    pub async fn platform_requests(&self, m: &MerchantId) -> Result<Vec<StoredRequest>, StoreError> {
        self.query_prefix(keys::request_pk(m), keys::REQUEST_PREFIX).await?.into_iter().map(from_item).collect()
    }

    // ---- outreach steps ----

    pub async fn get_step(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
    ) -> Result<Option<StepRecord>, StoreError> {
        self.get(keys::cart_pk(m, token), keys::step_sk(step), "GetItem").await?.map(from_item).transpose()
    }

    /// The per-phone send counter, strongly consistent (version 0 when there is none).
    pub async fn send_counter(&self, m: &MerchantId, phone: &Phone) -> Result<SendCounter, StoreError> {
        match self.get(customer_pk(m, phone), keys::FREQ, "GetItem").await? {
            Some(item) => from_item(item),
            None => Ok(SendCounter::default()),
        }
    }

    /// The step update of a claim: condition and values for "taken by `claim_id` until the lease
    /// ends", over the record as it was read.
    fn claim_update(
        &self,
        (m, token, step): (&MerchantId, &CartToken, u8),
        seen: &StepAvailability,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Update>, StoreError> {
        let mut set = "SET #st = :claimed, #cid = :c, body_sha256 = :h, updated_at = :now, #lease = :lease, \
                       #att = if_not_exists(#att, :zero) + :one"
            .to_string();
        let mut u = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(keys::cart_pk(m, token), keys::step_sk(step))))
            .expression_attribute_names("#st", attr::STATE)
            .expression_attribute_names("#cid", attr::CLAIM_ID)
            .expression_attribute_names("#lease", attr::LEASE_UNTIL)
            .expression_attribute_names("#att", attr::ATTEMPTS)
            .expression_attribute_values(":claimed", s(StepState::Claimed.as_str()))
            .expression_attribute_values(":c", s(claim_id))
            .expression_attribute_values(":h", s(body_sha256))
            .expression_attribute_values(":now", s(keys::sort_time(now)))
            .expression_attribute_values(":lease", s(keys::sort_time(lease_until(now))))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1));
        let condition = match seen {
            StepAvailability::Fresh => {
                u = u.expression_attribute_names("#pk", attr::PK);
                "attribute_not_exists(#pk)".to_string()
            }
            StepAvailability::Reclaimable { attempts, expired_claim, uncertain } => {
                u = u.expression_attribute_values(":a", n(attempts));
                if let Some(un) = uncertain {
                    // The first unanswered attempt stays on record until the outcome is known.
                    set.push_str(", uncertain_since = if_not_exists(uncertain_since, :since)");
                    u = u.expression_attribute_values(":since", s(keys::sort_time(un.since)));
                }
                if *expired_claim {
                    "#st = :claimed AND #att = :a AND #lease <= :now".to_string()
                } else {
                    u = u.expression_attribute_values(":retry", s(StepState::Retry.as_str()));
                    "#st = :retry AND #att = :a".to_string()
                }
            }
            StepAvailability::Taken(_) => return Ok(None),
        };
        Ok(Some(built(u.update_expression(set).condition_expression(condition).build())?))
    }

    /// Claims (cart, step) on the step alone: the exclusivity primitive. The worker claims
    /// through `claim`, which adds every other condition its decision read.
    pub async fn claim_step(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimOutcome, StoreError> {
        let record = self.get_step(m, token, step).await?;
        let seen = StepRecord::availability(record.as_ref(), now);
        let uncertain = match &seen {
            StepAvailability::Reclaimable { uncertain, .. } => uncertain.clone(),
            _ => None,
        };
        let Some(update) = self.claim_update((m, token, step), &seen, claim_id, body_sha256, now)? else {
            return Ok(ClaimOutcome::Taken(record.ok_or_else(|| StoreError::NotFound("step claim".into()))?));
        };
        match self.transact(vec![TransactWriteItem::builder().update(update).build()]).await? {
            TxOutcome::Done => Ok(ClaimOutcome::Claimed { uncertain }),
            TxOutcome::Cancelled(_) => {
                let record =
                    self.get_step(m, token, step).await?.ok_or_else(|| StoreError::NotFound("step claim".into()))?;
                Ok(ClaimOutcome::Taken(record))
            }
        }
    }

    /// The claim before a send, in one transaction conditioned on everything the decision read:
    /// the step as read, the cart's version (open at that version), the channel's consent state
    /// (opted in at that sequence), the merchant's status (active) and the phone's send counter
    /// (at its version, which the claim bumps). Anything acknowledged before it makes it fail.
    pub async fn claim(
        &self,
        guard: &ClaimGuard,
        claim_id: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimOutcome, StoreError> {
        let (m, token, step) = (&guard.merchant_id, &guard.cart, guard.step);
        let uncertain = match &guard.step_seen {
            StepAvailability::Reclaimable { uncertain, .. } => uncertain.clone(),
            StepAvailability::Taken(r) => return Ok(ClaimOutcome::Taken(r.clone())),
            StepAvailability::Fresh => None,
        };
        let Some(step_update) = self.claim_update((m, token, step), &guard.step_seen, claim_id, body_sha256, now)?
        else {
            return Ok(ClaimOutcome::Stale);
        };
        let cart_check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(keys::cart_pk(m, token), keys::CART)))
            .condition_expression("#v = :v AND #st = :open")
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_values(":v", n(guard.cart_version))
            .expression_attribute_values(":open", s("open"));
        let consent_check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(customer_pk(m, &guard.phone), keys::consent_state_sk(guard.channel))))
            .condition_expression("#seq = :seq AND #st = :in")
            .expression_attribute_names("#seq", attr::SEQ)
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_values(":seq", n(guard.consent_seq))
            .expression_attribute_values(":in", s(consent_status_str(ConsentStatus::OptedIn)));
        let merchant_check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(merchant_pk(m), keys::PROFILE)))
            .condition_expression("#st = :active")
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_values(":active", s(MerchantStatus::Active.as_str()));
        let counter = self.counter_put(guard, &guard.counter.with_claim(token, step, now), now)?;
        let items = vec![
            TransactWriteItem::builder().update(step_update).build(),
            TransactWriteItem::builder().condition_check(built(cart_check.build())?).build(),
            TransactWriteItem::builder().condition_check(built(consent_check.build())?).build(),
            TransactWriteItem::builder().condition_check(built(merchant_check.build())?).build(),
            counter,
        ];
        match self.transact(items).await? {
            TxOutcome::Done => Ok(ClaimOutcome::Claimed { uncertain }),
            TxOutcome::Cancelled(codes) => {
                if codes.first().is_some_and(|c| c == "ConditionalCheckFailed") {
                    // The step itself moved on: someone else holds or finished it.
                    if let Some(record) = self.get_step(m, token, step).await?
                        && matches!(StepRecord::availability(Some(&record), now), StepAvailability::Taken(_))
                    {
                        return Ok(ClaimOutcome::Taken(record));
                    }
                }
                Ok(ClaimOutcome::Stale)
            }
        }
    }

    /// The counter item after a claim, conditioned on the version the decision read.
    fn counter_put(
        &self,
        guard: &ClaimGuard,
        sends: &[CountedSend],
        now: DateTime<Utc>,
    ) -> Result<TransactWriteItem, StoreError> {
        let next = SendCounter { version: guard.counter.version + 1, sends: sends.to_vec() };
        let mut item = to_item(&next)?;
        item.insert(attr::PK.into(), s(customer_pk(&guard.merchant_id, &guard.phone)));
        item.insert(attr::SK.into(), s(keys::FREQ));
        // The counter only matters for a day; it is purged with the customer's other data.
        let item = with_purge(item, now + Duration::days(2));
        if guard.counter.version == 0 {
            self.put_new(item)
        } else {
            put(&self.table, item, Some("#v = :v"), &[("#v", attr::VERSION)], &[(":v", n(guard.counter.version))])
        }
    }

    /// Takes a claimed step's count back off the phone's counter after a send that certainly did
    /// not happen. Best effort: a count left behind only makes the rule stricter.
    pub async fn release_count(
        &self,
        m: &MerchantId,
        phone: &Phone,
        token: &CartToken,
        step: u8,
    ) -> Result<(), StoreError> {
        for _ in 0..3 {
            let counter = self.send_counter(m, phone).await?;
            if counter.version == 0 || !counter.sends.iter().any(|s| s.cart == *token && s.step == step) {
                return Ok(());
            }
            let sends = counter.without(token, step);
            let req = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(customer_pk(m, phone), keys::FREQ)))
                .update_expression("SET sends = :s, #v = :next")
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", attr::VERSION)
                .expression_attribute_values(
                    ":s",
                    serde_dynamo::to_attribute_value(&sends).map_err(|e| StoreError::Decode(e.to_string()))?,
                )
                .expression_attribute_values(":v", n(counter.version))
                .expression_attribute_values(":next", n(counter.version + 1));
            match req.send().await {
                Ok(_) => return Ok(()),
                Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => continue,
                Err(e) => return Err(aws("UpdateItem", e)),
            }
        }
        Ok(())
    }

    /// Records a sent message and the step's `sent` state in one transaction (with the cart's
    /// last-message time), so a sent message is never without its log entry. `false` when the
    /// claim was no longer ours (a lease overtaken): the new holder finds the message at Twilio.
    pub async fn finish_sent(
        &self,
        entry: &SmsLogEntry,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let m = &entry.merchant_id;
        let log = put(&self.table, Self::sms_log_item(entry)?, None, &[], &[])?;
        let step_update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(keys::cart_pk(m, token), keys::step_sk(step))))
            .update_expression("SET #st = :sent, message_sid = :sid, updated_at = :now REMOVE #lease")
            .condition_expression("#cid = :c AND #st = :claimed")
            .expression_attribute_names("#st", attr::STATE)
            .expression_attribute_names("#cid", attr::CLAIM_ID)
            .expression_attribute_names("#lease", attr::LEASE_UNTIL)
            .expression_attribute_values(":sent", s(StepState::Sent.as_str()))
            .expression_attribute_values(":claimed", s(StepState::Claimed.as_str()))
            .expression_attribute_values(":sid", s(&entry.message_sid))
            .expression_attribute_values(":c", s(claim_id))
            .expression_attribute_values(":now", s(keys::sort_time(now)));
        let cart_update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(keys::cart_pk(m, token), keys::CART)))
            .update_expression("SET last_message_at = :t, #v = #v + :one")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_values(":t", s(entry.created_at.to_rfc3339()))
            .expression_attribute_values(":one", n(1));
        let items = vec![
            log,
            TransactWriteItem::builder().update(built(step_update.build())?).build(),
            TransactWriteItem::builder().update(built(cart_update.build())?).build(),
        ];
        match self.transact(items).await? {
            TxOutcome::Done => Ok(true),
            TxOutcome::Cancelled(codes) if codes.get(1).is_some_and(|c| c == "ConditionalCheckFailed") => Ok(false),
            TxOutcome::Cancelled(_) => Err(StoreError::Conflict),
        }
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
            .set_key(Some(key(keys::cart_pk(m, token), keys::step_sk(step))))
            .condition_expression("#cid = :c AND #st = :claimed")
            .expression_attribute_names("#st", attr::STATE)
            .expression_attribute_names("#cid", attr::CLAIM_ID)
            .expression_attribute_names("#lease", attr::LEASE_UNTIL)
            .expression_attribute_values(":c", s(claim_id))
            .expression_attribute_values(":claimed", s(StepState::Claimed.as_str()))
            .expression_attribute_values(":now", s(keys::sort_time(now)));
        req = match result {
            StepResult::Sent { message_sid } => req
                .update_expression("SET #st = :s, message_sid = :sid, updated_at = :now REMOVE #lease")
                .expression_attribute_values(":s", s(StepState::Sent.as_str()))
                .expression_attribute_values(":sid", s(message_sid)),
            StepResult::Failed { error_code, reason } => {
                let req = req
                    .expression_attribute_values(":s", s(StepState::Failed.as_str()))
                    .expression_attribute_values(":r", s(reason));
                match error_code {
                    Some(code) => req
                        .update_expression(
                            "SET #st = :s, reason = :r, error_code = :e, updated_at = :now REMOVE #lease",
                        )
                        .expression_attribute_values(":e", n(code)),
                    None => req.update_expression("SET #st = :s, reason = :r, updated_at = :now REMOVE #lease"),
                }
            }
            StepResult::Retry { reason, uncertain } => {
                let req = req
                    .expression_attribute_values(":s", s(StepState::Retry.as_str()))
                    .expression_attribute_values(":r", s(reason));
                if *uncertain {
                    req.update_expression(
                        "SET #st = :s, reason = :r, updated_at = :now, uncertain_since = if_not_exists(uncertain_since, :now) REMOVE #lease",
                    )
                } else {
                    req.update_expression("SET #st = :s, reason = :r, updated_at = :now REMOVE #lease")
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

    /// Records why a step will never go out; first writer wins (an expired claim included).
    pub async fn skip_step(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut item = key(keys::cart_pk(m, token), keys::step_sk(step));
        item.insert(attr::STATE.into(), s(StepState::Skipped.as_str()));
        item.insert("reason".into(), s(reason));
        item.insert(attr::ATTEMPTS.into(), n(0));
        item.insert("updated_at".into(), s(keys::sort_time(now)));
        let req = self
            .client
            .put_item()
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR #st = :retry")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#st", attr::STATE)
            .expression_attribute_values(":retry", s(StepState::Retry.as_str()));
        self.put_unless_taken(req).await
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
        entry_item.insert(attr::PK.into(), s(pk.clone()));
        entry_item.insert(attr::SK.into(), s(keys::consent_entry_sk(channel, seq)));
        let entry_item = with_purge(entry_item, c.purge_at);

        let next = c.state.after(&c.event, hash);
        let mut state_item = to_item(&next)?;
        state_item.insert(attr::PK.into(), s(pk));
        state_item.insert(attr::SK.into(), s(keys::consent_state_sk(channel)));
        let state_put = if c.state.seq == 0 {
            self.put_new(state_item)?
        } else {
            put(&self.table, state_item, Some("#seq = :seq"), &[("#seq", attr::SEQ)], &[(":seq", n(c.state.seq))])?
        };
        Ok((vec![self.put_new(entry_item)?, state_put], entry, next))
    }

    /// The current consent state, strongly consistent: every send re-checks it.
    pub async fn consent_state(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
    ) -> Result<ConsentState, StoreError> {
        match self.get(customer_pk(m, phone), keys::consent_state_sk(channel), "GetItem").await? {
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
            items.push(self.put_new(item)?);
        }
        self.transact_append(items).await?;
        Ok(record)
    }

    async fn transact_append(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        match self.transact(items).await? {
            TxOutcome::Done => Ok(()),
            TxOutcome::Cancelled(_) => Err(StoreError::Conflict),
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
        keys::idempotency_pk(m, &crate::signature::sha256_hex(key.as_bytes()))
    }

    fn idempotency_item(&self, m: &MerchantId, key: &str, r: &IdempotencyRecord) -> Result<Item, StoreError> {
        let mut item = to_item(r)?;
        item.insert(attr::PK.into(), s(Self::idempotency_pk(m, key)));
        item.insert(attr::SK.into(), s(keys::IDEMPOTENCY));
        item.insert(attr::EXPIRES_AT.into(), n((r.created_at + Duration::hours(IDEMPOTENCY_TTL_HOURS)).timestamp()));
        Ok(item)
    }

    pub async fn get_idempotency(
        &self,
        m: &MerchantId,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let item = self.get(Self::idempotency_pk(m, key), keys::IDEMPOTENCY, "GetItem").await?;
        // DynamoDB's TTL deletes late; an expired record no longer binds the key.
        let fresh = item.filter(|i| {
            i.get(attr::EXPIRES_AT)
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
            self.client
                .put_item()
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", attr::PK),
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
        let items = self.query_prefix(customer_pk(m, phone), keys::consent_entry_prefix(channel)).await?;
        items.into_iter().map(from_item).collect()
    }

    // ---- SMS log ----

    fn sms_log_item(entry: &SmsLogEntry) -> Result<Item, StoreError> {
        let mut entry = entry.clone();
        entry.status_history.entry(entry.status.clone()).or_insert(entry.created_at);
        let mut item = to_item(&entry)?;
        let pk = customer_pk(&entry.merchant_id, &entry.phone);
        item.insert(attr::PK.into(), s(pk.clone()));
        item.insert(attr::SK.into(), s(keys::sms_sk(entry.direction, entry.created_at, &entry.message_sid)));
        item.insert(attr::STATUS_RANK.into(), n(entry.status_rank()));
        item.insert(attr::GSI1PK.into(), s(keys::sid_lookup(&entry.message_sid)));
        item.insert(attr::GSI1SK.into(), s(pk));
        Ok(with_purge(item, entry.purge_at))
    }

    pub async fn put_sms_log(&self, entry: &SmsLogEntry) -> Result<(), StoreError> {
        self.put_item(Self::sms_log_item(entry)?).await
    }

    /// Logs one inbound message under every merchant it reached, once: a redelivery of the same
    /// `MessageSid` returns `false` and writes nothing. Each merchant's marker and log entry are
    /// one pair; pairs are written in transactions of at most 100 items, so any number of
    /// merchants may share a sender. `true` when any pair was new.
    pub async fn record_inbound(&self, entries: &[SmsLogEntry], now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut first = false;
        for chunk in entries.chunks(MAX_TRANSACTION_ITEMS / 2) {
            let mut items = Vec::with_capacity(chunk.len() * 2);
            for e in chunk {
                items.push(self.dedupe_marker(&e.merchant_id, &keys::inbound_event_key(&e.message_sid), now)?);
                items.push(put(&self.table, Self::sms_log_item(e)?, None, &[], &[])?);
            }
            match self.transact(items).await? {
                TxOutcome::Done => first = true,
                TxOutcome::Cancelled(codes) if codes.iter().any(|c| c == "ConditionalCheckFailed") => {
                    // Some pairs of this chunk were written before: write the others one by one.
                    for e in chunk {
                        let pair = vec![
                            self.dedupe_marker(&e.merchant_id, &keys::inbound_event_key(&e.message_sid), now)?,
                            put(&self.table, Self::sms_log_item(e)?, None, &[], &[])?,
                        ];
                        match self.transact(pair).await? {
                            TxOutcome::Done => first = true,
                            TxOutcome::Cancelled(codes) if codes[0] == "ConditionalCheckFailed" => {}
                            TxOutcome::Cancelled(_) => return Err(StoreError::Conflict),
                        }
                    }
                }
                TxOutcome::Cancelled(_) => return Err(StoreError::Conflict),
            }
        }
        Ok(first)
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
        let item_key = key(
            customer_pk(&entry.merchant_id, &entry.phone),
            keys::sms_sk(entry.direction, entry.created_at, &entry.message_sid),
        );
        let mut history = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key.clone()))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
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
            .set_key(Some(item_key))
            .update_expression("SET #st = :s, #rank = :r")
            .condition_expression("attribute_not_exists(#rank) OR #rank < :r")
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_names("#rank", attr::STATUS_RANK)
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
        item.insert(attr::PK.into(), s(customer_pk(m, phone)));
        item.insert(attr::SK.into(), s(keys::REACH_SMS));
        self.put_item(with_purge(item, purge_at)).await
    }

    pub async fn undeliverable(&self, m: &MerchantId, phone: &Phone) -> Result<Option<Undeliverable>, StoreError> {
        self.get(customer_pk(m, phone), keys::REACH_SMS, "GetItem").await?.map(from_item).transpose()
    }

    // ---- senders ----

    /// The merchants whose SMS sender is one of `senders` (numbers or Messaging Service SIDs).
    pub async fn merchants_for_senders(&self, senders: &[&str]) -> Result<Vec<MerchantRecord>, StoreError> {
        let mut ids = std::collections::BTreeSet::new();
        for sender in senders.iter().filter(|s| !s.is_empty()) {
            for item in self.query_prefix(keys::sender_pk(sender), keys::MERCHANT_PREFIX).await? {
                if let Some(id) = get_s(&item, attr::MERCHANT_ID).and_then(|v| MerchantId::parse(v).ok()) {
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
        for k in &new_keys {
            let mut item = key(keys::sender_pk(k), merchant_pk(&merchant.id));
            item.insert(attr::MERCHANT_ID.into(), s(merchant.id.as_str()));
            self.put_item(item).await?;
        }
        for k in old.map(sender_keys).unwrap_or_default().into_iter().filter(|k| !new_keys.contains(k)) {
            self.delete(keys::sender_pk(&k), merchant_pk(&merchant.id)).await?;
        }
        Ok(())
    }

    // ---- cancelling outreach ----

    /// The tokens of this phone's carts at this merchant.
    pub async fn cart_tokens_for_phone(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<CartToken>, StoreError> {
        let items = self.query_lookup(keys::phone_lookup(m, phone)).await?;
        Ok(items.iter().filter_map(|i| get_s(i, "token")).filter_map(|t| CartToken::parse(t).ok()).collect())
    }

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
        let mut cancelled = 0;
        for token in self.cart_tokens_for_phone(m, phone).await? {
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
        self.query_prefix(customer_pk(m, phone), keys::SMS_PREFIX).await?.into_iter().map(from_item).collect()
    }

    pub async fn sms_by_sid(&self, sid: &str) -> Result<Option<SmsLogEntry>, StoreError> {
        self.query_lookup(keys::sid_lookup(sid)).await?.into_iter().next().map(from_item).transpose()
    }

    /// One outbound message, read strongly consistent from the customer's partition: for a
    /// delivery report that arrives before the `SID#` index has caught up.
    pub async fn outbound_sms(
        &self,
        m: &MerchantId,
        phone: &Phone,
        sid: &str,
    ) -> Result<Option<SmsLogEntry>, StoreError> {
        let items = self
            .query_all(
                self.client
                    .query()
                    .key_condition_expression("#pk = :pk AND begins_with(#sk, :p)")
                    .filter_expression("#sid = :sid")
                    .expression_attribute_names("#pk", attr::PK)
                    .expression_attribute_names("#sk", attr::SK)
                    .expression_attribute_names("#sid", attr::MESSAGE_SID)
                    .expression_attribute_values(":pk", s(customer_pk(m, phone)))
                    .expression_attribute_values(":p", s(keys::SMS_OUT_PREFIX))
                    .expression_attribute_values(":sid", s(sid))
                    .consistent_read(true),
            )
            .await?;
        items.into_iter().next().map(from_item).transpose()
    }

    /// Messages this merchant sent this phone at or after `since`, oldest first.
    pub async fn outbound_since(
        &self,
        m: &MerchantId,
        phone: &Phone,
        since: DateTime<Utc>,
    ) -> Result<Vec<SmsLogEntry>, StoreError> {
        let items = self
            .query_all(
                self.client
                    .query()
                    .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :to")
                    .expression_attribute_names("#pk", attr::PK)
                    .expression_attribute_names("#sk", attr::SK)
                    .expression_attribute_values(":pk", s(customer_pk(m, phone)))
                    .expression_attribute_values(":from", s(keys::sms_out_from(since)))
                    .expression_attribute_values(":to", s(keys::SMS_OUT_END))
                    .consistent_read(true),
            )
            .await?;
        items.into_iter().map(from_item).collect()
    }

    /// Whether this merchant has ever texted this phone (the first message introduces itself).
    pub async fn has_outbound_sms(&self, m: &MerchantId, phone: &Phone) -> Result<bool, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :p)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#sk", attr::SK)
            .expression_attribute_values(":pk", s(customer_pk(m, phone)))
            .expression_attribute_values(":p", s(keys::SMS_OUT_PREFIX))
            .consistent_read(true)
            .limit(1)
            .send()
            .await
            .map_err(|e| aws("Query", e))?;
        // One item is the whole question: a page that stops early says nothing of later ones.
        Ok(out.count > 0)
    }
}

/// A consent status as stored (serde's snake_case).
fn consent_status_str(status: ConsentStatus) -> &'static str {
    match status {
        ConsentStatus::Unknown => "unknown",
        ConsentStatus::OptedIn => "opted_in",
        ConsentStatus::OptedOut => "opted_out",
    }
}

/// An SDK value whose required fields were all set by the caller.
fn built<T>(r: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::Invalid(e.to_string()))
}

fn put(
    table: &str,
    item: Item,
    condition: Option<&str>,
    names: &[(&str, &str)],
    values: &[(&str, AttributeValue)],
) -> Result<TransactWriteItem, StoreError> {
    let mut p = Put::builder().table_name(table).set_item(Some(item));
    if let Some(c) = condition {
        p = p.condition_expression(c);
    }
    for (k, v) in names {
        p = p.expression_attribute_names(*k, *v);
    }
    for (k, v) in values {
        p = p.expression_attribute_values(*k, v.clone());
    }
    Ok(TransactWriteItem::builder().put(built(p.build())?).build())
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
