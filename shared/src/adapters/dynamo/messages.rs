//! The SMS log (outbound and inbound, with delivery status), inbound markers, the index of the
//! senders a merchant texted a phone from, and reachability marks.

use super::*;
use crate::domain::outreach::Direction;

impl Store {
    pub(super) fn sms_log_item(&self, entry: &SmsLogEntry) -> Result<Item, PortError> {
        let mut entry = entry.clone();
        entry.status_history.entry(entry.status.clone()).or_insert(entry.created_at);
        let mut item = to_item(&entry)?;
        let pk = customer_pk(&entry.merchant_id, &entry.phone);
        item.insert(attr::PK.into(), s(pk.clone()));
        item.insert(attr::SK.into(), s(keys::sms_sk(entry.direction, entry.created_at, &entry.message_sid)));
        item.insert(attr::STATUS_RANK.into(), n(entry.status_rank()));
        item.insert(attr::GSI1PK.into(), s(keys::sid_lookup(&entry.message_sid)));
        item.insert(attr::GSI1SK.into(), s(pk));
        Ok(self.with_purge(self.tagged(item, &entry.merchant_id), entry.purge_at))
    }

    pub async fn put_sms_log(&self, entry: &SmsLogEntry) -> Result<(), PortError> {
        self.put_item(self.sms_log_item(entry)?).await
    }

    /// The index items of an outbound message: one per sender it went out from, in the
    /// customer's partition, found by a keyed hash of (sender, phone) (`merchants_that_texted`).
    /// Rewritten by every text, so the latest one's purge date holds.
    pub(super) fn sender_items(&self, entry: &SmsLogEntry) -> Vec<Item> {
        if entry.direction != Direction::Outbound {
            return Vec::new();
        }
        entry
            .senders
            .iter()
            .filter(|sender| !sender.is_empty())
            .map(|sender| {
                let mut item = key(customer_pk(&entry.merchant_id, &entry.phone), keys::sender_sk(sender));
                item.insert(attr::GSI1PK.into(), s(keys::sender_lookup(sender, &entry.phone)));
                item.insert(attr::GSI1SK.into(), s(merchant_pk(&entry.merchant_id)));
                item.insert(attr::MERCHANT_ID.into(), s(entry.merchant_id.as_str()));
                item.insert("sender".into(), s(sender.as_str()));
                item.insert("last_sent_at".into(), s(entry.created_at.to_rfc3339()));
                self.with_purge(self.tagged(item, &entry.merchant_id), entry.purge_at)
            })
            .collect()
    }

