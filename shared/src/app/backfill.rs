//! Back-filling a silent period (issue 21, `callfy-admin backfill`): the platform's REST API is
//! read back from `since` with the merchant's stored credentials, and each checkout or order is
//! fed through the same platform parser and the same `Ingest::apply` a webhook goes through.
//!
//! Dedupe: each item is applied under a key named the way its platform names a delivery
//! (`{platform}#{event id}`): WooCommerce's own content key (the order, its `date_modified_gmt`
//! and a hash of its body); for Shopify, whose REST answers carry no `X-Shopify-Event-Id`,
//! `backfill:checkout:{token}:{updated_at}` and `backfill:order:{id}`. Running a backfill again
//! changes nothing. An item a webhook also delivered may be applied once more under its other
//! key, which the cart rules absorb: an equal or older checkout changes nothing that counts, a
//! step is claimed at most once, and an order recovers its cart once.
//!
//! Checkouts go first, oldest change first, then orders, so an order finds the cart it
//! recovers. BigCommerce cannot be back-filled: its API lists no abandoned carts (a cart is read
//! by the id its webhook names); the custom platform has no API of ours to read.

use crate::app::ingest::{Ingest, IngestError, IngestStore};
use crate::domain::merchant::Platform as PlatformKind;
use crate::domain::outreach::MerchantRecord;
use crate::platforms::shopify::{self, Shopify};
use crate::platforms::woocommerce::{self, WooCommerce};
use crate::platforms::{Platform, PlatformError, WebhookRequest};
use crate::ports::storefront::StoreApiError;
use crate::ports::{JobQueue, PlatformHistory};
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue};
use std::collections::BTreeMap;
use thiserror::Error;
use tracing::{info, warn};

