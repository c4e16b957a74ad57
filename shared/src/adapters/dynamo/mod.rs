//! DynamoDB adapter: one table, `pk`/`sk` strings, the layout in `keys` (docs/behaviour.md, Data model).
//! Every Query goes through `query_all`, which follows `LastEvaluatedKey` to the end.

pub mod keys;

mod agent;
mod calls;
mod carts;
mod consent;
mod guard;
mod idempotency;
mod links;
mod merchants;
mod messages;
mod privacy;
mod purge;
pub use purge::{MAX_BATCH_WRITE, due_projection};
mod ports;
mod ratelimit;
pub mod report;
mod requests;
mod steps;
mod webhooks;

use crate::domain::cart::Cart;
pub use crate::domain::consent::LedgerEntry;
use crate::domain::consent::{ConsentEvent, ConsentState, ConsentStatus, Suppression, entry_hash};
use crate::domain::delivery::{Undeliverable, status_rank};
use crate::domain::flow::SkipReason;
use crate::domain::ids::{CartToken, MerchantId};
use crate::domain::merchant::{Channel, Merchant};
use crate::domain::outreach::{
    ClaimGuard, ClaimOutcome, CountedSend, MerchantRecord, MerchantStatus, SendCounter, SmsLogEntry, StepAvailability,
    StepRecord, StepResult, StepState, lease_until,
};
use crate::domain::phone::Phone;
use crate::domain::subject::SubjectKey;
use crate::platforms::PlatformRequest;
pub use crate::ports::{
    CallUpdate, ConsentAppend, CustomerData, CustomerRecord, DueItem, Erasure, IdempotencyRecord, IngestOutcome,
    IngestWrite, ItemKey, MarkerGuard, PendingPrivacy, PortError, PrivacyStatus, ProviderCopy,
};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update};
use chrono::{DateTime, Duration, Utc};
use keys::attr;
pub use keys::{LOOKUP_INDEX, PURGE_INDEX, customer_pk, merchant_pk};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Shopify retries for 4 hours; a week covers every platform's redelivery.
pub const DEDUPE_TTL_DAYS: i64 = 7;
/// How long an `Idempotency-Key` replays its first answer.
pub use crate::ports::IDEMPOTENCY_WINDOW_HOURS as IDEMPOTENCY_TTL_HOURS;
/// DynamoDB's limit on the items of one transaction.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

type Item = HashMap<String, AttributeValue>;

