//! The merchant profile an operator puts with `callfy-admin merchant put` (fields in docs/operations.md).

use crate::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, Evidence};
use crate::domain::ids::MerchantId;
use crate::domain::phone::Phone;
use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Outreach must fit in one abandonment event's window (CTIA: one event, within 48 hours).
pub const MAX_FLOW_MINUTES: u32 = 48 * 60;
pub const MAX_FLOW_STEPS: usize = 3;
pub const DEFAULT_RETENTION_DAYS: u32 = 730;
/// Carts, steps and checkout pointers: personal data kept only as long as recovery needs it.
pub const DEFAULT_CART_RETENTION_DAYS: u32 = 90;
/// No kind is kept longer than this; only a legal hold keeps data past it.
pub const MAX_RETENTION_DAYS: u32 = 730;
/// Orders this long after the last message or call are credited to it (last touch).
pub const DEFAULT_ATTRIBUTION_WINDOW_DAYS: u32 = 5;
/// A call is cut off after this long unless the merchant sets otherwise (Twilio `TimeLimit`).
pub const DEFAULT_CALL_TIME_LIMIT_SECONDS: u32 = 300;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct MerchantError {
    pub field: String,
    pub reason: String,
}

fn err(field: &str, reason: impl Into<String>) -> MerchantError {
    MerchantError { field: field.to_string(), reason: reason.into() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Shopify,
    Woocommerce,
    Bigcommerce,
    Custom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Voice,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "sms",
            Self::Voice => "voice",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sender {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_service_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Phone>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Support {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Start of the merchant's allowed sending window, local "HH:MM".
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowStep {
    pub after_minutes: u32,
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionDays {
    #[serde(default = "default_retention")]
    pub sms_logs: u32,
    #[serde(default = "default_retention")]
    pub consent_records: u32,
    #[serde(default = "default_retention")]
    pub recordings: u32,
    #[serde(default = "default_cart_retention")]
    pub carts: u32,
}

fn default_retention() -> u32 {
    DEFAULT_RETENTION_DAYS
}

fn default_cart_retention() -> u32 {
    DEFAULT_CART_RETENTION_DAYS
}

impl Default for RetentionDays {
    fn default() -> Self {
        Self {
            sms_logs: DEFAULT_RETENTION_DAYS,
            consent_records: DEFAULT_RETENTION_DAYS,
            recordings: DEFAULT_RETENTION_DAYS,
            carts: DEFAULT_CART_RETENTION_DAYS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Recording {
    #[serde(default)]
    pub enabled: bool,
}

/// WooCommerce: where the checkout's SMS consent is kept in the order's `meta_data`, and (for
/// `callfy-admin backfill`, optional) the store's URL and REST API key; the key and its secret
/// are secrets, stored apart from the profile.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WooCommerceSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_meta_key: Option<String>,
    /// The store's base URL (`https://shop.example`), the REST API lives under `/wp-json/wc/v3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_secret: Option<String>,
}

impl std::fmt::Debug for WooCommerceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WooCommerceSettings")
            .field("consent_meta_key", &self.consent_meta_key)
            .field("store_url", &self.store_url)
            .finish_non_exhaustive()
    }
}

/// Shopify: the Admin API access token (`read_checkouts`, `read_orders`) `callfy-admin
/// backfill` reads abandoned checkouts and orders with (optional; a secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ShopifySettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_api_token: Option<String>,
}

impl std::fmt::Debug for ShopifySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShopifySettings").finish_non_exhaustive()
    }
}

/// Alerts about the merchant's platform deliveries (issue 21, "silence is an alarm").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Hours without a platform delivery after which the daily check reports the merchant
    /// silent (`MerchantSilent`); default 24, `0` turns the check off for this merchant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_hours: Option<u32>,
}

/// Hours without a delivery before a merchant is reported silent, unless it says otherwise.
pub const DEFAULT_SILENCE_HOURS: u32 = 24;

impl Alerts {
    /// The silence threshold; `None` when the check is off.
    pub fn silence_threshold(&self) -> Option<chrono::Duration> {
        match self.silence_hours.unwrap_or(DEFAULT_SILENCE_HOURS) {
            0 => None,
            h => Some(chrono::Duration::hours(i64::from(h))),
        }
    }
}

/// The order meta key WooCommerce stores SMS consent under unless the merchant says otherwise.
pub const DEFAULT_WOO_CONSENT_META_KEY: &str = "callfy_sms_consent";

impl WooCommerceSettings {
    pub fn consent_key(&self) -> &str {
        self.consent_meta_key.as_deref().unwrap_or(DEFAULT_WOO_CONSENT_META_KEY)
    }
}

/// BigCommerce: the store and the API token carts are fetched with (a secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigCommerceSettings {
    pub store_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
}

