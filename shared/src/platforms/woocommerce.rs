//! WooCommerce (docs/platforms.md): order webhooks, signed per merchant. Core has no
//! cart webhook, so a `pending` or `failed` order with a billing phone is the abandoned cart
//! (its `payment_url` the way back), and a paid status is its recovery.

use super::{ConsentSignal, MerchantRef, Platform, PlatformError, PlatformEvent, WebhookRequest};
use crate::domain::cart::{CartItem, CheckoutSnapshot};
use crate::domain::consent::{ConsentAction, Evidence};
use crate::domain::ids::CartToken;
use crate::domain::merchant::{Merchant, WooCommerceSettings};
use crate::domain::phone::Phone;
use crate::domain::time::clamp_platform_time;
use crate::signature::verify_hmac_sha256_base64;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

pub const SIGNATURE_HEADER: &str = "x-wc-webhook-signature";
pub const TOPIC_HEADER: &str = "x-wc-webhook-topic";
pub const DELIVERY_HEADER: &str = "x-wc-webhook-delivery-id";
pub const RESOURCE_HEADER: &str = "x-wc-webhook-resource";
/// What WooCommerce sends with every delivery.
pub const HEADERS: &[&str] = &[
    SIGNATURE_HEADER,
    TOPIC_HEADER,
    DELIVERY_HEADER,
    RESOURCE_HEADER,
    "x-wc-webhook-source",
    "x-wc-webhook-event",
    "x-wc-webhook-id",
];

/// WooCommerce signs with each merchant's own secret: checked once the merchant is known.
#[derive(Debug, Clone, Copy, Default)]
pub struct WooCommerce;

#[derive(Debug, Clone, Deserialize, Default)]
pub struct WooAddress {
    pub first_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub country: Option<String>,
    pub state: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WooItem {
    pub name: Option<String>,
    pub quantity: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WooMeta {
    pub key: Option<String>,
    pub value: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WooOrder {
    pub id: Option<u64>,
    pub status: Option<String>,
    pub currency: Option<String>,
    pub total: Option<String>,
    pub date_created_gmt: Option<String>,
    pub date_modified_gmt: Option<String>,
    pub payment_url: Option<String>,
    #[serde(default)]
    pub billing: WooAddress,
    #[serde(default)]
    pub shipping: WooAddress,
    #[serde(default)]
    pub line_items: Vec<WooItem>,
    #[serde(default)]
    pub meta_data: Vec<WooMeta>,
    pub customer_ip_address: Option<String>,
    pub customer_user_agent: Option<String>,
}

/// What an order's status says about the cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    Abandoned,
    Paid,
    Closed,
    Other,
}

impl OrderState {
    pub fn of(status: &str) -> Self {
        match status {
            "pending" | "failed" => Self::Abandoned,
            "processing" | "completed" | "on-hold" => Self::Paid,
            "cancelled" | "refunded" | "trash" => Self::Closed,
            _ => Self::Other,
        }
    }
}

/// WooCommerce writes `*_gmt` times without a zone.
fn gmt(s: Option<&str>) -> Option<DateTime<Utc>> {
    let s = s?.trim();
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .ok()
        .map(|n| n.and_utc())
        .or_else(|| DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&Utc)))
}

fn truthy(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_i64() == Some(1),
        serde_json::Value::String(s) => matches!(s.trim().to_ascii_lowercase().as_str(), "yes" | "true" | "1" | "on"),
        _ => false,
    }
}

/// The cart token of an order: its id, prefixed so it can never collide with another source.
pub fn order_token(id: u64) -> Result<CartToken, PlatformError> {
    CartToken::parse(&format!("wc-{id}")).map_err(|_| PlatformError::Field("id"))
}

impl WooOrder {
    fn id(&self) -> Result<u64, PlatformError> {
        self.id.ok_or(PlatformError::Field("id"))
    }

