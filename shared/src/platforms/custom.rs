//! Any platform, through our signed JSON API: Standard Webhooks signatures (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`) and three events whose JSON Schema is published in
//! `schemas/custom-platform-events.schema.json`, generated from the types below.
//!
//! Signing uses the specification's own crate (`standardwebhooks`); verifying does not use its
//! `verify`: that compares only as many bytes as the shorter signature has, so a header of just
//! `v1,` passes for any body, and it reads the system clock instead of ours. We compare each
//! `v1,` entry whole, in constant time, and check the timestamp against the injected clock.

use super::{ConsentSignal, MerchantRef, Platform, PlatformError, PlatformEvent, WebhookRequest};
use crate::clock::Clock;
use crate::domain::cart::{CartItem, CheckoutSnapshot};
use crate::domain::consent::{ConsentAction, Evidence};
use crate::domain::ids::CartToken;
use crate::domain::merchant::{Channel, Merchant};
use crate::domain::phone::Phone;
use crate::domain::time::clamp_platform_time;
use crate::signature::ct_eq;
use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// Timestamps further than this from now are refused (replays, clocks far off).
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

/// The custom-platform webhook; its clock bounds the signature's timestamp.
#[derive(Clone)]
pub struct Custom {
    pub clock: Arc<dyn Clock>,
}

/// Signs a delivery as Standard Webhooks specifies (`v1,<base64>`), with the spec's crate.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, PlatformError> {
    let unusable = |_| PlatformError::Unauthenticated { code: "invalid_signature", message: "unusable secret".into() };
    let wh = standardwebhooks::Webhook::new(secret).map_err(unusable)?;
    wh.sign(id, timestamp, body).map_err(|_| PlatformError::Field("body (must be UTF-8)"))
}

/// Checks a `webhook-signature` list: any one whole `v1,` entry equal to ours, and a timestamp
/// within `TOLERANCE_SECONDS` of `now`.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), PlatformError> {
    let refuse = |code: &'static str, message: &str| PlatformError::Unauthenticated { code, message: message.into() };
    let ts: i64 =
        timestamp.trim().parse().map_err(|_| refuse("invalid_signature", "webhook-timestamp is not a number"))?;
    if (now.timestamp() - ts).abs() > TOLERANCE_SECONDS {
        return Err(refuse("stale_signature", "webhook-timestamp is more than 5 minutes from now"));
    }
    let expected = sign(secret, id, ts, body)?;
    let matched = signatures
        .split_whitespace()
        .filter(|s| s.starts_with("v1,"))
        .any(|s| ct_eq(s.as_bytes(), expected.as_bytes()));
    if matched { Ok(()) } else { Err(refuse("invalid_signature", "no webhook-signature entry matches the body")) }
}

// ---- the published event types -------------------------------------------------------------

/// An E.164 phone number.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct E164(pub Phone);

impl TryFrom<String> for E164 {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if !s.starts_with('+') {
            return Err("must be an E.164 number such as +14155552671".into());
        }
        Phone::parse(&s, None).map(E164).map_err(|_| "must be a valid E.164 phone number".into())
    }
}

impl JsonSchema for E164 {
    fn schema_name() -> Cow<'static, str> {
        "E164Phone".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^\\+[1-9][0-9]{6,14}$", "description": "E.164 phone number" })
    }
}

/// A link back to the cart: http(s) only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Link(pub String);

impl TryFrom<String> for Link {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok =
            (s.starts_with("https://") || s.starts_with("http://")) && s.len() <= 2048 && url::Url::parse(&s).is_ok();
        if ok { Ok(Link(s)) } else { Err("must be an http(s) URL of at most 2048 characters".into()) }
    }
}

impl JsonSchema for Link {
    fn schema_name() -> Cow<'static, str> {
        "Link".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "uri", "pattern": "^https?://", "maxLength": 2048 })
    }
}

/// The platform's cart id: becomes our cart token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct CartId(pub CartToken);

impl TryFrom<String> for CartId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        CartToken::parse(&s).map(CartId).map_err(|e| e.to_string())
    }
}

impl JsonSchema for CartId {
    fn schema_name() -> Cow<'static, str> {
        "CartId".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$" })
    }
}

/// Money as a decimal string ("84.00"), never a float.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Money(pub String);

impl TryFrom<String> for Money {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let (whole, frac) = s.split_once('.').unwrap_or((&s, ""));
        let ok = !whole.is_empty()
            && whole.len() <= 12
            && whole.bytes().all(|b| b.is_ascii_digit())
            && frac.len() <= 4
            && frac.bytes().all(|b| b.is_ascii_digit())
            && !(s.contains('.') && frac.is_empty());
        if ok { Ok(Money(s)) } else { Err("must be a decimal amount such as \"84.00\"".into()) }
    }
}