impl std::fmt::Debug for BigCommerceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BigCommerceSettings").field("store_hash", &self.store_hash).finish_non_exhaustive()
    }
}

/// A merchant's secrets, stored apart from its profile and readable only by webhook ingest.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantSecrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<crate::domain::secret::SecretText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bigcommerce_api_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shopify_admin_api_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub woocommerce_consumer_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub woocommerce_consumer_secret: Option<String>,
}

impl std::fmt::Debug for MerchantSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MerchantSecrets(***)")
    }
}

impl MerchantSecrets {
    pub fn is_empty(&self) -> bool {
        self.webhook_secret.is_none()
            && self.bigcommerce_api_token.is_none()
            && self.shopify_admin_api_token.is_none()
            && self.woocommerce_consumer_key.is_none()
            && self.woocommerce_consumer_secret.is_none()
    }
}

/// How the merchant's AI voice calls behave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceSettings {
    /// Leave a short message when a machine answers; otherwise hang up without one.
    #[serde(default)]
    pub voicemail: bool,
    /// The merchant has approved the Spanish script: carts with a Spanish locale hear it.
    #[serde(default)]
    pub spanish: bool,
    /// A checkout attribute (Shopify `note_attributes`) that, when truthy, is the shopper's
    /// written consent to AI calls; `consent_text` is the wording shown next to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_attribute: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_text: Option<String>,
    /// The merchant confirms the checkout renders `consent_attribute` as a box right next to
    /// `consent_text`. A checkout attribute is data the shopper's browser writes, not the
    /// merchant's record of written consent: without this confirmation it is never taken as
    /// consent to calls.
    #[serde(default)]
    pub consent_attribute_rendered: bool,
    /// Longest call, in seconds (Twilio `TimeLimit`).
    #[serde(default = "default_time_limit")]
    pub time_limit_seconds: u32,
    /// Who talks on an answered call: Callfy's AI agent (default) or the key menu.
    #[serde(default)]
    pub agent: AgentMode,
    /// The agent may transfer a caller who asks for a person to `support.phone`.
    #[serde(default)]
    pub transfer_to_support: bool,
}

/// Who talks on an answered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgentMode {
    /// Callfy's own AI agent over ConversationRelay.
    #[default]
    Callfy,
    /// The key menu: 1 = link by text, 9 = no more calls.
    Keypad,
}

fn default_time_limit() -> u32 {
    DEFAULT_CALL_TIME_LIMIT_SECONDS
}

impl Default for VoiceSettings {
    fn default() -> Self {
        Self {
            voicemail: false,
            spanish: false,
            consent_attribute: None,
            consent_text: None,
            consent_attribute_rendered: false,
            time_limit_seconds: DEFAULT_CALL_TIME_LIMIT_SECONDS,
            agent: AgentMode::Callfy,
            transfer_to_support: false,
        }
    }
}