    pub fn snapshot(&self, region: &str, now: DateTime<Utc>) -> Result<CheckoutSnapshot, PlatformError> {
        let id = self.id()?;
        let modified = gmt(self.date_modified_gmt.as_deref()).or(gmt(self.date_created_gmt.as_deref()));
        let address = if self.shipping.country.is_some() { &self.shipping } else { &self.billing };
        Ok(CheckoutSnapshot {
            token: order_token(id)?,
            checkout_id: Some(id.to_string()),
            customer_id: None,
            phone: self.billing.phone.as_deref().and_then(|p| Phone::parse(p, Some(region)).ok()),
            email: self.billing.email.clone().map(|e| e.trim().to_lowercase()).filter(|e| !e.is_empty()),
            first_name: self.billing.first_name.clone(),
            recovery_url: self.payment_url.clone().filter(|u| u.starts_with("https://") || u.starts_with("http://")),
            total_price: self.total.clone(),
            currency: self.currency.clone(),
            item_count: self.line_items.iter().map(|l| l.quantity.unwrap_or(1)).sum(),
            items: self
                .line_items
                .iter()
                .filter_map(|l| CartItem::new(l.name.as_deref().unwrap_or_default(), l.quantity.unwrap_or(1)))
                .collect(),
            province_code: address.state.clone().filter(|s| !s.is_empty()),
            country_code: address.country.clone().filter(|s| !s.is_empty()),
            locale: None,
            updated_at: modified.map_or(now, |t| clamp_platform_time(t, now)),
            completed: false,
            attributes: Vec::new(),
        })
    }

    /// SMS consent from the order's meta (`callfy_sms_consent` or the merchant's key): an
    /// opt-in when ticked, with the checkout's IP, user agent and time as evidence. An unticked
    /// box withdraws nothing.
    pub fn sms_consent(
        &self,
        settings: &WooCommerceSettings,
        delivery: &str,
        now: DateTime<Utc>,
    ) -> Option<ConsentSignal> {
        let key = settings.consent_key();
        let meta = self.meta_data.iter().find(|m| m.key.as_deref() == Some(key))?;
        let value = meta.value.as_ref()?;
        if !truthy(value) {
            return None;
        }
        let created = gmt(self.date_created_gmt.as_deref());
        let shown = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Some(ConsentSignal {
            action: ConsentAction::OptIn,
            occurred_at: created.map_or(now, |t| clamp_platform_time(t, now)),
            evidence: Evidence {
                ip: self.customer_ip_address.clone().filter(|s| !s.is_empty()),
                user_agent: self.customer_user_agent.clone().filter(|s| !s.is_empty()),
                platform_timestamp: created.map(|t| t.to_rfc3339()),
                collected_from: Some(format!("woocommerce order meta {key}={shown}")),
                platform_event_id: Some(delivery.to_string()),
                ..Default::default()
            },
        })
    }
}

