//! Consent-API answers replayed for an `Idempotency-Key`.

use super::*;

impl Store {
    pub(super) fn idempotency_pk(m: &MerchantId, key: &str) -> String {
        // The client's key is hashed: it is opaque to us and may hold any characters.
        keys::idempotency_pk(m, &crate::signature::sha256_hex(key.as_bytes()))
    }

    pub(super) fn idempotency_item(&self, m: &MerchantId, key: &str, r: &IdempotencyRecord) -> Result<Item, PortError> {
        let mut item = to_item(r)?;
        item.insert(attr::PK.into(), s(Self::idempotency_pk(m, key)));
        item.insert(attr::SK.into(), s(keys::IDEMPOTENCY));
        item.insert(attr::EXPIRES_AT.into(), n((r.created_at + Duration::hours(IDEMPOTENCY_TTL_HOURS)).timestamp()));
        Ok(item)
    }

    /// The record under this key, fresh or past its window: DynamoDB's TTL deletes late, and
    /// the use case answers a key past its window itself (it must not look unused).
    pub async fn get_idempotency(&self, m: &MerchantId, key: &str) -> Result<Option<IdempotencyRecord>, PortError> {
        let item = self.get(Self::idempotency_pk(m, key), keys::IDEMPOTENCY, "GetItem").await?;
        item.map(from_item).transpose()
    }

    /// Stores an answer; `false` when the key already holds one.
    pub async fn put_idempotency(
        &self,
        m: &MerchantId,
        key: &str,
        record: &IdempotencyRecord,
    ) -> Result<bool, PortError> {
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
}
