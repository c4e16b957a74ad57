//! webhook-ingest: platform webhooks in, carts and consent stored, outreach scheduled.
//! Routes: `POST /webhooks/shopify`, `/webhooks/woocommerce/{merchant}`,
//! `/webhooks/bigcommerce/{merchant}`, `/webhooks/custom/{merchant}`, and our recovery links,
//! `GET /r/{code}` (`app::links`: the click is counted, then answered with a 302 to the cart; a
//! BigCommerce cart gets a fresh single-use URL from its store API, which only this function's
//! role may read the token of). A webhook is routed to its
//! platform (`callfy_shared::platforms`) and handed to `app::webhook::Webhooks::accept`, which
//! verifies it, makes it durable on the outreach queue and applies it (`app::ingest`); the
//! outcome becomes the answer here. `main.rs` only wires it to Lambda.

use callfy_shared::app::ingest::Outcome;
use callfy_shared::app::links::{Click, Clicks};
use callfy_shared::app::webhook::{AcceptError, Accepted, Received};
use callfy_shared::domain::link::ROUTE_PREFIX;
use callfy_shared::domain::merchant::Platform as PlatformKind;
use callfy_shared::http::{error, failure, json};
use callfy_shared::platforms::{Platform, PlatformError, WebhookRequest};
use callfy_shared::ports::{Classify, ErrorKind};
pub use callfy_shared::startup::IngestApp;
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use tracing::{info, warn};

/// Larger bodies are refused before any parsing.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub async fn handle(app: &IngestApp, req: Request) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/');
    if let Some(code) = path.strip_prefix(ROUTE_PREFIX) {
        return click(app, req.method(), code).await;
    }
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

/// `GET /r/{code}`: a shopper's click on one of our links. Answers carry no personal data and
/// are never cached (each BigCommerce URL is single-use).
async fn click(app: &IngestApp, method: &Method, code: &str) -> Response<Body> {
    // Only GET: a HEAD (a link checker) must not use up a single-use URL or count as a click.
    if method != Method::GET {
        return error(405, "method_not_allowed", "use GET");
    }
    let clicks = Clicks { store: &app.store, storefront: &app.webhooks.bigcommerce_api, clock: &app.clock };
    match clicks.open(code).await {
        Ok(Click::Redirect(url)) => Response::builder()
            .status(302)
            .header("location", url)
            .header("cache-control", "no-store")
            .header("referrer-policy", "no-referrer")
            .body(Body::Empty)
            .unwrap_or_default(),
        Ok(Click::Unknown) => page(404, "This link is not valid", "This cart link is unknown or has expired."),
        Err(e) => {
            warn!(error = %callfy_shared::ports::chain(&e), "a recovery link could not be resolved");
            match e.kind() {
                ErrorKind::Transient => {
                    let mut r = page(
                        503,
                        "Please try again",
                        "The shop could not be reached. Please try the link again in a minute.",
                    );
                    r.headers_mut().insert("retry-after", lambda_http::http::HeaderValue::from_static("30"));
                    r
                }
                ErrorKind::Permanent => page(
                    502,
                    "Cart unavailable",
                    "The shop did not give us a link to your cart. Please visit the shop directly.",
                ),
            }
        }
    }
}

/// A small page for the shopper's browser (no personal data, never cached).
fn page(status: u16, title: &str, text: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .body(Body::Text(html))
        .unwrap_or_default()
}
