//! The consent ledger: entries and the state on top of them, appended in one transaction.

use super::*;

impl Store {
    /// The writes of an append, the entry and the state they leave. The new entry is the proof
    /// outreach relies on, so it is kept while it is current (no purge date); the entry it
    /// supersedes gets its purge date now; the state's purge date (the whole ledger's) moves to
    /// `consent_records` days after this event. The state is updated field by field, leaving
    /// the purger's checkpoint alone, and only at the sequence the append was decided on.
    pub(super) fn consent_items(
        &self,
        c: &ConsentAppend,
    ) -> Result<(Vec<TransactWriteItem>, LedgerEntry, ConsentState), PortError> {
        let pk = customer_pk(&c.merchant_id, &c.phone);
        let channel = c.event.channel;
        let seq = c.state.seq + 1;
        let hash = entry_hash(c.state.head_hash.as_deref(), seq, &c.event);
        let entry =
            LedgerEntry { seq, hash: hash.clone(), prev_hash: c.state.head_hash.clone(), event: c.event.clone() };
        let mut entry_item = to_item(&entry)?;
        entry_item.insert(attr::PK.into(), s(pk.clone()));
        entry_item.insert(attr::SK.into(), s(keys::consent_entry_sk(channel, seq)));
        let entry_item = self.tagged(entry_item, &c.merchant_id);

        let next = c.state.after(&c.event, hash);
        let bucket = self.purge_bucket(&pk);
        let mut set = vec!["#pb = :pb".to_string(), "#pa = :pa".to_string()];
        let mut state = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk.clone(), keys::consent_state_sk(channel))))
            .expression_attribute_names("#pb", attr::PURGE_BUCKET)
            .expression_attribute_names("#pa", attr::PURGE_AT)
            .expression_attribute_values(":pb", s(bucket.clone()))
            .expression_attribute_values(":pa", s(keys::sort_time(c.purge_at)));
        for (i, (name, value)) in to_item(&next)?.into_iter().enumerate() {
            if name == "first_seq" || name == "checkpoint_hash" {
                continue;
            }
            set.push(format!("#f{i} = :f{i}"));
            state = state
                .expression_attribute_names(format!("#f{i}"), name)
                .expression_attribute_values(format!(":f{i}"), value);
        }
        state = state.expression_attribute_names("#seq", attr::SEQ);
        state = if c.state.seq == 0 {
            state.condition_expression("attribute_not_exists(#seq)")
        } else {
            state.condition_expression("#seq = :prev").expression_attribute_values(":prev", n(c.state.seq))
        };
        let state = built(state.update_expression(format!("SET {}", set.join(", "))).build())?;
        let mut items = vec![self.put_new(entry_item)?, TransactWriteItem::builder().update(state).build()];
        // The suppression record moves with the ledger: an opt-out leaves one (date and source
        // under a keyed hash), an opt-in the person or merchant made since removes it.
        let suppression = key(keys::suppression_pk(&c.merchant_id, &c.phone, channel), keys::SUPPRESSION_SK);
        items.push(match next.suppression() {
            Some(sup) => {
                let mut item = suppression;
                item.extend(to_item(&sup)?);
                item.insert("at_sort".into(), s(keys::sort_time(sup.at)));
                put(&self.table, item, None, &[], &[])?
            }
            None => TransactWriteItem::builder()
                .delete(built(Delete::builder().table_name(&self.table).set_key(Some(suppression)).build())?)
                .build(),
        });
        if c.state.seq > 0 {
            // The entry just superseded: purged `consent_records` days from now.
            let superseded = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(pk, keys::consent_entry_sk(channel, c.state.seq))))
                .update_expression("SET #pb = :pb, #pa = :pa")
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#pb", attr::PURGE_BUCKET)
                .expression_attribute_names("#pa", attr::PURGE_AT)
                .expression_attribute_values(":pb", s(bucket))
                .expression_attribute_values(":pa", s(keys::sort_time(c.purge_at)));
            items.push(TransactWriteItem::builder().update(built(superseded.build())?).build());
        }
        Ok((items, entry, next))
    }

    /// The current consent state, strongly consistent: every send re-checks it.
    pub async fn consent_state(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
    ) -> Result<ConsentState, PortError> {
        match self.get(customer_pk(m, phone), keys::consent_state_sk(channel), "GetItem").await? {
            Some(item) => from_item(item),
            // No ledger (never one, or retention, a deletion or a closure removed it): a kept
            // opt-out still answers.
            None => Ok(self
                .suppression(m, phone, channel)
                .await?
                .map_or_else(ConsentState::default, |s| ConsentState::suppressed(&s))),
        }
    }

    /// A ledger head by its key (the purger's due item).
    pub async fn ledger_head(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<Option<(MerchantId, Phone, Channel, ConsentState)>, PortError> {
        let Some((m, phone)) = keys::parse_customer_pk(pk) else { return Ok(None) };
        let channel = match sk.strip_prefix("CONSENT#") {
            Some("voice") => Channel::Voice,
            Some("sms") => Channel::Sms,
            _ => return Ok(None),
        };
        let Some(item) = self.get(pk.to_string(), sk.to_string(), "GetItem").await? else { return Ok(None) };
        Ok(Some((m, phone, channel, from_item(item)?)))
    }

    /// A channel's suppression record, if an opt-out left one.
    pub async fn suppression(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
    ) -> Result<Option<Suppression>, PortError> {
        self.get(keys::suppression_pk(m, phone, channel), keys::SUPPRESSION_SK, "GetItem")
            .await?
            .map(from_item)
            .transpose()
    }

    /// Keeps an opt-out before its ledger goes (retention, deletion, closure): ledgers written
    /// before suppression records existed get theirs here. Only while the ledger head still has
    /// the sequence that was read (an opt-in appended since keeps the person opted in), and a
    /// newer suppression record is never replaced.
    pub async fn keep_suppression(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
        sup: &Suppression,
        seq: u64,
    ) -> Result<(), PortError> {
        let mut item = key(keys::suppression_pk(m, phone, channel), keys::SUPPRESSION_SK);
        item.extend(to_item(sup)?);
        item.insert("at_sort".into(), s(keys::sort_time(sup.at)));
        let head = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(customer_pk(m, phone), keys::consent_state_sk(channel))))
            .condition_expression("#seq = :seq")
            .expression_attribute_names("#seq", attr::SEQ)
            .expression_attribute_values(":seq", n(seq));
        let put = put(
            &self.table,
            item,
            Some("attribute_not_exists(#pk) OR at_sort < :at"),
            &[("#pk", attr::PK)],
            &[(":at", s(keys::sort_time(sup.at)))],
        )?;
        let items = vec![TransactWriteItem::builder().condition_check(built(head.build())?).build(), put];
        match self.transact(items).await? {
            TxOutcome::Done => Ok(()),
            // Either the ledger moved on (an opt-in) or a newer record is kept: nothing to do.
            TxOutcome::Cancelled(codes) if only_conditions_failed(&codes) => Ok(()),
            // A conflict or a throttle kept nothing: the caller must not delete the ledger.
            TxOutcome::Cancelled(_) => Err(PortError::Conflict),
        }
    }

    /// Appends one event on top of the state it was decided against.
    pub async fn append_consent(&self, c: &ConsentAppend) -> Result<ConsentState, PortError> {
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
        deletions_seen: &[(SubjectKey, Option<DateTime<Utc>>)],
        answer: impl FnOnce(&LedgerEntry, &ConsentState) -> IdempotencyRecord,
    ) -> Result<IdempotencyRecord, PortError> {
        let (mut items, entry, next) = self.consent_items(c)?;
        let record = answer(&entry, &next);
        if let Some(key) = idempotency_key {
            let item = self.idempotency_item(&c.merchant_id, key, &record)?;
            items.push(self.put_new(item)?);
        }
        for (subject, deleted_at) in deletions_seen {
            items.push(self.deletion_unchanged(&c.merchant_id, subject, *deleted_at)?);
        }
        self.transact_append(items).await?;
        Ok(record)
    }

    pub(super) async fn transact_append(&self, items: Vec<TransactWriteItem>) -> Result<(), PortError> {
        match self.transact(items).await? {
            TxOutcome::Done => Ok(()),
            TxOutcome::Cancelled(_) => Err(PortError::Conflict),
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
    ) -> Result<Option<ConsentState>, PortError> {
        self.record_consent_while(m, phone, event, purge_at, None).await
    }

    /// `record_consent`, in a transaction that also holds only while `deletion` (a subject's
    /// marker as read) is unchanged; a moved marker is a `Conflict`, not retried here.
    pub async fn record_consent_while(
        &self,
        m: &MerchantId,
        phone: &Phone,
        event: &ConsentEvent,
        purge_at: DateTime<Utc>,
        deletion: Option<&(SubjectKey, Option<DateTime<Utc>>)>,
    ) -> Result<Option<ConsentState>, PortError> {
        for _ in 0..4 {
            let state = self.consent_state(m, phone, event.channel).await?;
            if !state.accepts(event) {
                return Ok(None);
            }
            let append =
                ConsentAppend { merchant_id: m.clone(), phone: phone.clone(), state, event: event.clone(), purge_at };
            let (mut items, _, next) = self.consent_items(&append)?;
            if let Some((subject, deleted_at)) = deletion {
                items.push(self.deletion_unchanged(m, subject, *deleted_at)?);
            }
            match self.transact(items).await? {
                TxOutcome::Done => return Ok(Some(next)),
                // Which condition failed is not told apart: the ledger's is read again here,
                // a moved marker is the caller's to read again.
                TxOutcome::Cancelled(codes)
                    if deletion.is_some() && codes.last().is_some_and(|c| c == "ConditionalCheckFailed") =>
                {
                    return Err(PortError::Conflict);
                }
                TxOutcome::Cancelled(_) => continue,
            }
        }
        Err(PortError::Conflict)
    }

    /// The whole ledger of one channel, oldest first.
    pub async fn consent_ledger(
        &self,
        m: &MerchantId,
        phone: &Phone,
        channel: Channel,
    ) -> Result<Vec<LedgerEntry>, PortError> {
        let items = self.query_prefix(customer_pk(m, phone), keys::consent_entry_prefix(channel)).await?;
        items.into_iter().map(from_item).collect()
    }
}
