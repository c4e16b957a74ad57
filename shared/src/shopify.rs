//! Shopify webhook payloads (REFERENCE.md, Shopify) and their normalisation.

use crate::domain::cart::CheckoutSnapshot;
use crate::domain::consent::{ConsentAction, Evidence};
use crate::domain::ids::CartToken;
use crate::domain::phone::Phone;
use crate::domain::time::clamp_platform_time;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use thiserror::Error;

pub const TOPIC_HEADER: &str = "x-shopify-topic";
pub const HMAC_HEADER: &str = "x-shopify-hmac-sha256";
pub const SHOP_DOMAIN_HEADER: &str = "x-shopify-shop-domain";
pub const EVENT_ID_HEADER: &str = "x-shopify-event-id";
pub const WEBHOOK_ID_HEADER: &str = "x-shopify-webhook-id";
pub const TRIGGERED_AT_HEADER: &str = "x-shopify-triggered-at";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ShopifyError {
    #[error("body is not valid JSON for {topic}: {reason}")]
    Malformed { topic: String, reason: String },
    #[error("{0} is missing or invalid")]
    Field(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    CheckoutCreate,
    CheckoutUpdate,
    CheckoutDelete,
    OrderCreate,
    MarketingConsentUpdate,
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

pub fn parse<T: for<'de> Deserialize<'de>>(topic: &str, body: &[u8]) -> Result<T, ShopifyError> {
    serde_json::from_slice(body)
        .map_err(|e| ShopifyError::Malformed { topic: topic.to_string(), reason: e.to_string() })
}

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

/// A consent change the checkout carries for its SMS phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentSignal {
    pub action: ConsentAction,
    pub occurred_at: DateTime<Utc>,
    pub evidence: Evidence,
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

    pub fn snapshot(&self, default_region: &str, now: DateTime<Utc>) -> Result<CheckoutSnapshot, ShopifyError> {
        let token = self.token.as_deref().and_then(|t| CartToken::parse(t).ok()).ok_or(ShopifyError::Field("token"))?;
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
            province_code: self.addresses().find_map(|a| a.province_code.clone()),
            country_code: self.addresses().find_map(|a| a.country_code.clone()),
            locale: self.customer_locale.clone(),
            updated_at: self.updated_at.or(self.created_at).map_or(now, |t| clamp_platform_time(t, now)),
            completed: self.completed_at.is_some(),
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
        let occurred_at = clamp_platform_time(consent_at.or(self.updated_at).or(self.created_at)?, now);
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
    ) -> Result<Option<(Phone, ConsentSignal, bool)>, ShopifyError> {
        let phone = self
            .phone_number
            .as_deref()
            .map(|p| Phone::parse(p, Some(default_region)))
            .transpose()
            .map_err(|_| ShopifyError::Field("phone_number"))?;
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
        assert_eq!(bad.signal("US", "e", None, now).unwrap_err(), ShopifyError::Field("phone_number"));
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
        assert_eq!(c.snapshot("US", now).unwrap_err(), ShopifyError::Field("token"));
    }

    #[test]
    fn far_future_platform_times_are_clamped() {
        let now: DateTime<Utc> = "2026-06-01T10:00:00Z".parse().unwrap();
        let cap: DateTime<Utc> = "2026-06-01T10:05:00Z".parse().unwrap();
        let c = checkout(serde_json::json!({ "token": "t1", "buyer_accepts_sms_marketing": true,
            "created_at": "2026-06-01T09:00:00Z", "updated_at": "2099-01-01T00:00:00Z" }));
        assert_eq!(c.snapshot("US", now).unwrap().updated_at, cap);
        let s = c.sms_consent("e1", now).unwrap();
        assert_eq!(s.occurred_at, cap);
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
        assert_eq!(c.sms_consent("e1", now).unwrap().occurred_at, at("2026-06-01T10:55:00Z"));
        let c = checkout(
            serde_json::json!({ "token": "t1", "buyer_accepts_sms_marketing": true, "created_at": "2026-06-01T10:40:00Z" }),
        );
        assert_eq!(c.sms_consent("e1", now).unwrap().occurred_at, at("2026-06-01T10:40:00Z"));
    }

    #[test]
    fn malformed_json_is_a_clear_error() {
        let e = parse::<Checkout>("checkouts/create", b"{not json").unwrap_err();
        assert!(e.to_string().contains("checkouts/create"));
    }
}
