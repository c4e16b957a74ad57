//! Retention's reads and deletes: only the sparse `purge` index is read (one shard and page at a
//! time, only what is due, so the cost follows it), and deletes go out 25 to a BatchWriteItem with
//! `UnprocessedItems` retried; a consent entry goes with the ledger's checkpoint, in one
//! transaction, so the hash chain still verifies from there.

use super::*;
use crate::domain::retention::PurgeKind;
use crate::ports::{CustomerRecord, PurgeCursor, TenantCursor};
use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};

/// DynamoDB's limit on one BatchWriteItem.
pub const MAX_BATCH_WRITE: usize = 25;
/// Batches of an unordered delete in flight at once.
const DELETES_IN_FLIGHT: usize = 4;

/// Each key once, in order: DynamoDB refuses a batch naming one key twice (a cart's pointer
/// found two ways).
fn distinct(keys: &[(String, String)]) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    keys.iter().filter(|k| seen.insert(*k)).cloned().collect()
}
const PURGE_PK: &str = "PURGE";
/// Items per purge-index page: a run checks its deadline between pages, so the slowest page
/// (every item with round trips of its own: a cart is a Query and a transaction) must fit in
/// `retention::DEADLINE_MARGIN`; a larger page is fewer Queries and legal-hold reads per item.
const DUE_PAGE: i32 = 1000;
/// The re-datings (shortened retentions) that moved an item's purge date.
const REDATED: &str = "redated";
/// Where a stopped re-dating goes on: the `tenant` index shard and the last entry done in it.
const STOPPED_SHARD: &str = "stopped_shard";
const STOPPED_PK: &str = "stopped_pk";
const STOPPED_SK: &str = "stopped_sk";

/// What the purger reads of a due item besides its keys, `purge_at` and `seq`: what `Purger`
/// takes from `DueItem::attrs` (a message's body, a cart's items never travel to the purger).
const DUE_ATTRS: [&str; 6] = ["s3_key", "log_sk", "hash", "checkout_id", "requested_at", "request"];

/// The purge-index Query's projection: only what `due_item` reads.
pub fn due_projection() -> (String, Vec<(String, String)>) {
    let names: Vec<&str> = [attr::PK, attr::SK, attr::PURGE_AT, attr::SEQ].into_iter().chain(DUE_ATTRS).collect();
    let placeholders: Vec<(String, String)> =
        names.iter().enumerate().map(|(i, n)| (format!("#p{i}"), n.to_string())).collect();
    let expression = placeholders.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>().join(", ");
    (expression, placeholders)
}

/// A purge-index item as the purger needs it.
fn due_item(i: Item) -> Option<DueItem> {
    let text = |k: &str| get_s(&i, k).map(str::to_string);
    let mut attrs = HashMap::new();
    for k in DUE_ATTRS {
        if let Some(v) = text(k) {
            attrs.insert(k.to_string(), v);
        }
    }
    if let Some(seq) = i.get(attr::SEQ).and_then(|v| v.as_n().ok()) {
        attrs.insert("seq".into(), seq.clone());
    }
    let pk = text(attr::PK)?;
    let merchant = keys::merchant_of(&pk).map(str::to_string);
    Some(DueItem { merchant, pk, sk: text(attr::SK)?, purge_at: text(attr::PURGE_AT)?, attrs })
}

impl Store {
    /// One page of the items of purge shard `shard` due at or before `as_of`, oldest first,
    /// after `after` (the last item of the previous page); the next page's start when there is
    /// more. However old a purge date, its item is in reach.
    pub async fn due_page(
        &self,
        shard: u32,
        as_of: DateTime<Utc>,
        after: Option<PurgeCursor>,
    ) -> Result<(Vec<DueItem>, Option<PurgeCursor>), PortError> {
        let bucket = crate::domain::retention::shard_bucket(shard);
        let (projection, names) = due_projection();
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(PURGE_INDEX)
            .key_condition_expression("#b = :b AND #a <= :t")
            .projection_expression(projection)
            .set_expression_attribute_names(Some(names.into_iter().collect()))
            .expression_attribute_names("#b", attr::PURGE_BUCKET)
            .expression_attribute_names("#a", attr::PURGE_AT)
            .expression_attribute_values(":b", s(bucket.clone()))
            .expression_attribute_values(":t", s(keys::sort_time(as_of)))
            .limit(DUE_PAGE);
        if let Some(c) = after {
            let mut start = key(c.pk, c.sk);
            start.insert(attr::PURGE_BUCKET.into(), s(bucket));
            start.insert(attr::PURGE_AT.into(), s(c.purge_at));
            query = query.set_exclusive_start_key(Some(start));
        }
        let out = query.send().await.map_err(|e| aws("Query", e))?;
        let items: Vec<DueItem> = out.items.unwrap_or_default().into_iter().filter_map(due_item).collect();
        let next = out.last_evaluated_key.and_then(|k| {
            Some(PurgeCursor {
                pk: get_s(&k, attr::PK)?.to_string(),
                sk: get_s(&k, attr::SK)?.to_string(),
                purge_at: get_s(&k, attr::PURGE_AT)?.to_string(),
            })
        });
        Ok((items, next))
    }

