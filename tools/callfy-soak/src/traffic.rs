//! What the campaign sends: carts across the four platforms, each delivery signed as its
//! platform signs it, and the merchants they belong to.

use crate::rng::Rng;
use base64::Engine;
use callfy_shared::signature::hmac_sha256_base64;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

const SHOPIFY_CHECKOUT: &str = include_str!("../../../events/shopify/checkouts-create.json");
const SHOPIFY_ORDER: &str = include_str!("../../../events/shopify/orders-create.json");
const WOO_ORDER: &str = include_str!("../../../events/woocommerce/order-pending.json");
const BC_CART: &str = include_str!("../../../events/bigcommerce/store-cart.json");
const BC_CHECKOUT: &str = include_str!("../../../events/bigcommerce/store-checkout.json");

pub const SHOP_DOMAIN: &str = "soak-shop.myshopify.com";
pub const BC_STORE_HASH: &str = "soakbc";
const WOO_SECRET: &str = "callfy-soak-woo-secret-000001";
const BC_SECRET: &str = "callfy-soak-bc-secret-0000001";
/// `whsec_` and the base64 of 32 bytes.
const CUSTOM_SECRET: &str = "whsec_Y2FsbGZ5LXNvYWstY3VzdG9tLXNlY3JldC0wMDAwMDE=";
/// The discount code of the flow's second step: it tells the steps' messages apart.
pub const STEP2_CODE: &str = "SOAK2";
/// The discount code of the agent's call step: the link a shopper asks for on the call carries it.
pub const CALL_CODE: &str = "SOAKV";
const VOICE_CONSENT_ATTRIBUTE: &str = "callfy_voice_consent";
/// The number a shopper texts (the Messaging Service's pool number).
pub const POOL_NUMBER: &str = "+15005550006";

/// US area codes whose local time is daytime at the campaign's clock (no state that rests on
/// Sundays or holidays): phones are `+1 {area} 555 01xx`, the fictional range, then other lines.
const AREAS: &[u16] = &[
    201, 202, 203, 206, 207, 208, 209, 210, 212, 213, 214, 215, 216, 217, 218, 219, 224, 234, 240, 248, 267, 281, 301,
    302, 303, 304, 307, 309, 310, 312, 313, 314, 315, 316, 317, 319, 330, 336, 347, 401, 402, 404, 406, 408, 410, 412,
    413, 414, 415, 417, 419, 423, 424, 425, 440, 443, 469, 480, 484, 502, 503, 510, 512, 513, 515, 516,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    Shopify,
    WooCommerce,
    BigCommerce,
    Custom,
}

impl Platform {
    pub const ALL: [Platform; 4] = [Self::Shopify, Self::WooCommerce, Self::BigCommerce, Self::Custom];

