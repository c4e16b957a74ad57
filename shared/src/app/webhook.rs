//! A platform's webhook, from the request to the applied event, made durable before anything
//! that can fail for a while (issue 21). WooCommerce never retries a failed delivery and
//! disables the webhook after five failures in a row, so a storage hiccup must not cost a cart.
//!
//! webhook-ingest calls [`Webhooks::accept`]: the app-wide signature (pure), the merchant
//! (the store), the merchant's signature and the body (pure); then a copy of the delivery goes
//! on the outreach queue, held back `replay_delay_seconds`, and only then is the delivery applied
//! inline as before (`app::ingest`), tried again at once on a transient failure while the
//! delivery is under `app::retry::INLINE_BUDGET`. Applied: the answer says what it did. Not
//! applied: 200 `queued`, since the copy will be. If the store cannot say whose delivery it is,
//! the copy is queued unverified. Only when no copy could be queued and the delivery was not
//! applied is the answer 503.
//!
//! The worker calls [`Webhooks::replay`] on the copy: it verifies it again with every secret that
//! applies (an unverified copy is never acted on, a forged one is dropped), and the delivery's
//! dedupe marker, written in the transaction that applied it, makes the copy of a delivery
//! applied inline a no-op. A body too large for a queue message waits in the bucket
//! (`WebhookBodies`) and is deleted once its delivery is processed, applied or dropped.

use crate::app::ingest::{Ingest, IngestError, IngestStore, Outcome};
use crate::domain::ids::{CartToken, MerchantId};
use crate::domain::merchant::Platform as PlatformKind;
use crate::domain::outreach::MerchantRecord;
use crate::platforms::bigcommerce::{self, ResolveError};
use crate::platforms::{MerchantRef, Platform, PlatformError, PlatformEvent, Platforms, WebhookRequest};
use crate::ports::storefront::StoreApiError;
use crate::ports::webhooks::MAX_QUEUED_WEBHOOK_BYTES;
use crate::ports::{
    Classify, ErrorKind, JobQueue, PortError, QueuedWebhook, StorefrontCarts, WebhookBodies, WebhookBody,
    WebhookMerchants, WebhookQueue,
};
use crate::telemetry::redact;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use thiserror::Error;
use tracing::{error, info, warn};

/// How long a delivery's copy waits before the worker takes it: the inline attempt (bounded by
/// webhook-ingest's 10 s timeout) has finished by then, so the copy finds work only when that
/// attempt failed.
pub const REPLAY_DELAY_SECONDS: i32 = 60;

/// Why a delivery could not be applied (and was, or will be, retried).
#[derive(Debug, Error)]
pub enum WebhookError {
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// BigCommerce's store API failed while its cart was read.
    #[error(transparent)]
    StoreApi(#[from] ResolveError),
}

impl Classify for WebhookError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Port(e) => e.kind(),
            Self::Ingest(e) => e.kind(),
            // A store that refuses our token keeps refusing it; anything else may pass.
            Self::StoreApi(ResolveError(StoreApiError::Status(401 | 403))) => ErrorKind::Permanent,
            Self::StoreApi(_) => ErrorKind::Transient,
        }
    }
}

/// A delivery as webhook-ingest received it (after routing, size and ping checks). No `Debug`:
/// its headers may hold a secret (BigCommerce's `X-Callfy-Secret`).
#[derive(Clone, Copy)]
pub struct Received<'a> {
    pub platform: PlatformKind,
    pub path_merchant: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub received_at: DateTime<Utc>,
}

/// A delivery webhook-ingest answers 200.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Applied now: what it did.
    Applied { outcome: Outcome, topic: String },
    /// Not applied yet: its durable copy will be.
    Queued { topic: Option<String> },
}

/// A delivery webhook-ingest does not answer 200.
#[derive(Debug, Error)]
pub enum AcceptError {
    /// Refused (401, 400, 422): nothing was queued or written.
    #[error(transparent)]
    Rejected(#[from] PlatformError),
    /// 404: no merchant of this platform is registered for it.
    #[error("no merchant is registered for this webhook")]
    UnknownMerchant,
    /// 503: neither applied nor made durable; the platform must send it again.
    #[error(transparent)]
    Unavailable(WebhookError),
}

/// What the worker made of a delivery's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// Verified and applied (`Duplicate` when the inline attempt had applied it).
    Applied(Outcome),
    /// Not acted on, and never will be: why.
    Dropped(&'static str),
}

/// The webhook use case over its ports: the store, the outreach queue (steps and copies), the
/// bucket large bodies wait in, and BigCommerce's store API.
pub struct Webhooks<'a, S, Q, B, A> {
    pub store: &'a S,
    pub queue: &'a Q,
    pub bodies: &'a B,
    pub storefront: &'a A,
    pub platforms: &'a Platforms,
    /// How long a copy waits (`REPLAY_DELAY_SECONDS`).
    pub replay_delay_seconds: i32,
}

