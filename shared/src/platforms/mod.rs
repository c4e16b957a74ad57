//! Platforms behind one trait: each verifies its webhook, names the merchant and the delivery,
//! and parses the body into one normalised event. Ingest (`app::ingest`) only sees the event.

pub mod bigcommerce;
pub mod custom;
pub mod shopify;
pub mod woocommerce;

use crate::domain::cart::CheckoutSnapshot;
use crate::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, Evidence};
use crate::domain::ids::CartToken;
use crate::domain::merchant::Channel;
use crate::domain::merchant::Merchant;
use crate::domain::phone::Phone;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use thiserror::Error;

/// A webhook as it arrived: the exact raw body (signatures cover it) and its headers.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The `{merchant_id}` of routes that carry it.
    pub path_merchant: Option<&'a str>,
}

impl<'a> WebhookRequest<'a> {
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
    }
}

/// How a platform's webhook names its merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MerchantRef {
    ShopDomain(String),
    Id(String),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlatformError {
    /// 401: the signature is missing (`missing_signature`) or does not match (`invalid_signature`).
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    /// 400: a header the platform always sends is missing.
    #[error("{0} header is required")]
    MissingHeader(&'static str),
    /// 400: the body is not the JSON it should be.
    #[error("body is not valid JSON for {topic}: {reason}")]
    Malformed { topic: String, reason: String },
    /// 422: well-formed, but not something we can act on.
    #[error("{0} is missing or invalid")]
    Field(&'static str),
    /// 422: the body breaks the published schema; `path` names the first violation.
    #[error("{path}: {reason}")]
    Schema { path: String, reason: String },
    /// 422: the body is not the shape of the topic its header names (a body of another topic).
    #[error("the body is not a {topic} payload: {reason}")]
    WrongShape { topic: String, reason: String },
}

impl PlatformError {
    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthenticated { .. } => 401,
            Self::MissingHeader(_) | Self::Malformed { .. } => 400,
            Self::Field(_) | Self::Schema { .. } | Self::WrongShape { .. } => 422,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated { code, .. } => code,
            Self::MissingHeader(_) => "missing_header",
            Self::Malformed { .. } => "malformed_json",
            Self::Field(_) => "invalid_payload",
            Self::Schema { .. } => "schema_violation",
            Self::WrongShape { .. } => "wrong_topic_shape",
        }
    }
}

/// A consent change carried by a platform event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentSignal {
    pub action: ConsentAction,
    pub occurred_at: DateTime<Utc>,
    pub evidence: Evidence,
}

