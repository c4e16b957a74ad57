//! The storefront port: what a platform's own API tells about a cart when its webhook does not
//! (BigCommerce's abandoned-cart webhook carries only ids).

use serde::Deserialize;
use std::future::Future;
use thiserror::Error;
#[derive(Debug, Error)]
pub enum StoreApiError {
    #[error("HTTP {0} from the store API")]
    Status(u16),
    #[error("the store API did not answer: {0}")]
    Transport(String),
    #[error("unexpected answer from the store API: {0}")]
    Decode(String),
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct StoreItem {
    pub name: Option<String>,
    pub quantity: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct StoreLineItems {
    #[serde(default)]
    pub physical_items: Vec<StoreItem>,
    #[serde(default)]
    pub digital_items: Vec<StoreItem>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct StoreCurrency {
    pub code: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RedirectUrls {
    pub checkout_url: Option<String>,
    #[serde(default)]
    pub cart_url: Option<String>,
}

/// `GET /stores/{hash}/v3/carts/{id}?include=redirect_urls` → `data`.
#[derive(Debug, Clone, Deserialize)]
pub struct StoreCart {
    pub id: String,
    pub email: Option<String>,
    pub currency: Option<StoreCurrency>,
    pub cart_amount: Option<f64>,
    pub updated_time: Option<String>,
    pub locale: Option<String>,
    #[serde(default)]
    pub line_items: Option<StoreLineItems>,
    pub redirect_urls: Option<RedirectUrls>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct BillingAddress {
    pub first_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub country_code: Option<String>,
    pub state_or_province_code: Option<String>,
}

/// `GET /stores/{hash}/v3/checkouts/{id}` → `data`.
#[derive(Debug, Clone, Deserialize)]
pub struct StoreCheckout {
    pub billing_address: Option<BillingAddress>,
}

impl super::Classify for StoreApiError {
    fn kind(&self) -> super::ErrorKind {
        match self {
            Self::Status(s) if *s == 429 || *s >= 500 => super::ErrorKind::Transient,
            Self::Transport(_) => super::ErrorKind::Transient,
            Self::Status(_) | Self::Decode(_) => super::ErrorKind::Permanent,
        }
    }
}

/// A BigCommerce store's carts and checkouts, read with the merchant's API token.
pub trait StorefrontCarts: Send + Sync {
    /// The cart with its checkout link; `None` when the store has no such cart (any more).
    fn cart(
        &self,
        store_hash: &str,
        token: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<StoreCart>, StoreApiError>> + Send;
    /// The checkout of that cart, for its billing address and phone.
    fn checkout(
        &self,
        store_hash: &str,
        token: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<StoreCheckout>, StoreApiError>> + Send;
    /// A fresh set of the cart's redirect URLs (`POST /v3/carts/{id}/redirect_urls`): each is
    /// single-use, so one is made per click. `None` when the store has no such cart (any more).
    fn fresh_redirect(
        &self,
        store_hash: &str,
        token: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<RedirectUrls>, StoreApiError>> + Send;
}