impl<S, Q, B, A> Webhooks<'_, S, Q, B, A>
where
    S: IngestStore + WebhookMerchants + crate::ports::StepStore + crate::ports::DeliveryStamps,
    Q: JobQueue + WebhookQueue,
    B: WebhookBodies,
    A: StorefrontCarts,
{
    /// webhook-ingest: verifies, makes durable, applies (see the module's documentation).
    pub async fn accept(&self, r: Received<'_>) -> Result<Accepted, AcceptError> {
        let deadline = crate::app::retry::deadline();
        let platform = self.platforms.get(r.platform);
        let req = WebhookRequest { headers: r.headers, body: r.body, path_merchant: r.path_merchant };
        // App-wide secrets first, before anything is looked up: a forged request learns nothing
        // about which merchants exist, and costs no storage.
        platform.verify(&req, None)?;
        let merchant_ref = platform.merchant_ref(&req)?;
        // Tried again at once, as the delivery itself is below: a copy queued unverified is
        // applied only when the worker gets to it.
        let merchant = match crate::app::retry::transient(deadline, |_| self.merchant(r.platform, &merchant_ref)).await
        {
            Ok(Some(m)) => m,
            Ok(None) => return Err(AcceptError::UnknownMerchant),
            Err(e) => {
                // The store cannot say whose delivery this is: keep it as it came. The worker
                // verifies it with the merchant's secret before it acts on any of it.
                warn!(route = platform.name(), error = %redact(&crate::ports::chain(&e)), "merchant lookup failed; the webhook is queued unverified");
                self.make_durable(platform, &req, &r).await.map_err(AcceptError::Unavailable)?;
                let topic = platform.topic(&req).ok().map(|t| t.into_owned());
                return Ok(Accepted::Queued { topic });
            }
        };
        platform.verify(&req, Some(&merchant.merchant))?;
        let topic = platform.topic(&req)?.into_owned();
        let event_key = event_key(platform, &req)?;
        let event = platform.parse(&req, &merchant.merchant, r.received_at)?;
        let m = &merchant.merchant.id;
        if matches!(event, PlatformEvent::Ignored) {
            // Nothing to apply, now or later: no copy.
            info!(merchant = %m, topic, event_key, outcome = "ignored", "webhook processed");
            self.stamp(m, r.received_at).await;
            return Ok(Accepted::Applied { outcome: Outcome::Ignored, topic });
        }
        // Durable before anything that can fail for a while: the store API, the store, the queue.
        let durable = match self.make_durable(platform, &req, &r).await {
            Ok(()) => true,
            Err(e) => {
                warn!(merchant = %m, topic, error = %redact(&crate::ports::chain(&e)), "could not queue the webhook's copy; applying it inline only");
                false
            }
        };
        // Tried again at once on a transient failure (applying is idempotent: the dedupe marker):
        // a delivery left to its copy is answered 200 but applied only when the worker gets to
        // it, which behind a backlog can be minutes, and a step of the cart may go out first.
        // The 10 000-delivery campaign found one: an order answered while the store throttled,
        // its copy applied 8 minutes later, 41 s after the cart's first text.
        let applied =
            crate::app::retry::transient(deadline, |_| self.apply(&merchant, &event_key, event.clone(), r.received_at))
                .await;
        let accepted = match applied {
            Ok(outcome) => {
                info!(merchant = %m, topic, event_key, outcome = outcome.as_str(), "webhook processed");
                Ok(Accepted::Applied { outcome, topic })
            }
            // The copy owns the delivery now: SQS retries it, and one that cannot succeed
            // reaches the dead-letter queue and its alarm. Answering an error would only make
            // WooCommerce count a failure towards disabling the webhook.
            Err(e) if durable => {
                let cause = redact(&crate::ports::chain(&e));
                match e.kind() {
                    ErrorKind::Transient => {
                        warn!(merchant = %m, topic, error = %cause, "webhook failed inline; its queued copy will apply it")
                    }
                    ErrorKind::Permanent => {
                        error!(merchant = %m, topic, error = %cause, "webhook failed inline and may not succeed; its queued copy is retried, then dead-lettered")
                    }
                }
                Ok(Accepted::Queued { topic: Some(topic) })
            }
            Err(e) => {
                warn!(merchant = %m, topic, "webhook failed and could not be queued; the platform must retry");
                Err(AcceptError::Unavailable(e))
            }
        };
        if accepted.is_ok() {
            self.stamp(m, r.received_at).await;
        }
        accepted
    }

    /// Silence is an alarm: records the day of a verified delivery (at most one write per
    /// merchant per day). A failure only costs the stamp, never the delivery.
    async fn stamp(&self, m: &MerchantId, at: DateTime<Utc>) {
        if let Err(e) = self.store.stamp_delivery(m, &crate::domain::silence::day_of(at)).await {
            warn!(merchant = %m, error = %redact(&crate::ports::chain(&e)), "could not stamp the merchant's delivery day");
        }
    }

    /// The worker: verifies and applies a delivery's copy. An error leaves the copy (and its
    /// stored body) for the queue to retry; anything else is final, and a stored body is gone.
    pub async fn replay(&self, w: &QueuedWebhook, now: DateTime<Utc>) -> Result<Replayed, WebhookError> {
        let body = match &w.body {
            WebhookBody::Stored(key) => match self.bodies.get_body(key).await? {
                Some(body) => body,
                // Processed already (the object goes last), or expired.
                None => return Ok(dropped(w, "the stored body is gone")),
            },
            inline => match inline.inline_bytes() {
                Some(body) => body,
                None => return Ok(dropped(w, "the body does not decode")),
            },
        };
        let replayed = self.replay_body(w, &body, now).await?;
        if let WebhookBody::Stored(key) = &w.body {
            // A raw body never outlives its processing. Should this fail, the copy is retried,
            // finds the delivery applied, and deletes it then.
            self.bodies.delete_body(key).await?;
        }
        Ok(replayed)
    }

    async fn replay_body(&self, w: &QueuedWebhook, body: &[u8], now: DateTime<Utc>) -> Result<Replayed, WebhookError> {
        let platform = self.platforms.get(w.platform);
        let headers = header_map(&w.headers);
        let req = WebhookRequest { headers: &headers, body, path_merchant: w.path_merchant.as_deref() };
        let Ok(merchant_ref) = platform.merchant_ref(&req) else { return Ok(dropped(w, "it names no merchant")) };
        let Some(merchant) = self.merchant(w.platform, &merchant_ref).await? else {
            return Ok(dropped(w, "no merchant is registered for it"));
        };
        let m = &merchant.merchant.id;
        if let Err(e) = platform.verify_queued(&req, &merchant.merchant, w.received_at) {
            warn!(merchant = %m, route = platform.name(), code = e.code(), "queued webhook with a bad signature dropped");
            return Ok(Replayed::Dropped("bad signature"));
        }
        let (Ok(topic), Ok(event_key)) = (platform.topic(&req), event_key(platform, &req)) else {
            return Ok(dropped(w, "it lacks its topic or id"));
        };
        if self.store.delivery_applied(m, &event_key).await? {
            // Applied inline; had that attempt died between its write and queuing step 0, the
            // cart would wait for ever. Queue it again: a step's claim lets one job through.
            let token = match platform.parse(&req, &merchant.merchant, w.received_at) {
                Ok(PlatformEvent::CartUpserted { snapshot, .. }) => Some(snapshot.token),
                // BigCommerce names only the cart, whose id is its token.
                Ok(PlatformEvent::CartToFetch { cart_id }) => bigcommerce::cart_token(&cart_id).ok(),
                _ => None,
            };
            if let Some(token) = token {
                self.first_step_again(&merchant, &token, now).await?;
            }
            return Ok(Replayed::Applied(Outcome::Duplicate));
        }
        // Parsed as of when it was received, as the inline attempt did; applied as of now.
        let event = match platform.parse(&req, &merchant.merchant, w.received_at) {
            Ok(event) => event,
            Err(e) => {
                warn!(merchant = %m, topic = %topic, code = e.code(), "queued webhook refused by its platform; dropped");
                return Ok(Replayed::Dropped("refused by its platform"));
            }
        };
        let outcome = self.apply(&merchant, &event_key, event, now).await?;
        info!(merchant = %m, topic = %topic, event_key, outcome = outcome.as_str(), "queued webhook processed");
        self.stamp(m, w.received_at).await;
        Ok(Replayed::Applied(outcome))
    }

    /// Step 0 of a cart whose outreach is scheduled but which no job has taken yet, queued again.
    async fn first_step_again(
        &self,
        merchant: &MerchantRecord,
        token: &CartToken,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        let m = &merchant.merchant.id;
        let Some(cart) = self.store.get_cart(m, token).await? else { return Ok(()) };
        // Queued already (the usual case), or taken by a job: nothing to rescue.
        if !cart.outreach_scheduled
            || cart.first_step_queued
            || cart.status.is_closed()
            || self.store.get_step(m, token, 0).await?.is_some()
        {
            return Ok(());
        }
        crate::app::outreach::schedule_step(self.queue, &merchant.merchant, &cart, 0, now).await?;
        Ok(())
    }

    /// The merchant a delivery names, with its secrets; one of another platform is none.
    async fn merchant(&self, kind: PlatformKind, r: &MerchantRef) -> Result<Option<MerchantRecord>, PortError> {
        let found = match r {
            MerchantRef::ShopDomain(domain) => self.store.merchant_by_shop_domain(domain).await?,
            MerchantRef::Id(id) => match MerchantId::parse(id) {
                Ok(id) => self.store.merchant_with_secrets(&id).await?,
                Err(_) => None,
            },
        };
        Ok(found.filter(|m| m.merchant.platform == kind))
    }

    /// Queues the delivery's copy; a body too large for a message goes to the bucket first.
    async fn make_durable(
        &self,
        platform: &dyn Platform,
        req: &WebhookRequest<'_>,
        r: &Received<'_>,
    ) -> Result<(), WebhookError> {
        let mut copy = QueuedWebhook {
            platform: r.platform,
            path_merchant: r.path_merchant.map(str::to_string),
            headers: platform.durable_headers(req),
            body: WebhookBody::inline(r.body),
            received_at: r.received_at,
        };
        let encoded = serde_json::to_vec(&copy).map_err(|e| PortError::Encode(e.to_string()))?.len();
        if encoded <= MAX_QUEUED_WEBHOOK_BYTES {
            self.queue.enqueue_webhook(&copy, self.replay_delay_seconds).await?;
            return Ok(());
        }
        let key = self.bodies.put_body(r.body).await?;
        copy.body = WebhookBody::Stored(key.clone());
        if let Err(e) = self.queue.enqueue_webhook(&copy, self.replay_delay_seconds).await {
            // Nothing will process it: remove it now (the lifecycle rule would, in days).
            if let Err(cleanup) = self.bodies.delete_body(&key).await {
                warn!(error = %redact(&crate::ports::chain(&cleanup)), "could not delete an unqueued webhook body; the lifecycle rule will");
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Applies a parsed event; BigCommerce's cart is read from the store's API first, so a
    /// store API failure leaves nothing half-done.
    async fn apply(
        &self,
        merchant: &MerchantRecord,
        event_key: &str,
        event: PlatformEvent,
        now: DateTime<Utc>,
    ) -> Result<Outcome, WebhookError> {
        let event = match event {
            PlatformEvent::CartToFetch { cart_id } => {
                bigcommerce::resolve(self.storefront, &merchant.merchant, &cart_id, now).await?
            }
            event => event,
        };
        let ingest = Ingest { store: self.store, queue: self.queue };
        Ok(ingest.apply(merchant, event_key, event, now).await?)
    }
}

/// A delivery's dedupe key: `{platform}#{its event id}`.
fn event_key(platform: &dyn Platform, req: &WebhookRequest<'_>) -> Result<String, PlatformError> {
    Ok(format!("{}#{}", platform.name(), platform.event_id(req)?))
}

fn dropped(w: &QueuedWebhook, why: &'static str) -> Replayed {
    warn!(platform = ?w.platform, reason = why, "queued webhook dropped");
    Replayed::Dropped(why)
}

/// The copy's headers as a request's; one that is not a valid header is left out (it came
/// from a request that had it, so that cannot happen short of a forged message).
fn header_map(headers: &[(String, String)]) -> HeaderMap {
    headers
        .iter()
        .filter_map(|(k, v)| Some((HeaderName::try_from(k.as_str()).ok()?, HeaderValue::try_from(v.as_str()).ok()?)))
        .collect()
}
