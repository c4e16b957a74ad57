//! The platforms' REST APIs read back over a period (`callfy-admin backfill`): Shopify's Admin
//! API (abandoned checkouts, orders; `X-Shopify-Access-Token`, pages by the `Link` header) and
//! WooCommerce's REST API v3 (orders; HTTP basic with the consumer key and secret, pages by
//! `page` up to `X-WP-TotalPages`).

use crate::ports::PlatformHistory;
use crate::ports::storefront::StoreApiError;
use chrono::{DateTime, SecondsFormat, Utc};
use std::time::Duration;

/// The Shopify Admin API version read (a supported stable version).
pub const SHOPIFY_API_VERSION: &str = "2025-07";
/// The most pages one listing follows (250 checkouts or 100 orders each).
const MAX_PAGES: usize = 200;

#[derive(Clone, Debug)]
pub struct PlatformApi {
    http: reqwest::Client,
    /// Replaces `https://{shop domain}` (`SHOPIFY_API_BASE`: a local stand-in in tests).
    shopify_base: Option<String>,
}

impl PlatformApi {
    pub fn new(shopify_base: Option<&str>, timeout: Duration) -> Result<Self, StoreApiError> {
        let http = super::http::client_builder()
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .timeout(timeout)
            .user_agent("callfy/0.1")
            .build()
            .map_err(|e| StoreApiError::Transport(e.to_string()))?;
        Ok(Self { http, shopify_base: shopify_base.map(|b| b.trim_end_matches('/').to_string()) })
    }

    fn shopify_url(&self, shop_domain: &str, resource: &str) -> String {
        let base = self.shopify_base.clone().unwrap_or_else(|| format!("https://{shop_domain}"));
        format!("{base}/admin/api/{SHOPIFY_API_VERSION}/{resource}")
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, StoreApiError> {
        let resp = req
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| StoreApiError::Transport(e.to_string()))?;
        match resp.status().as_u16() {
            s if (200..300).contains(&s) => Ok(resp),
            s => Err(StoreApiError::Status(s)),
        }
    }

    /// Every page of a Shopify listing, following `Link: <…>; rel="next"`.
    async fn shopify_list(
        &self,
        shop_domain: &str,
        token: &str,
        resource: &str,
        field: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<serde_json::Value>, StoreApiError> {
        let mut out = Vec::new();
        let mut req = self.http.get(self.shopify_url(shop_domain, resource)).query(query);
        for _ in 0..MAX_PAGES {
            let resp = self.send(req.header("x-shopify-access-token", token)).await?;
            let next = resp.headers().get("link").and_then(|v| v.to_str().ok()).and_then(next_link);
            let body: serde_json::Value = resp.json().await.map_err(|e| StoreApiError::Decode(e.to_string()))?;
            let items = body
                .get(field)
                .and_then(|v| v.as_array())
                .ok_or_else(|| StoreApiError::Decode(format!("no `{field}` array")))?;
            out.extend(items.iter().cloned());
            match next {
                Some(url) => req = self.http.get(url),
                None => return Ok(out),
            }
        }
        Ok(out)
    }
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| {
        let (start, end) = (part.find('<')?, part.find('>')?);
        Some(part[start + 1..end].to_string())
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl PlatformHistory for PlatformApi {
    async fn shopify_checkouts(
        &self,
        shop_domain: &str,
        token: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<serde_json::Value>, StoreApiError> {
        let query = [("limit", "250".to_string()), ("updated_at_min", rfc3339(since))];
        self.shopify_list(shop_domain, token, "checkouts.json", "checkouts", &query).await
    }

    async fn shopify_orders(
        &self,
        shop_domain: &str,
        token: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<serde_json::Value>, StoreApiError> {
        let query = [("limit", "250".to_string()), ("status", "any".to_string()), ("updated_at_min", rfc3339(since))];
        self.shopify_list(shop_domain, token, "orders.json", "orders", &query).await
    }

    async fn woocommerce_orders(
        &self,
        store_url: &str,
        consumer_key: &str,
        consumer_secret: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<serde_json::Value>, StoreApiError> {
        let url = format!("{}/wp-json/wc/v3/orders", store_url.trim_end_matches('/'));
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let query = [
                ("modified_after", rfc3339(since)),
                ("dates_are_gmt", "true".to_string()),
                ("per_page", "100".to_string()),
                ("orderby", "modified".to_string()),
                ("order", "asc".to_string()),
                ("page", page.to_string()),
            ];
            let req = self.http.get(&url).query(&query).basic_auth(consumer_key, Some(consumer_secret));
            let resp = self.send(req).await?;
            let pages = resp
                .headers()
                .get("x-wp-totalpages")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(1);
            let items: Vec<serde_json::Value> = resp.json().await.map_err(|e| StoreApiError::Decode(e.to_string()))?;
            let last = items.len() < 100 || page >= pages;
            out.extend(items);
            if last {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn follows_the_next_link_only() {
        let link = r#"<https://s.myshopify.com/admin/api/2025-07/orders.json?page_info=p1>; rel="previous", <https://s.myshopify.com/admin/api/2025-07/orders.json?limit=250&page_info=n2>; rel="next""#;
        assert_eq!(
            super::next_link(link).as_deref(),
            Some("https://s.myshopify.com/admin/api/2025-07/orders.json?limit=250&page_info=n2")
        );
        assert_eq!(super::next_link(r#"<https://x/y>; rel="previous""#), None);
    }
}
