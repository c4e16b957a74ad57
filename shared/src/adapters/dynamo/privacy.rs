//! What data-subject requests read and leave behind: a customer's items, their carts by phone
//! or email, the deletion marker that keeps an opt-out honoured, and the proof of a deletion.

use super::*;

use crate::domain::retention::PurgeKind;

/// Writes of a deletion marker tried while deliveries' transactions hold it.
const MARKER_ATTEMPTS: u64 = 5;

/// One customer item as a record: its key, its kind by sort key, and what an export shows of it.
pub(super) fn customer_record(item: Item) -> CustomerRecord {
    let pk = get_s(&item, attr::PK).unwrap_or_default().to_string();
    let sk = get_s(&item, attr::SK).unwrap_or_default().to_string();
    let kind = PurgeKind::of_sort_key(&sk);
    let channel = || match sk.split('#').nth(1) {
        Some("voice") => Channel::Voice,
        _ => Channel::Sms,
    };
    let decoded = match kind {
        PurgeKind::SmsLog => from_item(item).map(|e| CustomerData::Sms(Box::new(e))),
        PurgeKind::CallLog => from_item(item).map(|c| CustomerData::Call(Box::new(c))),
        PurgeKind::ConsentEntry => {
            from_item(item).map(|e| CustomerData::ConsentEntry { channel: channel(), entry: Box::new(e) })
        }
        PurgeKind::ConsentLedger => {
            from_item(item).map(|s| CustomerData::ConsentState { channel: channel(), state: Box::new(s) })
        }
        PurgeKind::Transcript => from_item(item).map(|c| CustomerData::Conversation(Box::new(c))),
        PurgeKind::Recording => Ok(CustomerData::Recording { s3_key: get_s(&item, "s3_key").map(str::to_string) }),
        _ => Ok(CustomerData::Other),
    };
    // One broken item must not block a deletion (or every later purge run).
    let data = decoded.unwrap_or_else(|e| CustomerData::Unreadable(e.to_string()));
    CustomerRecord { key: (pk, sk), kind, data }
}

/// `TWILIO#{request}#MSG#{sid}` / `…#REC#{sid}` under the merchant's request partition.
fn provider_copy_sk(request: &str, c: &ProviderCopy) -> String {
    match c {
        ProviderCopy::Message(sid) => format!("TWILIO#{request}#MSG#{sid}"),
        ProviderCopy::Recording(sid) => format!("TWILIO#{request}#REC#{sid}"),
    }
}

impl Store {
    /// Every record of a customer's partition, decoded as far as an export or an erasure needs.
    pub async fn customer_records(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<CustomerRecord>, PortError> {
        Ok(self.customer_items(m, phone).await?.into_iter().map(customer_record).collect())
    }

    /// Everything stored for one cart: its partition (cart, steps), its checkout and email pointers.
    pub async fn cart_keys(&self, m: &MerchantId, cart: &Cart) -> Result<Vec<ItemKey>, PortError> {
        let mut out = self.partition_keys(&keys::cart_pk(m, &cart.token)).await?;
        if let Some(phone) = &cart.phone {
            out.push((keys::phone_pointer_pk(m, phone), keys::cart_lookup_sk(&cart.token)));
        }
        if let Some(id) = &cart.checkout_id {
            out.push((keys::checkout_pk(m, id), "CHECKOUT".into()));
        }
        if let Some(email) = &cart.email {
            out.push((keys::email_pk(m, email), keys::cart_lookup_sk(&cart.token)));
        }
        if let Some(id) = &cart.customer_id {
            out.push((keys::email_pk(m, &crate::domain::cart::customer_ref(id)), keys::cart_lookup_sk(&cart.token)));
        }
        Ok(out)
    }

    /// Every item of a customer's partition (consent, messages, calls, counters), raw.
    pub async fn customer_items(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<Item>, PortError> {
        self.query_all(
            self.client
                .query()
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_values(":pk", s(customer_pk(m, phone)))
                .consistent_read(true),
        )
        .await
    }

    /// The carts of a phone at a merchant.
    pub async fn carts_for_phone(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<Cart>, PortError> {
        let mut carts = Vec::new();
        for token in self.cart_tokens_for_phone(m, phone).await? {
            if let Some(c) = self.get_cart(m, &token).await?.filter(|c| c.phone.as_ref() == Some(phone)) {
                carts.push(c);
            }
        }
        Ok(carts)
    }

    /// The phones an email's carts name (the email pointers written with each cart).
    pub async fn phones_for_email(
        &self,
        m: &MerchantId,
        email: &str,
    ) -> Result<Vec<(CartToken, Option<Phone>)>, PortError> {
        let items = self.query_prefix(keys::email_pk(m, email), "CART#").await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                let token = CartToken::parse(get_s(i, "token")?).ok()?;
                Some((token, get_s(i, "phone").and_then(|p| Phone::parse(p, None).ok())))
            })
            .collect())
    }