impl JsonSchema for Money {
    fn schema_name() -> Cow<'static, str> {
        "Money".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^[0-9]{1,12}(\\.[0-9]{1,4})?$" })
    }
}

/// How many of an item: at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u32")]
pub struct Quantity(pub u32);

impl Default for Quantity {
    fn default() -> Self {
        Self(1)
    }
}

impl TryFrom<u32> for Quantity {
    type Error = String;
    fn try_from(n: u32) -> Result<Self, String> {
        if n >= 1 { Ok(Self(n)) } else { Err("must be at least 1".into()) }
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "minimum": 1, "maximum": 4294967295u32 })
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Item {
    pub title: String,
    #[serde(default)]
    pub quantity: Quantity,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Address {
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    /// State or province code.
    pub region: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct SmsConsent {
    pub granted: bool,
    /// The wording the shopper agreed to.
    pub text: Option<String>,
    pub collected_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct CartUpdated {
    pub cart_id: CartId,
    pub phone: E164,
    pub first_name: Option<String>,
    pub recovery_url: Link,
    pub currency: Option<String>,
    pub total: Option<Money>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub items: Vec<Item>,
    pub address: Option<Address>,
    pub sms_consent: Option<SmsConsent>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct CartCompleted {
    pub cart_id: CartId,
    pub order_id: String,
    pub total: Option<Money>,
    pub currency: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    OptIn,
    OptOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentChannel {
    Sms,
    Voice,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct ConsentEvidence {
    pub consent_text: Option<String>,
    pub page_url: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ConsentUpdated {
    pub phone: E164,
    pub channel: ConsentChannel,
    pub action: Action,
    pub occurred_at: Option<DateTime<Utc>>,
    pub evidence: Option<ConsentEvidence>,
}

/// The body of a custom-platform webhook: `{"type": …, "data": {…}}` (an optional top-level
/// `timestamp` is informative and ignored).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
#[schemars(title = "Callfy custom-platform webhook event")]
pub enum CustomEvent {
    #[serde(rename = "cart.updated")]
    CartUpdated(CartUpdated),
    #[serde(rename = "cart.completed")]
    CartCompleted(CartCompleted),
    #[serde(rename = "consent.updated")]
    ConsentUpdated(ConsentUpdated),
}

/// The published JSON Schema, as `schemas/custom-platform-events.schema.json` holds it.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(CustomEvent);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Parses a body against the schema: `400` for what is not JSON, `422` naming the JSON path of
/// the first violation (`$.data.phone`) for what breaks the schema. The `type` is read first and
/// `data` parsed as that event, so the path is exact whatever order the keys come in.
pub fn parse_event(body: &[u8]) -> Result<CustomEvent, PlatformError> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| PlatformError::Malformed { topic: "custom event".into(), reason: e.to_string() })?;
    let violation = |path: &str, reason: &str| PlatformError::Schema { path: path.into(), reason: reason.into() };
    let Some(obj) = v.as_object() else { return Err(violation("$", "must be an object")) };
    let kind = match obj.get("type") {
        None => return Err(violation("$.type", "missing field `type`")),
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(_) => return Err(violation("$.type", "must be a string")),
    };
    let Some(data) = obj.get("data") else { return Err(violation("$.data", "missing field `data`")) };
    match kind {
        "cart.updated" => data_as(data).map(CustomEvent::CartUpdated),
        "cart.completed" => data_as(data).map(CustomEvent::CartCompleted),
        "consent.updated" => data_as(data).map(CustomEvent::ConsentUpdated),
        other => Err(violation(
            "$.type",
            &format!("unknown event type {other:?}: expected cart.updated, cart.completed or consent.updated"),
        )),
    }
}

fn data_as<T: for<'de> Deserialize<'de>>(data: &serde_json::Value) -> Result<T, PlatformError> {
    serde_path_to_error::deserialize(data.clone()).map_err(|err| {
        let path = err.path().to_string();
        let reason = err.into_inner().to_string();
        // serde points a missing field at its parent: name the field itself.
        let missing = reason.strip_prefix("missing field `").and_then(|r| r.split('`').next());
        let mut json_path = if path == "." { "$.data".to_string() } else { format!("$.data.{path}") };
        if let Some(field) = missing {
            json_path = format!("{json_path}.{field}");
        }
        PlatformError::Schema { path: json_path, reason }
    })
}

fn header<'a>(req: &WebhookRequest<'a>, name: &'static str) -> Result<&'a str, PlatformError> {
    req.header(name).ok_or_else(|| PlatformError::Unauthenticated {
        code: "missing_signature",
        message: format!("{name} header is required (Standard Webhooks)"),
    })
}

impl Platform for Custom {
    fn name(&self) -> &'static str {
        "custom"
    }

    fn merchant_ref(&self, req: &WebhookRequest<'_>) -> Result<MerchantRef, PlatformError> {
        req.path_merchant.map(|m| MerchantRef::Id(m.to_string())).ok_or(PlatformError::Field("merchant id in the path"))
    }

    fn verify(&self, req: &WebhookRequest<'_>, merchant: Option<&Merchant>) -> Result<bool, PlatformError> {
        let Some(merchant) = merchant else { return Ok(false) };
        let (id, ts, sig) = (header(req, ID_HEADER)?, header(req, TIMESTAMP_HEADER)?, header(req, SIGNATURE_HEADER)?);
        let secret = merchant.webhook_secret.as_deref().unwrap_or_default();
        verify(secret, id, ts, sig, req.body, self.clock.now())?;
        Ok(true)
    }

    fn header_names(&self) -> &'static [&'static str] {
        &[ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER]
    }

    /// The timestamp is judged as of when webhook-ingest received the delivery, not when the
    /// worker gets to its copy: the copy waits a minute, and longer when it is retried.
    fn verify_queued(
        &self,
        req: &WebhookRequest<'_>,
        merchant: &Merchant,
        received_at: DateTime<Utc>,
    ) -> Result<(), PlatformError> {
        let (id, ts, sig) = (header(req, ID_HEADER)?, header(req, TIMESTAMP_HEADER)?, header(req, SIGNATURE_HEADER)?);
        verify(merchant.webhook_secret.as_deref().unwrap_or_default(), id, ts, sig, req.body, received_at)
    }

    fn event_id<'a>(&self, req: &WebhookRequest<'a>) -> Result<Cow<'a, str>, PlatformError> {
        req.header(ID_HEADER).map(Cow::Borrowed).ok_or(PlatformError::MissingHeader("webhook-id"))
    }

    fn topic<'a>(&self, req: &WebhookRequest<'a>) -> Result<Cow<'a, str>, PlatformError> {
        #[derive(Deserialize)]
        struct Typed {
            #[serde(rename = "type")]
            kind: Option<String>,
        }
        let typed: Typed = super::parse_json("custom event", req.body)?;
        Ok(Cow::Owned(typed.kind.unwrap_or_default()))
    }

    fn parse(
        &self,
        req: &WebhookRequest<'_>,
        _: &Merchant,
        now: DateTime<Utc>,
    ) -> Result<PlatformEvent, PlatformError> {
        let delivery = self.event_id(req)?;
        Ok(match parse_event(req.body)? {
            CustomEvent::CartUpdated(c) => {
                let consent = c.sms_consent.as_ref().map(|s| ConsentSignal {
                    action: if s.granted { ConsentAction::OptIn } else { ConsentAction::OptOut },
                    occurred_at: clamp_platform_time(s.collected_at.unwrap_or(c.updated_at), now),
                    evidence: Evidence {
                        consent_text: s.text.clone(),
                        platform_timestamp: s.collected_at.map(|t| t.to_rfc3339()),
                        platform_event_id: Some(delivery.to_string()),
                        ..Default::default()
                    },
                });
                // An unticked box on a checkout withdraws nothing: only a grant counts here.
                let consent = consent.filter(|s| s.action == ConsentAction::OptIn);
                let items: Vec<CartItem> =
                    c.items.iter().filter_map(|i| CartItem::new(&i.title, i.quantity.0)).collect();
                let snapshot = CheckoutSnapshot {
                    token: c.cart_id.0.clone(),
                    checkout_id: None,
                    customer_id: None,
                    phone: Some(c.phone.0.clone()),
                    email: None,
                    first_name: c.first_name.clone(),
                    recovery_url: Some(c.recovery_url.0.clone()),
                    total_price: c.total.as_ref().map(|m| m.0.clone()),
                    currency: c.currency.clone(),
                    item_count: items.iter().map(|i| i.quantity).sum(),
                    items,
                    province_code: c.address.as_ref().and_then(|a| a.region.clone()),
                    country_code: c.address.as_ref().and_then(|a| a.country.clone()),
                    locale: None,
                    updated_at: clamp_platform_time(c.updated_at, now),
                    completed: false,
                    attributes: Vec::new(),
                };
                PlatformEvent::CartUpserted { snapshot: Box::new(snapshot), consent }
            }
            CustomEvent::CartCompleted(c) => PlatformEvent::OrderPlaced {
                token: Some(c.cart_id.0),
                order_id: c.order_id,
                revenue: c.total.map(|m| m.0),
                currency: c.currency,
            },
            CustomEvent::ConsentUpdated(c) => {
                let evidence = c.evidence.unwrap_or_default();
                PlatformEvent::ConsentChanged {
                    phone: c.phone.0,
                    channel: match c.channel {
                        ConsentChannel::Sms => Channel::Sms,
                        ConsentChannel::Voice => Channel::Voice,
                    },
                    signal: ConsentSignal {
                        action: match c.action {
                            Action::OptIn => ConsentAction::OptIn,
                            Action::OptOut => ConsentAction::OptOut,
                        },
                        occurred_at: clamp_platform_time(c.occurred_at.unwrap_or(now), now),
                        evidence: Evidence {
                            consent_text: evidence.consent_text,
                            page_url: evidence.page_url,
                            ip: evidence.ip,
                            user_agent: evidence.user_agent,
                            platform_timestamp: c.occurred_at.map(|t| t.to_rfc3339()),
                            platform_event_id: Some(delivery.to_string()),
                            ..Default::default()
                        },
                    },
                    withdraws_only: false,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn signs_as_the_specification_and_verifies_whole_entries_only() {
        // The Standard Webhooks reference vector.
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let sig = sign("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body)
            .unwrap();
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");

        let now: DateTime<Utc> = "2026-06-10T18:00:00Z".parse().unwrap();
        let ts = now.timestamp();
        let good = sign(SECRET, "msg_1", ts, b"{}").unwrap();
        assert!(verify(SECRET, "msg_1", &ts.to_string(), &good, b"{}", now).is_ok());
        let list = format!("v1,AAAA {good} v2,whatever");
        assert!(verify(SECRET, "msg_1", &ts.to_string(), &list, b"{}", now).is_ok(), "any one entry");
        for bad in ["v1,", "v1", "", "v1,tZ1I4", &good.replace("v1,", "v2,")] {
            assert!(verify(SECRET, "msg_1", &ts.to_string(), bad, b"{}", now).is_err(), "{bad:?}");
        }
        assert!(verify(SECRET, "msg_2", &ts.to_string(), &good, b"{}", now).is_err(), "the id is signed");
        assert!(verify(SECRET, "msg_1", &ts.to_string(), &good, b"{ }", now).is_err(), "the body is signed");
        let stale = now + chrono::Duration::seconds(TOLERANCE_SECONDS + 1);
        let e = verify(SECRET, "msg_1", &ts.to_string(), &good, b"{}", stale).unwrap_err();
        assert!(matches!(e, PlatformError::Unauthenticated { code: "stale_signature", .. }));
    }

    #[test]
    fn schema_violations_name_the_path() {
        let ok = br#"{"type":"cart.updated","data":{"cart_id":"c-123","phone":"+14155552671","recovery_url":"https://shop.example/r/abc","updated_at":"2026-06-10T17:44:51Z"}}"#;
        assert!(matches!(parse_event(ok).unwrap(), CustomEvent::CartUpdated(_)));
        let path = |body: &str| match parse_event(body.as_bytes()) {
            Err(PlatformError::Schema { path, .. }) => path,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            path(
                r#"{"type":"cart.updated","data":{"cart_id":"c-123","phone":"555","recovery_url":"https://x.example/r","updated_at":"2026-06-10T17:44:51Z"}}"#
            ),
            "$.data.phone"
        );
        assert_eq!(
            path(
                r#"{"type":"cart.updated","data":{"cart_id":"c-123","phone":"+14155552671","updated_at":"2026-06-10T17:44:51Z"}}"#
            ),
            "$.data.recovery_url"
        );
        assert_eq!(
            path(
                r#"{"type":"cart.updated","data":{"cart_id":"c 1","phone":"+14155552671","recovery_url":"https://x.example/r","updated_at":"2026-06-10T17:44:51Z"}}"#
            ),
            "$.data.cart_id"
        );
        assert_eq!(
            path(r#"{"type":"cart.completed","data":{"cart_id":"c-1","order_id":"o","total":"1,00"}}"#),
            "$.data.total"
        );
        assert!(path(r#"{"type":"cart.exploded","data":{}}"#).starts_with("$"));
        assert!(matches!(parse_event(b"{not json"), Err(PlatformError::Malformed { .. })));
    }
}