    /// Deletes items by key, 25 to a BatchWriteItem, in order (what must go last goes last);
    /// what DynamoDB leaves unprocessed is retried with backoff. Deleting an item already gone
    /// is no error, so a re-run deletes nothing twice.
    pub async fn batch_delete(&self, keys: &[(String, String)]) -> Result<(), PortError> {
        for chunk in distinct(keys).chunks(MAX_BATCH_WRITE) {
            self.delete_batch(chunk).await?;
        }
        Ok(())
    }

    /// The same, in no particular order, `DELETES_IN_FLIGHT` batches at a time: for items that
    /// stand alone (a message log, a ledger entry), so the purge's deletes keep pace with the
    /// store rather than with one round trip after another.
    pub async fn batch_delete_any(&self, keys: &[(String, String)]) -> Result<(), PortError> {
        use futures::StreamExt;
        let keys = distinct(keys);
        let mut chunks = keys.chunks(MAX_BATCH_WRITE);
        let mut in_flight = futures::stream::FuturesUnordered::new();
        in_flight.extend(chunks.by_ref().take(DELETES_IN_FLIGHT).map(|c| self.delete_batch(c)));
        while let Some(done) = in_flight.next().await {
            done?;
            if let Some(c) = chunks.next() {
                in_flight.push(self.delete_batch(c));
            }
        }
        Ok(())
    }