impl Platform for WooCommerce {
    fn name(&self) -> &'static str {
        "woocommerce"
    }

    fn merchant_ref(&self, req: &WebhookRequest<'_>) -> Result<MerchantRef, PlatformError> {
        req.path_merchant.map(|m| MerchantRef::Id(m.to_string())).ok_or(PlatformError::Field("merchant id in the path"))
    }

    /// The save-time ping: an unsigned form body `webhook_id=N`.
    fn is_ping(&self, req: &WebhookRequest<'_>) -> bool {
        req.header(SIGNATURE_HEADER).is_none()
            && std::str::from_utf8(req.body).is_ok_and(|b| {
                b.strip_prefix("webhook_id=").is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
            })
    }

    fn verify(&self, req: &WebhookRequest<'_>, merchant: Option<&Merchant>) -> Result<bool, PlatformError> {
        let Some(merchant) = merchant else { return Ok(false) };
        let signature = req.header(SIGNATURE_HEADER).ok_or_else(|| PlatformError::Unauthenticated {
            code: "missing_signature",
            message: "X-WC-Webhook-Signature header is required".into(),
        })?;
        let secret = merchant.webhook_secret.as_deref().unwrap_or_default();
        if secret.is_empty() || !verify_hmac_sha256_base64(secret.as_bytes(), req.body, signature) {
            return Err(PlatformError::Unauthenticated {
                code: "invalid_signature",
                message: "X-WC-Webhook-Signature does not match the body".into(),
            });
        }
        Ok(true)
    }

    fn header_names(&self) -> &'static [&'static str] {
        HEADERS
    }

    /// The delivery's content, not its `X-WC-Webhook-Delivery-ID`: WooCommerce derives that from
    /// the webhook id and the second it fired, so two deliveries of one webhook in one second
    /// (the paid update right after the pending one) share it. The resource, its id and
    /// `date_modified_gmt` say what changed when; a hash of the exact body tells two changes in
    /// one second apart, and is the same on a redelivery of the same body.
    fn event_id<'a>(&self, req: &WebhookRequest<'a>) -> Result<Cow<'a, str>, PlatformError> {
        #[derive(Deserialize)]
        struct Keyed {
            id: Option<serde_json::Value>,
            date_modified_gmt: Option<String>,
        }
        // A body that is not JSON still names itself by its hash; parsing refuses it later.
        let keyed = serde_json::from_slice::<Keyed>(req.body).ok();
        let id = match keyed.as_ref().and_then(|k| k.id.as_ref()) {
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            _ => "-".into(),
        };
        let modified = keyed.and_then(|k| k.date_modified_gmt).filter(|m| !m.is_empty()).unwrap_or_else(|| "-".into());
        let resource = req.header(RESOURCE_HEADER).unwrap_or("-");
        let digest = hex::encode(&Sha256::digest(req.body)[..16]);
        Ok(Cow::Owned(format!("{resource}:{id}:{modified}:{digest}")))
    }

    fn topic<'a>(&self, req: &WebhookRequest<'a>) -> Result<Cow<'a, str>, PlatformError> {
        req.header(TOPIC_HEADER).map(Cow::Borrowed).ok_or(PlatformError::MissingHeader("X-WC-Webhook-Topic"))
    }

    fn parse(
        &self,
        req: &WebhookRequest<'_>,
        merchant: &Merchant,
        now: DateTime<Utc>,
    ) -> Result<PlatformEvent, PlatformError> {
        let topic = self.topic(req)?;
        if !matches!(topic.as_ref(), "order.created" | "order.updated") {
            return Ok(PlatformEvent::Ignored);
        }
        let order: WooOrder = super::parse_json(&topic, req.body)?;
        let id = order.id()?;
        let status = order.status.as_deref().ok_or(PlatformError::Field("status"))?;
        Ok(match OrderState::of(status) {
            OrderState::Abandoned => {
                let snapshot = order.snapshot(&merchant.default_country, now)?;
                // Evidence keeps the id WooCommerce gave the delivery, when it gave one.
                let delivery = match req.header(DELIVERY_HEADER) {
                    Some(id) => Cow::Borrowed(id),
                    None => self.event_id(req)?,
                };
                let settings = merchant.woocommerce.clone().unwrap_or_default();
                PlatformEvent::CartUpserted {
                    snapshot: Box::new(snapshot),
                    consent: order.sms_consent(&settings, &delivery, now),
                }
            }
            OrderState::Paid => PlatformEvent::OrderPlaced {
                token: Some(order_token(id)?),
                order_id: id.to_string(),
                revenue: order.total.clone(),
                currency: order.currency.clone(),
            },
            OrderState::Closed => PlatformEvent::CartDeleted { token: Some(order_token(id)?), checkout_id: None },
            OrderState::Other => PlatformEvent::Ignored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(status: &str, meta: serde_json::Value) -> WooOrder {
        serde_json::from_value(serde_json::json!({
            "id": 727, "status": status, "currency": "USD", "total": "84.00",
            "date_created_gmt": "2026-06-10T17:40:00", "date_modified_gmt": "2026-06-10T17:44:51",
            "payment_url": "https://shop.example/checkout/order-pay/727/?pay_for_order=true&key=wc_order_k",
            "billing": { "first_name": "Inés", "phone": "(415) 555-2671", "email": "Ines@Example.com", "country": "US", "state": "CA" },
            "line_items": [{ "name": "Wax Puck", "quantity": 2 }],
            "meta_data": meta, "customer_ip_address": "203.0.113.7", "customer_user_agent": "Mozilla/5.0"
        }))
        .unwrap()
    }

    #[test]
    fn a_pending_order_is_an_abandoned_cart_with_its_payment_link() {
        let now: DateTime<Utc> = "2026-06-10T18:00:00Z".parse().unwrap();
        let o = order("pending", serde_json::json!([{ "key": "callfy_sms_consent", "value": "yes" }]));
        let s = o.snapshot("US", now).unwrap();
        assert_eq!(s.token.as_str(), "wc-727");
        assert_eq!(s.phone.unwrap().as_str(), "+14155552671");
        assert_eq!(s.email.as_deref(), Some("ines@example.com"));
        assert!(s.recovery_url.unwrap().contains("order-pay/727"));
        assert_eq!(s.updated_at, "2026-06-10T17:44:51Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(s.items[0].quantity, 2);
        let consent = o.sms_consent(&WooCommerceSettings::default(), "d-1", now).unwrap();
        assert_eq!(consent.action, ConsentAction::OptIn);
        assert_eq!(consent.evidence.ip.as_deref(), Some("203.0.113.7"));
        assert_eq!(consent.evidence.platform_timestamp.as_deref(), Some("2026-06-10T17:40:00+00:00"));
        for falsy in ["no", "", "0"] {
            let o = order("pending", serde_json::json!([{ "key": "callfy_sms_consent", "value": falsy }]));
            assert!(o.sms_consent(&WooCommerceSettings::default(), "d", now).is_none(), "{falsy}");
        }
        let custom = WooCommerceSettings { consent_meta_key: Some("_sms_ok".into()), ..Default::default() };
        let o = order("pending", serde_json::json!([{ "key": "_sms_ok", "value": true }]));
        assert!(o.sms_consent(&custom, "d", now).is_some());
        assert_eq!(OrderState::of("processing"), OrderState::Paid);
        assert_eq!(OrderState::of("trash"), OrderState::Closed);
        assert_eq!(OrderState::of("checkout-draft"), OrderState::Other);
    }

    #[test]
    fn deliveries_are_named_by_their_content_not_woocommerces_delivery_id() {
        let headers = |delivery: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(DELIVERY_HEADER, delivery.parse().unwrap());
            h.insert(RESOURCE_HEADER, "order".parse().unwrap());
            h
        };
        let id = |h: &http::HeaderMap, body: &[u8]| {
            let req = WebhookRequest { headers: h, body, path_merchant: Some("m") };
            WooCommerce.event_id(&req).unwrap().into_owned()
        };
        let (same_second, later) = (headers("d-1"), headers("d-2"));
        let pending = br#"{"id":727,"status":"pending","date_modified_gmt":"2026-06-10T17:44:51"}"#;
        let paid = br#"{"id":727,"status":"processing","date_modified_gmt":"2026-06-10T17:44:51"}"#;
        let first = id(&same_second, pending);
        assert!(first.starts_with("order:727:2026-06-10T17:44:51:"), "{first}");
        assert_ne!(first, id(&same_second, paid), "one delivery id, two changes in one second");
        assert_eq!(first, id(&later, pending), "the same body again is the same delivery");
        assert!(id(&same_second, b"not json").starts_with("order:-:-:"));
    }
}
