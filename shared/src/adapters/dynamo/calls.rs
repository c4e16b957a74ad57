//! The call log: one entry per placed call in the customer's partition, with the state of its
//! recording (noted by the callback, stored in S3, then deleted at Twilio).

use super::*;
use crate::domain::voice::{CallLogEntry, CallRecording, call_status_rank};

impl Store {
    pub(super) fn call_log_item(&self, entry: &CallLogEntry) -> Result<Item, PortError> {
        let mut entry = entry.clone();
        entry.status_history.entry(entry.status.clone()).or_insert(entry.created_at);
        let mut item = to_item(&entry)?;
        let pk = customer_pk(&entry.merchant_id, &entry.phone);
        item.insert(attr::PK.into(), s(pk.clone()));
        item.insert(attr::SK.into(), s(keys::call_sk(entry.created_at, &entry.call_sid)));
        item.insert(attr::STATUS_RANK.into(), n(call_status_rank(&entry.status)));
        item.insert(attr::GSI1PK.into(), s(keys::sid_lookup(&entry.call_sid)));
        item.insert(attr::GSI1SK.into(), s(pk));
        Ok(self.with_purge(self.tagged(item, &entry.merchant_id), entry.purge_at))
    }

    fn call_key(entry: &CallLogEntry) -> Item {
        key(customer_pk(&entry.merchant_id, &entry.phone), keys::call_sk(entry.created_at, &entry.call_sid))
    }

    pub async fn call_log(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<CallLogEntry>, PortError> {
        self.query_prefix(customer_pk(m, phone), keys::CALL_PREFIX).await?.into_iter().map(from_item).collect()
    }

    /// A call by its SID: the lookup index finds its key (eventually consistent: a caller that
    /// finds nothing right after the call was placed retries), then the item itself is read
    /// strongly consistent, so its recording state is never a stale copy.
    pub async fn call_by_sid(&self, sid: &str) -> Result<Option<CallLogEntry>, PortError> {
        let items = self.query_lookup(keys::sid_lookup(sid)).await?;
        let Some(found) =
            items.into_iter().find(|i| get_s(i, attr::SK).is_some_and(|sk| sk.starts_with(keys::CALL_PREFIX)))
        else {
            return Ok(None);
        };
        let (Some(pk), Some(sk)) = (get_s(&found, attr::PK), get_s(&found, attr::SK)) else { return Ok(None) };
        self.get(pk.to_string(), sk.to_string(), "GetItem").await?.map(from_item).transpose()
    }

    /// A call read strongly consistent from the customer's partition.
    pub async fn call_in_partition(
        &self,
        m: &MerchantId,
        phone: &Phone,
        sid: &str,
    ) -> Result<Option<CallLogEntry>, PortError> {
        let items = self
            .query_all(
                self.client
                    .query()
                    .key_condition_expression("#pk = :pk AND begins_with(#sk, :p)")
                    .filter_expression("call_sid = :sid")
                    .expression_attribute_names("#pk", attr::PK)
                    .expression_attribute_names("#sk", attr::SK)
                    .expression_attribute_values(":pk", s(customer_pk(m, phone)))
                    .expression_attribute_values(":p", s(keys::CALL_PREFIX))
                    .expression_attribute_values(":sid", s(sid))
                    .consistent_read(true),
            )
            .await?;
        items.into_iter().next().map(from_item).transpose()
    }

    /// Records a status callback. The history keeps each status once; the current status only
    /// moves forward, whatever order Twilio's callbacks arrive in.
    pub async fn update_call_status(
        &self,
        entry: &CallLogEntry,
        u: &CallUpdate<'_>,
        at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        let mut set = vec!["status_history.#s = if_not_exists(status_history.#s, :t)".to_string()];
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::call_key(entry)))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#s", u.status)
            .expression_attribute_values(":t", s(at.to_rfc3339()));
        if let Some(d) = u.duration_seconds {
            set.push("duration_seconds = :d".into());
            req = req.expression_attribute_values(":d", n(d));
        }
        if let Some(a) = u.answered_by {
            set.push("answered_by = :a".into());
            req = req.expression_attribute_values(":a", s(a));
        }
        if let Some(e) = u.error_code {
            set.push("error_code = :e".into());
            req = req.expression_attribute_values(":e", n(e));
        }
        req.update_expression(format!("SET {}", set.join(", "))).send().await.map_err(|e| aws("UpdateItem", e))?;
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::call_key(entry)))
            .update_expression("SET #st = :s, #rank = :r")
            // Never recreate an entry retention or a deletion removed in between.
            .condition_expression("attribute_exists(#pk) AND (attribute_not_exists(#rank) OR #rank < :r)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_names("#rank", attr::STATUS_RANK)
            .expression_attribute_values(":s", s(u.status))
            .expression_attribute_values(":r", n(call_status_rank(u.status)))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(aws("UpdateItem", e)),
        }
    }

    /// Notes a recording on its call, once: a repeated callback finds it noted and changes
    /// nothing (in particular not a key already stored). `false` when it was noted before.
    pub async fn note_recording(&self, entry: &CallLogEntry, rec: &CallRecording) -> Result<bool, PortError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::call_key(entry)))
            .update_expression("SET recording = :r")
            .condition_expression("attribute_exists(#pk) AND attribute_not_exists(recording)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_values(
                ":r",
                serde_dynamo::to_attribute_value(rec).map_err(|e| PortError::Decode(e.to_string()))?,
            )
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(aws("UpdateItem", e)),
        }
    }

    /// Our copy is in S3 under `s3_key`: noted on the call, and a purge item (`REC#{call}`) put
    /// with the recording's own purge date, in one transaction.
    pub async fn recording_stored(&self, entry: &CallLogEntry, sid: &str, s3_key: &str) -> Result<(), PortError> {
        let note = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::call_key(entry)))
            .update_expression("SET recording.s3_key = :k")
            .condition_expression("recording.recording_sid = :sid")
            .expression_attribute_values(":k", s(s3_key))
            .expression_attribute_values(":sid", s(sid));
        let pk = customer_pk(&entry.merchant_id, &entry.phone);
        let purge_at = entry.recording.as_ref().map_or(entry.purge_at, |r| r.purge_at);
        let mut rec = key(pk, format!("REC#{}", entry.call_sid));
        rec.insert("s3_key".into(), s(s3_key));
        rec.insert("call_sid".into(), s(&entry.call_sid));
        rec.insert("log_sk".into(), s(keys::call_sk(entry.created_at, &entry.call_sid)));
        let rec = self.with_purge(self.tagged(rec, &entry.merchant_id), purge_at);
        let items = vec![
            TransactWriteItem::builder().update(built(note.build())?).build(),
            put(&self.table, rec, None, &[], &[])?,
        ];
        match self.transact(items).await? {
            TxOutcome::Done => Ok(()),
            TxOutcome::Cancelled(_) => Err(PortError::Conflict),
        }
    }

    /// Twilio's copy is gone (deleted after ours was stored).
    pub async fn recording_released(&self, entry: &CallLogEntry, sid: &str) -> Result<(), PortError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::call_key(entry)))
            .update_expression("SET recording.twilio_deleted = :t")
            .condition_expression("recording.recording_sid = :sid AND attribute_exists(recording.s3_key)")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":sid", s(sid))
            .send()
            .await
            .map_err(|e| aws("UpdateItem", e))?;
        Ok(())
    }
}