impl VoiceSettings {
    /// The consent to AI calls a checkout's attributes carry, if the merchant collects it: an
    /// opt-in when the configured field is ticked (`yes`, `true`, `1`, `on`), with the wording
    /// shown next to it as evidence. Never an opt-out: an unticked box withdraws nothing.
    pub fn checkout_consent(
        &self,
        attributes: &[(String, String)],
        checkout_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<ConsentEvent> {
        if !self.consent_attribute_rendered {
            return None;
        }
        let (name, text) = (self.consent_attribute.as_deref()?, self.consent_text.as_deref()?);
        let (_, value) = attributes.iter().find(|(k, _)| k.trim().eq_ignore_ascii_case(name))?;
        let ticked = matches!(value.trim().to_ascii_lowercase().as_str(), "yes" | "true" | "1" | "on");
        ticked.then(|| ConsentEvent {
            channel: Channel::Voice,
            action: ConsentAction::OptIn,
            source: ConsentSource::Checkout,
            occurred_at: checkout_at,
            recorded_at: now,
            evidence: Evidence {
                consent_text: Some(text.to_string()),
                platform_timestamp: Some(checkout_at.to_rfc3339()),
                collected_from: Some(format!("checkout_attribute:{name}")),
                // What makes the attribute consent: the merchant's confirmation that the box is
                // rendered next to this wording, and the value the checkout carried.
                opt_in_level: Some("merchant_confirmed_rendering".into()),
                keyword: Some(format!("{name}={}", value.trim())),
                ..Default::default()
            },
        })
    }
}

fn default_attribution_days() -> u32 {
    DEFAULT_ATTRIBUTION_WINDOW_DAYS
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Merchant {
    pub id: MerchantId,
    pub name: String,
    pub platform: Platform,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shop_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<crate::domain::secret::SecretText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub woocommerce: Option<WooCommerceSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bigcommerce: Option<BigCommerceSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shopify: Option<ShopifySettings>,
    pub sender: Sender,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_from: Option<Phone>,
    pub support: Support,
    pub timezone: String,
    /// Region for numbers written without a country code (ISO 3166 alpha-2); default US.
    #[serde(default = "default_country")]
    pub default_country: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    pub flow: Vec<FlowStep>,
    #[serde(default)]
    pub retention_days: RetentionDays,
    #[serde(default)]
    pub recording: Recording,
    /// Retired (a merchant's own agent heard the number and every word, with no opt-out path of
    /// ours): still read, so a file that sets it is refused with a message naming `voice.agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_agent_url: Option<String>,
    #[serde(default)]
    pub voice: VoiceSettings,
    /// Days after the last message or call within which an order counts as recovered by it.
    #[serde(default = "default_attribution_days")]
    pub attribution_window_days: u32,
    /// Destination countries, daily budget and burst limits against SMS pumping.
    #[serde(default)]
    pub send_guard: crate::domain::guard::SendGuard,
    /// This merchant's share of the signed JSON API (requests a second, burst).
    #[serde(default)]
    pub api_limit: crate::domain::ratelimit::ApiLimit,
    /// When the merchant's silence raises an alert.
    #[serde(default, skip_serializing_if = "is_default_alerts")]
    pub alerts: Alerts,
    /// Our own recovery links: `track_clicks` wraps every link in `/r/{code}` (BigCommerce's
    /// always are: its redirect URLs are single-use).
    #[serde(default, skip_serializing_if = "is_default_links")]
    pub links: crate::domain::link::LinkSettings,
}

fn is_default_links(l: &crate::domain::link::LinkSettings) -> bool {
    *l == crate::domain::link::LinkSettings::default()
}

fn is_default_alerts(a: &Alerts) -> bool {
    *a == Alerts::default()
}

fn default_country() -> String {
    "US".into()
}

impl Merchant {
    /// The most texts one abandoned cart can bring (HELP and START replies state it).
    pub fn max_sms_per_cart(&self) -> usize {
        self.flow.iter().filter(|s| s.channel == Channel::Sms).count().max(1)
    }

    /// The profile as stored and shown: every secret taken out.
    pub fn without_secrets(&self) -> Self {
        let mut m = self.clone();
        m.webhook_secret = None;
        if let Some(bc) = &mut m.bigcommerce {
            bc.api_token = None;
        }
        if let Some(sh) = &mut m.shopify {
            sh.admin_api_token = None;
        }
        if let Some(w) = &mut m.woocommerce {
            w.consumer_key = None;
            w.consumer_secret = None;
        }
        m
    }

    pub fn secrets(&self) -> MerchantSecrets {
        MerchantSecrets {
            webhook_secret: self.webhook_secret.clone(),
            bigcommerce_api_token: self.bigcommerce.as_ref().and_then(|b| b.api_token.clone()),
            shopify_admin_api_token: self.shopify.as_ref().and_then(|s| s.admin_api_token.clone()),
            woocommerce_consumer_key: self.woocommerce.as_ref().and_then(|w| w.consumer_key.clone()),
            woocommerce_consumer_secret: self.woocommerce.as_ref().and_then(|w| w.consumer_secret.clone()),
        }
    }

    /// The profile with its secrets put back (webhook ingest only).
    pub fn with_secrets(mut self, secrets: MerchantSecrets) -> Self {
        self.webhook_secret = secrets.webhook_secret;
        if let Some(bc) = &mut self.bigcommerce {
            bc.api_token = secrets.bigcommerce_api_token;
        }
        if let Some(sh) = &mut self.shopify {
            sh.admin_api_token = secrets.shopify_admin_api_token;
        }
        if let Some(w) = &mut self.woocommerce {
            w.consumer_key = secrets.woocommerce_consumer_key;
            w.consumer_secret = secrets.woocommerce_consumer_secret;
        }
        self
    }

    /// Parses a merchant file and validates every field.
    pub fn from_json(json: &str) -> Result<Self, MerchantError> {
        let m: Merchant = serde_json::from_str(json).map_err(|e| err("merchant", e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    pub fn validate(&self) -> Result<(), MerchantError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 60 {
            return Err(err("name", "must be 1-60 characters"));
        }
        match self.platform {
            Platform::Shopify => {
                let domain = self.shop_domain.as_deref().ok_or_else(|| err("shop_domain", "required for shopify"))?;
                let valid = domain.len() <= 255
                    && domain.contains('.')
                    && domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
                if !valid {
                    return Err(err("shop_domain", "must be a lower-case host name like shop.myshopify.com"));
                }
            }
            platform => {
                let secret = self
                    .webhook_secret
                    .as_deref()
                    .ok_or_else(|| err("webhook_secret", "required for this platform"))?;
                if platform == Platform::Custom {
                    // Standard Webhooks: `whsec_` and the base64 of at least 24 random bytes.
                    let key = secret.strip_prefix("whsec_").and_then(|k| {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD.decode(k).ok()
                    });
                    if key.is_none_or(|k| k.len() < 24) {
                        return Err(err("webhook_secret", "must be whsec_ and the base64 of at least 24 bytes"));
                    }
                } else if secret.len() < 16 {
                    return Err(err("webhook_secret", "must be at least 16 characters"));
                }
            }
        }
        if self.woocommerce.is_some() && self.platform != Platform::Woocommerce {
            return Err(err("woocommerce", "only for platform woocommerce"));
        }
        if let Some(key) = self.woocommerce.as_ref().and_then(|w| w.consent_meta_key.as_deref())
            && (key.trim().is_empty() || key.len() > 64)
        {
            return Err(err("woocommerce.consent_meta_key", "must be 1-64 characters"));
        }
        if let Some(w) = &self.woocommerce {
            if let Some(url) = &w.store_url
                && !(url.starts_with("https://") || url.starts_with("http://127.0.0.1"))
            {
                return Err(err("woocommerce.store_url", "must be an https URL"));
            }
            if w.consumer_key.is_some() != w.consumer_secret.is_some() {
                return Err(err("woocommerce.consumer_key", "give consumer_key and consumer_secret together"));
            }
        }
        if self.shopify.is_some() && self.platform != Platform::Shopify {
            return Err(err("shopify", "only for platform shopify"));
        }
        if self.alerts.silence_hours.is_some_and(|h| h > 24 * 30) {
            return Err(err("alerts.silence_hours", "must be 0 (off) to 720 hours"));
        }
        match (&self.bigcommerce, self.platform) {
            (Some(_), p) if p != Platform::Bigcommerce => {
                return Err(err("bigcommerce", "only for platform bigcommerce"));
            }
            (None, Platform::Bigcommerce) => return Err(err("bigcommerce", "required for platform bigcommerce")),
            (Some(bc), _) => {
                let hash_ok = (1..=32).contains(&bc.store_hash.len())
                    && bc.store_hash.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                if !hash_ok {
                    return Err(err(
                        "bigcommerce.store_hash",
                        "must be the store hash (lower-case letters and digits)",
                    ));
                }
                if bc.api_token.as_deref().is_none_or(|t| t.trim().len() < 8) {
                    return Err(err("bigcommerce.api_token", "required: the store API token carts are read with"));
                }
            }
            (None, _) => {}
        }
        match (&self.sender.messaging_service_sid, &self.sender.from) {
            (Some(sid), None) => {
                if !is_twilio_sid(sid, "MG") {
                    return Err(err("sender.messaging_service_sid", "must be MG followed by 32 hex characters"));
                }
            }
            (None, Some(_)) => {}
            _ => {
                return Err(err("sender", "give exactly one of messaging_service_sid or from"));
            }
        }
        if self.support.url.is_none() && self.support.phone.is_none() {
            return Err(err("support", "give a url or a phone, for HELP replies"));
        }
        if let Some(url) = &self.support.url
            && !url.starts_with("https://")
        {
            return Err(err("support.url", "must be an https URL"));
        }
        if self.timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(err("timezone", "must be an IANA time zone such as America/Toronto"));
        }
        if !Phone::is_known_region(&self.default_country) {
            return Err(err("default_country", "must be an ISO 3166 alpha-2 region code"));
        }
        self.send_guard.validate().map_err(|(field, reason)| err(field, reason))?;
        self.api_limit.validate().map_err(|(field, reason)| err(field, reason))?;
        if let Some(q) = &self.quiet_hours {
            let start = parse_hhmm(&q.start).ok_or_else(|| err("quiet_hours.start", "must be HH:MM"))?;
            let end = parse_hhmm(&q.end).ok_or_else(|| err("quiet_hours.end", "must be HH:MM"))?;
            if start >= end {
                return Err(err("quiet_hours", "start must be before end"));
            }
        }
        if self.flow.is_empty() || self.flow.len() > MAX_FLOW_STEPS {
            return Err(err("flow", format!("must have 1 to {MAX_FLOW_STEPS} steps")));
        }
        let mut previous = 0;
        for (i, step) in self.flow.iter().enumerate() {
            if step.after_minutes > MAX_FLOW_MINUTES {
                return Err(err(&format!("flow[{i}].after_minutes"), "must be within 48 hours (2880)"));
            }
            if i > 0 && step.after_minutes <= previous {
                return Err(err(&format!("flow[{i}].after_minutes"), "steps must be in increasing order"));
            }
            if step.channel == Channel::Voice && self.voice_from.is_none() {
                return Err(err(&format!("flow[{i}].channel"), "a voice step needs voice_from"));
            }
            if let Some(code) = &step.discount_code
                && (code.is_empty()
                    || code.len() > 32
                    || !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            {
                return Err(err(&format!("flow[{i}].discount_code"), "must be 1-32 letters, digits, '-' or '_'"));
            }
            previous = step.after_minutes;
        }
        for (field, days) in [
            ("retention_days.sms_logs", self.retention_days.sms_logs),
            ("retention_days.consent_records", self.retention_days.consent_records),
            ("retention_days.recordings", self.retention_days.recordings),
            ("retention_days.carts", self.retention_days.carts),
        ] {
            // Longer than 24 months only under a legal hold, which suspends purging instead.
            if !(1..=MAX_RETENTION_DAYS).contains(&days) {
                return Err(err(field, "must be between 1 and 730 days (a legal hold keeps data longer)"));
            }
        }
        if self.ai_agent_url.is_some() {
            return Err(err(
                "ai_agent_url",
                "is retired: calls are answered by Callfy's own AI agent; remove it, and set voice.agent to \"callfy\" (the default) or \"keypad\"",
            ));
        }
        if self.voice.transfer_to_support && self.support.phone.is_none() {
            return Err(err("voice.transfer_to_support", "needs support.phone"));
        }
        let v = &self.voice;
        match (&v.consent_attribute, &v.consent_text) {
            (Some(a), Some(text)) => {
                if a.trim().is_empty() || a.len() > 64 {
                    return Err(err("voice.consent_attribute", "must be 1-64 characters"));
                }
                if text.trim().len() < 10 {
                    return Err(err("voice.consent_text", "must be the consent wording the shopper saw"));
                }
            }
            (Some(_), None) => {
                // TCPA: consent to artificial-voice calls must be written and provable.
                return Err(err("voice.consent_text", "required with voice.consent_attribute"));
            }
            (None, Some(_)) => return Err(err("voice.consent_attribute", "required with voice.consent_text")),
            (None, None) => {}
        }
        if v.consent_attribute_rendered && v.consent_attribute.is_none() {
            return Err(err(
                "voice.consent_attribute_rendered",
                "needs voice.consent_attribute and voice.consent_text",
            ));
        }
        if !(30..=3600).contains(&v.time_limit_seconds) {
            return Err(err("voice.time_limit_seconds", "must be between 30 and 3600"));
        }
        if !(1..=30).contains(&self.attribution_window_days) {
            return Err(err("attribution_window_days", "must be between 1 and 30"));
        }
        Ok(())
    }

    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone.parse().unwrap_or(chrono_tz::UTC)
    }
}

fn parse_hhmm(s: &str) -> Option<NaiveTime> {
    if s.len() != 5 {
        return None;
    }
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

fn is_twilio_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample_json() -> serde_json::Value {
        serde_json::json!({
            "id": "snowdevil", "name": "Snowdevil", "platform": "shopify",
            "shop_domain": "snowdevil.myshopify.com",
            "sender": { "messaging_service_sid": "MG0123456789abcdef0123456789abcdef" },
            "voice_from": "+15005550006",
            "support": { "url": "https://snowdevil.ca/help", "phone": "+18005550100" },
            "timezone": "America/Toronto",
            "quiet_hours": { "start": "09:00", "end": "20:00" },
            "flow": [ { "after_minutes": 30, "channel": "sms" },
                      { "after_minutes": 240, "channel": "voice" },
                      { "after_minutes": 1440, "channel": "sms", "discount_code": "COMEBACK10" } ],
            "retention_days": { "sms_logs": 730, "consent_records": 730, "recordings": 730 },
            "recording": { "enabled": true }
        })
    }

    fn with(mutate: impl FnOnce(&mut serde_json::Value)) -> Result<Merchant, MerchantError> {
        let mut v = sample_json();
        mutate(&mut v);
        Merchant::from_json(&v.to_string())
    }

    #[test]
    fn platform_fields_and_secrets() {
        let platform = |p: &str, extra: serde_json::Value| {
            with(|v| {
                v.as_object_mut().unwrap().remove("shop_domain");
                v["platform"] = p.into();
                for (k, val) in extra.as_object().unwrap() {
                    v[k] = val.clone();
                }
            })
        };
        let secret = serde_json::json!({ "webhook_secret": "0123456789abcdef0123" });
        assert!(platform("woocommerce", secret.clone()).is_ok());
        assert_eq!(platform("woocommerce", serde_json::json!({})).unwrap_err().field, "webhook_secret");
        assert_eq!(platform("bigcommerce", secret.clone()).unwrap_err().field, "bigcommerce");
        let bc = serde_json::json!({ "webhook_secret": "0123456789abcdef0123", "bigcommerce": { "store_hash": "B4R!" , "api_token": "tok-123456" } });
        assert_eq!(platform("bigcommerce", bc).unwrap_err().field, "bigcommerce.store_hash");
        let bc =
            serde_json::json!({ "webhook_secret": "0123456789abcdef0123", "bigcommerce": { "store_hash": "b4rs7x" } });
        assert_eq!(platform("bigcommerce", bc).unwrap_err().field, "bigcommerce.api_token");
        assert_eq!(platform("custom", secret).unwrap_err().field, "webhook_secret", "custom secrets are whsec_");
        let whsec = serde_json::json!({ "webhook_secret": "whsec_Y2FsbGZ5LWxvY2FsLWN1c3RvbS1zZWNyZXQtMDAx" });
        let m = platform("custom", whsec).unwrap();
        // The profile as stored and shown carries no secret; they come back only on request.
        assert!(m.without_secrets().webhook_secret.is_none());
        assert!(!format!("{m:?}").contains("whsec_"), "a printed profile shows no secret");
        assert_eq!(m.without_secrets().with_secrets(m.secrets()), m);
        assert!(!format!("{:?}", m.secrets()).contains("whsec"));
    }

    #[test]
    fn accepts_the_design_example() {
        let m = with(|_| {}).unwrap();
        assert_eq!(m.id.as_str(), "snowdevil");
        assert_eq!(m.flow.len(), 3);
        assert_eq!(m.default_country, "US");
        assert_eq!(m.tz(), chrono_tz::America::Toronto);
    }

    #[test]
    fn rejects_each_invalid_field_by_name() {
        type Mutation = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("merchant", Box::new(|v| v["surprise"] = true.into())),
            ("merchant", Box::new(|v| v["id"] = "Bad Id".into())),
            ("name", Box::new(|v| v["name"] = " ".into())),
            ("shop_domain", Box::new(|v| v["shop_domain"] = serde_json::Value::Null)),
            ("sender", Box::new(|v| v["sender"] = serde_json::json!({}))),
            ("sender.messaging_service_sid", Box::new(|v| v["sender"]["messaging_service_sid"] = "MGnope".into())),
            ("merchant", Box::new(|v| v["voice_from"] = "555".into())),
            ("timezone", Box::new(|v| v["timezone"] = "Mars/Olympus".into())),
            ("quiet_hours", Box::new(|v| v["quiet_hours"]["start"] = "21:00".into())),
            ("quiet_hours.end", Box::new(|v| v["quiet_hours"]["end"] = "8pm".into())),
            ("flow", Box::new(|v| v["flow"] = serde_json::json!([]))),
            ("flow[2].after_minutes", Box::new(|v| v["flow"][2]["after_minutes"] = 3000.into())),
            ("flow[1].after_minutes", Box::new(|v| v["flow"][1]["after_minutes"] = 10.into())),
            ("retention_days.sms_logs", Box::new(|v| v["retention_days"]["sms_logs"] = 0.into())),
            ("support.url", Box::new(|v| v["support"]["url"] = "http://x".into())),
            ("default_country", Box::new(|v| v["default_country"] = "XX".into())),
            ("ai_agent_url", Box::new(|v| v["ai_agent_url"] = "https://agent.test".into())),
            ("voice.consent_text", Box::new(|v| v["voice"] = serde_json::json!({ "consent_attribute": "x" }))),
            ("voice.time_limit_seconds", Box::new(|v| v["voice"] = serde_json::json!({ "time_limit_seconds": 5 }))),
            ("attribution_window_days", Box::new(|v| v["attribution_window_days"] = 0.into())),
            ("api_limit.burst", Box::new(|v| v["api_limit"] = serde_json::json!({ "burst": 0 }))),
            ("woocommerce", Box::new(|v| v["woocommerce"] = serde_json::json!({}))),
            ("bigcommerce", Box::new(|v| v["bigcommerce"] = serde_json::json!({ "store_hash": "abc" }))),
        ];
        for (field, mutate) in cases {
            let e = with(mutate).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn a_checkout_attribute_is_consent_to_calls_only_when_the_merchant_confirms_its_rendering() {
        let at: DateTime<Utc> = "2026-06-01T10:00:00Z".parse().unwrap();
        let mut v = VoiceSettings {
            consent_attribute: Some("callfy_voice_consent".into()),
            consent_text: Some("Call me about my cart with an automated assistant.".into()),
            ..Default::default()
        };
        let ticked = vec![("callfy_voice_consent".to_string(), "yes".to_string())];
        assert_eq!(v.checkout_consent(&ticked, at, at), None, "shopper-writable data alone is not consent");
        v.consent_attribute_rendered = true;
        let event = v.checkout_consent(&ticked, at, at).expect("confirmed rendering");
        assert_eq!(event.evidence.opt_in_level.as_deref(), Some("merchant_confirmed_rendering"));
        assert_eq!(event.evidence.keyword.as_deref(), Some("callfy_voice_consent=yes"));
        assert!(event.evidence.consent_text.is_some());
    }
}
