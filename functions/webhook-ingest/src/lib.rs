//! webhook-ingest: platform webhooks in, carts and consent stored, outreach scheduled.
//! Routes: `POST /webhooks/shopify`, `/webhooks/woocommerce/{merchant}`,
//! `/webhooks/bigcommerce/{merchant}`, `/webhooks/custom/{merchant}`. A request is routed to its
//! platform (`callfy_shared::platforms`) and handed to `app::webhook::Webhooks::accept`, which
//! verifies it, makes it durable on the outreach queue and applies it (`app::ingest`); the
//! outcome becomes the answer here. `main.rs` only wires it to Lambda.

use callfy_shared::app::ingest::Outcome;
use callfy_shared::app::webhook::{AcceptError, Accepted, Received};
use callfy_shared::domain::merchant::Platform as PlatformKind;
use callfy_shared::http::{error, failure, json};
use callfy_shared::platforms::{Platform, PlatformError, WebhookRequest};
use callfy_shared::ports::Classify;
pub use callfy_shared::startup::IngestApp;
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use tracing::{info, warn};

/// Larger bodies are refused before any parsing.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub async fn handle(app: &IngestApp, req: Request) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/');
    let (kind, path_merchant): (PlatformKind, Option<&str>) =
        match path.strip_prefix("/webhooks/").map(|rest| rest.split_once('/').unwrap_or((rest, ""))) {
            Some(("shopify", "")) => (PlatformKind::Shopify, None),
            Some(("woocommerce", id)) if is_segment(id) => (PlatformKind::Woocommerce, Some(id)),
            Some(("bigcommerce", id)) if is_segment(id) => (PlatformKind::Bigcommerce, Some(id)),
            Some(("custom", id)) if is_segment(id) => (PlatformKind::Custom, Some(id)),
            _ => return error(404, "not_found", format!("no route for {path}")),
        };
    if req.method() != Method::POST {
        return error(405, "method_not_allowed", "use POST");
    }
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return error(413, "payload_too_large", format!("body exceeds {MAX_BODY_BYTES} bytes"));
    }
    let platform = app.webhooks.platforms.get(kind);
    if platform.is_ping(&WebhookRequest { headers: req.headers(), body, path_merchant }) {
        info!(route = platform.name(), "platform test delivery answered; nothing stored");
        return json(200, &serde_json::json!({ "status": "ping" }));
    }
    let received =
        Received { platform: kind, path_merchant, headers: req.headers(), body, received_at: app.clock.now() };
    match app.webhooks().accept(received).await {
        Ok(Accepted::Applied { outcome, topic }) => reply(outcome, &topic),
        // Durable, not applied yet: the platform must not send it again (WooCommerce would not).
        Ok(Accepted::Queued { topic }) => json(200, &serde_json::json!({ "status": "queued", "topic": topic })),
        Err(AcceptError::Rejected(e)) => rejected(platform, &e),
        Err(AcceptError::UnknownMerchant) => {
            error(404, "unknown_merchant", "no merchant is registered for this webhook")
        }
        Err(AcceptError::Unavailable(e)) => retry_later(&e),
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

fn reply(outcome: Outcome, topic: &str) -> Response<Body> {
    json(200, &serde_json::json!({ "status": outcome.as_str(), "topic": topic }))
}

const RETRY_LATER: &str = "temporarily unable to process the webhook; retry later";

fn retry_later<E: Classify + std::error::Error + 'static>(e: &E) -> Response<Body> {
    failure(e, RETRY_LATER)
}
