//! BigCommerce: thin webhook envelopes (ids only), authenticated by a secret custom header the
//! merchant registers; the abandoned cart itself is read from the store's API (`resolve`, through
//! the `StorefrontCarts` port).

use super::{MerchantRef, Platform, PlatformError, PlatformEvent, WebhookRequest};
use crate::domain::cart::{CartItem, CheckoutSnapshot};
use crate::domain::ids::CartToken;
use crate::domain::merchant::Merchant;
use crate::domain::phone::Phone;
use crate::domain::time::clamp_platform_time;
use crate::ports::storefront::{StoreApiError, StoreCart, StoreCheckout, StorefrontCarts};
use crate::signature::ct_eq;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// BigCommerce does not sign webhooks: the merchant registers this header with its secret.
pub const SECRET_HEADER: &str = "x-callfy-secret";
/// What a delivery's durable copy carries instead of `SECRET_HEADER`: the SHA-256 (hex) of the
/// value sent. The secret itself never goes on the queue, and this header means nothing on
/// the public route (only `verify_queued` reads it).
pub const SECRET_DIGEST_HEADER: &str = "x-callfy-secret-sha256";

fn sha256_hex(value: &[u8]) -> String {
    hex::encode(Sha256::digest(value))
}

#[derive(Debug, Clone, Copy, Default)]
pub struct BigCommerce;

#[derive(Debug, Clone, Deserialize)]
pub struct EnvelopeData {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub id: Option<serde_json::Value>,
    #[serde(rename = "orderId")]
    pub order_id: Option<serde_json::Value>,
}

/// `{created_at, store_id, producer: "stores/{hash}", scope, hash, data}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub created_at: Option<i64>,
    pub producer: Option<String>,
    pub scope: Option<String>,
    pub hash: Option<String>,
    pub data: Option<EnvelopeData>,
}

fn envelope(body: &[u8]) -> Result<Envelope, PlatformError> {
    super::parse_json("bigcommerce webhook", body)
}

fn text(v: &Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn wrong_secret() -> PlatformError {
    PlatformError::Unauthenticated {
        code: "invalid_signature",
        message: "X-Callfy-Secret does not match the merchant's webhook secret".into(),
    }
}

/// A webhook of another store, even with the right secret, is not this merchant's.
fn same_store(req: &WebhookRequest<'_>, merchant: &Merchant) -> Result<(), PlatformError> {
    let store = merchant.bigcommerce.as_ref().map(|b| format!("stores/{}", b.store_hash));
    let producer = envelope(req.body).ok().and_then(|e| e.producer);
    if producer.is_some() && producer != store {
        return Err(PlatformError::Unauthenticated {
            code: "invalid_signature",
            message: "the webhook's producer is not this merchant's store".into(),
        });
    }
    Ok(())
}

/// A BigCommerce cart id is our cart token (UUIDs: letters, digits, hyphens).
pub fn cart_token(id: &str) -> Result<CartToken, PlatformError> {
    CartToken::parse(id).map_err(|_| PlatformError::Field("data.id"))
}

impl Platform for BigCommerce {
    fn name(&self) -> &'static str {
        "bigcommerce"
    }

    fn merchant_ref(&self, req: &WebhookRequest<'_>) -> Result<MerchantRef, PlatformError> {
        req.path_merchant.map(|m| MerchantRef::Id(m.to_string())).ok_or(PlatformError::Field("merchant id in the path"))
    }

    fn verify(&self, req: &WebhookRequest<'_>, merchant: Option<&Merchant>) -> Result<bool, PlatformError> {
        let Some(merchant) = merchant else { return Ok(false) };
        let given = req.header(SECRET_HEADER).ok_or_else(|| PlatformError::Unauthenticated {
            code: "missing_signature",
            message: "X-Callfy-Secret header is required (register it on the webhook)".into(),
        })?;
        let secret = merchant.webhook_secret.as_deref().unwrap_or_default();
        if secret.is_empty() || !ct_eq(given.as_bytes(), secret.as_bytes()) {
            return Err(wrong_secret());
        }
        same_store(req, merchant)?;
        Ok(true)
    }

    fn header_names(&self) -> &'static [&'static str] {
        &[SECRET_HEADER]
    }

    fn durable_headers(&self, req: &WebhookRequest<'_>) -> Vec<(String, String)> {
        req.header(SECRET_HEADER)
            .map(|given| vec![(SECRET_DIGEST_HEADER.to_string(), sha256_hex(given.as_bytes()))])
            .unwrap_or_default()
    }

    /// The copy carries the digest of the secret that was sent: it must be the digest of the
    /// merchant's secret, compared in constant time.
    fn verify_queued(
        &self,
        req: &WebhookRequest<'_>,
        merchant: &Merchant,
        _received_at: DateTime<Utc>,
    ) -> Result<(), PlatformError> {
        let given = req.header(SECRET_DIGEST_HEADER).ok_or_else(|| PlatformError::Unauthenticated {
            code: "missing_signature",
            message: "X-Callfy-Secret header is required (register it on the webhook)".into(),
        })?;
        let secret = merchant.webhook_secret.as_deref().unwrap_or_default();
        if secret.is_empty() || !ct_eq(given.as_bytes(), sha256_hex(secret.as_bytes()).as_bytes()) {
            return Err(wrong_secret());
        }
        same_store(req, merchant)
    }

    /// The envelope's `hash` with its `created_at`: the same on a redelivery.
    fn event_id<'a>(&self, req: &WebhookRequest<'a>) -> Result<Cow<'a, str>, PlatformError> {
        let e = envelope(req.body)?;
        match (e.hash, e.created_at) {
            (Some(hash), Some(at)) if !hash.is_empty() => Ok(Cow::Owned(format!("{hash}:{at}"))),
            _ => Err(PlatformError::Field("hash and created_at")),
        }
    }

    fn topic<'a>(&self, req: &WebhookRequest<'a>) -> Result<Cow<'a, str>, PlatformError> {
        envelope(req.body)?.scope.map(Cow::Owned).ok_or(PlatformError::Field("scope"))
    }

    fn parse(&self, req: &WebhookRequest<'_>, _: &Merchant, _: DateTime<Utc>) -> Result<PlatformEvent, PlatformError> {
        let e = envelope(req.body)?;
        let scope = e.scope.as_deref().ok_or(PlatformError::Field("scope"))?;
        let data = e.data.as_ref();
        let cart_id = data.and_then(|d| text(&d.id));
        Ok(match scope {
            "store/cart/abandoned" => {
                let id = cart_id.ok_or(PlatformError::Field("data.id"))?;
                cart_token(&id)?;
                PlatformEvent::CartToFetch { cart_id: id }
            }
            "store/cart/converted" => {
                let id = cart_id.ok_or(PlatformError::Field("data.id"))?;
                PlatformEvent::OrderPlaced {
                    token: Some(cart_token(&id)?),
                    order_id: data.and_then(|d| text(&d.order_id)).unwrap_or_default(),
                    revenue: None,
                    currency: None,
                }
            }
            "store/app/uninstalled" => PlatformEvent::AppUninstalled,
            _ => PlatformEvent::Ignored,
        })
    }
}