    pub const fn merchant_id(self) -> &'static str {
        match self {
            Self::Shopify => "soak-shop",
            Self::WooCommerce => "soak-woo",
            Self::BigCommerce => "soak-bc",
            Self::Custom => "soak-api",
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Shopify => "Shopify",
            Self::WooCommerce => "WooCommerce",
            Self::BigCommerce => "BigCommerce",
            Self::Custom => "custom",
        }
    }

    pub fn messaging_service(self) -> String {
        format!("MG{:032x}", 0x5a0c_u128 << 100 | (self as u128 + 1))
    }

    /// The merchant profile the campaign registers: a two-step flow (at once, then a minute
    /// later with a code), no merchant quiet hours, and a pumping guard sized for the load. With
    /// `agent_calls`, the Shopify merchant's second step is a call by the voice agent, consented
    /// to with a checkout box the merchant renders next to its consent text.
    pub fn merchant(self, flow_steps: u8, agent_calls: bool) -> Value {
        let mut flow = vec![json!({ "after_minutes": 0, "channel": "sms" })];
        let call = agent_calls && self == Self::Shopify;
        if flow_steps > 1 && call {
            flow.push(json!({ "after_minutes": 1, "channel": "voice", "discount_code": CALL_CODE }));
        } else if flow_steps > 1 {
            flow.push(json!({ "after_minutes": 1, "channel": "sms", "discount_code": STEP2_CODE }));
        }
        let mut m = json!({
            "id": self.merchant_id(),
            "name": format!("Soak {}", self.name()),
            "platform": match self {
                Self::Shopify => "shopify",
                Self::WooCommerce => "woocommerce",
                Self::BigCommerce => "bigcommerce",
                Self::Custom => "custom",
            },
            "sender": { "messaging_service_sid": self.messaging_service() },
            "support": { "url": "https://soak.example/help", "phone": "+18005550100" },
            "timezone": "America/New_York",
            "flow": flow,
            "retention_days": { "sms_logs": 730, "consent_records": 730, "recordings": 730 },
            "recording": { "enabled": false },
            "send_guard": { "daily_send_budget": 10_000_000, "carts_per_ip": 10_000_000, "carts_per_prefix": 10_000_000 },
            // The campaign checks delivery, not each merchant's share of the API.
            "api_limit": { "rate_per_second": 1000, "burst": 10_000 },
        });
        if call {
            m["voice_from"] = POOL_NUMBER.into();
            m["voice"] = json!({
                "agent": "callfy",
                "voicemail": false,
                "consent_attribute": VOICE_CONSENT_ATTRIBUTE,
                "consent_text": "Call me about my cart with an automated assistant. Consent is not a condition of purchase.",
                "consent_attribute_rendered": true,
                "time_limit_seconds": 300,
            });
        }
        match self {
            Self::Shopify => m["shop_domain"] = SHOP_DOMAIN.into(),
            Self::WooCommerce => {
                m["webhook_secret"] = WOO_SECRET.into();
                m["woocommerce"] = json!({ "consent_meta_key": "callfy_sms_consent" });
            }
            Self::BigCommerce => {
                m["webhook_secret"] = BC_SECRET.into();
                m["bigcommerce"] = json!({
                    "store_hash": BC_STORE_HASH,
                    "api_token": callfy_local::bigcommerce_store::DEMO_API_TOKEN,
                });
            }
            Self::Custom => m["webhook_secret"] = CUSTOM_SECRET.into(),
        }
        m
    }
}

/// One cart of the campaign and what will happen to it.
#[derive(Debug, Clone)]
pub struct CartPlan {
    pub idx: usize,
    pub platform: Platform,
    /// The cart token Callfy stores.
    pub token: String,
    pub phone: String,
    pub consent: bool,
    /// In-order updates after the first delivery.
    pub updates: u32,
    /// An older version delivered after the newest (out of order).
    pub stale_update: bool,
    /// An order (payment, conversion, completion) races the flow, this long after the first delivery.
    pub order_after_ms: Option<u64>,
    /// The shopper texts STOP, this long after the first delivery.
    pub stop_after_ms: Option<u64>,
    /// A STOP/START storm from this cart's phone, starting this long after the cart's last
    /// delivery: keywords one after another, some delivered twice with the same MessageSid.
    pub storm_after_ms: Option<u64>,
    pub storm: Vec<StormWord>,
    /// A data-subject deletion of this cart's phone, this long after the cart's last delivery
    /// (the consent API's route; a signed `customers/redact` for the Shopify merchant).
    pub delete_after_ms: Option<u64>,
}

/// One keyword of a storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StormWord {
    pub text: &'static str,
    /// A STOP-type keyword (an opt-out of texts and calls); otherwise a START-type one.
    pub opt_out: bool,
    /// Delivered a second time with the same MessageSid right after (a proxy's replay).
    pub replayed: bool,
}

/// STOP-type keywords a storm mixes (each an opt-out of both channels as the whole message).
pub const STOP_WORDS: &[&str] =
    &["STOP", "stop", "Stop all", "STOPALL", "unsubscribe", "Cancel", "end", "QUIT", "stop please", "Stop."];
