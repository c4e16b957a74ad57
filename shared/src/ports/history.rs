//! A platform's REST API read back over a period (`callfy-admin backfill`, issue 21): what the
//! webhooks would have delivered while they were silent. Each item is the resource's JSON as
//! the platform's webhook carries it, so it is parsed by the same platform code.

use super::storefront::StoreApiError;
use chrono::{DateTime, Utc};
use std::future::Future;

/// Read-only access to a store's recent checkouts and orders, with the merchant's credentials.
pub trait PlatformHistory: Send + Sync {
    /// Shopify `GET /admin/api/{version}/checkouts.json?updated_at_min=` (abandoned checkouts),
    /// every page.
    fn shopify_checkouts(
        &self,
        shop_domain: &str,
        token: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<serde_json::Value>, StoreApiError>> + Send;
    /// Shopify `GET /admin/api/{version}/orders.json?status=any&updated_at_min=`, every page.
    fn shopify_orders(
        &self,
        shop_domain: &str,
        token: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<serde_json::Value>, StoreApiError>> + Send;
    /// WooCommerce `GET {store}/wp-json/wc/v3/orders?modified_after=`, every page.
    fn woocommerce_orders(
        &self,
        store_url: &str,
        consumer_key: &str,
        consumer_secret: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<serde_json::Value>, StoreApiError>> + Send;
}