#[derive(Debug, Error)]
pub enum BackfillError {
    /// The merchant's platform has no listing to read back.
    #[error("{0}")]
    Unsupported(String),
    /// A credential or setting the backfill needs is missing from the merchant file.
    #[error("the merchant file lacks {0}")]
    Missing(&'static str),
    #[error("the platform API failed: {0}")]
    Api(#[from] StoreApiError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// What a backfill read and what applying each item did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    /// Items read from the API (checkouts and orders).
    pub read: usize,
    /// Outcomes by name (`accepted`, `duplicate`, `ignored`, `refused`).
    pub outcomes: BTreeMap<&'static str, usize>,
}

/// The backfill use case: the store and queue ingest writes to, and the platform's API.
pub struct Backfill<'a, S, Q, H> {
    pub store: &'a S,
    pub queue: &'a Q,
    pub history: &'a H,
}

impl<S: IngestStore, Q: JobQueue, H: PlatformHistory> Backfill<'_, S, Q, H> {
    /// Reads `merchant`'s checkouts and orders changed since `since` and applies each as of `now`.
    /// `merchant` must carry its secrets (`get_merchant_with_secrets`).
    pub async fn run(
        &self,
        merchant: &MerchantRecord,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<BackfillReport, BackfillError> {
        let m = &merchant.merchant;
        let mut items: Vec<(HeaderMap, Vec<u8>)> = Vec::new();
        let platform: &dyn Platform = match m.platform {
            PlatformKind::Shopify => {
                let shop = m.shop_domain.as_deref().ok_or(BackfillError::Missing("shop_domain"))?;
                let token = m
                    .shopify
                    .as_ref()
                    .and_then(|s| s.admin_api_token.as_deref())
                    .ok_or(BackfillError::Missing("shopify.admin_api_token"))?;
                let (checkouts, orders) = tokio::try_join!(
                    self.history.shopify_checkouts(shop, token, since),
                    self.history.shopify_orders(shop, token, since)
                )?;
                for c in oldest_first(checkouts, "updated_at") {
                    let id = format!("backfill:checkout:{}:{}", text(&c, "token"), text(&c, "updated_at"));
                    items.push((shopify_headers(shop, "checkouts/update", &id), encode(&c)));
                }
                for o in oldest_first(orders, "updated_at") {
                    let id = format!("backfill:order:{}", text(&o, "id"));
                    items.push((shopify_headers(shop, "orders/create", &id), encode(&o)));
                }
                &*SHOPIFY
            }
            PlatformKind::Woocommerce => {
                let w = m.woocommerce.as_ref().ok_or(BackfillError::Missing("woocommerce"))?;
                let url = w.store_url.as_deref().ok_or(BackfillError::Missing("woocommerce.store_url"))?;
                let key = w.consumer_key.as_deref().ok_or(BackfillError::Missing("woocommerce.consumer_key"))?;
                let secret =
                    w.consumer_secret.as_deref().ok_or(BackfillError::Missing("woocommerce.consumer_secret"))?;
                let orders = self.history.woocommerce_orders(url, key, secret, since).await?;
                for o in oldest_first(orders, "date_modified_gmt") {
                    let mut h = HeaderMap::new();
                    h.insert(woocommerce::TOPIC_HEADER, HeaderValue::from_static("order.updated"));
                    h.insert(woocommerce::RESOURCE_HEADER, HeaderValue::from_static("order"));
                    items.push((h, encode(&o)));
                }
                &WooCommerce
            }
            PlatformKind::Bigcommerce => {
                return Err(BackfillError::Unsupported(
                    "BigCommerce lists no abandoned carts: a cart is read by the id its webhook names. Recovered orders \
                     can be seen in the store's orders; fix the webhook and the next abandonment is delivered"
                        .into(),
                ));
            }
            PlatformKind::Custom => {
                return Err(BackfillError::Unsupported(
                    "the custom platform has no API to read back: ask the merchant to resend its events".into(),
                ));
            }
        };
        let mut report = BackfillReport { read: items.len(), ..Default::default() };
        let ingest = Ingest { store: self.store, queue: self.queue };
        for (headers, body) in &items {
            let req = WebhookRequest { headers, body, path_merchant: Some(m.id.as_str()) };
            let parsed = platform
                .event_id(&req)
                .map(|id| format!("{}#{id}", platform.name()))
                .and_then(|key| Ok((key, platform.parse(&req, m, now)?)));
            let (key, event) = match parsed {
                Ok(parsed) => parsed,
                Err(e) => {
                    let e: PlatformError = e;
                    warn!(merchant = %m.id, code = e.code(), "backfilled item refused by its platform; skipped");
                    *report.outcomes.entry("refused").or_default() += 1;
                    continue;
                }
            };
            let outcome = ingest.apply(merchant, &key, event, now).await?;
            *report.outcomes.entry(outcome.as_str()).or_default() += 1;
        }
        info!(merchant = %m.id, read = report.read, outcomes = ?report.outcomes, "backfill done");
        Ok(report)
    }
}

static SHOPIFY: std::sync::LazyLock<Shopify> =
    std::sync::LazyLock::new(|| Shopify { app_secret: secrecy::SecretString::from(String::new()) });

fn shopify_headers(shop: &str, topic: &'static str, event_id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(shopify::TOPIC_HEADER, HeaderValue::from_static(topic));
    if let Ok(v) = HeaderValue::from_str(shop) {
        h.insert(shopify::SHOP_DOMAIN_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(event_id) {
        h.insert(shopify::EVENT_ID_HEADER, v);
    }
    h
}

fn encode(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A field as text (numbers as written), `-` when absent.
fn text(v: &serde_json::Value, field: &str) -> String {
    match v.get(field) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => "-".into(),
    }
}

/// Items ordered by their change time (RFC 3339 or WooCommerce's GMT time), oldest first.
fn oldest_first(mut items: Vec<serde_json::Value>, field: &str) -> Vec<serde_json::Value> {
    let at = |v: &serde_json::Value| {
        let t = text(v, field);
        DateTime::parse_from_rfc3339(&t)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S").map(|t| t.and_utc()))
            .ok()
    };
    items.sort_by_key(|v| at(v));
    items
}