    /// After a deletion: the subject's key (an HMAC), with when it was deleted. A marker only
    /// moves forward: a put dated at or before the one stored changes nothing.
    pub async fn put_deletion_marker(
        &self,
        m: &MerchantId,
        subject: &SubjectKey,
        at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        let at = keys::sort_time(at);
        let mut item = key(keys::deleted_pk(m, subject.as_str()), "DELETED");
        item.insert("deleted_at".into(), s(at.clone()));
        let item = self.tagged(item, m);
        // Deliveries check this item in their transactions; DynamoDB refuses a write that meets
        // one in flight. The checks are short: try again rather than fail the deletion.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .condition_expression("attribute_not_exists(#pk) OR #d < :d")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#d", "deleted_at")
                .expression_attribute_values(":d", s(at.clone()))
                .send()
                .await;
            match put {
                Ok(_) => return Ok(()),
                Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                    return Ok(());
                }
                Err(e)
                    if attempt < MARKER_ATTEMPTS
                        && e.as_service_error().is_some_and(|e| e.is_transaction_conflict_exception()) =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                }
                Err(e) => return Err(aws("PutItem", e)),
            }
        }
    }

    /// A transaction's check that this subject's deletion marker is still as it was read.
    pub(super) fn deletion_unchanged(
        &self,
        m: &MerchantId,
        subject: &SubjectKey,
        deleted_at: Option<DateTime<Utc>>,
    ) -> Result<TransactWriteItem, PortError> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(keys::deleted_pk(m, subject.as_str()), "DELETED")));
        let check = match deleted_at {
            None => check.condition_expression("attribute_not_exists(#pk)").expression_attribute_names("#pk", attr::PK),
            Some(at) => check
                .condition_expression("#d = :d")
                .expression_attribute_names("#d", "deleted_at")
                .expression_attribute_values(":d", s(keys::sort_time(at))),
        };
        Ok(TransactWriteItem::builder().condition_check(built(check.build())?).build())
    }

    /// When this subject's data was deleted at the merchant's request, if it was.
    pub async fn deletion_marker(
        &self,
        m: &MerchantId,
        subject: &SubjectKey,
    ) -> Result<Option<DateTime<Utc>>, PortError> {
        let item = self.get(keys::deleted_pk(m, subject.as_str()), "DELETED", "GetItem").await?;
        Ok(item
            .as_ref()
            .and_then(|i| get_s(i, "deleted_at"))
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    /// A request's status (`V#{merchant}` / `DSR#{id}`), with no personal data: the proof of a
    /// deletion is its subject's HMAC, its time and its counts.
    pub async fn put_privacy_status(
        &self,
        m: &MerchantId,
        status: &PrivacyStatus,
        subject: Option<&str>,
    ) -> Result<(), PortError> {
        let mut item = to_item(status)?;
        item.insert(attr::PK.into(), s(keys::request_pk(m)));
        item.insert(attr::SK.into(), s(format!("DSR#{}", status.id)));
        if let Some(subject) = subject {
            item.insert("subject".into(), s(subject));
        }
        self.put_item(item).await
    }

    /// Records the provider's copies a deletion must remove, due for the purger at `retry_at`.
    pub async fn put_provider_copies(
        &self,
        m: &MerchantId,
        request: &str,
        copies: &[ProviderCopy],
        retry_at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        let puts = copies.iter().map(|c| {
            let mut item = key(keys::request_pk(m), provider_copy_sk(request, c));
            item.insert("request".into(), s(request));
            item.insert("copy_kind".into(), s(c.kind()));
            self.put_item(self.with_purge(item, retry_at))
        });
        futures::future::try_join_all(puts).await.map(|_| ())
    }

    /// The provider's copies a request still has to remove.
    pub async fn provider_copies(&self, m: &MerchantId, request: &str) -> Result<Vec<ProviderCopy>, PortError> {
        let prefix = format!("TWILIO#{request}#");
        Ok(self
            .prefix_keys(&keys::request_pk(m), &prefix)
            .await?
            .into_iter()
            .filter_map(|(_, sk)| {
                let rest = sk.strip_prefix(&prefix)?;
                match rest.split_once('#')? {
                    ("MSG", sid) => Some(ProviderCopy::Message(sid.to_string())),
                    ("REC", sid) => Some(ProviderCopy::Recording(sid.to_string())),
                    _ => None,
                }
            })
            .collect())
    }

    pub async fn provider_copy_removed(
        &self,
        m: &MerchantId,
        request: &str,
        c: &ProviderCopy,
    ) -> Result<(), PortError> {
        self.delete(keys::request_pk(m), provider_copy_sk(request, c)).await
    }

    /// The export files made for a subject (by its proof id), so a deletion removes them too.
    pub async fn export_keys_for(&self, m: &MerchantId, subject: &str) -> Result<Vec<String>, PortError> {
        let items = self
            .query_all(
                self.client
                    .query()
                    .key_condition_expression("#pk = :pk AND begins_with(#sk, :p)")
                    .filter_expression("subject = :s AND attribute_exists(export_key)")
                    .expression_attribute_names("#pk", attr::PK)
                    .expression_attribute_names("#sk", attr::SK)
                    .expression_attribute_values(":pk", s(keys::request_pk(m)))
                    .expression_attribute_values(":p", s("DSR#"))
                    .expression_attribute_values(":s", s(subject))
                    .consistent_read(true),
            )
            .await?;
        Ok(items.iter().filter_map(|i| get_s(i, "export_key").map(str::to_string)).collect())
    }

    pub async fn privacy_status(&self, m: &MerchantId, id: &str) -> Result<Option<PrivacyStatus>, PortError> {
        self.get(keys::request_pk(m), format!("DSR#{id}"), "GetItem").await?.map(from_item).transpose()
    }

    /// A request that waits (a hold; a platform's request for the next purge run), due at `at`.
    pub async fn put_pending_privacy(
        &self,
        m: &MerchantId,
        p: &PendingPrivacy,
        at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.put_item(self.pending_privacy_item(m, p, at)?).await
    }

    pub(super) fn pending_privacy_item(
        &self,
        m: &MerchantId,
        p: &PendingPrivacy,
        at: DateTime<Utc>,
    ) -> Result<Item, PortError> {
        let mut item = to_item(p)?;
        item.insert(attr::PK.into(), s(keys::request_pk(m)));
        item.insert(attr::SK.into(), s(format!("PRIVACY#{}", p.id)));
        Ok(self.with_purge(item, at))
    }

    /// Where a pending request of `m` with this id is kept.
    pub fn pending_privacy_key(m: &MerchantId, id: &str) -> (String, String) {
        (keys::request_pk(m), format!("PRIVACY#{id}"))
    }

    pub async fn pending_privacy(&self, pk: &str, sk: &str) -> Result<Option<PendingPrivacy>, PortError> {
        self.get(pk.to_string(), sk, "GetItem").await?.map(from_item).transpose()
    }
}