impl ConsentSignal {
    /// The ledger event this signal is for `channel`, as `source` reported it, recorded at `now`.
    pub fn event(&self, channel: Channel, source: ConsentSource, now: DateTime<Utc>) -> ConsentEvent {
        ConsentEvent {
            channel,
            action: self.action,
            source,
            occurred_at: self.occurred_at,
            recorded_at: now,
            evidence: self.evidence.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrivacyKind {
    /// The customer asked the merchant for their data.
    DataRequest,
    /// Erase one customer.
    CustomerRedact,
    /// Erase the whole shop (48 hours after uninstall).
    ShopRedact,
}

/// A data-subject or shop-erasure request a platform relayed. Stored as it came; carried out
/// by the privacy use case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyRequest {
    pub kind: PrivacyKind,
    #[serde(default)]
    pub phone: Option<Phone>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub customer_id: Option<String>,
    /// The platform's own id for the request (Shopify's `data_request.id`).
    #[serde(default)]
    pub request_id: Option<String>,
}

/// What any platform's webhook comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformEvent {
    CartUpserted {
        snapshot: Box<CheckoutSnapshot>,
        consent: Option<ConsentSignal>,
    },
    /// Either the token or the platform's checkout id names the cart.
    CartDeleted {
        token: Option<CartToken>,
        checkout_id: Option<String>,
    },
    /// `revenue`/`currency` unknown (a platform that only names the order): the cart's total.
    OrderPlaced {
        token: Option<CartToken>,
        order_id: String,
        revenue: Option<String>,
        currency: Option<String>,
    },
    /// `withdraws_only`: withdraws an opt-in we hold, never creates a record of a stranger.
    ConsentChanged {
        phone: Phone,
        channel: Channel,
        signal: ConsentSignal,
        withdraws_only: bool,
    },
    /// A platform that sends only a cart's id (BigCommerce): the cart is read from the store's
    /// API before anything is applied (`platforms::bigcommerce::resolve`).
    CartToFetch {
        cart_id: String,
    },
    Privacy(PrivacyRequest),
    AppUninstalled,
    /// A topic we do not act on.
    Ignored,
}

/// A JSON body as `T`; anything else is `400 malformed_json`.
pub fn parse_json<T: for<'de> Deserialize<'de>>(topic: &str, body: &[u8]) -> Result<T, PlatformError> {
    serde_json::from_slice(body)
        .map_err(|e| PlatformError::Malformed { topic: topic.to_string(), reason: e.to_string() })
}

/// One platform's webhooks.
pub trait Platform: Send + Sync {
    /// The name dedupe keys and logs use (`shopify`, …).
    fn name(&self) -> &'static str;
    /// Which merchant the request is for.
    fn merchant_ref(&self, req: &WebhookRequest<'_>) -> Result<MerchantRef, PlatformError>;
    /// Checks the signature over the raw body, in constant time. `merchant` is `None` before the
    /// merchant is looked up: platforms signing with an app-wide secret check then, so a forged
    /// request learns nothing about which merchants exist.
    fn verify(&self, req: &WebhookRequest<'_>, merchant: Option<&Merchant>) -> Result<bool, PlatformError>;
    /// The delivery's id: the same value on a redelivery.
    fn event_id<'a>(&self, req: &WebhookRequest<'a>) -> Result<Cow<'a, str>, PlatformError>;
    /// The topic, for logs and answers.
    fn topic<'a>(&self, req: &WebhookRequest<'a>) -> Result<Cow<'a, str>, PlatformError>;
    /// A platform's test delivery (WooCommerce's save-time ping): answered 200, nothing stored.
    fn is_ping(&self, _req: &WebhookRequest<'_>) -> bool {
        false
    }
    /// The headers this platform reads (lowercase): what a delivery's durable copy keeps.
    fn header_names(&self) -> &'static [&'static str];
    /// The headers a delivery's durable copy carries (`app::webhook`). A header that is itself a
    /// secret is replaced by what `verify_queued` can check it with.
    fn durable_headers(&self, req: &WebhookRequest<'_>) -> Vec<(String, String)> {
        keep_headers(req, self.header_names())
    }
    /// Checks a delivery's durable copy, as received at `received_at`, with every secret that
    /// applies (app-wide and the merchant's): the worker acts on nothing this refuses.
    fn verify_queued(
        &self,
        req: &WebhookRequest<'_>,
        merchant: &Merchant,
        _received_at: DateTime<Utc>,
    ) -> Result<(), PlatformError> {
        self.verify(req, None)?;
        self.verify(req, Some(merchant))?;
        Ok(())
    }
    /// The normalised event.
    fn parse(
        &self,
        req: &WebhookRequest<'_>,
        merchant: &Merchant,
        now: DateTime<Utc>,
    ) -> Result<PlatformEvent, PlatformError>;
}

/// The headers of `req` named in `names` that it has, as sent.
pub fn keep_headers(req: &WebhookRequest<'_>, names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|name| {
            let value = req.headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_string(), value.to_string()))
        })
        .collect()
}

/// Every platform, with the app-wide settings some need: what webhook-ingest and the worker
/// verify and parse deliveries with.
#[derive(Clone)]
pub struct Platforms {
    pub shopify: shopify::Shopify,
    pub custom: custom::Custom,
}

impl Platforms {
    pub fn get(&self, kind: crate::domain::merchant::Platform) -> &dyn Platform {
        use crate::domain::merchant::Platform as Kind;
        match kind {
            Kind::Shopify => &self.shopify,
            Kind::Woocommerce => &woocommerce::WooCommerce,
            Kind::Bigcommerce => &bigcommerce::BigCommerce,
            Kind::Custom => &self.custom,
        }
    }
}

/// What a platform request stores until the privacy and account use cases carry it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformRequest {
    Privacy(PrivacyRequest),
    AppUninstalled,
}

impl PlatformRequest {
    /// The kind a stored request is filed under.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Privacy(p) => match p.kind {
                PrivacyKind::DataRequest => "data_request",
                PrivacyKind::CustomerRedact => "customer_redact",
                PrivacyKind::ShopRedact => "shop_redact",
            },
            Self::AppUninstalled => "app_uninstalled",
        }
    }
}
