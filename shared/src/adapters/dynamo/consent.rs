//! The consent ledger: entries and the state on top of them, appended in one transaction.

use super::*;

impl Store {
    /// The two writes of an append (entry, new head), the entry and the state they leave.
    pub(super) fn consent_items(
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

    pub(super) async fn transact_append(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
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
}