    async fn delete_batch(&self, chunk: &[(String, String)]) -> Result<(), PortError> {
        let mut pending: Vec<WriteRequest> = chunk
            .iter()
            .map(|(pk, sk)| {
                let del = DeleteRequest::builder().set_key(Some(key(pk.clone(), sk.clone()))).build();
                built(del).map(|d| WriteRequest::builder().delete_request(d).build())
            })
            .collect::<Result<_, _>>()?;
        let mut delay = std::time::Duration::from_millis(50);
        for attempt in 0.. {
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, pending.clone())
                .send()
                .await
                .map_err(|e| aws("BatchWriteItem", e))?;
            pending = out.unprocessed_items.and_then(|mut m| m.remove(&self.table)).unwrap_or_default();
            if pending.is_empty() {
                break;
            }
            if attempt >= 8 {
                return Err(PortError::Conflict);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(2));
        }
        Ok(())
    }

    /// All items of one partition (a cart with its steps), keys only.
    pub async fn partition_keys(&self, pk: &str) -> Result<Vec<(String, String)>, PortError> {
        let items = self
            .query_all(
                self.client
                    .query()
                    .key_condition_expression("#pk = :pk")
                    .expression_attribute_names("#pk", attr::PK)
                    .expression_attribute_values(":pk", s(pk))
                    .projection_expression("#pk, #sk")
                    .expression_attribute_names("#sk", attr::SK)
                    .consistent_read(true),
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(|i| Some((get_s(i, attr::PK)?.to_string(), get_s(i, attr::SK)?.to_string())))
            .collect())
    }

    /// The keys of one partition whose sort key starts with `prefix`.
    pub async fn prefix_keys(&self, pk: &str, prefix: &str) -> Result<Vec<(String, String)>, PortError> {
        Ok(self
            .query_prefix(pk.to_string(), prefix)
            .await?
            .iter()
            .filter_map(|i| Some((get_s(i, attr::PK)?.to_string(), get_s(i, attr::SK)?.to_string())))
            .collect())
    }

    /// Deletes a superseded consent entry and moves the ledger's checkpoint past it, in one
    /// transaction: the kept chain verifies from `hash`. Only ever moves the checkpoint forward.
    pub async fn purge_consent_entry(&self, pk: &str, sk: &str, seq: u64, hash: &str) -> Result<bool, PortError> {
        let Some(state_sk) = sk.rsplit_once('#').map(|(head, _)| head.to_string()) else { return Ok(false) };
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk.to_string(), sk)))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK);
        let checkpoint = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk.to_string(), state_sk)))
            .update_expression("SET first_seq = :next, checkpoint_hash = :h")
            // Contiguous only: the kept chain must start right after the last purged entry.
            .condition_expression(
                "attribute_exists(#pk) AND (first_seq = :seq OR (attribute_not_exists(first_seq) AND :seq = :one))",
            )
            .expression_attribute_values(":one", n(1))
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_values(":next", n(seq + 1))
            .expression_attribute_values(":seq", n(seq))
            .expression_attribute_values(":h", s(hash));
        let items = vec![
            TransactWriteItem::builder().delete(built(delete.build())?).build(),
            TransactWriteItem::builder().update(built(checkpoint.build())?).build(),
        ];
        Ok(matches!(self.transact(items).await?, TxOutcome::Done))
    }

    /// Deletes one item only if it still has the purge date that was read (a cart updated since
    /// has a later one and stays); `false` when it changed or is gone.
    pub async fn delete_if_due(&self, pk: &str, sk: &str, purge_at: &str) -> Result<bool, PortError> {
        self.delete_if(pk, sk, attr::PURGE_AT, s(purge_at)).await
    }

    /// A due cart and what hangs off it, in one transaction conditioned on the cart's purge date.
    /// Past one transaction's size, the rest goes afterwards (only ever steps of a cart that is
    /// already gone).
    pub async fn delete_cart_if_due(
        &self,
        pk: &str,
        sk: &str,
        purge_at: &str,
        with: &[ItemKey],
    ) -> Result<bool, PortError> {
        let others: Vec<&ItemKey> = with.iter().filter(|(p, s)| !(p == pk && s == sk)).collect();
        let (first, rest) = others.split_at(others.len().min(MAX_TRANSACTION_ITEMS - 1));
        let cart = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk.to_string(), sk)))
            .condition_expression("#a = :a")
            .expression_attribute_names("#a", attr::PURGE_AT)
            .expression_attribute_values(":a", s(purge_at));
        let mut items = vec![TransactWriteItem::builder().delete(built(cart.build())?).build()];
        for (p, s) in first {
            let d = Delete::builder().table_name(&self.table).set_key(Some(key(p.clone(), s.clone())));
            items.push(TransactWriteItem::builder().delete(built(d.build())?).build());
        }
        match self.transact(items).await? {
            TxOutcome::Done => {}
            TxOutcome::Cancelled(codes) if codes.first().is_some_and(|c| c == "ConditionalCheckFailed") => {
                return Ok(false);
            }
            TxOutcome::Cancelled(_) => return Err(PortError::Conflict),
        }
        if !rest.is_empty() {
            let rest: Vec<ItemKey> = rest.iter().map(|k| (*k).clone()).collect();
            self.batch_delete(&rest).await?;
        }
        Ok(true)
    }

    /// Deletes a ledger's state only at the sequence that was read; `false` when an append came
    /// in between (the ledger is alive again).
    pub async fn delete_state_at(&self, pk: &str, sk: &str, seq: u64) -> Result<bool, PortError> {
        self.delete_if(pk, sk, attr::SEQ, n(seq)).await
    }

    /// Deletes an item only while `name` still holds `value`.
    async fn delete_if(&self, pk: &str, sk: &str, name: &str, value: AttributeValue) -> Result<bool, PortError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(pk.to_string(), sk)))
            .condition_expression("#a = :a")
            .expression_attribute_names("#a", name)
            .expression_attribute_values(":a", value)
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(aws("DeleteItem", e)),
        }
    }

    /// Moves an item's purge date (a ledger with recent activity, an item under legal hold).
    pub async fn repurge(&self, pk: &str, sk: &str, purge_at: DateTime<Utc>) -> Result<(), PortError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk.to_string(), sk)))
            .update_expression("SET #b = :b, #a = :a")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#b", attr::PURGE_BUCKET)
            .expression_attribute_names("#a", attr::PURGE_AT)
            .expression_attribute_values(":b", s(self.purge_bucket(pk)))
            .expression_attribute_values(":a", s(keys::sort_time(purge_at)))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| match e.as_service_error() {
                Some(se) if se.is_conditional_check_failed_exception() => Ok(()),
                _ => Err(aws("UpdateItem", e)),
            })
    }

    /// The newest thing that happened in a customer partition (a message, a call, a consent
    /// event): the whole ledger expires only once this is old enough.
    pub async fn last_activity(&self, pk: &str) -> Result<Option<DateTime<Utc>>, PortError> {
        let items = self
            .query_all(
                self.client
                    .query()
                    .key_condition_expression("#pk = :pk")
                    .expression_attribute_names("#pk", attr::PK)
                    .expression_attribute_values(":pk", s(pk))
                    .consistent_read(true),
            )
            .await?;
        let parse = |t: &str| DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&Utc));
        Ok(items
            .iter()
            .filter_map(|i| {
                let sk = get_s(i, attr::SK)?;
                if sk.starts_with(keys::SMS_PREFIX) || sk.starts_with(keys::CALL_PREFIX) {
                    get_s(i, "created_at").and_then(parse)
                } else if sk.starts_with("CONSENT#") {
                    let recorded = i.get("event").and_then(|e| e.as_m().ok()).and_then(|m| m.get("recorded_at"));
                    get_s(i, "last_occurred_at")
                        .and_then(parse)
                        .or_else(|| recorded?.as_s().ok().and_then(|t| parse(t)))
                } else {
                    None
                }
            })
            .max())
    }

    /// After a recording's object is deleted: its purge item goes, and its call log entry
    /// forgets it (the log itself is kept for as long as call logs are).
    pub async fn recording_purged(&self, pk: &str, rec_sk: &str, log_sk: Option<&str>) -> Result<(), PortError> {
        if let Some(log_sk) = log_sk {
            let res = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(pk.to_string(), log_sk)))
                .update_expression("REMOVE recording")
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#pk", attr::PK)
                .send()
                .await;
            if let Err(e) = res
                && !e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception())
            {
                return Err(aws("UpdateItem", e));
            }
        }
        self.delete(pk.to_string(), rec_sk).await
    }

    /// The audit record of one run (counts per merchant and kind; never a phone or a body).
    pub async fn put_purge_report(&self, report: &crate::domain::retention::PurgeReport) -> Result<(), PortError> {
        let mut item = to_item(report)?;
        let started = report.started_at.map(keys::sort_time).unwrap_or_default();
        item.insert(attr::PK.into(), s(PURGE_PK));
        item.insert(attr::SK.into(), s(format!("RUN#{started}#{}", uuid::Uuid::new_v4().simple())));
        self.put_item(item).await
    }

    /// The audit records, oldest first.
    pub async fn purge_reports(&self) -> Result<Vec<crate::domain::retention::PurgeReport>, PortError> {
        self.query_prefix(PURGE_PK.into(), "RUN#").await?.into_iter().map(from_item).collect()
    }
}

