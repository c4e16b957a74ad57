//! webhook-ingest: platform webhooks in, carts and consent stored, outreach scheduled.
//! `handle` is the whole handler; `main.rs` only wires it to Lambda.

use callfy_shared::adapters::queue::{OutreachQueue, QueueError};
use callfy_shared::adapters::store::{
    ConsentAppend, IngestOutcome, IngestWrite, MerchantRecord, MerchantStatus, Store, StoreError,
};
use callfy_shared::app::consent;
use callfy_shared::domain::cart::{Cart, CartStatus};
use callfy_shared::domain::consent::{
    ConsentAction, ConsentEvent, ConsentSource, ConsentState, ConsentStatus, Verdict,
};
use callfy_shared::domain::flow::{job_for, queue_delay};
use callfy_shared::domain::merchant::Channel;
use callfy_shared::http::{error, header, json};
use callfy_shared::shopify::{self, Checkout, CheckoutDeleted, MarketingConsentUpdate, Order, ShopifyError, Topic};
use callfy_shared::signature::verify_hmac_sha256_base64;
use callfy_shared::telemetry::redact;
use callfy_shared::{CartToken, Clock};
use chrono::{DateTime, Duration, Utc};
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use std::sync::Arc;
use thiserror::Error;
use tracing::{info, warn};

/// Larger bodies are refused before any parsing.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Optimistic-concurrency retries when two deliveries touch one cart at once.
const WRITE_ATTEMPTS: usize = 4;

pub struct IngestApp {
    pub store: Store,
    pub queue: OutreachQueue,
    pub shopify_secret: String,
    pub clock: Arc<dyn Clock>,
}

#[derive(Debug, Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Payload(#[from] ShopifyError),
    #[error("the cart kept changing under concurrent deliveries")]
    Contention,
}

/// What a delivery did, as the platform sees it in our 200 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Ignored,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
        }
    }
}

pub async fn handle(app: &IngestApp, req: Request) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/');
    match path {
        "/webhooks/shopify" if req.method() == Method::POST => shopify_webhook(app, req).await,
        "/webhooks/shopify" => error(405, "method_not_allowed", "use POST"),
        _ => error(404, "not_found", format!("no route for {path}")),
    }
}

async fn shopify_webhook(app: &IngestApp, req: Request) -> Response<Body> {
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return error(413, "payload_too_large", format!("body exceeds {MAX_BODY_BYTES} bytes"));
    }
    let headers = req.headers();
    let Some(hmac) = header(headers, shopify::HMAC_HEADER) else {
        return error(401, "missing_signature", "X-Shopify-Hmac-Sha256 header is required");
    };
    if !verify_hmac_sha256_base64(app.shopify_secret.as_bytes(), body, hmac) {
        warn!(route = "shopify", "rejected webhook with a bad signature");
        return error(401, "invalid_signature", "X-Shopify-Hmac-Sha256 does not match the body");
    }
    let Some(domain) = header(headers, shopify::SHOP_DOMAIN_HEADER) else {
        return error(400, "missing_header", "X-Shopify-Shop-Domain header is required");
    };
    let Some(topic_name) = header(headers, shopify::TOPIC_HEADER) else {
        return error(400, "missing_header", "X-Shopify-Topic header is required");
    };
    let Some(event_id) =
        header(headers, shopify::EVENT_ID_HEADER).or_else(|| header(headers, shopify::WEBHOOK_ID_HEADER))
    else {
        return error(400, "missing_header", "X-Shopify-Event-Id or X-Shopify-Webhook-Id header is required");
    };
    let merchant = match app.store.merchant_by_shop_domain(domain).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            return error(404, "unknown_merchant", format!("no merchant is registered for shop {domain}"));
        }
        Err(e) => return unavailable(&e),
    };
    let topic = Topic::parse(topic_name);
    if topic == Topic::Other || merchant.status == MerchantStatus::Closed {
        info!(merchant = %merchant.merchant.id, topic = topic_name, "webhook ignored");
        return reply(Outcome::Ignored, topic_name);
    }
    let event_key = format!("shopify#{event_id}");
    let result = match topic {
        Topic::CheckoutCreate | Topic::CheckoutUpdate => match shopify::parse::<Checkout>(topic_name, body) {
            Ok(c) => ingest_checkout(app, &merchant, &event_key, event_id, &c).await,
            Err(e) => Err(e.into()),
        },
        Topic::CheckoutDelete => match shopify::parse::<CheckoutDeleted>(topic_name, body) {
            Ok(d) => delete_checkout(app, &merchant, &event_key, &d).await,
            Err(e) => Err(e.into()),
        },
        Topic::OrderCreate => match shopify::parse::<Order>(topic_name, body) {
            Ok(o) => ingest_order(app, &merchant, &event_key, &o).await,
            Err(e) => Err(e.into()),
        },
        Topic::MarketingConsentUpdate => match shopify::parse::<MarketingConsentUpdate>(topic_name, body) {
            Ok(u) => {
                let triggered_at = header(headers, shopify::TRIGGERED_AT_HEADER)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc));
                ingest_consent_update(app, &merchant, &event_key, event_id, triggered_at, &u).await
            }
            Err(e) => Err(e.into()),
        },
        Topic::Other => Ok(Outcome::Ignored),
    };
    match result {
        Ok(outcome) => {
            info!(merchant = %merchant.merchant.id, topic = topic_name, event_id, outcome = outcome.as_str(), "webhook processed");
            reply(outcome, topic_name)
        }
        Err(IngestError::Payload(e @ ShopifyError::Malformed { .. })) => error(400, "malformed_json", e.to_string()),
        Err(IngestError::Payload(e)) => error(422, "invalid_payload", e.to_string()),
        Err(e) => {
            warn!(merchant = %merchant.merchant.id, topic = topic_name, error = %redact(&e.to_string()), "webhook failed; platform will retry");
            error(503, "unavailable", "temporarily unable to process the webhook; retry later")
        }
    }
}

