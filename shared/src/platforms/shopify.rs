//! Shopify webhook payloads (checkouts, orders, customer consent, privacy topics, uninstall;
//! see docs/platforms.md) and their normalisation.

use super::{
    ConsentSignal, MerchantRef, Platform, PlatformError, PlatformEvent, PrivacyKind, PrivacyRequest, WebhookRequest,
};
use crate::domain::cart::{CartItem, CheckoutSnapshot};
use crate::domain::consent::{ConsentAction, Evidence};
use crate::domain::ids::CartToken;
use crate::domain::merchant::{Channel, Merchant};
use crate::domain::phone::Phone;
use crate::domain::time::clamp_platform_time;
use crate::signature::verify_hmac_sha256_base64;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::borrow::Cow;

pub const TOPIC_HEADER: &str = "x-shopify-topic";
pub const HMAC_HEADER: &str = "x-shopify-hmac-sha256";
pub const SHOP_DOMAIN_HEADER: &str = "x-shopify-shop-domain";
pub const EVENT_ID_HEADER: &str = "x-shopify-event-id";
pub const WEBHOOK_ID_HEADER: &str = "x-shopify-webhook-id";
pub const TRIGGERED_AT_HEADER: &str = "x-shopify-triggered-at";
/// What Shopify sends with every delivery.
pub const HEADERS: &[&str] = &[
    TOPIC_HEADER,
    HMAC_HEADER,
    SHOP_DOMAIN_HEADER,
    EVENT_ID_HEADER,
    WEBHOOK_ID_HEADER,
    TRIGGERED_AT_HEADER,
    "x-shopify-api-version",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    CheckoutCreate,
    CheckoutUpdate,
    CheckoutDelete,
    OrderCreate,
    MarketingConsentUpdate,
    CustomersDataRequest,
    CustomersRedact,
    ShopRedact,
    AppUninstalled,
    Other,
}

