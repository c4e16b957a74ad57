//! Carts: webhook deliveries written with their dedupe marker, versions, and cancelling a phone's queued steps.

use super::*;

/// Index entries read per page when a closed account's steps are cancelled.
const TENANT_PAGE: usize = 500;

impl Store {
    pub async fn get_cart(&self, m: &MerchantId, token: &CartToken) -> Result<Option<Cart>, PortError> {
        self.get(keys::cart_pk(m, token), keys::CART, "GetItem").await?.map(from_item).transpose()
    }

    pub async fn cart_token_for_checkout(
        &self,
        m: &MerchantId,
        checkout_id: &str,
    ) -> Result<Option<CartToken>, PortError> {
        let item = self.get(keys::checkout_pk(m, checkout_id), keys::CHECKOUT, "GetItem").await?;
        Ok(item.as_ref().and_then(|i| get_s(i, "cart_token")).and_then(|t| CartToken::parse(t).ok()))
    }

    pub(super) fn cart_item(&self, cart: &Cart) -> Result<Item, PortError> {
        let mut item = to_item(cart)?;
        item.insert(attr::PK.into(), s(keys::cart_pk(&cart.merchant_id, &cart.token)));
        item.insert(attr::SK.into(), s(keys::CART));
        if let Some(phone) = &cart.phone {
            item.insert(attr::GSI1PK.into(), s(keys::phone_lookup(&cart.merchant_id, phone)));
            item.insert(attr::GSI1SK.into(), s(keys::cart_lookup_sk(&cart.token)));
        }
        let item = self.tagged(item, &cart.merchant_id);
        Ok(match cart.purge_at {
            Some(at) => self.with_purge(item, at),
            None => item,
        })
    }

    /// A pointer to a cart from partition `pk` (`CART#{token}`), holding the token and, where
    /// given, the cart's number; tagged for its merchant and purged with the cart.
    fn cart_pointer(
        &self,
        m: &MerchantId,
        pk: String,
        token: &CartToken,
        phone: Option<&Phone>,
        purge_at: Option<DateTime<Utc>>,
    ) -> Item {
        let mut ptr = key(pk, keys::cart_lookup_sk(token));
        ptr.insert("token".into(), s(token.as_str()));
        if let Some(phone) = phone {
            ptr.insert("phone".into(), s(phone.as_str()));
        }
        let ptr = self.tagged(ptr, m);
        match purge_at {
            Some(at) => self.with_purge(ptr, at),
            None => ptr,
        }
    }

    /// A cart's phone pointer (`N#{merchant}#{phone}` / `CART#{token}`).
    pub(super) fn phone_pointer(
        &self,
        m: &MerchantId,
        phone: &Phone,
        token: &CartToken,
        purge_at: Option<DateTime<Utc>>,
    ) -> Item {
        self.cart_pointer(m, keys::phone_pointer_pk(m, phone), token, None, purge_at)
    }

    /// A cart's customer-id pointer (an email pointer keyed `customer:{id}`).
    pub(super) fn customer_pointer(
        &self,
        m: &MerchantId,
        customer_id: &str,
        token: &CartToken,
        phone: Option<&Phone>,
        purge_at: Option<DateTime<Utc>>,
    ) -> Item {
        let pk = keys::email_pk(m, &crate::domain::cart::customer_ref(customer_id));
        self.cart_pointer(m, pk, token, phone, purge_at)
    }