impl Store {
    /// Closes a merchant: no more outreach (every claim checks the status), API keys refused,
    /// and its data due for erasure once the grace period has passed (the purger decides when,
    /// from `closed_at`). Idempotent.
    pub async fn close_merchant(&self, id: &MerchantId, at: DateTime<Utc>) -> Result<(), PortError> {
        self.set_merchant_status(id, MerchantStatus::Closed).await?;
        self.mark_erasure(id, "CLOSURE", at).await
    }

    /// Shopify `shop/redact`: the shop's customer data is due at once.
    pub async fn request_shop_redaction(&self, id: &MerchantId, at: DateTime<Utc>) -> Result<(), PortError> {
        self.mark_erasure(id, "REDACT", at).await
    }

    async fn mark_erasure(&self, id: &MerchantId, sk: &str, at: DateTime<Utc>) -> Result<(), PortError> {
        let pk = merchant_pk(id);
        let mut item = key(pk, sk);
        item.insert("requested_at".into(), s(keys::sort_time(at)));
        let item = self.with_purge(item, at);
        // The first request's time counts: a repeat does not restart the grace period.
        let req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK);
        self.put_unless_taken(req).await.map(|_| ())
    }

    /// One page of merchant `id`'s erasure through the `tenant` index (that merchant's
    /// partitions alone, never a table scan): the customer data (carts, pointers, customers'
    /// partitions) and, for a closed account, its deletion markers and its own entries in the
    /// shared sender and shop-domain partitions. Each partition comes whole, its tagged items
    /// last: deleted in this order, a crash part-way leaves it findable by the index. Suppression
    /// records are never among them (not tagged); a deletion's Twilio copies still to remove
    /// (`TWILIO#`) outlive the erasure until the worker confirms them.
    pub async fn erasure_page(
        &self,
        id: &MerchantId,
        scope: Erasure,
        after: Option<TenantCursor>,
        limit: usize,
    ) -> Result<(Vec<Vec<CustomerRecord>>, Option<TenantCursor>), PortError> {
        let (entries, next) = self.tenant_page(id, after, limit).await?;
        let m = id.as_str();
        let owned = |pk: &str, kinds: &[&str]| {
            pk.split_once('#').is_some_and(|(kind, rest)| kinds.contains(&kind) && rest.split('#').next() == Some(m))
        };
        let mut partitions: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for (pk, sk) in entries {
            if owned(&pk, &["C", "K", "X", "Q", "N"]) || (scope == Erasure::Account && owned(&pk, &["H"])) {
                if !partitions.contains(&pk) {
                    partitions.push(pk);
                }
            } else if scope == Erasure::Account && (pk.starts_with("S#") || pk.starts_with("D#")) {
                // Shared partitions: only this merchant's entry in them.
                let kind = PurgeKind::of_key(&pk, &sk);
                out.push(vec![CustomerRecord { key: (pk, sk), kind, data: crate::ports::CustomerData::Other }]);
            }
        }
        for pk in partitions {
            let items = self
                .query_all(
                    self.client
                        .query()
                        .key_condition_expression("#pk = :pk")
                        .expression_attribute_names("#pk", attr::PK)
                        .expression_attribute_values(":pk", s(pk.clone()))
                        .consistent_read(true),
                )
                .await?;
            let (tagged, untagged): (Vec<Item>, Vec<Item>) = items
                .into_iter()
                .filter(|i| !get_s(i, attr::SK).is_some_and(|sk| sk.starts_with("TWILIO#")))
                .partition(|i| i.contains_key(attr::TENANT));
            out.push(untagged.into_iter().chain(tagged).map(super::privacy::customer_record).collect());
        }
        Ok((out, next))
    }

    /// What an erasure deletes after its pages: the request partition (a deletion's Twilio
    /// copies kept) and, for a closed account, the profile's partition, secrets, API bucket and
    /// its registry entry.
    pub async fn erasure_tail(&self, id: &MerchantId, scope: Erasure) -> Result<Vec<(String, String)>, PortError> {
        let mut partitions = vec![keys::request_pk(id)];
        let mut keys = Vec::new();
        if scope == Erasure::Account {
            partitions.extend([keys::secrets_pk(id), keys::api_bucket_pk(id), merchant_pk(id)]);
            keys.push((keys::REGISTRY_PK.to_string(), merchant_pk(id)));
        }
        for pk in partitions {
            keys.extend(self.partition_keys(&pk).await?.into_iter().filter(|(_, sk)| !sk.starts_with("TWILIO#")));
        }
        Ok(keys)
    }

    /// One page of the keys tagged for merchant `id` in the `tenant` index, from `after` (shard
    /// by shard); where the next page starts, `None` after the last shard's last page.
    pub async fn tenant_page(
        &self,
        id: &MerchantId,
        after: Option<TenantCursor>,
        limit: usize,
    ) -> Result<(Vec<(String, String)>, Option<TenantCursor>), PortError> {
        let mut cursor = after.unwrap_or_default();
        loop {
            let tenant = format!("{id}#{}", cursor.shard);
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(keys::TENANT_INDEX)
                .key_condition_expression("#t = :t")
                .expression_attribute_names("#t", attr::TENANT)
                .expression_attribute_values(":t", s(tenant.clone()))
                .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX));
            if let Some((pk, sk)) = cursor.after.take() {
                let mut start = key(pk, sk);
                start.insert(attr::TENANT.into(), s(tenant));
                query = query.set_exclusive_start_key(Some(start));
            }
            let out = query.send().await.map_err(|e| aws("Query", e))?;
            let items: Vec<(String, String)> = out
                .items
                .unwrap_or_default()
                .iter()
                .filter_map(|i| Some((get_s(i, attr::PK)?.to_string(), get_s(i, attr::SK)?.to_string())))
                .collect();
            let next = match out
                .last_evaluated_key
                .and_then(|k| Some((get_s(&k, attr::PK)?.to_string(), get_s(&k, attr::SK)?.to_string())))
            {
                Some(last) => Some(TenantCursor { shard: cursor.shard, after: Some(last) }),
                None if cursor.shard + 1 < keys::TENANT_SHARDS => {
                    Some(TenantCursor { shard: cursor.shard + 1, after: None })
                }
                None => None,
            };
            match next {
                // An empty shard: straight on to the next.
                Some(n) if items.is_empty() => cursor = n,
                next => return Ok((items, next)),
            }
        }
    }

    /// Moves the purge dates of merchant `id`'s items of each kind earlier by its shift (a
    /// shortened retention), each at the date read (an item rewritten since keeps its new one)
    /// and only if `job` has not moved it already (`redated` holds the jobs that did: a job
    /// resumed after a failure moves nothing twice); how many moved. The merchant's partitions
    /// come through the `tenant` index a page at a time, and its request partition (platform
    /// requests) last. The shard of the purge index does not change, so the next run reads them
    /// however far back their new dates fall.
    pub async fn redate(
        &self,
        id: &MerchantId,
        job: &crate::domain::retention::Redate,
        from: Option<TenantCursor>,
        page: usize,
        deadline: Option<std::time::Instant>,
    ) -> Result<(u64, Option<TenantCursor>), PortError> {
        let shifts = job.shifts();
        let mut moved = 0;
        let mut cursor = from;
        loop {
            let (entries, next) = self.tenant_page(id, cursor, page).await?;
            let mut partitions: Vec<String> = Vec::new();
            for (pk, _) in entries {
                if !partitions.contains(&pk) {
                    partitions.push(pk);
                }
            }
            if next.is_none() {
                partitions.push(keys::request_pk(id));
            }
            for pk in partitions {
                moved += self.redate_partition(&pk, job, &shifts).await?;
            }
            match next {
                // At least one page a call: a run that reaches it late still makes progress.
                Some(n) if deadline.is_some_and(|d| std::time::Instant::now() >= d) => return Ok((moved, Some(n))),
                Some(n) => cursor = Some(n),
                None => return Ok((moved, None)),
            }
        }
    }

    async fn redate_partition(
        &self,
        pk: &str,
        job: &crate::domain::retention::Redate,
        shifts: &[(PurgeKind, chrono::Duration)],
    ) -> Result<u64, PortError> {
        let items = self
            .query_all(
                self.client
                    .query()
                    .key_condition_expression("#pk = :pk")
                    .expression_attribute_names("#pk", attr::PK)
                    .expression_attribute_values(":pk", s(pk))
                    .projection_expression("#pk, #sk, #a, #r")
                    .expression_attribute_names("#sk", attr::SK)
                    .expression_attribute_names("#a", attr::PURGE_AT)
                    .expression_attribute_names("#r", REDATED)
                    .consistent_read(true),
            )
            .await?;
        let mut moved = 0;
        for i in items {
            let (Some(sk), Some(at)) = (get_s(&i, attr::SK), get_s(&i, attr::PURGE_AT)) else { continue };
            // Moved by this job already (a resumed one re-reads a partition): no write.
            if i.get(REDATED).and_then(|v| v.as_ss().ok()).is_some_and(|done| done.contains(&job.id)) {
                continue;
            }
            let kind = PurgeKind::of_key(pk, sk);
            let Some((_, shift)) = shifts.iter().find(|(k, _)| *k == kind) else { continue };
            let Ok(old) = DateTime::parse_from_rfc3339(at) else { continue };
            let new = old.with_timezone(&Utc) - *shift;
            let res = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(pk.to_string(), sk)))
                .update_expression("SET #a = :new ADD #r :job")
                .condition_expression("#a = :old AND NOT contains(#r, :id)")
                .expression_attribute_names("#a", attr::PURGE_AT)
                .expression_attribute_names("#r", REDATED)
                .expression_attribute_values(":new", s(keys::sort_time(new)))
                .expression_attribute_values(":old", s(at))
                .expression_attribute_values(":id", s(job.id.clone()))
                .expression_attribute_values(":job", AttributeValue::Ss(vec![job.id.clone()]))
                .send()
                .await;
            match res {
                Ok(_) => moved += 1,
                Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(aws("UpdateItem", e)),
            }
        }
        Ok(moved)
    }

    /// Records a re-dating about to start (`M#{merchant}` / `REDATE#{id}`), due at once in the
    /// purge index: one a failure stopped is finished by the next run.
    pub async fn put_redate(
        &self,
        id: &MerchantId,
        job: &crate::domain::retention::Redate,
        at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        let mut item = key(merchant_pk(id), format!("REDATE#{}", job.id));
        item.insert("job".into(), s(serde_json::to_string(job).map_err(|e| PortError::Encode(e.to_string()))?));
        self.put_item(self.with_purge(item, at)).await
    }

    /// The re-dating a due `REDATE#` item records, whose, and where it stopped.
    pub async fn redate_job(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<Option<(MerchantId, crate::domain::retention::Redate, Option<TenantCursor>)>, PortError> {
        let Some(m) = keys::merchant_of(pk).and_then(|m| MerchantId::parse(m).ok()) else { return Ok(None) };
        let Some(item) = self.get(pk.to_string(), sk, "GetItem").await? else { return Ok(None) };
        let job = get_s(&item, "job").ok_or_else(|| PortError::Decode("a re-dating without its job".into()))?;
        let job = serde_json::from_str(job).map_err(|e| PortError::Decode(e.to_string()))?;
        let stopped = item.get(STOPPED_SHARD).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).map(|shard| {
            let after =
                get_s(&item, STOPPED_PK).zip(get_s(&item, STOPPED_SK)).map(|(p, s)| (p.to_string(), s.to_string()));
            TenantCursor { shard, after }
        });
        Ok(Some((m, job, stopped)))
    }

    /// Where a re-dating stopped, on its record (gone already: nothing to note).
    pub async fn redate_stopped_at(&self, id: &MerchantId, job: &str, at: &TenantCursor) -> Result<(), PortError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(merchant_pk(id), format!("REDATE#{job}"))))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_values(":shard", n(at.shard));
        req = match &at.after {
            Some((pk, sk)) => req
                .update_expression(format!("SET {STOPPED_SHARD} = :shard, {STOPPED_PK} = :p, {STOPPED_SK} = :s"))
                .expression_attribute_values(":p", s(pk))
                .expression_attribute_values(":s", s(sk)),
            None => req.update_expression(format!("SET {STOPPED_SHARD} = :shard REMOVE {STOPPED_PK}, {STOPPED_SK}")),
        };
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(aws("UpdateItem", e)),
        }
    }

    /// A re-dating is finished or dropped: its record goes.
    pub async fn redate_done(&self, id: &MerchantId, job: &str) -> Result<(), PortError> {
        self.delete(merchant_pk(id), format!("REDATE#{job}")).await
    }

    /// Brings a table written by an earlier version up to this one's indexes (a one-off scan by
    /// the operator's tool, `callfy-admin migrate-indexes`): each merchant's items tagged for the
    /// `tenant` index (its own partitions, its entries in shared ones), purge-index entries of
    /// the earlier day-bucket form moved to their shard, and each cart's phone and customer-id
    /// pointers written where an earlier version wrote none (so a deletion finds the cart
    /// consistently, and a `customers/redact` finds it at all). How many items changed; running
    /// it again changes nothing.
    pub async fn migrate_indexes(&self) -> Result<u64, PortError> {
        let mut changed = 0;
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .projection_expression("#pk, #sk, #t, #mid, #b, #pa, #ph, #tok, #cid")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#sk", attr::SK)
            .expression_attribute_names("#t", attr::TENANT)
            .expression_attribute_names("#mid", attr::MERCHANT_ID)
            .expression_attribute_names("#b", attr::PURGE_BUCKET)
            .expression_attribute_names("#pa", attr::PURGE_AT)
            .expression_attribute_names("#ph", "phone")
            .expression_attribute_names("#tok", "token")
            .expression_attribute_names("#cid", "customer_id")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws("Scan", e))?;
            for i in page.items.unwrap_or_default() {
                let (Some(pk), Some(sk)) = (get_s(&i, attr::PK), get_s(&i, attr::SK)) else { continue };
                if sk == keys::CART {
                    changed += self.backfill_pointers(pk, &i).await?;
                }
                let owner = match pk.split_once('#') {
                    Some(("C" | "K" | "X" | "Q" | "N" | "H", rest)) => rest.split('#').next().map(str::to_string),
                    Some(("S" | "D", _)) => get_s(&i, attr::MERCHANT_ID).map(str::to_string),
                    _ => None,
                };
                let tenant = owner
                    .and_then(|m| MerchantId::parse(&m).ok())
                    .filter(|_| !i.contains_key(attr::TENANT))
                    .map(|m| keys::tenant(&m, pk));
                let bucket = get_s(&i, attr::PURGE_BUCKET)
                    .map(|b| (b, self.purge_bucket(pk)))
                    .filter(|(old, new)| old != new)
                    .map(|(_, new)| new);
                let mut set = Vec::new();
                let mut update =
                    self.client.update_item().table_name(&self.table).set_key(Some(key(pk.to_string(), sk)));
                if let Some(t) = tenant {
                    set.push("#t = :t");
                    update =
                        update.expression_attribute_names("#t", attr::TENANT).expression_attribute_values(":t", s(t));
                }
                if let Some(b) = bucket {
                    set.push("#b = :b");
                    update = update
                        .expression_attribute_names("#b", attr::PURGE_BUCKET)
                        .expression_attribute_values(":b", s(b));
                }
                if set.is_empty() {
                    continue;
                }
                update
                    .update_expression(format!("SET {}", set.join(", ")))
                    .condition_expression("attribute_exists(#pk)")
                    .expression_attribute_names("#pk", attr::PK)
                    .send()
                    .await
                    .map_err(|e| aws("UpdateItem", e))?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// A cart's phone and customer-id pointers, where its cart names them and they are missing.
    /// Each is written only while the cart still holds what the scan read (a deletion or purge
    /// since must not get a pointer to the number back): how many were written. `migrate_indexes`'
    /// step for each cart it scanned.
    pub async fn backfill_pointers(&self, pk: &str, cart: &Item) -> Result<u64, PortError> {
        let merchant = pk.strip_prefix("K#").and_then(|r| r.split('#').next()).and_then(|m| MerchantId::parse(m).ok());
        let token = get_s(cart, "token").and_then(|t| CartToken::parse(t).ok());
        let (Some(m), Some(token)) = (merchant, token) else { return Ok(0) };
        let phone = get_s(cart, "phone").and_then(|p| Phone::parse(p, None).ok());
        let purge_at = get_s(cart, attr::PURGE_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let mut pointers = Vec::new();
        if let Some(p) = &phone {
            pointers.push(("phone", p.as_str().to_string(), self.phone_pointer(&m, p, &token, purge_at)));
        }
        if let Some(id) = get_s(cart, "customer_id") {
            let ptr = self.customer_pointer(&m, id, &token, phone.as_ref(), purge_at);
            pointers.push(("customer_id", id.to_string(), ptr));
        }
        let mut written = 0;
        for (field, value, ptr) in pointers {
            let still = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(key(pk.to_string(), keys::CART)))
                .condition_expression("attribute_exists(#pk) AND #f = :v")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#f", field)
                .expression_attribute_values(":v", s(value));
            let items = vec![
                TransactWriteItem::builder().condition_check(built(still.build())?).build(),
                put(&self.table, ptr, Some("attribute_not_exists(#pk)"), &[("#pk", attr::PK)], &[])?,
            ];
            if let TxOutcome::Done = self.transact(items).await? {
                written += 1;
            }
        }
        Ok(written)
    }

    /// The keys of the items tagged for merchant `id` in the `tenant` index, every shard.
    pub async fn tenant_items(&self, id: &MerchantId) -> Result<Vec<(String, String)>, PortError> {
        let mut out = Vec::new();
        for shard in 0..keys::TENANT_SHARDS {
            let items = self
                .query_all(
                    self.client
                        .query()
                        .index_name(keys::TENANT_INDEX)
                        .key_condition_expression("#t = :t")
                        .expression_attribute_names("#t", attr::TENANT)
                        .expression_attribute_values(":t", s(format!("{id}#{shard}"))),
                )
                .await?;
            out.extend(
                items.iter().filter_map(|i| Some((get_s(i, attr::PK)?.to_string(), get_s(i, attr::SK)?.to_string()))),
            );
        }
        Ok(out)
    }
}
