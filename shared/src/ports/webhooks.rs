//! Platform webhooks made durable before they are applied (issue 21): the copy of a delivery on
//! the outreach queue, the bucket a body too large for a queue message waits in, and the
//! merchant lookups a delivery is verified with.

use super::PortError;
use crate::domain::ids::MerchantId;
use crate::domain::merchant::Platform;
use crate::domain::outreach::MerchantRecord;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::future::Future;

/// The most a queued copy may encode to: SQS takes 256 KiB a message, and the envelope and the
/// queue's own attributes need some of it. A larger delivery's body waits in `WebhookBodies`.
pub const MAX_QUEUED_WEBHOOK_BYTES: usize = 240 * 1024;

/// A delivery's raw body, as its copy carries it. Signatures cover the exact bytes, so the body
/// is never parsed and re-encoded on the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookBody {
    /// A UTF-8 body (every platform's JSON), as it came.
    Text(String),
    /// Any other body, base64 (standard alphabet, padded).
    Base64(String),
    /// The key of the object the body waits in (`WebhookBodies`): too large for a message.
    Stored(String),
}

impl WebhookBody {
    /// The body carried in the message itself.
    pub fn inline(body: &[u8]) -> Self {
        match std::str::from_utf8(body) {
            Ok(text) => Self::Text(text.to_string()),
            Err(_) => Self::Base64(base64::engine::general_purpose::STANDARD.encode(body)),
        }
    }

    /// The bytes of an inline body; `None` for a stored one or base64 that does not decode.
    pub fn inline_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Self::Text(text) => Some(text.as_bytes().to_vec()),
            Self::Base64(b64) => base64::engine::general_purpose::STANDARD.decode(b64).ok(),
            Self::Stored(_) => None,
        }
    }
}

/// A webhook delivery as webhook-ingest received it: what the worker needs to verify, parse and
/// apply it again. It holds personal data (the body), so it lives on the encrypted queue and,
/// when large, in the encrypted bucket, and nowhere longer than its processing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedWebhook {
    pub platform: Platform,
    /// The `{merchant_id}` of the route, for the platforms whose routes carry it.
    #[serde(default)]
    pub path_merchant: Option<String>,
    /// The headers the platform reads (`Platform::durable_headers`), lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: WebhookBody,
    /// When webhook-ingest received it: signature timestamps and parsing are judged as of then.
    pub received_at: DateTime<Utc>,
}

/// Where a delivery's copy goes (the outreach queue).
pub trait WebhookQueue: Send + Sync {
    /// Queues `webhook`, held back `delay_seconds` (0..=900); the message id.
    fn enqueue_webhook(
        &self,
        webhook: &QueuedWebhook,
        delay_seconds: i32,
    ) -> impl Future<Output = Result<String, PortError>> + Send;
}

/// Bodies too large for a queue message, encrypted at rest, each deleted once its delivery is
/// processed (a lifecycle rule removes any left behind).
pub trait WebhookBodies: Send + Sync {
    /// Stores `body`; the key its copy carries.
    fn put_body(&self, body: &[u8]) -> impl Future<Output = Result<String, PortError>> + Send;
    /// The body under `key`; `None` when there is none (processed already, or expired).
    fn get_body(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, PortError>> + Send;
    fn delete_body(&self, key: &str) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// What verifying a delivery reads: its merchant, with the secrets signatures are checked with,
/// and whether it was applied already.
pub trait WebhookMerchants: Send + Sync {
    /// The merchant that owns a Shopify shop domain.
    fn merchant_by_shop_domain(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<Option<MerchantRecord>, PortError>> + Send;
    /// The merchant with its webhook secret and store API token.
    fn merchant_with_secrets(
        &self,
        id: &MerchantId,
    ) -> impl Future<Output = Result<Option<MerchantRecord>, PortError>> + Send;
    /// Whether the delivery `event_key` was applied (its dedupe marker is stored). Only a
    /// shortcut: the marker written with the delivery's changes decides.
    fn delivery_applied(&self, m: &MerchantId, event_key: &str)
    -> impl Future<Output = Result<bool, PortError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_travel_byte_for_byte() {
        let json = br#"{"id":727,"name":"In\u00e9s \"Wax\""}"#;
        assert_eq!(WebhookBody::inline(json), WebhookBody::Text(String::from_utf8(json.to_vec()).unwrap()));
        let binary = [0xff, 0x00, 0x7b];
        let body = WebhookBody::inline(&binary);
        assert!(matches!(body, WebhookBody::Base64(_)));
        assert_eq!(body.inline_bytes().unwrap(), binary);
        assert_eq!(WebhookBody::Stored("deliveries/x".into()).inline_bytes(), None);
        assert_eq!(WebhookBody::Base64("not base64!".into()).inline_bytes(), None);
    }
}