    /// Writes one webhook delivery atomically: its dedupe marker, the cart, the checkout
    /// pointer and a consent append. A redelivery finds the marker and changes nothing.
    pub async fn write_ingest(&self, w: &IngestWrite) -> Result<IngestOutcome, PortError> {
        let mut items = Vec::with_capacity(5);
        items.push(self.dedupe_marker(&w.merchant_id, &w.event_key, w.received_at)?);

        if let Some((cart, expected)) = &w.cart {
            let item = self.cart_item(cart)?;
            let tw = match expected {
                None => self.put_new(item)?,
                Some(v) => put(&self.table, item, Some("#v = :v"), &[("#v", attr::VERSION)], &[(":v", n(v))])?,
            };
            items.push(tw);
            if let Some(id) = &cart.checkout_id {
                let mut ptr = key(keys::checkout_pk(&w.merchant_id, id), keys::CHECKOUT);
                ptr.insert("cart_token".into(), s(cart.token.as_str()));
                items.push(put(&self.table, self.tagged(ptr, &w.merchant_id), None, &[], &[])?);
            }
            // Data-subject requests by email find the cart (and its phone) through this.
            if let Some(email) = &cart.email {
                let pk = keys::email_pk(&w.merchant_id, email);
                let ptr = self.cart_pointer(&w.merchant_id, pk, &cart.token, cart.phone.as_ref(), cart.purge_at);
                items.push(put(&self.table, ptr, None, &[], &[])?);
            }
            // And by its number, read consistently (a deletion's look right after its marker
            // must see a cart committed before it; the `lookup` index may not yet).
            if let Some(phone) = &cart.phone {
                let ptr = self.phone_pointer(&w.merchant_id, phone, &cart.token, cart.purge_at);
                items.push(put(&self.table, ptr, None, &[], &[])?);
            }
            // And by the platform's customer id (Shopify's `customers/redact` names it).
            if let Some(id) = &cart.customer_id {
                let ptr = self.customer_pointer(&w.merchant_id, id, &cart.token, cart.phone.as_ref(), cart.purge_at);
                items.push(put(&self.table, ptr, None, &[], &[])?);
            }
        }
        for c in &w.consents {
            items.extend(self.consent_items(c)?.0);
        }
        let mut seen: Vec<&(SubjectKey, Option<DateTime<Utc>>)> = Vec::with_capacity(w.deletions_seen.len());
        for entry in &w.deletions_seen {
            // One operation per item in a transaction: a subject named twice is checked once.
            if !seen.iter().any(|(p, _)| *p == entry.0) {
                seen.push(entry);
            }
        }
        for (subject, deleted_at) in seen {
            items.push(self.deletion_unchanged(&w.merchant_id, subject, *deleted_at)?);
        }
        match self.transact(items).await? {
            TxOutcome::Done => Ok(IngestOutcome::Applied),
            TxOutcome::Cancelled(codes) if codes.first().is_some_and(|c| c == "ConditionalCheckFailed") => {
                Ok(IngestOutcome::Duplicate)
            }
            TxOutcome::Cancelled(_) => Err(PortError::Conflict),
        }
    }

    /// Forgets a delivery so the platform's retry is processed again (after a later step failed).
    pub async fn forget_event(&self, m: &MerchantId, event_key: &str) -> Result<(), PortError> {
        self.delete(keys::event_pk(m, event_key), keys::EVENT).await
    }

    pub async fn set_outreach_scheduled(
        &self,
        m: &MerchantId,
        token: &CartToken,
        scheduled: bool,
    ) -> Result<(), PortError> {
        self.set_cart_attribute(m, token, "outreach_scheduled", AttributeValue::Bool(scheduled)).await
    }

