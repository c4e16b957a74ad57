//! A local stand-in for a BigCommerce store's REST API (v3 carts and checkouts), enough for the
//! walk-through and the tests: it checks `X-Auth-Token`, serves the carts it holds, and can be
//! told to fail, as a store API outage would.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use callfy_shared::signature::ct_eq;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

/// The demo store: `events/bigcommerce/store-{cart,checkout}.json`.
pub const DEMO_STORE_HASH: &str = "b4rs7x";
pub const DEMO_API_TOKEN: &str = "callfy-local-bigcommerce-token";
const DEMO_CART: &str = include_str!("../../../events/bigcommerce/store-cart.json");
const DEMO_CHECKOUT: &str = include_str!("../../../events/bigcommerce/store-checkout.json");

#[derive(Default)]
struct Inner {
    /// (store hash, cart id) → (cart document, checkout document).
    carts: HashMap<(String, String), (Value, Option<Value>)>,
    /// The next this many requests answer 503.
    failures: u32,
    requests: u32,
    /// Redirect URLs made (`POST …/redirect_urls`), each a new single-use one.
    redirects: u32,
}

pub struct StoreStandIn {
    token: String,
    inner: Mutex<Inner>,
}

impl StoreStandIn {
    /// Holds the demo cart of store `b4rs7x`.
    pub fn with_demo_cart() -> Self {
        let s = Self { token: DEMO_API_TOKEN.into(), inner: Mutex::default() };
        if let (Ok(cart), Ok(checkout)) =
            (serde_json::from_str::<Value>(DEMO_CART), serde_json::from_str(DEMO_CHECKOUT))
        {
            s.put(DEMO_STORE_HASH, cart, Some(checkout));
        }
        s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a cart (`{"data": {"id": …}}`) and its checkout, as the store would have them.
    pub fn put(&self, store_hash: &str, cart: Value, checkout: Option<Value>) {
        let id = cart["data"]["id"].as_str().unwrap_or_default().to_string();
        self.lock().carts.insert((store_hash.to_string(), id), (cart, checkout));
    }

    /// The next `n` requests answer 503.
    pub fn fail_next(&self, n: u32) {
        self.lock().failures = n;
    }

    /// How many API requests were served (or refused).
    pub fn requests(&self) -> u32 {
        self.lock().requests
    }

    /// How many fresh redirect URLs were made.
    pub fn redirects_made(&self) -> u32 {
        self.lock().redirects
    }

    /// `POST /stores/{hash}/v3/carts/{id}/redirect_urls`: a new single-use pair of URLs each time.
    fn redirect(&self, headers: &HeaderMap, store: &str, id: &str) -> Response {
        let refused = self.answer(headers, store, id, false);
        if refused.status() != StatusCode::OK {
            return refused;
        }
        let mut inner = self.lock();
        inner.redirects += 1;
        let n = inner.redirects;
        let base = format!("https://{store}.mybigcommerce.test/cart.php?action=load&id={id}&token=fresh{n:04}");
        axum::Json(json!({ "data": {
            "cart_url": base,
            "checkout_url": format!("https://{store}.mybigcommerce.test/checkout?cart={id}&token=fresh{n:04}"),
            "embedded_checkout_url": format!("https://{store}.mybigcommerce.test/embedded?token=fresh{n:04}"),
        }}))
        .into_response()
    }

    fn answer(&self, headers: &HeaderMap, store: &str, id: &str, checkout: bool) -> Response {
        let mut inner = self.lock();
        inner.requests += 1;
        if inner.failures > 0 {
            inner.failures -= 1;
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "status": 503, "title": "Service Unavailable" })),
            )
                .into_response();
        }
        let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !ct_eq(token.as_bytes(), self.token.as_bytes()) {
            return (StatusCode::UNAUTHORIZED, axum::Json(json!({ "status": 401, "title": "Unauthorized" })))
                .into_response();
        }
        let found = inner.carts.get(&(store.to_string(), id.to_string())).cloned();
        match (found, checkout) {
            (Some((cart, _)), false) => axum::Json(cart).into_response(),
            (Some((_, Some(co))), true) => axum::Json(co).into_response(),
            _ => (StatusCode::NOT_FOUND, axum::Json(json!({ "status": 404, "title": "Not Found" }))).into_response(),
        }
    }
}

#[derive(Deserialize)]
struct FailRequest {
    count: u32,
}

/// `GET /stores/{hash}/v3/carts/{id}`, `POST /stores/{hash}/v3/carts/{id}/redirect_urls`,
/// `GET /stores/{hash}/v3/checkouts/{id}`, and
/// `POST /sandbox/bigcommerce/faults {"count": N}`.
pub fn router(store: Arc<StoreStandIn>) -> Router {
    Router::new()
        .route(
            "/stores/{hash}/v3/carts/{id}",
            get(|State(s): State<Arc<StoreStandIn>>, Path((hash, id)): Path<(String, String)>, headers: HeaderMap| async move {
                s.answer(&headers, &hash, &id, false)
            }),
        )
        .route(
            "/stores/{hash}/v3/carts/{id}/redirect_urls",
            post(|State(s): State<Arc<StoreStandIn>>, Path((hash, id)): Path<(String, String)>, headers: HeaderMap| async move {
                s.redirect(&headers, &hash, &id)
            }),
        )
        .route(
            "/stores/{hash}/v3/checkouts/{id}",
            get(|State(s): State<Arc<StoreStandIn>>, Path((hash, id)): Path<(String, String)>, headers: HeaderMap| async move {
                s.answer(&headers, &hash, &id, true)
            }),
        )
        .route(
            "/sandbox/bigcommerce/faults",
            post(|State(s): State<Arc<StoreStandIn>>, axum::Json(f): axum::Json<FailRequest>| async move {
                s.fail_next(f.count);
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(store)
}
