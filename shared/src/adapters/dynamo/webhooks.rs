//! What verifying a platform webhook reads: its merchant with the secrets signatures are checked
//! with, and whether the delivery's dedupe marker is stored.

use super::*;
use crate::ports::WebhookMerchants;

impl Store {
    /// Whether the delivery `event_key` was applied: its dedupe marker (written in the same
    /// transaction as its changes) is there.
    pub async fn delivery_applied(&self, m: &MerchantId, event_key: &str) -> Result<bool, PortError> {
        Ok(self.get(keys::event_pk(m, event_key), keys::EVENT, "GetItem").await?.is_some())
    }
}

impl WebhookMerchants for Store {
    async fn merchant_by_shop_domain(&self, domain: &str) -> Result<Option<MerchantRecord>, PortError> {
        Store::merchant_by_shop_domain(self, domain).await
    }
    async fn merchant_with_secrets(&self, id: &MerchantId) -> Result<Option<MerchantRecord>, PortError> {
        Store::get_merchant_with_secrets(self, id).await
    }
    async fn delivery_applied(&self, m: &MerchantId, event_key: &str) -> Result<bool, PortError> {
        Store::delivery_applied(self, m, event_key).await
    }
}

impl crate::ports::DeliveryStamps for Store {
    async fn stamp_delivery(&self, m: &MerchantId, day: &str) -> Result<bool, PortError> {
        Store::stamp_delivery(self, m, day).await
    }
}

impl crate::ports::WatchedMerchants for Store {
    async fn watched_merchants(&self) -> Result<Vec<crate::domain::silence::Watched>, PortError> {
        Store::watched_merchants(self).await
    }
}