    /// `first_step_queued`, without a version bump (a concurrent delivery's write may drop it:
    /// then a copy queues step 0 once more, which its claim makes harmless).
    pub async fn mark_first_step_queued(&self, m: &MerchantId, token: &CartToken) -> Result<(), PortError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(keys::cart_pk(m, token), keys::CART)))
            .update_expression("SET first_step_queued = :t")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send()
            .await;
        // A cart deleted meanwhile has nothing to mark.
        conditional(res, "UpdateItem").map(|_| ())
    }

    pub async fn set_last_message_at(
        &self,
        m: &MerchantId,
        token: &CartToken,
        at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.set_cart_attribute(m, token, "last_message_at", s(at.to_rfc3339())).await
    }

    /// Sets one attribute of an existing cart and bumps its version, so claims decided on the
    /// cart before see it changed.
    async fn set_cart_attribute(
        &self,
        m: &MerchantId,
        token: &CartToken,
        name: &str,
        value: AttributeValue,
    ) -> Result<(), PortError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(keys::cart_pk(m, token), keys::CART)))
            .update_expression("SET #a = :v, #v = #v + :one")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_names("#a", name)
            .expression_attribute_values(":v", value)
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| aws("UpdateItem", e))?;
        Ok(())
    }

    /// The tokens of this phone's carts at this merchant: its pointers (consistent) and the
    /// `lookup` index (carts written before the pointers existed). A pointer may outlive the
    /// cart's hold on the number (an update that changed it): callers check the cart's phone.
    pub async fn cart_tokens_for_phone(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<CartToken>, PortError> {
        let mut items = self.query_prefix(keys::phone_pointer_pk(m, phone), "CART#").await?;
        items.extend(self.query_lookup(keys::phone_lookup(m, phone)).await?);
        let mut tokens: Vec<CartToken> =
            items.iter().filter_map(|i| get_s(i, "token")).filter_map(|t| CartToken::parse(t).ok()).collect();
        tokens.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        tokens.dedup();
        Ok(tokens)
    }

    /// Every pointer under this phone's number, stale ones included.
    pub async fn phone_pointer_keys(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<ItemKey>, PortError> {
        self.partition_keys(&keys::phone_pointer_pk(m, phone)).await
    }

    /// After an account closes: skips every step not yet claimed on the merchant's open carts
    /// (found through the `tenant` index), so nothing stays queued for a closed account.
    pub async fn cancel_merchant_outreach(&self, merchant: &Merchant, now: DateTime<Utc>) -> Result<usize, PortError> {
        let m = &merchant.id;
        let prefix = format!("K#{m}#");
        let mut cancelled = 0;
        // Page by page through the `tenant` index: each page's carts are done before the next
        // is read (a huge account is never held in memory at once).
        let mut cursor = None;
        loop {
            let (entries, next) = self.tenant_page(m, cursor, TENANT_PAGE).await?;
            let tokens: std::collections::BTreeSet<String> = entries
                .into_iter()
                .filter(|(_, sk)| sk == keys::CART)
                .filter_map(|(pk, _)| pk.strip_prefix(&prefix).map(str::to_string))
                .collect();
            for token in tokens.iter().filter_map(|t| CartToken::parse(t).ok()) {
                let Some(cart) = self.get_cart(m, &token).await? else { continue };
                if cart.status.is_closed() || !cart.outreach_scheduled {
                    continue;
                }
                for step in 0..merchant.flow.len() as u8 {
                    if self.skip_step(m, &token, step, SkipReason::MerchantClosed.as_str(), now).await? {
                        cancelled += 1;
                    }
                }
            }
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        Ok(cancelled)
    }

    /// After an opt-out: skips every step of the merchant's flow not yet claimed on this phone's
    /// open carts, so queued jobs find the step taken. Returns how many steps were cancelled.
    pub async fn cancel_outreach(
        &self,
        merchant: &Merchant,
        phone: &Phone,
        channel: Channel,
        now: DateTime<Utc>,
    ) -> Result<usize, PortError> {
        let m = &merchant.id;
        let steps = merchant.flow.len() as u8;
        // An opt-out cancels its own channel's steps: a texted STOP records both channels, key 9
        // only calls, so the texts of a flow go on after it.
        let reason = match channel {
            Channel::Sms => SkipReason::OptedOut.as_str(),
            Channel::Voice => SkipReason::VoiceOptedOut.as_str(),
        };
        let applies = |c: Channel| c == channel;
        let mut cancelled = 0;
        for token in self.cart_tokens_for_phone(m, phone).await? {
            let Some(cart) = self.get_cart(m, &token).await? else { continue };
            if cart.status.is_closed() || !cart.outreach_scheduled {
                continue;
            }
            for step in (0..steps).filter(|s| applies(merchant.flow[*s as usize].channel)) {
                if self.skip_step(m, &token, step, reason, now).await? {
                    cancelled += 1;
                }
            }
        }
        Ok(cancelled)
    }
}
