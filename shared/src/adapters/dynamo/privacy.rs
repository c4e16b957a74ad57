//! What data-subject requests read and leave behind: a customer's items, their carts by phone
//! or email, the deletion marker that keeps an opt-out honoured, and the proof of a deletion.

use super::*;
use crate::domain::voice::CallLogEntry;

/// What a data-subject request asks for, stored while it waits (a legal hold, a platform's
/// request handled by the next purge run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPrivacy {
    pub id: String,
    /// `export` or `delete`.
    pub action: String,
    #[serde(default)]
    pub phone: Option<Phone>,
    #[serde(default)]
    pub email: Option<String>,
    pub requested_at: DateTime<Utc>,
}

/// The status of a data-subject request, as `GET /v1/privacy/requests/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyStatus {
    pub id: String,
    pub action: String,
    /// `pending`, `held`, `done`.
    pub status: String,
    #[serde(default)]
    pub export_key: Option<String>,
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    pub updated_at: DateTime<Utc>,
}

use std::collections::BTreeMap;

impl Store {
    /// Every item of a customer's partition (consent, messages, calls, counters).
    pub async fn customer_items(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<Item>, StoreError> {
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
    pub async fn carts_for_phone(&self, m: &MerchantId, phone: &Phone) -> Result<Vec<Cart>, StoreError> {
        let mut carts = Vec::new();
        for token in self.cart_tokens_for_phone(m, phone).await? {
            if let Some(c) = self.get_cart(m, &token).await? {
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
    ) -> Result<Vec<(CartToken, Option<Phone>)>, StoreError> {
        let items = self.query_prefix(keys::email_pk(m, email), "CART#").await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                let token = CartToken::parse(get_s(i, "token")?).ok()?;
                Some((token, get_s(i, "phone").and_then(|p| Phone::parse(p, None).ok())))
            })
            .collect())
    }

    pub fn decode_call(item: Item) -> Result<CallLogEntry, StoreError> {
        from_item(item)
    }

    pub fn decode_sms(item: Item) -> Result<SmsLogEntry, StoreError> {
        from_item(item)
    }

    pub fn decode_entry(item: Item) -> Result<LedgerEntry, StoreError> {
        from_item(item)
    }

    pub fn decode_state(item: Item) -> Result<ConsentState, StoreError> {
        from_item(item)
    }

    /// After a deletion: the phone's opt-out outlives its data. Only an HMAC of the number is
    /// kept, with when it was deleted.
    pub async fn put_deletion_marker(
        &self,
        m: &MerchantId,
        phone: &Phone,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut item = key(keys::deleted_pk(m, &phone.subject_id()), "DELETED");
        item.insert("deleted_at".into(), s(keys::sort_time(at)));
        self.put_item(item).await
    }

    /// When this phone's data was deleted at the merchant's request, if it was.
    pub async fn deletion_marker(&self, m: &MerchantId, phone: &Phone) -> Result<Option<DateTime<Utc>>, StoreError> {
        let item = self.get(keys::deleted_pk(m, &phone.subject_id()), "DELETED", "GetItem").await?;
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
    ) -> Result<(), StoreError> {
        let mut item = to_item(status)?;
        item.insert(attr::PK.into(), s(keys::request_pk(m)));
        item.insert(attr::SK.into(), s(format!("DSR#{}", status.id)));
        if let Some(subject) = subject {
            item.insert("subject".into(), s(subject));
        }
        self.put_item(item).await
    }

    pub async fn privacy_status(&self, m: &MerchantId, id: &str) -> Result<Option<PrivacyStatus>, StoreError> {
        self.get(keys::request_pk(m), format!("DSR#{id}"), "GetItem").await?.map(from_item).transpose()
    }

    /// A request that waits (a hold; a platform's request for the next purge run), due at `at`.
    pub async fn put_pending_privacy(
        &self,
        m: &MerchantId,
        p: &PendingPrivacy,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.put_item(self.pending_privacy_item(m, p, at)?).await
    }

    pub(super) fn pending_privacy_item(
        &self,
        m: &MerchantId,
        p: &PendingPrivacy,
        at: DateTime<Utc>,
    ) -> Result<Item, StoreError> {
        let mut item = to_item(p)?;
        item.insert(attr::PK.into(), s(keys::request_pk(m)));
        item.insert(attr::SK.into(), s(format!("PRIVACY#{}", p.id)));
        Ok(with_purge(item, at))
    }

    pub async fn pending_privacy(&self, pk: &str, sk: &str) -> Result<Option<PendingPrivacy>, StoreError> {
        self.get(pk.to_string(), sk, "GetItem").await?.map(from_item).transpose()
    }
}