fn reply(outcome: Outcome, topic: &str) -> Response<Body> {
    json(200, &serde_json::json!({ "status": outcome.as_str(), "topic": topic }))
}

fn unavailable(e: &StoreError) -> Response<Body> {
    warn!(error = %redact(&e.to_string()), "store unavailable");
    error(503, "unavailable", "temporarily unable to process the webhook; retry later")
}

async fn ingest_checkout(
    app: &IngestApp,
    merchant: &MerchantRecord,
    event_key: &str,
    event_id: &str,
    checkout: &Checkout,
) -> Result<Outcome, IngestError> {
    let m = &merchant.merchant;
    let now = app.clock.now();
    let snap = checkout.snapshot(&m.default_country, now)?;
    let signal = checkout.sms_consent(event_id, now);
    for _ in 0..WRITE_ATTEMPTS {
        let existing = app.store.get_cart(&m.id, &snap.token).await?;
        let expected = existing.as_ref().map(|c| c.version);
        // A checkout older than the one we hold lost the race: its consent box is history.
        let outdated = existing.as_ref().is_some_and(|c| snap.updated_at < c.updated_at);
        let mut cart = match existing {
            Some(mut c) => {
                c.absorb(snap.clone());
                c
            }
            None => Cart::new(m.id.clone(), snap.clone(), now),
        };
        cart.version = expected.map_or(1, |v| v + 1);

        let mut consent = None;
        let mut status = ConsentStatus::Unknown;
        if let Some(phone) = &cart.phone {
            let state = app.store.consent_state(&m.id, phone, Channel::Sms).await?;
            status = state.status;
            let mut note = None;
            if let Some(sig) = &signal {
                let event = ConsentEvent {
                    channel: Channel::Sms,
                    action: sig.action,
                    source: ConsentSource::Checkout,
                    occurred_at: sig.occurred_at,
                    recorded_at: now,
                    evidence: sig.evidence.clone(),
                };
                match state.verdict(&event) {
                    _ if outdated => note = Some("outdated_checkout"),
                    Verdict::Accept => {
                        status = ConsentState::status_after(event.action);
                        consent = Some(ConsentAppend {
                            merchant_id: m.id.clone(),
                            phone: phone.clone(),
                            state,
                            event,
                            purge_at: now + Duration::days(i64::from(m.retention_days.consent_records)),
                        });
                    }
                    Verdict::Unchanged => {}
                    Verdict::OptedOutLater { .. } => note = Some("opted_out_later"),
                    Verdict::PersonOptedOut { .. } => note = Some("opted_out_by_person"),
                }
            }
            // Why this checkout's consent box did not count, for the merchant and an auditor.
            cart.consent_note = note.map(str::to_string);
        }
        let schedule = cart.status == CartStatus::Open
            && status == ConsentStatus::OptedIn
            && cart.recovery_url.is_some()
            && !cart.outreach_scheduled;
        if schedule {
            cart.outreach_scheduled = true;
        }
        let write = IngestWrite {
            merchant_id: m.id.clone(),
            event_key: event_key.to_string(),
            received_at: now,
            cart: Some((cart.clone(), expected)),
            consent,
        };
        match app.store.write_ingest(&write).await {
            Ok(IngestOutcome::Duplicate) => return Ok(Outcome::Duplicate),
            Ok(IngestOutcome::Applied) => {
                if schedule {
                    schedule_first_step(app, merchant, &cart, event_key, now).await?;
                }
                return Ok(Outcome::Accepted);
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(IngestError::Contention)
}

/// Shopify says a customer's SMS consent changed: one ledger entry, written with the
/// delivery's dedupe marker. An opt-out also cancels queued outreach to that phone.
async fn ingest_consent_update(
    app: &IngestApp,
    merchant: &MerchantRecord,
    event_key: &str,
    event_id: &str,
    triggered_at: Option<DateTime<Utc>>,
    update: &MarketingConsentUpdate,
) -> Result<Outcome, IngestError> {
    let m = &merchant.merchant;
    let now = app.clock.now();
    let Some((phone, signal, withdraws_only)) = update.signal(&m.default_country, event_id, triggered_at, now)? else {
        return Ok(Outcome::Ignored);
    };
    let event = ConsentEvent {
        channel: Channel::Sms,
        action: signal.action,
        source: ConsentSource::PlatformConsentWebhook,
        occurred_at: signal.occurred_at,
        recorded_at: now,
        evidence: signal.evidence,
    };
    for _ in 0..WRITE_ATTEMPTS {
        let state = app.store.consent_state(&m.id, &phone, Channel::Sms).await?;
        // "not subscribed" withdraws an opt-in we hold; it does not create records of strangers.
        let applies = state.accepts(&event) && !(withdraws_only && state.status != ConsentStatus::OptedIn);
        let consent = applies.then(|| ConsentAppend {
            merchant_id: m.id.clone(),
            phone: phone.clone(),
            state,
            event: event.clone(),
            purge_at: now + Duration::days(i64::from(m.retention_days.consent_records)),
        });
        let write = IngestWrite {
            merchant_id: m.id.clone(),
            event_key: event_key.to_string(),
            received_at: now,
            cart: None,
            consent,
        };
        match app.store.write_ingest(&write).await {
            Ok(IngestOutcome::Duplicate) => return Ok(Outcome::Duplicate),
            Ok(IngestOutcome::Applied) => {
                if applies && event.action == ConsentAction::OptOut {
                    consent::after_opt_out(&app.store, m, &phone, now).await?;
                }
                return Ok(Outcome::Accepted);
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(IngestError::Contention)
}

/// Queues step 0. If the queue refuses, the delivery is undone so the platform's retry
/// schedules it again.
async fn schedule_first_step(
    app: &IngestApp,
    merchant: &MerchantRecord,
    cart: &Cart,
    event_key: &str,
    now: DateTime<Utc>,
) -> Result<(), IngestError> {
    let Some(job) = job_for(&merchant.merchant, cart, 0) else {
        return Ok(());
    };
    match app.queue.enqueue(&job, queue_delay(now, job.due_at)).await {
        Ok(_) => {
            info!(
                merchant = %cart.merchant_id,
                phone = %cart.phone.as_ref().map(|p| p.log_id()).unwrap_or_default(),
                due_at = %job.due_at,
                "outreach scheduled"
            );
            Ok(())
        }
        Err(e) => {
            let _ = app.store.set_outreach_scheduled(&cart.merchant_id, &cart.token, false).await;
            let _ = app.store.forget_event(&cart.merchant_id, event_key).await;
            Err(e.into())
        }
    }
}

/// Writes a changed cart with the delivery's dedupe marker, retrying on concurrent changes.
async fn update_cart(
    app: &IngestApp,
    merchant: &MerchantRecord,
    event_key: &str,
    token: Option<CartToken>,
    change: impl Fn(&mut Cart, DateTime<Utc>) -> bool,
) -> Result<Outcome, IngestError> {
    let m = &merchant.merchant;
    let now = app.clock.now();
    for _ in 0..WRITE_ATTEMPTS {
        let cart = match &token {
            Some(t) => app.store.get_cart(&m.id, t).await?,
            None => None,
        };
        let cart = cart.and_then(|mut c| {
            let expected = c.version;
            change(&mut c, now).then(|| {
                c.version = expected + 1;
                (c, Some(expected))
            })
        });
        let write = IngestWrite {
            merchant_id: m.id.clone(),
            event_key: event_key.to_string(),
            received_at: now,
            cart,
            consent: None,
        };
        match app.store.write_ingest(&write).await {
            Ok(IngestOutcome::Duplicate) => return Ok(Outcome::Duplicate),
            Ok(IngestOutcome::Applied) => return Ok(Outcome::Accepted),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(IngestError::Contention)
}

async fn ingest_order(
    app: &IngestApp,
    merchant: &MerchantRecord,
    event_key: &str,
    order: &Order,
) -> Result<Outcome, IngestError> {
    let token = order.checkout_token.as_deref().and_then(|t| CartToken::parse(t).ok());
    let order_id = shopify::id_text(&order.id).unwrap_or_default();
    let (revenue, currency) = order.revenue();
    update_cart(app, merchant, event_key, token, |cart, now| {
        cart.recover(order_id.clone(), revenue.clone(), currency.clone(), now)
    })
    .await
}

async fn delete_checkout(
    app: &IngestApp,
    merchant: &MerchantRecord,
    event_key: &str,
    deleted: &CheckoutDeleted,
) -> Result<Outcome, IngestError> {
    let mut token = deleted.token.as_deref().and_then(|t| CartToken::parse(t).ok());
    if token.is_none()
        && let Some(id) = shopify::id_text(&deleted.id)
    {
        token = app.store.cart_token_for_checkout(&merchant.merchant.id, &id).await?;
    }
    update_cart(app, merchant, event_key, token, |cart, _| {
        let open = cart.status == CartStatus::Open;
        if open {
            cart.status = CartStatus::Deleted;
        }
        open
    })
    .await
}