/// START-type keywords (an opt-in of texts, honoured after an opt-out).
pub const START_WORDS: &[&str] = &["START", "start", "unstop", "UNSTOP", "Start"];

/// A storm's keywords: the first an opt-out, then STOP- and START-type at random.
pub fn storm_words(rng: &Rng) -> Vec<StormWord> {
    let n = 3 + rng.below(5) as usize;
    (0..n)
        .map(|i| {
            let opt_out = i == 0 || rng.chance(0.5);
            let words = if opt_out { STOP_WORDS } else { START_WORDS };
            StormWord { text: words[rng.below(words.len() as u64) as usize], opt_out, replayed: rng.chance(0.25) }
        })
        .collect()
}

impl CartPlan {
    /// The marker in the recovery link that names this cart in a message.
    pub fn marker(idx: usize) -> String {
        format!("/r/sc{idx:06}/")
    }

    pub fn url(&self) -> String {
        format!(
            "https://soak-{}.example{}recover?k=9a6d{}",
            self.platform.merchant_id(),
            Self::marker(self.idx),
            self.idx
        )
    }

    pub fn woo_id(&self) -> u64 {
        100_000 + self.idx as u64
    }

    pub fn bc_id(&self) -> String {
        format!("00000000-0000-4000-8000-{:012}", self.idx)
    }

    pub fn shopify_checkout_id(&self) -> u64 {
        7_000_000_000 + self.idx as u64
    }
}

/// The `idx`-th distinct phone number.
pub fn phone(idx: usize) -> String {
    let area = AREAS[idx % AREAS.len()];
    let line = idx / AREAS.len();
    if line < 100 {
        format!("+1{area}55501{line:02}")
    } else {
        let exchange = 201 + (line / 10_000) % 700;
        format!("+1{area}{exchange}{:04}", line % 10_000)
    }
}

/// Shares of the campaign's traffic.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub consent: f64,
    pub update: f64,
    pub stale: f64,
    pub order: f64,
    pub stop: f64,
    /// Phones with a STOP/START storm (no racing STOP or order then).
    pub storm: f64,
    /// Phones with a data-subject deletion (no racing STOP, order or storm then).
    pub delete: f64,
    /// The latest a racing STOP or order comes after the cart's first delivery (a storm or a
    /// deletion after its last).
    pub race_window_ms: u64,
}

pub fn plan_cart(idx: usize, rng: &Rng, mix: &Mix) -> CartPlan {
    let platform = Platform::ALL[idx % 4];
    let token = match platform {
        Platform::Shopify => format!("sc{idx:06}tok{:08x}", rng.next_u64() as u32),
        Platform::WooCommerce => format!("wc-{}", 100_000 + idx as u64),
        Platform::BigCommerce => format!("00000000-0000-4000-8000-{idx:012}"),
        Platform::Custom => format!("sc-{idx:06}"),
    };
    let updates = if rng.chance(mix.update) { 1 + rng.below(2) as u32 } else { 0 };
    let race = |p: f64| rng.chance(p).then(|| rng.below(mix.race_window_ms.max(1)));
    let mut plan = CartPlan {
        idx,
        platform,
        token,
        phone: phone(idx),
        consent: rng.chance(mix.consent),
        updates,
        stale_update: platform != Platform::BigCommerce && rng.chance(mix.stale),
        order_after_ms: race(mix.order),
        stop_after_ms: race(mix.stop),
        storm_after_ms: None,
        storm: Vec::new(),
        delete_after_ms: None,
    };
    // Drawn last and only when asked for: with no storms or deletions a seed plans the carts it
    // planned before they existed.
    if mix.storm > 0.0 && rng.chance(mix.storm) {
        plan.storm_after_ms = Some(rng.below(mix.race_window_ms.max(1)));
        plan.storm = storm_words(rng);
        // The keywords alone decide the phone's consent: no racing STOP, and no order (a
        // WooCommerce order carries the consent box again, stamped now).
        plan.stop_after_ms = None;
        plan.order_after_ms = None;
    } else if mix.delete > 0.0 && rng.chance(mix.delete) {
        // Nothing of the cart's comes after the deletion: no order, no STOP.
        plan.delete_after_ms = Some(rng.below(mix.race_window_ms.max(1)));
        plan.stop_after_ms = None;
        plan.order_after_ms = None;
    }
    plan
}