    /// The merchants that texted `phone` from one of `senders`, whatever sender they use now.
    pub async fn merchants_that_texted(&self, phone: &Phone, senders: &[&str]) -> Result<Vec<MerchantId>, PortError> {
        let mut ids = std::collections::BTreeSet::new();
        for sender in senders.iter().filter(|s| !s.is_empty()) {
            for item in self.query_lookup(keys::sender_lookup(sender, phone)).await? {
                if let Some(id) = get_s(&item, attr::MERCHANT_ID).and_then(|v| MerchantId::parse(v).ok()) {
                    ids.insert(id);
                }
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// An inbound message's marker: written with its log entry when it is stored, `pending`
    /// until the message has been applied.
    fn inbound_marker(
        &self,
        m: &MerchantId,
        message_sid: &str,
        at: DateTime<Utc>,
    ) -> Result<TransactWriteItem, PortError> {
        let mut marker = key(keys::event_pk(m, &keys::inbound_event_key(message_sid)), keys::EVENT);
        marker.insert("received_at".into(), s(at.to_rfc3339()));
        marker.insert(attr::PENDING.into(), AttributeValue::Bool(true));
        marker.insert(attr::EXPIRES_AT.into(), n((at + Duration::days(DEDUPE_TTL_DAYS)).timestamp()));
        self.put_new(marker)
    }

    /// Whether this merchant has applied this inbound message: its marker exists and is no longer
    /// pending (a marker from before messages were stored first has no `pending`: applied).
    pub async fn inbound_applied(&self, m: &MerchantId, message_sid: &str) -> Result<bool, PortError> {
        let marker = self.get(keys::event_pk(m, &keys::inbound_event_key(message_sid)), keys::EVENT, "GetItem").await?;
        Ok(marker.is_some_and(|i| !i.get(attr::PENDING).is_some_and(|v| v.as_bool().is_ok_and(|b| *b))))
    }

    /// Marks a stored inbound message applied for each merchant; `true` when any was pending.
    pub async fn finish_inbound(&self, merchants: &[MerchantId], message_sid: &str) -> Result<bool, PortError> {
        let mut first = false;
        for m in merchants {
            let res = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(keys::event_pk(m, &keys::inbound_event_key(message_sid)), keys::EVENT)))
                .update_expression("REMOVE #p")
                .condition_expression("#p = :t")
                .expression_attribute_names("#p", attr::PENDING)
                .expression_attribute_values(":t", AttributeValue::Bool(true))
                .send()
                .await;
            match res {
                Ok(_) => first = true,
                Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(aws("UpdateItem", e)),
            }
        }
        Ok(first)
    }

    /// Stores one inbound message as received, under every merchant it reached, once
    /// (`MessageLog::record_inbound`).
    pub async fn record_inbound(
        &self,
        entries: &[(SmsLogEntry, MarkerGuard)],
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        // Per entry: its marker, its log entry, then (when guarded) the check that no deletion
        // moved the sender's marker since it was read.
        let entry_items = |(e, guard): &(SmsLogEntry, MarkerGuard)| -> Result<Vec<_>, PortError> {
            let mut items = vec![
                self.inbound_marker(&e.merchant_id, &e.message_sid, now)?,
                put(&self.table, self.sms_log_item(e)?, None, &[], &[])?,
            ];
            if let MarkerGuard::AsRead(deleted_at) = guard {
                items.push(self.deletion_unchanged(&e.merchant_id, &SubjectKey::phone(&e.phone), *deleted_at)?);
            }
            Ok(items)
        };
        let mut first = false;
        for chunk in entries.chunks(MAX_TRANSACTION_ITEMS / 3) {
            let mut items = Vec::with_capacity(chunk.len() * 3);
            for entry in chunk {
                items.extend(entry_items(entry)?);
            }
            match self.transact(items).await? {
                TxOutcome::Done => first = true,
                TxOutcome::Cancelled(codes) if codes.iter().any(|c| c == "ConditionalCheckFailed") => {
                    // Some entries of this chunk were written before: write the others one by one.
                    for entry in chunk {
                        match self.transact(entry_items(entry)?).await? {
                            TxOutcome::Done => first = true,
                            TxOutcome::Cancelled(codes)
                                if codes.get(2).is_some_and(|c| c == "ConditionalCheckFailed") =>
                            {
                                return Err(PortError::Conflict);
                            }
                            TxOutcome::Cancelled(codes)
                                if codes.first().is_some_and(|c| c == "ConditionalCheckFailed") => {}
                            TxOutcome::Cancelled(_) => return Err(PortError::Conflict),
                        }
                    }
                }
                TxOutcome::Cancelled(_) => return Err(PortError::Conflict),
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
    ) -> Result<(), PortError> {
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

    pub async fn mark_undeliverable(
        &self,
        m: &MerchantId,
        phone: &Phone,
        u: &Undeliverable,
        purge_at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        let mut item = to_item(u)?;
        item.insert(attr::PK.into(), s(customer_pk(m, phone)));
        item.insert(attr::SK.into(), s(keys::REACH_SMS));
        self.put_item(self.with_purge(item, purge_at)).await
    }

    pub async fn undeliverable(&self, m: &MerchantId, phone: &Phone) -> Result<Option<Undeliverable>, PortError> {
        self.get(customer_pk(m, phone), keys::REACH_SMS, "GetItem").await?.map(from_item).transpose()
    }

    pub async fn sms_log(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<SmsLogEntry>, PortError> {
        self.query_prefix(customer_pk(m, phone), keys::SMS_PREFIX).await?.into_iter().map(from_item).collect()
    }

    pub async fn sms_by_sid(&self, sid: &str) -> Result<Option<SmsLogEntry>, PortError> {
        self.query_lookup(keys::sid_lookup(sid)).await?.into_iter().next().map(from_item).transpose()
    }

    /// One outbound message, read strongly consistent from the customer's partition: for a
    /// delivery report that arrives before the `SID#` index has caught up.
    pub async fn outbound_sms(
        &self,
        m: &MerchantId,
        phone: &Phone,
        sid: &str,
    ) -> Result<Option<SmsLogEntry>, PortError> {
        self.sms_in_partition(m, phone, sid, keys::SMS_OUT_PREFIX).await
    }

    /// One inbound message as stored, read strongly consistent from the customer's partition.
    pub async fn inbound_sms(
        &self,
        m: &MerchantId,
        phone: &Phone,
        sid: &str,
    ) -> Result<Option<SmsLogEntry>, PortError> {
        self.sms_in_partition(m, phone, sid, keys::SMS_IN_PREFIX).await
    }

    async fn sms_in_partition(
        &self,
        m: &MerchantId,
        phone: &Phone,
        sid: &str,
        prefix: &str,
    ) -> Result<Option<SmsLogEntry>, PortError> {
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
                    .expression_attribute_values(":p", s(prefix))
                    .expression_attribute_values(":sid", s(sid))
                    .consistent_read(true),
            )
            .await?;
        items.into_iter().next().map(from_item).transpose()
    }

    /// Whether this merchant has ever texted this phone (the first message introduces itself).
    pub async fn has_outbound_sms(&self, m: &MerchantId, phone: &Phone) -> Result<bool, PortError> {
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
