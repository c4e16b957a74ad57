//! Burst counters of webhook-created carts (SMS pumping guard): one atomic ADD per cart.

use super::*;
use crate::domain::guard::BurstKind;
use aws_sdk_dynamodb::types::ReturnValue;

impl Store {
    /// Counts one more new cart for `hashed` (a keyed hash of the shopper's IP or the number's
    /// prefix) in the window starting at `window_start`; returns the count, this cart included.
    pub async fn bump_burst(
        &self,
        m: &MerchantId,
        kind: BurstKind,
        hashed: &str,
        window_start: DateTime<Utc>,
        window: Duration,
    ) -> Result<u64, PortError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(keys::burst_pk(m, kind.as_str(), hashed), keys::burst_sk(window_start))))
            .update_expression("ADD #n :one SET #exp = if_not_exists(#exp, :exp)")
            .expression_attribute_names("#n", "carts")
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":one", n(1))
            // Kept a day past its window (TTL), never longer: it holds no more than a hash.
            .expression_attribute_values(":exp", n((window_start + window + Duration::days(1)).timestamp()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| aws("UpdateItem", e))?;
        let count = out
            .attributes()
            .and_then(|a| a.get("carts"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| PortError::Decode("burst counter without a count".into()))?;
        Ok(count)
    }
}