impl Topic {
    pub fn parse(s: &str) -> Self {
        match s {
            "checkouts/create" => Self::CheckoutCreate,
            "checkouts/update" => Self::CheckoutUpdate,
            "checkouts/delete" => Self::CheckoutDelete,
            "orders/create" => Self::OrderCreate,
            "customers_marketing_consent/update" => Self::MarketingConsentUpdate,
            "customers/data_request" => Self::CustomersDataRequest,
            "customers/redact" => Self::CustomersRedact,
            "shop/redact" => Self::ShopRedact,
            "app/uninstalled" => Self::AppUninstalled,
            _ => Self::Other,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct SmsMarketingConsent {
    pub state: Option<String>,
    pub opt_in_level: Option<String>,
    pub consent_updated_at: Option<DateTime<Utc>>,
    pub consent_collected_from: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Customer {
    pub id: Option<serde_json::Value>,
    pub first_name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub sms_marketing_consent: Option<SmsMarketingConsent>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Address {
    pub first_name: Option<String>,
    pub phone: Option<String>,
    pub province_code: Option<String>,
    pub zip: Option<String>,
    pub country_code: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct LineItem {
    pub title: Option<String>,
    pub quantity: Option<u32>,
    pub price: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct ClientDetails {
    pub browser_ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Checkout {
    pub id: Option<serde_json::Value>,
    pub token: Option<String>,
    pub cart_token: Option<String>,
    pub abandoned_checkout_url: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub sms_marketing_phone: Option<String>,
    pub buyer_accepts_sms_marketing: Option<bool>,
    pub customer: Option<Customer>,
    pub billing_address: Option<Address>,
    pub shipping_address: Option<Address>,
    #[serde(default)]
    pub line_items: Vec<LineItem>,
    pub currency: Option<String>,
    pub presentment_currency: Option<String>,
    pub total_price: Option<serde_json::Value>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub customer_locale: Option<String>,
    pub client_details: Option<ClientDetails>,
    /// Custom checkout fields (`[{"name", "value"}]`); a merchant may collect call consent here.
    #[serde(default)]
    pub note_attributes: Vec<NoteAttribute>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NoteAttribute {
    pub name: Option<String>,
    pub value: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    pub id: Option<serde_json::Value>,
    pub checkout_token: Option<String>,
    pub total_price: Option<serde_json::Value>,
    pub currency: Option<String>,
    pub presentment_currency: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutDeleted {
    pub id: Option<serde_json::Value>,
    pub token: Option<String>,
}

pub use super::parse_json as parse;

/// Ids arrive as numbers or strings depending on API version; keep them as text.
pub fn id_text(v: &Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn money_text(v: &Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

impl Checkout {
    fn addresses(&self) -> impl Iterator<Item = &Address> {
        self.shipping_address.iter().chain(self.billing_address.iter())
    }

    /// The recipient's region: shipping, then billing address, then the merchant's default.
    pub fn region<'a>(&'a self, default_region: &'a str) -> &'a str {
        self.addresses().find_map(|a| a.country_code.as_deref().filter(|c| c.len() == 2)).unwrap_or(default_region)
    }

    /// The first usable phone, most specific to SMS first.
    pub fn sms_phone(&self, default_region: &str) -> Option<Phone> {
        let region = self.region(default_region);
        let customer_phone = self.customer.as_ref().and_then(|c| c.phone.as_deref());
        [self.sms_marketing_phone.as_deref(), self.phone.as_deref(), customer_phone]
            .into_iter()
            .chain(self.addresses().map(|a| a.phone.as_deref()))
            .flatten()
            .find_map(|raw| Phone::parse(raw, Some(region)).ok())
    }

    pub fn snapshot(&self, default_region: &str, now: DateTime<Utc>) -> Result<CheckoutSnapshot, PlatformError> {
        let token =
            self.token.as_deref().and_then(|t| CartToken::parse(t).ok()).ok_or(PlatformError::Field("token"))?;
        let first_name = self
            .customer
            .as_ref()
            .and_then(|c| c.first_name.clone())
            .or_else(|| self.addresses().find_map(|a| a.first_name.clone()));
        let recovery_url =
            self.abandoned_checkout_url.clone().filter(|u| u.starts_with("https://") || u.starts_with("http://"));
        Ok(CheckoutSnapshot {
            token,
            checkout_id: id_text(&self.id),
            customer_id: self.customer.as_ref().and_then(|c| id_text(&c.id)),
            phone: self.sms_phone(default_region),
            email: self
                .email
                .clone()
                .or_else(|| self.customer.as_ref().and_then(|c| c.email.clone()))
                .map(|e| e.trim().to_lowercase())
                .filter(|e| !e.is_empty()),
            first_name,
            recovery_url,
            total_price: money_text(&self.total_price),
            currency: self.presentment_currency.clone().or_else(|| self.currency.clone()),
            item_count: self.line_items.iter().map(|l| l.quantity.unwrap_or(1)).sum(),
            items: self
                .line_items
                .iter()
                .filter_map(|l| CartItem::new(l.title.as_deref().unwrap_or_default(), l.quantity.unwrap_or(1)))
                .collect(),
            province_code: self.addresses().find_map(|a| a.province_code.clone()),
            country_code: self.addresses().find_map(|a| a.country_code.clone()),
            locale: self.customer_locale.clone(),
            updated_at: self.updated_at.or(self.created_at).map_or(now, |t| clamp_platform_time(t, now)),
            completed: self.completed_at.is_some(),
            attributes: self
                .note_attributes
                .iter()
                .filter_map(|a| {
                    let value = match a.value.as_ref()? {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    Some((a.name.clone()?, value))
                })
                .collect(),
        })
    }

    /// SMS consent as the checkout states it. An `unsubscribed` customer state wins over a
    /// checkbox: when the two disagree we do not text. It happened when the customer's consent
    /// last changed, else when the checkout did; never later than `now` plus the skew allowed.
    pub fn sms_consent(&self, event_id: &str, now: DateTime<Utc>) -> Option<ConsentSignal> {
        let customer_consent = self.customer.as_ref().and_then(|c| c.sms_marketing_consent.as_ref());
        let state = customer_consent.and_then(|c| c.state.as_deref());
        let action = match (state, self.buyer_accepts_sms_marketing) {
            (Some("unsubscribed"), _) => ConsentAction::OptOut,
            (Some("subscribed"), _) | (_, Some(true)) => ConsentAction::OptIn,
            _ => return None,
        };
        let consent_at = customer_consent.and_then(|c| c.consent_updated_at);
        // A box without its own time is dated when the checkout began, never later: an undated
        // tick must not outrun an opt-out made while the checkout was open.
        let occurred_at = clamp_platform_time(consent_at.or(self.created_at).or(self.updated_at)?, now);
        let client = self.client_details.clone().unwrap_or_default();
        Some(ConsentSignal {
            action,
            occurred_at,
            evidence: Evidence {
                consent_text: None,
                consent_text_version: None,
                page_url: self.abandoned_checkout_url.clone(),
                ip: client.browser_ip,
                user_agent: client.user_agent,
                // Evidence keeps what the platform said, unclamped.
                platform_timestamp: consent_at.map(|t| t.to_rfc3339()),
                opt_in_level: customer_consent.and_then(|c| c.opt_in_level.clone()),
                collected_from: customer_consent
                    .and_then(|c| c.consent_collected_from.clone())
                    .or_else(|| Some("SHOPIFY_CHECKOUT".into())),
                platform_event_id: Some(event_id.to_string()),
                message_sid: None,
                keyword: None,
                words: None,
            },
        })
    }
}

/// `customers_marketing_consent/update`: a customer's SMS consent changed in Shopify.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct MarketingConsentUpdate {
    pub id: Option<serde_json::Value>,
    pub phone_number: Option<String>,
    pub sms_marketing_consent: Option<SmsMarketingConsent>,
}

impl MarketingConsentUpdate {
    /// The consent change for the customer's phone. `not_subscribed` and `redacted` withdraw
    /// consent only where we hold an opt-in (`withdraws_only`); `pending` changes nothing.
    pub fn signal(
        &self,
        default_region: &str,
        event_id: &str,
        triggered_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<(Phone, ConsentSignal, bool)>, PlatformError> {
        let phone = self
            .phone_number
            .as_deref()
            .map(|p| Phone::parse(p, Some(default_region)))
            .transpose()
            .map_err(|_| PlatformError::Field("phone_number"))?;
        let (Some(phone), Some(consent)) = (phone, self.sms_marketing_consent.as_ref()) else {
            return Ok(None);
        };
        let (action, withdraws_only) = match consent.state.as_deref() {
            Some("subscribed") => (ConsentAction::OptIn, false),
            Some("unsubscribed") => (ConsentAction::OptOut, false),
            Some("not_subscribed") | Some("redacted") => (ConsentAction::OptOut, true),
            _ => return Ok(None),
        };
        let occurred_at = consent.consent_updated_at.or(triggered_at).map_or(now, |t| clamp_platform_time(t, now));
        let evidence = Evidence {
            platform_timestamp: consent.consent_updated_at.map(|t| t.to_rfc3339()),
            opt_in_level: consent.opt_in_level.clone(),
            collected_from: consent.consent_collected_from.clone(),
            platform_event_id: Some(event_id.to_string()),
            ..Default::default()
        };
        Ok(Some((phone, ConsentSignal { action, occurred_at, evidence }, withdraws_only)))
    }
}

impl Order {
    pub fn revenue(&self) -> (String, String) {
        (
            money_text(&self.total_price).unwrap_or_else(|| "0.00".into()),
            self.currency.clone().or_else(|| self.presentment_currency.clone()).unwrap_or_default(),
        )
    }
}

/// The customer a privacy topic is about (`customers/data_request`, `customers/redact`).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct PrivacyPayload {
    pub customer: Option<Customer>,
    pub data_request: Option<DataRequestRef>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct DataRequestRef {
    pub id: Option<serde_json::Value>,
}

impl PrivacyPayload {
    fn request(&self, kind: PrivacyKind, default_region: &str) -> PrivacyRequest {
        let customer = self.customer.clone().unwrap_or_default();
        PrivacyRequest {
            kind,
            // A phone we cannot parse cannot be in our records under that number either; the
            // email still names the customer.
            phone: customer.phone.as_deref().and_then(|p| Phone::parse(p, Some(default_region)).ok()),
            email: customer.email.filter(|e| !e.trim().is_empty()),
            customer_id: id_text(&customer.id),
            request_id: self.data_request.as_ref().and_then(|r| id_text(&r.id)),
        }
    }
}

/// What a body of a privacy or uninstall topic must have, and keys of other topics' bodies it
/// must not. These topics erase data or close an account, and Shopify's HMAC covers the body but
/// not the `X-Shopify-Topic` header: a body is acted on only as the topic its shape says it is.
struct Shape {
    required: &'static [&'static str],
    foreign: &'static [&'static str],
}

/// Keys only the other topics' bodies have (checkouts, orders, marketing consent).
const OTHER_TOPIC_KEYS: &[&str] = &["token", "checkout_token", "line_items", "sms_marketing_consent", "phone_number"];

fn shape(topic: Topic) -> Option<Shape> {
    Some(match topic {
        Topic::CustomersDataRequest => {
            Shape { required: &["shop_domain", "customer", "data_request"], foreign: &["orders_to_redact"] }
        }
        Topic::CustomersRedact => Shape {
            required: &["shop_domain", "customer", "orders_to_redact"],
            foreign: &["data_request", "orders_requested"],
        },
        Topic::ShopRedact => Shape {
            required: &["shop_id", "shop_domain"],
            foreign: &["customer", "data_request", "orders_requested", "orders_to_redact"],
        },
        // The shop resource.
        Topic::AppUninstalled => Shape {
            required: &["id"],
            foreign: &["shop_id", "shop_domain", "customer", "data_request", "orders_requested", "orders_to_redact"],
        },
        _ => return None,
    })
}

/// Refuses (422) a body of a privacy or uninstall topic that is not that topic's shape, or that
/// names another shop than the one the delivery is for.
pub fn check_shape(topic_name: &str, body: &[u8], shop_domain: &str) -> Result<(), PlatformError> {
    let Some(shape) = shape(Topic::parse(topic_name)) else { return Ok(()) };
    let wrong = |reason: String| PlatformError::WrongShape { topic: topic_name.to_string(), reason };
    let value: serde_json::Value = parse(topic_name, body)?;
    let Some(fields) = value.as_object() else { return Err(wrong("expected a JSON object".into())) };
    if let Some(missing) = shape.required.iter().find(|k| fields.get(**k).is_none_or(serde_json::Value::is_null)) {
        return Err(wrong(format!("`{missing}` is missing")));
    }
    if let Some(extra) = shape.foreign.iter().chain(OTHER_TOPIC_KEYS).find(|k| fields.contains_key(**k)) {
        return Err(wrong(format!("`{extra}` belongs to another topic")));
    }
    // The shop the body names (`shop_domain` of the privacy topics, `myshopify_domain` of the
    // shop resource) must be the shop the delivery is for.
    let named = fields.get("shop_domain").or_else(|| fields.get("myshopify_domain")).and_then(|d| d.as_str());
    if named.is_some_and(|d| !d.trim().eq_ignore_ascii_case(shop_domain)) {
        return Err(wrong("the body names another shop".into()));
    }
    Ok(())
}

/// Shopify: HMAC-SHA256 of the raw body with the app's client secret; the shop domain names
/// the merchant.
#[derive(Clone)]
pub struct Shopify {
    pub app_secret: secrecy::SecretString,
}

impl Platform for Shopify {
    fn name(&self) -> &'static str {
        "shopify"
    }

    fn merchant_ref(&self, req: &WebhookRequest<'_>) -> Result<MerchantRef, PlatformError> {
        let domain = req.header(SHOP_DOMAIN_HEADER).ok_or(PlatformError::MissingHeader("X-Shopify-Shop-Domain"))?;
        Ok(MerchantRef::ShopDomain(domain.to_ascii_lowercase()))
    }

    fn verify(&self, req: &WebhookRequest<'_>, merchant: Option<&Merchant>) -> Result<bool, PlatformError> {
        // One app secret for every shop: checked before the merchant is looked up.
        if merchant.is_some() {
            return Ok(true);
        }
        let hmac = req.header(HMAC_HEADER).ok_or_else(|| PlatformError::Unauthenticated {
            code: "missing_signature",
            message: "X-Shopify-Hmac-Sha256 header is required".into(),
        })?;
        if !verify_hmac_sha256_base64(self.app_secret.expose_secret().as_bytes(), req.body, hmac) {
            return Err(PlatformError::Unauthenticated {
                code: "invalid_signature",
                message: "X-Shopify-Hmac-Sha256 does not match the body".into(),
            });
        }
        Ok(true)
    }

    fn event_id<'a>(&self, req: &WebhookRequest<'a>) -> Result<Cow<'a, str>, PlatformError> {
        req.header(EVENT_ID_HEADER)
            .or_else(|| req.header(WEBHOOK_ID_HEADER))
            .map(Cow::Borrowed)
            .ok_or(PlatformError::MissingHeader("X-Shopify-Event-Id or X-Shopify-Webhook-Id"))
    }

    fn topic<'a>(&self, req: &WebhookRequest<'a>) -> Result<Cow<'a, str>, PlatformError> {
        req.header(TOPIC_HEADER).map(Cow::Borrowed).ok_or(PlatformError::MissingHeader("X-Shopify-Topic"))
    }

    fn header_names(&self) -> &'static [&'static str] {
        HEADERS
    }

    fn parse(
        &self,
        req: &WebhookRequest<'_>,
        merchant: &Merchant,
        now: DateTime<Utc>,
    ) -> Result<PlatformEvent, PlatformError> {
        let (topic_name, event_id) = (self.topic(req)?, self.event_id(req)?);
        let (topic_name, event_id) = (topic_name.as_ref(), event_id.as_ref());
        let region = merchant.default_country.as_str();
        let body = req.body;
        let MerchantRef::ShopDomain(shop) = self.merchant_ref(req)? else {
            return Err(PlatformError::MissingHeader("X-Shopify-Shop-Domain"));
        };
        check_shape(topic_name, body, &shop)?;
        Ok(match Topic::parse(topic_name) {
            Topic::CheckoutCreate | Topic::CheckoutUpdate => {
                let c: Checkout = parse(topic_name, body)?;
                PlatformEvent::CartUpserted {
                    snapshot: Box::new(c.snapshot(region, now)?),
                    consent: c.sms_consent(event_id, now),
                }
            }
            Topic::CheckoutDelete => {
                let d: CheckoutDeleted = parse(topic_name, body)?;
                PlatformEvent::CartDeleted {
                    token: d.token.as_deref().and_then(|t| CartToken::parse(t).ok()),
                    checkout_id: id_text(&d.id),
                }
            }
            Topic::OrderCreate => {
                let o: Order = parse(topic_name, body)?;
                let (revenue, currency) = o.revenue();
                PlatformEvent::OrderPlaced {
                    token: o.checkout_token.as_deref().and_then(|t| CartToken::parse(t).ok()),
                    order_id: id_text(&o.id).unwrap_or_default(),
                    revenue: Some(revenue),
                    currency: Some(currency),
                }
            }
            Topic::MarketingConsentUpdate => {
                let u: MarketingConsentUpdate = parse(topic_name, body)?;
                let triggered_at = req
                    .header(TRIGGERED_AT_HEADER)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc));
                match u.signal(region, event_id, triggered_at, now)? {
                    Some((phone, signal, withdraws_only)) => {
                        PlatformEvent::ConsentChanged { phone, channel: Channel::Sms, signal, withdraws_only }
                    }
                    None => PlatformEvent::Ignored,
                }
            }
            Topic::CustomersDataRequest => PlatformEvent::Privacy(
                parse::<PrivacyPayload>(topic_name, body)?.request(PrivacyKind::DataRequest, region),
            ),
            Topic::CustomersRedact => PlatformEvent::Privacy(
                parse::<PrivacyPayload>(topic_name, body)?.request(PrivacyKind::CustomerRedact, region),
            ),
            Topic::ShopRedact => {
                parse::<serde_json::Value>(topic_name, body)?;
                PlatformEvent::Privacy(PrivacyRequest {
                    kind: PrivacyKind::ShopRedact,
                    phone: None,
                    email: None,
                    customer_id: None,
                    request_id: None,
                })
            }
            Topic::AppUninstalled => PlatformEvent::AppUninstalled,
            Topic::Other => PlatformEvent::Ignored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkout(v: serde_json::Value) -> Checkout {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn picks_the_sms_phone_first_and_normalises_it() {
        let c = checkout(serde_json::json!({
            "token": "t1", "phone": "+14155552671", "sms_marketing_phone": "(212) 555-0147",
            "shipping_address": { "country_code": "US", "phone": "+16135550123" }
        }));
        assert_eq!(c.sms_phone("CA").unwrap().as_str(), "+12125550147");
        let c = checkout(
            serde_json::json!({ "token": "t1", "shipping_address": { "phone": "020 7946 0958", "country_code": "GB" } }),
        );
        assert_eq!(c.sms_phone("US").unwrap().as_str(), "+442079460958");
        let c = checkout(serde_json::json!({ "token": "t1", "phone": "nope" }));
        assert!(c.sms_phone("US").is_none());
    }

    #[test]
    fn consent_from_checkbox_or_customer_state() {
        let now: DateTime<Utc> = "2026-06-01T10:00:00Z".parse().unwrap();
        let c = checkout(
            serde_json::json!({ "token": "t1", "buyer_accepts_sms_marketing": true, "updated_at": "2026-06-01T10:00:00Z" }),
        );
        assert_eq!(c.sms_consent("e1", now).unwrap().action, ConsentAction::OptIn);

        let c = checkout(serde_json::json!({ "token": "t1", "updated_at": "2026-06-01T10:00:00Z",
            "customer": { "sms_marketing_consent": { "state": "subscribed", "opt_in_level": "single_opt_in",
            "consent_updated_at": "2026-06-01T09:59:00Z", "consent_collected_from": "SHOPIFY" } } }));
        let s = c.sms_consent("e1", now).unwrap();
        assert_eq!(s.action, ConsentAction::OptIn);
        assert_eq!(s.occurred_at, "2026-06-01T09:59:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(s.evidence.opt_in_level.as_deref(), Some("single_opt_in"));

        let c = checkout(
            serde_json::json!({ "token": "t1", "buyer_accepts_sms_marketing": true, "updated_at": "2026-06-01T10:00:00Z",
            "customer": { "sms_marketing_consent": { "state": "unsubscribed" } } }),
        );
        assert_eq!(c.sms_consent("e1", now).unwrap().action, ConsentAction::OptOut);

        for v in [
            serde_json::json!({ "token": "t1", "buyer_accepts_sms_marketing": false, "updated_at": "2026-06-01T10:00:00Z" }),
            serde_json::json!({ "token": "t1", "updated_at": "2026-06-01T10:00:00Z", "customer": { "sms_marketing_consent": { "state": "pending" } } }),
            serde_json::json!({ "token": "t1", "buyer_accepts_marketing": true, "updated_at": "2026-06-01T10:00:00Z" }),
        ] {
            assert!(checkout(v).sms_consent("e1", now).is_none());
        }
    }

    #[test]
    fn marketing_consent_update_states() {
        let now: DateTime<Utc> = "2026-06-01T10:00:00Z".parse().unwrap();
        let parse = |state: &str| {
            let v = serde_json::json!({ "id": 706405506930370084u64, "phone_number": "(312) 555-1212",
                "sms_marketing_consent": { "state": state, "opt_in_level": "single_opt_in",
                "consent_updated_at": "2026-06-01T09:00:00Z", "consent_collected_from": "OTHER" } });
            serde_json::from_value::<MarketingConsentUpdate>(v).unwrap().signal("US", "ev1", None, now).unwrap()
        };
        let (phone, sig, only) = parse("subscribed").unwrap();
        assert_eq!((phone.as_str(), sig.action, only), ("+13125551212", ConsentAction::OptIn, false));
        assert_eq!(sig.evidence.platform_timestamp.as_deref(), Some("2026-06-01T09:00:00+00:00"));
        assert_eq!(parse("unsubscribed").unwrap().1.action, ConsentAction::OptOut);
        assert!(parse("not_subscribed").unwrap().2);
        assert!(parse("pending").is_none());
        let bad = MarketingConsentUpdate { phone_number: Some("nope".into()), ..Default::default() };
        assert_eq!(bad.signal("US", "e", None, now).unwrap_err(), PlatformError::Field("phone_number"));
    }

    #[test]
    fn snapshot_needs_a_valid_token() {
        let now = "2026-06-01T10:00:00Z".parse().unwrap();
        let c = checkout(serde_json::json!({ "id": 42, "token": "abc", "total_price": "12.50", "currency": "USD",
            "line_items": [ { "title": "Hat", "quantity": 2, "price": "6.25" } ], "completed_at": null }));
        let s = c.snapshot("US", now).unwrap();
        assert_eq!(s.checkout_id.as_deref(), Some("42"));
        assert_eq!(s.total_price.as_deref(), Some("12.50"));
        assert_eq!(s.item_count, 2);
        assert_eq!(s.updated_at, now);
        assert!(!s.completed);
        let c = checkout(serde_json::json!({ "token": "a b" }));
        assert_eq!(c.snapshot("US", now).unwrap_err(), PlatformError::Field("token"));
    }

    #[test]
    fn far_future_platform_times_are_clamped() {
        let now: DateTime<Utc> = "2026-06-01T10:00:00Z".parse().unwrap();
        let cap: DateTime<Utc> = "2026-06-01T10:05:00Z".parse().unwrap();
        let c = checkout(serde_json::json!({ "token": "t1", "buyer_accepts_sms_marketing": true,
            "created_at": "2026-06-01T09:00:00Z", "updated_at": "2099-01-01T00:00:00Z" }));
        assert_eq!(c.snapshot("US", now).unwrap().updated_at, cap);
        let s = c.sms_consent("e1", now).unwrap();
        assert_eq!(
            s.occurred_at,
            "2026-06-01T09:00:00Z".parse::<DateTime<Utc>>().unwrap(),
            "an undated box: created_at"
        );
        assert_eq!(s.evidence.platform_timestamp, None);

        let c = checkout(serde_json::json!({ "token": "t1", "created_at": "2099-01-01T00:00:00Z",
            "customer": { "sms_marketing_consent": { "state": "subscribed", "consent_updated_at": "2099-01-01T00:00:00Z" } } }));
        assert_eq!(c.snapshot("US", now).unwrap().updated_at, cap);
        let s = c.sms_consent("e1", now).unwrap();
        assert_eq!(s.occurred_at, cap);
        assert_eq!(s.evidence.platform_timestamp.as_deref(), Some("2099-01-01T00:00:00+00:00"), "evidence as sent");

        let c = checkout(serde_json::json!({ "token": "t1", "updated_at": "2026-06-01T10:03:00Z" }));
        assert_eq!(c.snapshot("US", now).unwrap().updated_at, "2026-06-01T10:03:00Z".parse::<DateTime<Utc>>().unwrap());

        let update = |consent_at: Option<&str>| {
            let v = serde_json::json!({ "phone_number": "+13125551212",
                "sms_marketing_consent": { "state": "unsubscribed", "consent_updated_at": consent_at } });
            serde_json::from_value::<MarketingConsentUpdate>(v).unwrap()
        };
        let far: DateTime<Utc> = "2099-01-01T00:00:00Z".parse().unwrap();
        let (_, sig, _) = update(Some("2099-01-01T00:00:00Z")).signal("US", "ev1", None, now).unwrap().unwrap();
        assert_eq!(sig.occurred_at, cap);
        let (_, sig, _) = update(None).signal("US", "ev1", Some(far), now).unwrap().unwrap();
        assert_eq!(sig.occurred_at, cap, "triggered_at too");
    }

    #[test]
    fn checkout_consent_prefers_its_own_consent_time() {
        let now: DateTime<Utc> = "2026-06-01T11:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let c = checkout(serde_json::json!({ "token": "t1", "created_at": "2026-06-01T10:40:00Z",
            "updated_at": "2026-06-01T10:55:00Z",
            "customer": { "sms_marketing_consent": { "state": "subscribed", "consent_updated_at": "2026-06-01T10:44:00Z" } } }));
        assert_eq!(c.sms_consent("e1", now).unwrap().occurred_at, at("2026-06-01T10:44:00Z"));
        let c = checkout(serde_json::json!({ "token": "t1", "buyer_accepts_sms_marketing": true,
            "created_at": "2026-06-01T10:40:00Z", "updated_at": "2026-06-01T10:55:00Z" }));
        // Undated: when the checkout began, so a later update cannot make an old tick newer.
        assert_eq!(c.sms_consent("e1", now).unwrap().occurred_at, at("2026-06-01T10:40:00Z"));
        let c = checkout(
            serde_json::json!({ "token": "t1", "buyer_accepts_sms_marketing": true, "updated_at": "2026-06-01T10:55:00Z" }),
        );
        assert_eq!(c.sms_consent("e1", now).unwrap().occurred_at, at("2026-06-01T10:55:00Z"));
        let c = checkout(
            serde_json::json!({ "token": "t1", "buyer_accepts_sms_marketing": true, "created_at": "2026-06-01T10:40:00Z" }),
        );
        assert_eq!(c.sms_consent("e1", now).unwrap().occurred_at, at("2026-06-01T10:40:00Z"));
    }

    #[test]
    fn privacy_and_uninstall_bodies_must_be_their_topics_shape() {
        let shop = "snowdevil.myshopify.com";
        let check = |topic: &str, v: serde_json::Value| check_shape(topic, v.to_string().as_bytes(), shop);
        let data_request = serde_json::json!({ "shop_id": 1, "shop_domain": shop, "orders_requested": [],
            "customer": { "id": 2, "email": "a@example.com" }, "data_request": { "id": 9 } });
        let redact =
            serde_json::json!({ "shop_id": 1, "shop_domain": shop, "customer": { "id": 2 }, "orders_to_redact": [] });
        let shop_redact = serde_json::json!({ "shop_id": 1, "shop_domain": shop });
        let uninstalled = serde_json::json!({ "id": 1, "domain": "snowdevil.ca", "myshopify_domain": shop });
        for (topic, body) in [
            ("customers/data_request", &data_request),
            ("customers/redact", &redact),
            ("shop/redact", &shop_redact),
            ("app/uninstalled", &uninstalled),
        ] {
            assert_eq!(check(topic, body.clone()), Ok(()), "{topic}");
        }
        let refused = |topic: &str, v: &serde_json::Value| {
            let e = check(topic, v.clone()).unwrap_err();
            assert_eq!((e.status(), e.code()), (422, "wrong_topic_shape"), "{topic}: {e}");
        };
        refused("customers/redact", &data_request);
        refused("customers/data_request", &redact);
        refused("shop/redact", &redact);
        refused("app/uninstalled", &shop_redact);
        refused("customers/redact", &serde_json::json!({ "token": "t1", "customer": {}, "shop_domain": shop }));
        refused("shop/redact", &serde_json::json!({ "shop_id": 1, "shop_domain": "other.myshopify.com" }));
        refused("app/uninstalled", &serde_json::json!([1]));
        refused(
            "app/uninstalled",
            &serde_json::json!({ "id": 7, "phone_number": "+13125551212",
            "sms_marketing_consent": { "state": "unsubscribed" } }),
        );
        assert_eq!(
            check("checkouts/create", serde_json::json!({ "token": "t1" })),
            Ok(()),
            "other topics: their parsers"
        );
    }

    #[test]
    fn malformed_json_is_a_clear_error() {
        let e = parse::<Checkout>("checkouts/create", b"{not json").unwrap_err();
        assert!(e.to_string().contains("checkouts/create"));
    }
}