fn aws<E, R>(op: &'static str, e: SdkError<E, R>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    super::aws::sdk_error("DynamoDB", op, e)
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

fn to_item<T: Serialize>(value: &T) -> Result<Item, PortError> {
    serde_dynamo::to_item(value).map_err(|e| PortError::Decode(e.to_string()))
}

fn from_item<T: for<'de> Deserialize<'de>>(item: Item) -> Result<T, PortError> {
    serde_dynamo::from_item(item).map_err(|e| PortError::Decode(e.to_string()))
}

fn key(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([(attr::PK.to_string(), s(pk)), (attr::SK.to_string(), s(sk))])
}

impl Store {
    /// Puts an item in the sparse purge index: its day and shard (`domain::retention`), and when.
    fn with_purge(&self, mut item: Item, purge_at: DateTime<Utc>) -> Item {
        let pk = get_s(&item, attr::PK).unwrap_or_default().to_string();
        item.insert(attr::PURGE_BUCKET.into(), s(self.purge_bucket(&pk)));
        item.insert(attr::PURGE_AT.into(), s(keys::sort_time(purge_at)));
        item
    }

    /// Tags an item for the `tenant` index: its partition belongs to merchant `m`.
    fn tagged(&self, mut item: Item, m: &MerchantId) -> Item {
        let pk = get_s(&item, attr::PK).unwrap_or_default().to_string();
        item.insert(attr::TENANT.into(), s(keys::tenant(m, &pk)));
        item
    }

    /// The purge index partition of an item of partition `pk` (`domain::retention`).
    fn purge_bucket(&self, pk: &str) -> String {
        crate::domain::retention::purge_bucket(pk)
    }
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

/// Whether a cancelled transaction was refused by its conditions alone (the state it checked is
/// not what was read), not by a conflicting transaction or a throttle (try again).
fn only_conditions_failed(codes: &[String]) -> bool {
    codes.iter().any(|c| c == "ConditionalCheckFailed")
        && codes.iter().all(|c| c == "ConditionalCheckFailed" || c == "None")
}

/// How a transaction ended, item by item.
enum TxOutcome {
    Done,
    /// Cancelled: the reason code of each item, in order ("None" where it was not the cause).
    Cancelled(Vec<String>),
}

/// A platform request as stored: its kind (`data_request`, `customer_redact`, `shop_redact`,
/// `app_uninstalled`) and, for privacy requests, whom it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRequest {
    pub kind: String,
    #[serde(default)]
    pub privacy: Option<crate::platforms::PrivacyRequest>,
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

    async fn get(&self, pk: String, sk: impl Into<String>, op: &'static str) -> Result<Option<Item>, PortError> {
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
    async fn put_item(&self, item: Item) -> Result<(), PortError> {
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
    async fn put_unless_taken(&self, req: PutItemFluentBuilder) -> Result<bool, PortError> {
        match req.table_name(&self.table).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(aws("PutItem", e)),
        }
    }

    async fn delete(&self, pk: String, sk: impl Into<String>) -> Result<(), PortError> {
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
    async fn query_all(&self, query: QueryFluentBuilder) -> Result<Vec<Item>, PortError> {
        let mut out = Vec::new();
        let mut pages = query.table_name(&self.table).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws("Query", e))?;
            out.extend(page.items.unwrap_or_default());
        }
        Ok(out)
    }

    /// The items of one partition whose sort key starts with `prefix`, strongly consistent.
    async fn query_prefix(&self, pk: String, prefix: impl Into<String>) -> Result<Vec<Item>, PortError> {
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
    async fn query_lookup(&self, gsi1pk: String) -> Result<Vec<Item>, PortError> {
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

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<TxOutcome, PortError> {
        if items.len() > MAX_TRANSACTION_ITEMS {
            return Err(PortError::Invalid(format!("{} items exceed one transaction", items.len())));
        }
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(TxOutcome::Done),
            Err(e) => match cancellation_codes(&e) {
                // A malformed or oversized transaction fails the same way every time.
                Some(codes) if codes.iter().any(|c| super::aws::aws_code_is_permanent(c)) => {
                    let kind = crate::ports::ErrorKind::Permanent;
                    Err(PortError::service("DynamoDB", "TransactWriteItems", codes.join(","), kind, e))
                }
                Some(codes) => Ok(TxOutcome::Cancelled(codes)),
                None => Err(aws("TransactWriteItems", e)),
            },
        }
    }

    fn dedupe_marker(
        &self,
        m: &MerchantId,
        event_key: &str,
        at: DateTime<Utc>,
    ) -> Result<TransactWriteItem, PortError> {
        let mut marker = key(keys::event_pk(m, event_key), keys::EVENT);
        marker.insert("received_at".into(), s(at.to_rfc3339()));
        marker.insert(attr::EXPIRES_AT.into(), n((at + Duration::days(DEDUPE_TTL_DAYS)).timestamp()));
        self.put_new(marker)
    }

    /// A put that only creates.
    fn put_new(&self, item: Item) -> Result<TransactWriteItem, PortError> {
        put(&self.table, item, Some("attribute_not_exists(#pk)"), &[("#pk", attr::PK)], &[])
    }
}

/// An SDK value whose required fields were all set by the caller.
fn built<T>(r: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, PortError> {
    r.map_err(|e| PortError::Invalid(e.to_string()))
}

fn put(
    table: &str,
    item: Item,
    condition: Option<&str>,
    names: &[(&str, &str)],
    values: &[(&str, AttributeValue)],
) -> Result<TransactWriteItem, PortError> {
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

/// A conditional write's answer: `None` when its condition failed (the item is not as the
/// caller expected), the SDK's error otherwise.
pub(super) fn conditional<T, E, R>(res: Result<T, SdkError<E, R>>, op: &'static str) -> Result<Option<T>, PortError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match res {
        Ok(v) => Ok(Some(v)),
        Err(e)
            if e.as_service_error().and_then(ProvideErrorMetadata::code) == Some("ConditionalCheckFailedException") =>
        {
            Ok(None)
        }
        Err(e) => Err(aws(op, e)),
    }
}