/// What a delivery is, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Consent,
    Create,
    Update,
    Stale,
    Order,
    Stop,
    /// Keywords of STOP/START storms (signed inbound SMS; not retried).
    Keyword,
    /// Data-subject deletions (consent API, or Shopify `customers/redact`).
    Delete,
}

/// A request ready to send (and to send again, as a platform's redelivery).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub kind: Kind,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Standard Webhooks: signed afresh at each attempt with the attempt's timestamp.
    pub resign: Option<String>,
}

impl Delivery {
    /// Headers for an attempt at `now`.
    pub fn headers_at(&self, now: DateTime<Utc>) -> Vec<(String, String)> {
        let mut h = self.headers.clone();
        if let Some(id) = &self.resign {
            let ts = now.timestamp().to_string();
            h.push(("webhook-id".into(), id.clone()));
            h.push(("webhook-timestamp".into(), ts.clone()));
            h.push(("webhook-signature".into(), standard_signature(id, &ts, &self.body)));
        }
        h
    }
}

pub fn standard_signature(id: &str, ts: &str, body: &[u8]) -> String {
    let secret = base64::engine::general_purpose::STANDARD
        .decode(CUSTOM_SECRET.trim_start_matches("whsec_"))
        .unwrap_or_default();
    let mut msg = format!("{id}.{ts}.").into_bytes();
    msg.extend_from_slice(body);
    format!("v1,{}", hmac_sha256_base64(&secret, &msg))
}

fn json_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn template(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_default()
}

