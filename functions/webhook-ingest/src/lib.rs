//! webhook-ingest: platform webhooks in, carts and consent stored, outreach scheduled.
//! Routes: `POST /webhooks/shopify`, `/webhooks/woocommerce/{merchant}`,
//! `/webhooks/bigcommerce/{merchant}`, `/webhooks/custom/{merchant}`. A request is verified, its
//! merchant found, its body parsed into one normalised event by its platform
//! (`callfy_shared::platforms`), and the event applied by `app::ingest`. `main.rs` only wires it
//! to Lambda.

use callfy_shared::MerchantId;
use callfy_shared::app::ingest::{Ingest, Outcome};
use callfy_shared::domain::merchant::Platform as PlatformKind;
use callfy_shared::domain::outreach::MerchantRecord;
use callfy_shared::http::{error, failure, json};
use callfy_shared::platforms::bigcommerce::{self, BigCommerce};
use callfy_shared::platforms::woocommerce::WooCommerce;
use callfy_shared::platforms::{MerchantRef, Platform, PlatformError, PlatformEvent, WebhookRequest};
use callfy_shared::ports::{Classify, PortError};
pub use callfy_shared::startup::IngestApp;
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use tracing::{info, warn};

/// Larger bodies are refused before any parsing.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub async fn handle(app: &IngestApp, req: Request) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/');
    let (platform, kind, path_merchant): (&dyn Platform, PlatformKind, Option<&str>) =
        match path.strip_prefix("/webhooks/").map(|rest| rest.split_once('/').unwrap_or((rest, ""))) {
            Some(("shopify", "")) => (&app.shopify, PlatformKind::Shopify, None),
            Some(("woocommerce", id)) if is_segment(id) => (&WooCommerce, PlatformKind::Woocommerce, Some(id)),
            Some(("bigcommerce", id)) if is_segment(id) => (&BigCommerce, PlatformKind::Bigcommerce, Some(id)),
            Some(("custom", id)) if is_segment(id) => (&app.custom, PlatformKind::Custom, Some(id)),
            _ => return error(404, "not_found", format!("no route for {path}")),
        };
    if req.method() != Method::POST {
        return error(405, "method_not_allowed", "use POST");
    }
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return error(413, "payload_too_large", format!("body exceeds {MAX_BODY_BYTES} bytes"));
    }
    let webhook = WebhookRequest { headers: req.headers(), body, path_merchant };
    if platform.is_ping(&webhook) {
        info!(route = platform.name(), "platform test delivery answered; nothing stored");
        return json(200, &serde_json::json!({ "status": "ping" }));
    }
    match webhook_answer(app, platform, kind, &webhook).await {
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

/// A merchant id in the path: one segment, nothing else.
fn is_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains('/')
}

async fn webhook_answer(
    app: &IngestApp,
    platform: &dyn Platform,
    kind: PlatformKind,
    req: &WebhookRequest<'_>,
) -> Result<Response<Body>, PlatformError> {
    // App-wide secrets are checked before anything is looked up.
    platform.verify(req, None)?;
    let merchant = match lookup(app, &platform.merchant_ref(req)?).await {
        // A merchant of another platform is no merchant on this route.
        Ok(Some(m)) if m.merchant.platform == kind => m,
        Ok(_) => return Ok(error(404, "unknown_merchant", "no merchant is registered for this webhook")),
        Err(e) => return Ok(retry_later(&e)),
    };
    platform.verify(req, Some(&merchant.merchant))?;
    let topic = platform.topic(req)?;
    let event_id = platform.event_id(req)?;
    let (topic, event_id) = (topic.as_ref(), event_id.as_ref());
    let m = &merchant.merchant.id;
    let now = app.clock.now();
    let event = match platform.parse(req, &merchant.merchant, now)? {
        // BigCommerce names the cart: read it from the store before anything is written, so a
        // store API failure (503, BigCommerce retries) leaves nothing half-done.
        PlatformEvent::CartToFetch { cart_id } => {
            match bigcommerce::resolve(&app.bigcommerce_api, &merchant.merchant, &cart_id, now).await {
                Ok(event) => event,
                Err(e) => {
                    warn!(merchant = %m, topic, error = %e, "store API failed; BigCommerce will retry");
                    return Ok(error(503, "store_api_unavailable", "the store API could not be read; retry later"));
                }
            }
        }
        event => event,
    };
    let event_key = format!("{}#{event_id}", platform.name());
    let ingest = Ingest { store: &app.store, queue: &app.queue };
    match ingest.apply(&merchant, &event_key, event, now).await {
        Ok(outcome) => {
            info!(merchant = %m, topic, event_id, outcome = outcome.as_str(), "webhook processed");
            Ok(reply(outcome, topic))
        }
        Err(e) => {
            warn!(merchant = %m, topic, "webhook failed; the platform will retry");
            Ok(retry_later(&e))
        }
    }
}

async fn lookup(app: &IngestApp, r: &MerchantRef) -> Result<Option<MerchantRecord>, PortError> {
    match r {
        MerchantRef::ShopDomain(domain) => app.store.merchant_by_shop_domain(domain).await,
        // Per-merchant secrets: only this function reads them.
        MerchantRef::Id(id) => match MerchantId::parse(id) {
            Ok(id) => app.store.get_merchant_with_secrets(&id).await,
            Err(_) => Ok(None),
        },
    }
}

fn reply(outcome: Outcome, topic: &str) -> Response<Body> {
    json(200, &serde_json::json!({ "status": outcome.as_str(), "topic": topic }))
}

const RETRY_LATER: &str = "temporarily unable to process the webhook; retry later";

fn retry_later<E: Classify + std::error::Error + 'static>(e: &E) -> Response<Body> {
    failure(e, RETRY_LATER)
}