/// Why an abandoned cart could not be read: the store's API failed (BigCommerce retries us).
#[derive(Debug, thiserror::Error)]
#[error("the BigCommerce store API failed: {0}")]
pub struct ResolveError(#[from] pub StoreApiError);

/// Reads the abandoned cart and its checkout (billing phone) from the store, concurrently, and
/// turns them into the normalised event. A cart the store no longer has is ignored.
pub async fn resolve(
    api: &impl StorefrontCarts,
    merchant: &Merchant,
    cart_id: &str,
    now: DateTime<Utc>,
) -> Result<PlatformEvent, ResolveError> {
    let Some(store) = &merchant.bigcommerce else { return Ok(PlatformEvent::Ignored) };
    let token = store.api_token.as_deref().unwrap_or_default();
    let (cart, checkout) =
        tokio::join!(api.cart(&store.store_hash, token, cart_id), api.checkout(&store.store_hash, token, cart_id));
    let cart = match cart {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(PlatformEvent::Ignored),
        Err(e) => return Err(e.into()),
    };
    // A cart whose checkout never began has no billing address yet: no phone, nothing to send.
    let checkout = checkout?;
    let Ok(token) = cart_token(&cart.id) else { return Ok(PlatformEvent::Ignored) };
    Ok(PlatformEvent::CartUpserted {
        snapshot: Box::new(snapshot(token, &cart, checkout.as_ref(), &merchant.default_country, now)),
        // BigCommerce has no SMS consent field: consent arrives through the consent API.
        consent: None,
    })
}

fn snapshot(
    token: CartToken,
    cart: &StoreCart,
    checkout: Option<&StoreCheckout>,
    region: &str,
    now: DateTime<Utc>,
) -> CheckoutSnapshot {
    let billing = checkout.and_then(|c| c.billing_address.as_ref());
    let updated =
        cart.updated_time.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
    let items: Vec<CartItem> = cart
        .line_items
        .iter()
        .flat_map(|l| l.physical_items.iter().chain(l.digital_items.iter()))
        .filter_map(|i| CartItem::new(i.name.as_deref().unwrap_or_default(), i.quantity.unwrap_or(1)))
        .collect();
    CheckoutSnapshot {
        token,
        checkout_id: Some(cart.id.clone()),
        customer_id: None,
        phone: billing.and_then(|b| b.phone.as_deref()).and_then(|p| Phone::parse(p, Some(region)).ok()),
        email: billing.and_then(|b| b.email.clone()).or(cart.email.clone()).map(|e| e.trim().to_lowercase()),
        first_name: billing.and_then(|b| b.first_name.clone()),
        recovery_url: cart.redirect_urls.as_ref().and_then(|r| r.checkout_url.clone()),
        total_price: cart.cart_amount.map(|a| format!("{a:.2}")),
        currency: cart.currency.as_ref().and_then(|c| c.code.clone()),
        item_count: items.iter().map(|i| i.quantity).sum(),
        items,
        province_code: billing.and_then(|b| b.state_or_province_code.clone()).filter(|s| !s.is_empty()),
        country_code: billing.and_then(|b| b.country_code.clone()).filter(|s| !s.is_empty()),
        locale: cart.locale.clone(),
        updated_at: updated.map_or(now, |t| clamp_platform_time(t, now)),
        completed: false,
        attributes: Vec::new(),
    }
}
