//! The BigCommerce store API (v3 carts and checkouts), read with the merchant's API token.

pub use crate::ports::storefront::{
    BillingAddress, RedirectUrls, StoreApiError, StoreCart, StoreCheckout, StoreCurrency, StoreItem, StoreLineItems,
};
use serde::Deserialize;
use std::time::Duration;

pub const DEFAULT_API_BASE: &str = "https://api.bigcommerce.com";

#[derive(Debug, Deserialize)]
struct Wrapped<T> {
    data: T,
}

#[derive(Clone, Debug)]
pub struct BigCommerceApi {
    http: super::http::LazyClient,
    base: String,
}

impl BigCommerceApi {
    /// `base` is `BIGCOMMERCE_API_BASE`; every request is bounded by `timeout` (the webhook's
    /// answer waits for it).
    pub fn new(base: &str, timeout: Duration) -> Result<Self, StoreApiError> {
        let http = super::http::LazyClient::new(Duration::from_secs(2).min(timeout), timeout);
        Ok(Self { http, base: base.trim_end_matches('/').to_string() })
    }

    fn http(&self) -> Result<&reqwest::Client, StoreApiError> {
        self.http.get().map_err(|e| StoreApiError::Transport(e.to_string()))
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str, token: &str) -> Result<Option<T>, StoreApiError> {
        let resp = self
            .http()?
            .get(format!("{}{path}", self.base))
            .header("x-auth-token", token)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| StoreApiError::Transport(e.to_string()))?;
        Self::data(resp).await
    }

    /// The cart with its checkout link; `None` when the store has no such cart (any more).
    pub async fn cart(&self, store_hash: &str, token: &str, id: &str) -> Result<Option<StoreCart>, StoreApiError> {
        self.get(&format!("/stores/{store_hash}/v3/carts/{id}?include=redirect_urls"), token).await
    }

    /// A fresh set of the cart's (single-use) redirect URLs; `None` when the store has no such
    /// cart (any more).
    pub async fn fresh_redirect(
        &self,
        store_hash: &str,
        token: &str,
        id: &str,
    ) -> Result<Option<RedirectUrls>, StoreApiError> {
        let resp = self
            .http()?
            .post(format!("{}/stores/{store_hash}/v3/carts/{id}/redirect_urls", self.base))
            .header("x-auth-token", token)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .map_err(|e| StoreApiError::Transport(e.to_string()))?;
        Self::data(resp).await
    }

    async fn data<T: for<'de> Deserialize<'de>>(resp: reqwest::Response) -> Result<Option<T>, StoreApiError> {
        match resp.status().as_u16() {
            404 => Ok(None),
            s if (200..300).contains(&s) => {
                let bytes = resp.bytes().await.map_err(|e| StoreApiError::Transport(e.to_string()))?;
                let wrapped: Wrapped<T> =
                    serde_json::from_slice(&bytes).map_err(|e| StoreApiError::Decode(e.to_string()))?;
                Ok(Some(wrapped.data))
            }
            s => Err(StoreApiError::Status(s)),
        }
    }

    /// The checkout of that cart, for its billing address and phone.
    pub async fn checkout(
        &self,
        store_hash: &str,
        token: &str,
        id: &str,
    ) -> Result<Option<StoreCheckout>, StoreApiError> {
        self.get(&format!("/stores/{store_hash}/v3/checkouts/{id}"), token).await
    }
}

impl crate::ports::StorefrontCarts for BigCommerceApi {
    async fn cart(&self, store_hash: &str, token: &str, id: &str) -> Result<Option<StoreCart>, StoreApiError> {
        BigCommerceApi::cart(self, store_hash, token, id).await
    }
    async fn checkout(&self, store_hash: &str, token: &str, id: &str) -> Result<Option<StoreCheckout>, StoreApiError> {
        BigCommerceApi::checkout(self, store_hash, token, id).await
    }
    async fn fresh_redirect(
        &self,
        store_hash: &str,
        token: &str,
        id: &str,
    ) -> Result<Option<RedirectUrls>, StoreApiError> {
        BigCommerceApi::fresh_redirect(self, store_hash, token, id).await
    }
}
