//! webhook-ingest: platform webhooks in, carts and consent stored, outreach scheduled.
//! A request is verified, its merchant found, its body parsed into one normalised event by its
//! platform (`callfy_shared::platforms`), and the event applied by `app::ingest`. `main.rs` only
//! wires it to Lambda.

use callfy_shared::adapters::queue::OutreachQueue;
use callfy_shared::adapters::store::{MerchantRecord, Store, StoreError};
use callfy_shared::app::ingest::{Ingest, IngestError, Outcome};
use callfy_shared::http::{error, json};
use callfy_shared::platforms::shopify::Shopify;
use callfy_shared::platforms::{MerchantRef, Platform, PlatformError, WebhookRequest};
use callfy_shared::telemetry::redact;
use callfy_shared::{Clock, MerchantId};
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use std::sync::Arc;
use tracing::{info, warn};

/// Larger bodies are refused before any parsing.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct IngestApp {
    pub store: Store,
    pub queue: OutreachQueue,
    pub shopify: Shopify,
    pub clock: Arc<dyn Clock>,
}

pub async fn handle(app: &IngestApp, req: Request) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/');
    let platform: &dyn Platform = match path {
        "/webhooks/shopify" => &app.shopify,
        _ => return error(404, "not_found", format!("no route for {path}")),
    };
    if req.method() != Method::POST {
        return error(405, "method_not_allowed", "use POST");
    }
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return error(413, "payload_too_large", format!("body exceeds {MAX_BODY_BYTES} bytes"));
    }
    let webhook = WebhookRequest { headers: req.headers(), body, path_merchant: None };
    match webhook_answer(app, platform, &webhook).await {
        Ok(resp) => resp,
        Err(e) => rejected(platform, &e),
    }
}

fn rejected(platform: &dyn Platform, e: &PlatformError) -> Response<Body> {
    if e.status() == 401 {
        warn!(route = platform.name(), "rejected webhook with a bad signature");
    }
    error(e.status(), e.code(), e.to_string())
}

async fn webhook_answer(
    app: &IngestApp,
    platform: &dyn Platform,
    req: &WebhookRequest<'_>,
) -> Result<Response<Body>, PlatformError> {
    // App-wide secrets are checked before anything is looked up.
    platform.verify(req, None)?;
    let merchant = match lookup(app, &platform.merchant_ref(req)?).await {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(error(404, "unknown_merchant", "no merchant is registered for this webhook")),
        Err(e) => return Ok(unavailable(&e)),
    };
    platform.verify(req, Some(&merchant.merchant))?;
    let topic = platform.topic(req)?;
    let event_id = platform.event_id(req)?;
    let m = &merchant.merchant.id;
    let now = app.clock.now();
    let event = platform.parse(req, &merchant.merchant, now)?;
    let event_key = format!("{}#{event_id}", platform.name());
    let ingest = Ingest { store: &app.store, queue: &app.queue };
    match ingest.apply(&merchant, &event_key, event, now).await {
        Ok(outcome) => {
            info!(merchant = %m, topic, event_id, outcome = outcome.as_str(), "webhook processed");
            Ok(reply(outcome, topic))
        }
        Err(e) => {
            warn!(merchant = %m, topic, error = %redact(&e.to_string()), "webhook failed; platform will retry");
            Ok(retry_later(&e))
        }
    }
}

async fn lookup(app: &IngestApp, r: &MerchantRef) -> Result<Option<MerchantRecord>, StoreError> {
    match r {
        MerchantRef::ShopDomain(domain) => app.store.merchant_by_shop_domain(domain).await,
        MerchantRef::Id(id) => match MerchantId::parse(id) {
            Ok(id) => app.store.get_merchant(&id).await,
            Err(_) => Ok(None),
        },
    }
}

fn reply(outcome: Outcome, topic: &str) -> Response<Body> {
    json(200, &serde_json::json!({ "status": outcome.as_str(), "topic": topic }))
}

fn retry_later(_: &IngestError) -> Response<Body> {
    error(503, "unavailable", "temporarily unable to process the webhook; retry later")
}

fn unavailable(e: &StoreError) -> Response<Body> {
    warn!(error = %redact(&e.to_string()), "store unavailable");
    error(503, "unavailable", "temporarily unable to process the webhook; retry later")
}