/// The cart's state as of version `version` (1 = first), stamped `at`.
/// A version of the cart's checkout, updated `at`, from a checkout created (and its consent given)
/// at `created`: a platform keeps the consent's time across updates, so an update after a STOP
/// is not a newer opt-in.
pub fn cart_delivery(
    plan: &CartPlan,
    kind: Kind,
    version: u32,
    (created, at): (DateTime<Utc>, DateTime<Utc>),
    uid: &str,
) -> Delivery {
    let iso = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let created_iso = created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let quantity = version;
    match plan.platform {
        Platform::Shopify => {
            let mut c = template(SHOPIFY_CHECKOUT);
            c["id"] = plan.shopify_checkout_id().into();
            c["token"] = plan.token.clone().into();
            c["cart_token"] = format!("cart{}", plan.token).into();
            c["name"] = format!("#{}", plan.shopify_checkout_id()).into();
            c["sms_marketing_phone"] = plan.phone.clone().into();
            c["buyer_accepts_sms_marketing"] = plan.consent.into();
            c["billing_address"]["phone"] = plan.phone.clone().into();
            c["shipping_address"]["phone"] = plan.phone.clone().into();
            c["customer"]["phone"] = plan.phone.clone().into();
            c["customer"]["id"] = (900_000 + plan.idx as u64).into();
            c["customer"]["email"] = format!("shopper{}@example.com", plan.idx).into();
            c["email"] = format!("shopper{}@example.com", plan.idx).into();
            c["customer"]["sms_marketing_consent"] = if plan.consent {
                json!({ "state": "subscribed", "opt_in_level": "single_opt_in", "consent_updated_at": created_iso, "consent_collected_from": "SHOPIFY" })
            } else {
                json!({ "state": "not_subscribed", "opt_in_level": "single_opt_in", "consent_updated_at": null })
            };
            c["created_at"] = created_iso.into();
            c["updated_at"] = iso.into();
            c["abandoned_checkout_url"] = plan.url().into();
            c["line_items"][0]["quantity"] = quantity.into();
            c["client_details"] = json!({ "browser_ip": format!("198.51.100.{}", plan.idx % 250 + 1) });
            // The box for the agent's calls, ticked with the texts' (read only where the merchant
            // calls).
            if plan.consent {
                c["note_attributes"] = json!([{ "name": VOICE_CONSENT_ATTRIBUTE, "value": "yes" }]);
            }
            let body = json_body(&c);
            let topic = if kind == Kind::Create { "checkouts/create" } else { "checkouts/update" };
            shopify(kind, topic, uid, body)
        }
        Platform::WooCommerce => {
            let mut o = template(WOO_ORDER);
            let gmt = at.format("%Y-%m-%dT%H:%M:%S").to_string();
            let created_gmt = created.format("%Y-%m-%dT%H:%M:%S").to_string();
            o["id"] = plan.woo_id().into();
            o["order_key"] = format!("wc_order_soak{}", plan.idx).into();
            o["billing"]["phone"] = plan.phone.clone().into();
            o["billing"]["email"] = format!("shopper{}@example.com", plan.idx).into();
            o["date_created_gmt"] = created_gmt.into();
            o["date_modified_gmt"] = gmt.into();
            o["payment_url"] = plan.url().into();
            o["customer_ip_address"] = format!("198.51.100.{}", plan.idx % 250 + 1).into();
            o["line_items"][0]["quantity"] = quantity.into();
            o["meta_data"] =
                json!([{ "id": 9011, "key": "callfy_sms_consent", "value": if plan.consent { "yes" } else { "no" } }]);
            let topic = if kind == Kind::Create { "order.created" } else { "order.updated" };
            woo(kind, topic, uid, json_body(&o))
        }
        Platform::BigCommerce => {
            let body = json!({
                "created_at": at.timestamp(),
                "store_id": "1025999",
                "producer": format!("stores/{BC_STORE_HASH}"),
                "scope": "store/cart/abandoned",
                "hash": uid,
                "data": { "type": "cart", "id": plan.bc_id(), "token": format!("{:032}", plan.idx) },
            });
            bigcommerce(kind, json_body(&body))
        }
        Platform::Custom => {
            let mut data = json!({
                "cart_id": plan.token,
                "phone": plan.phone,
                "first_name": "Sam",
                "recovery_url": plan.url(),
                "currency": "USD",
                "total": format!("{}.00", 20 * quantity),
                "updated_at": iso,
                "items": [{ "title": "Wax Puck", "quantity": quantity }],
                "address": { "country": "US", "region": "NY" },
            });
            if plan.consent {
                data["sms_consent"] = json!({
                    "granted": true,
                    "text": "Text me about my cart. Up to 2 msgs per cart. Reply STOP to opt out.",
                    "collected_at": created_iso,
                });
            }
            let body = json!({ "type": "cart.updated", "timestamp": iso, "data": data });
            custom(kind, uid, json_body(&body))
        }
    }
}

/// The store's copy of a BigCommerce cart, which ingest reads.
pub fn bigcommerce_store_docs(plan: &CartPlan) -> (Value, Value) {
    let mut cart = template(BC_CART);
    cart["data"]["id"] = plan.bc_id().into();
    cart["data"]["email"] = format!("shopper{}@example.com", plan.idx).into();
    cart["data"]["redirect_urls"]["checkout_url"] = plan.url().into();
    cart["data"]["redirect_urls"]["cart_url"] = plan.url().into();
    let mut checkout = template(BC_CHECKOUT);
    checkout["data"]["id"] = plan.bc_id().into();
    checkout["data"]["billing_address"]["phone"] = plan.phone.clone().into();
    checkout["data"]["billing_address"]["email"] = format!("shopper{}@example.com", plan.idx).into();
    (cart, checkout)
}

/// The order that recovers the cart.
pub fn order_delivery(plan: &CartPlan, at: DateTime<Utc>, uid: &str) -> Delivery {
    let iso = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match plan.platform {
        Platform::Shopify => {
            let mut o = template(SHOPIFY_ORDER);
            o["id"] = (8_000_000_000 + plan.idx as u64).into();
            o["checkout_id"] = plan.shopify_checkout_id().into();
            o["checkout_token"] = plan.token.clone().into();
            o["cart_token"] = format!("cart{}", plan.token).into();
            o["created_at"] = iso.clone().into();
            o["processed_at"] = iso.into();
            o["customer"]["phone"] = plan.phone.clone().into();
            o["customer"]["id"] = (900_000 + plan.idx as u64).into();
            o["customer"]["email"] = format!("shopper{}@example.com", plan.idx).into();
            o["email"] = format!("shopper{}@example.com", plan.idx).into();
            shopify(Kind::Order, "orders/create", uid, json_body(&o))
        }
        Platform::WooCommerce => {
            let mut o = template(WOO_ORDER);
            let gmt = (at + Duration::seconds(30)).format("%Y-%m-%dT%H:%M:%S").to_string();
            o["id"] = plan.woo_id().into();
            o["status"] = "processing".into();
            o["order_key"] = format!("wc_order_soak{}", plan.idx).into();
            o["billing"]["phone"] = plan.phone.clone().into();
            o["date_modified_gmt"] = gmt.clone().into();
            o["date_paid_gmt"] = gmt.into();
            o["payment_url"] = plan.url().into();
            o["meta_data"] =
                json!([{ "id": 9011, "key": "callfy_sms_consent", "value": if plan.consent { "yes" } else { "no" } }]);
            woo(Kind::Order, "order.updated", uid, json_body(&o))
        }
        Platform::BigCommerce => {
            let body = json!({
                "created_at": at.timestamp(),
                "store_id": "1025999",
                "producer": format!("stores/{BC_STORE_HASH}"),
                "scope": "store/cart/converted",
                "hash": uid,
                "data": { "type": "cart", "id": plan.bc_id(), "orderId": 5000 + plan.idx },
            });
            bigcommerce(Kind::Order, json_body(&body))
        }
        Platform::Custom => {
            let body = json!({ "type": "cart.completed", "data": {
                "cart_id": plan.token, "order_id": format!("o-{}", plan.idx), "total": "20.00",
                "currency": "USD", "completed_at": iso,
            }});
            custom(Kind::Order, uid, json_body(&body))
        }
    }
}

/// The consent API opt-in a BigCommerce merchant records (the platform has no consent field).
pub fn consent_delivery(plan: &CartPlan, api_key: &str, at: DateTime<Utc>, uid: &str) -> Delivery {
    let body = json!({
        "phone": plan.phone, "channel": "sms", "action": "opt_in",
        "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "evidence": {
            "consent_text": "Yes, text me cart reminders. Up to 2 msgs per cart. Reply STOP to opt out.",
            "consent_text_version": "2026-10", "page_url": "https://soak-bc.example/checkout",
            "ip": "203.0.113.7", "user_agent": "Mozilla/5.0", "opt_in_level": "confirmed_opt_in",
        },
    });
    Delivery {
        kind: Kind::Consent,
        path: "/v1/consents".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("authorization".into(), format!("Bearer {api_key}")),
            ("idempotency-key".into(), uid.into()),
        ],
        body: json_body(&body),
        resign: None,
    }
}

/// A data-subject deletion of the cart's phone: the consent API's route with the merchant's API
/// key, or for the Shopify merchant the signed `customers/redact` (its status is
/// `shopify-{event id}`, read through the consent API too).
pub fn delete_delivery(plan: &CartPlan, api_key: &str, uid: &str) -> Delivery {
    if plan.platform == Platform::Shopify {
        let body = json!({
            "shop_id": 954_889, "shop_domain": SHOP_DOMAIN,
            "customer": {
                "id": 900_000 + plan.idx as u64,
                "email": format!("shopper{}@example.com", plan.idx),
                "phone": plan.phone,
            },
            "orders_to_redact": [],
        });
        return shopify(Kind::Delete, "customers/redact", uid, json_body(&body));
    }
    Delivery {
        kind: Kind::Delete,
        path: "/v1/privacy/delete".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("authorization".into(), format!("Bearer {api_key}")),
        ],
        body: json_body(&json!({ "phone": plan.phone })),
        resign: None,
    }
}

fn shopify(kind: Kind, topic: &str, uid: &str, body: Vec<u8>) -> Delivery {
    let sig = hmac_sha256_base64(callfy_shared::config::local_defaults::SHOPIFY_API_SECRET.as_bytes(), &body);
    Delivery {
        kind,
        path: "/webhooks/shopify".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-shopify-topic".into(), topic.into()),
            ("x-shopify-shop-domain".into(), SHOP_DOMAIN.into()),
            ("x-shopify-event-id".into(), uid.into()),
            ("x-shopify-hmac-sha256".into(), sig),
        ],
        body,
        resign: None,
    }
}

fn woo(kind: Kind, topic: &str, uid: &str, body: Vec<u8>) -> Delivery {
    let sig = hmac_sha256_base64(WOO_SECRET.as_bytes(), &body);
    Delivery {
        kind,
        path: format!("/webhooks/woocommerce/{}", Platform::WooCommerce.merchant_id()),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-wc-webhook-source".into(), "https://soak-woo.example/".into()),
            ("x-wc-webhook-topic".into(), topic.into()),
            ("x-wc-webhook-resource".into(), "order".into()),
            ("x-wc-webhook-event".into(), topic.rsplit('.').next().unwrap_or_default().into()),
            ("x-wc-webhook-id".into(), "12".into()),
            ("x-wc-webhook-delivery-id".into(), uid.into()),
            ("x-wc-webhook-signature".into(), sig),
        ],
        body,
        resign: None,
    }
}

fn bigcommerce(kind: Kind, body: Vec<u8>) -> Delivery {
    Delivery {
        kind,
        path: format!("/webhooks/bigcommerce/{}", Platform::BigCommerce.merchant_id()),
        headers: vec![("content-type".into(), "application/json".into()), ("x-callfy-secret".into(), BC_SECRET.into())],
        body,
        resign: None,
    }
}

fn custom(kind: Kind, uid: &str, body: Vec<u8>) -> Delivery {
    Delivery {
        kind,
        path: format!("/webhooks/custom/{}", Platform::Custom.merchant_id()),
        headers: vec![("content-type".into(), "application/json".into())],
        body,
        resign: Some(format!("msg_{uid}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_distinct_and_valid() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..20_000 {
            let p = phone(i);
            assert!(callfy_shared::Phone::parse(&p, None).is_ok(), "{p}");
            assert!(seen.insert(p));
        }
    }

    #[test]
    fn storm_keywords_mean_what_the_campaign_takes_them_for() {
        use callfy_shared::domain::agent::Scope;
        use callfy_shared::domain::keywords::{Intent, classify};
        for w in STOP_WORDS {
            let c = classify(w);
            assert_eq!((c.intent, c.scope), (Intent::OptOut, Scope::Both), "{w}");
        }
        for w in START_WORDS {
            assert_eq!(classify(w).intent, Intent::OptIn, "{w}");
        }
        let rng = Rng::new(7);
        for _ in 0..100 {
            let s = storm_words(&rng);
            assert!((3..8).contains(&s.len()) && s[0].opt_out);
        }
    }

    #[test]
    fn merchants_validate() {
        for p in Platform::ALL {
            let m = p.merchant(2, true).to_string();
            callfy_shared::domain::merchant::Merchant::from_json(&m).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        }
    }
}
