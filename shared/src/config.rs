//! Typed configuration: each function's settings, read once at init from the environment
//! (names in docs/operations.md, Configuration), naming any variable that is missing or malformed.

use crate::domain::phone::LOCAL_LOG_KEY;
use chrono::{DateTime, Utc};
pub use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    /// Never carries the secret's value, only where it was looked for.
    #[error("the secret named by {id_var} ({id}) could not be used: {reason}")]
    Secret { id_var: &'static str, id: String, reason: String },
}

/// How a Secrets Manager secret supplies settings: `id_var` is the environment variable that
/// names the secret (its ARN or name); the secret stands in for the variables in `fields`.
#[derive(Debug)]
pub struct SecretVars {
    pub id_var: &'static str,
    pub fields: SecretFields,
}

#[derive(Debug)]
pub enum SecretFields {
    /// A JSON object: each (key, variable) pair; absent keys leave the variable unset.
    Json(&'static [(&'static str, &'static str)]),
    /// The whole secret string is the variable's value.
    Whole(&'static str),
}

pub const TWILIO_SECRET: SecretVars = SecretVars {
    id_var: "TWILIO_SECRET_ID",
    fields: SecretFields::Json(&[
        ("account_sid", "TWILIO_ACCOUNT_SID"),
        ("auth_token", "TWILIO_AUTH_TOKEN"),
        ("auth_token_previous", "TWILIO_AUTH_TOKEN_PREVIOUS"),
        ("api_key_sid", "TWILIO_API_KEY_SID"),
        ("api_key_secret", "TWILIO_API_KEY_SECRET"),
        ("webhook_shared_key", "TWILIO_WEBHOOK_SHARED_KEY"),
    ]),
};
pub const SHOPIFY_SECRET: SecretVars =
    SecretVars { id_var: "SHOPIFY_SECRET_ID", fields: SecretFields::Json(&[("api_secret", "SHOPIFY_API_SECRET")]) };
pub const LOG_KEY_SECRET: SecretVars =
    SecretVars { id_var: "LOG_KEY_SECRET_ID", fields: SecretFields::Whole("CALLFY_LOG_KEY") };

/// The marker key (§3d): suppression records, deletion markers and email pointers. Every binary,
/// `callfy-admin` included, loads it the same way (`secrets::load_marker_key`).
pub const MARKER_KEY_SECRET: SecretVars =
    SecretVars { id_var: "MARKER_KEY_SECRET_ID", fields: SecretFields::Whole("CALLFY_MARKER_KEY") };

impl SecretVars {
    /// The variables a secret's string stands for. Errors name the secret, never its value.
    pub fn values(&self, id: &str, secret: &str) -> Result<Vec<(&'static str, String)>, ConfigError> {
        let fail = |reason: String| ConfigError::Secret { id_var: self.id_var, id: id.to_string(), reason };
        match self.fields {
            SecretFields::Whole(var) => Ok(vec![(var, secret.trim().to_string())]),
            SecretFields::Json(fields) => {
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(secret).map_err(|_| fail("expected a JSON object".into()))?;
                let mut out = Vec::new();
                for (key, var) in fields {
                    match object.get(*key) {
                        None | Some(serde_json::Value::Null) => {}
                        Some(serde_json::Value::String(v)) if v.trim().is_empty() => {}
                        Some(serde_json::Value::String(v)) => out.push((*var, v.trim().to_string())),
                        Some(_) => return Err(fail(format!("key {key} must be a string"))),
                    }
                }
                Ok(out)
            }
        }
    }
}

/// How we authenticate to Twilio's REST API. Secrets are `SecretString`s: using one takes an
/// explicit `expose_secret()`.
#[derive(Clone)]
pub enum TwilioAuth {
    AuthToken(SecretString),
    ApiKey { sid: String, secret: SecretString },
}

impl std::fmt::Debug for TwilioAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AuthToken(_) => f.write_str("AuthToken(***)"),
            Self::ApiKey { sid, .. } => write!(f, "ApiKey({sid}, ***)"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TwilioConfig {
    pub api_base: String,
    pub account_sid: String,
    pub auth: TwilioAuth,
    /// The auth token signs Twilio's callbacks to us; an API key cannot.
    pub auth_token: Option<SecretString>,
    /// Bounds each request to Twilio's REST API (connect, send, answer).
    pub timeout: std::time::Duration,
}

/// How long a Twilio request may take unless an entry point needs less.
pub const DEFAULT_TWILIO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub const DEFAULT_TWILIO_API_BASE: &str = "https://api.twilio.com";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:3000";
pub const MIN_LOG_KEY_BYTES: usize = 16;

/// The environment, one typed reader per variable: each function's settings read only the
/// variables that function uses.
pub struct Env<F>(pub F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub fn opt(&self, name: &'static str) -> Option<String> {
        (self.0)(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    pub fn req(&self, name: &'static str) -> Result<String, ConfigError> {
        self.opt(name).ok_or(ConfigError::Missing(name))
    }

    pub fn table_name(&self) -> Result<String, ConfigError> {
        self.req("TABLE_NAME")
    }

    pub fn public_base_url(&self) -> Result<String, ConfigError> {
        let url = self.req("PUBLIC_BASE_URL")?;
        validate_base_url("PUBLIC_BASE_URL", &url)?;
        Ok(url.trim_end_matches('/').to_string())
    }

    /// `PUBLIC_WS_URL`, default `ws://{CALLFY_HTTP_ADDR}/twilio/voice/relay` (the local runner).
    pub fn public_ws_url(&self) -> Result<String, ConfigError> {
        let url = self.opt("PUBLIC_WS_URL").unwrap_or_else(|| {
            format!(
                "ws://{}/twilio/voice/relay",
                self.opt("CALLFY_HTTP_ADDR").unwrap_or_else(|| DEFAULT_HTTP_ADDR.into())
            )
        });
        let ok = (url.starts_with("wss://") || url.starts_with("ws://")) && !url.contains('?');
        if !ok {
            return Err(ConfigError::Invalid {
                name: "PUBLIC_WS_URL",
                reason: format!("expected a ws:// or wss:// URL without a query, got {url:?}"),
            });
        }
        Ok(url.trim_end_matches('/').to_string())
    }

    pub fn outreach_queue_url(&self) -> Result<String, ConfigError> {
        let url = self.req("OUTREACH_QUEUE_URL")?;
        validate_base_url("OUTREACH_QUEUE_URL", &url)?;
        Ok(url)
    }

    /// Twilio's account and credentials, when `TWILIO_ACCOUNT_SID` is set.
    pub fn twilio(&self) -> Result<Option<TwilioConfig>, ConfigError> {
        let Some(account_sid) = self.opt("TWILIO_ACCOUNT_SID") else { return Ok(None) };
        if !(account_sid.starts_with("AC") && account_sid.len() == 34) {
            return Err(ConfigError::Invalid {
                name: "TWILIO_ACCOUNT_SID",
                reason: "expected AC followed by 32 hex characters".into(),
            });
        }
        let api_base = self.opt("TWILIO_API_BASE").unwrap_or_else(|| DEFAULT_TWILIO_API_BASE.into());
        validate_base_url("TWILIO_API_BASE", &api_base)?;
        let auth_token = self.opt("TWILIO_AUTH_TOKEN");
        let auth = match (self.opt("TWILIO_API_KEY_SID"), self.opt("TWILIO_API_KEY_SECRET"), &auth_token) {
            (Some(sid), Some(secret), _) => TwilioAuth::ApiKey { sid, secret: secret.into() },
            (Some(_), None, _) => return Err(ConfigError::Missing("TWILIO_API_KEY_SECRET")),
            (None, _, Some(token)) => TwilioAuth::AuthToken(token.clone().into()),
            (None, _, None) => return Err(ConfigError::Missing("TWILIO_AUTH_TOKEN")),
        };
        let auth_token = auth_token.map(SecretString::from);
        Ok(Some(TwilioConfig {
            api_base: api_base.trim_end_matches('/').to_string(),
            account_sid,
            auth,
            auth_token,
            timeout: DEFAULT_TWILIO_TIMEOUT,
        }))
    }

    pub fn require_twilio(&self) -> Result<TwilioConfig, ConfigError> {
        self.twilio()?.ok_or(ConfigError::Missing("TWILIO_ACCOUNT_SID"))
    }

    /// `TWILIO_AUTH_TOKEN_PREVIOUS`: while a token rotation is under way, Twilio's signatures
    /// made with the previous auth token are accepted too.
    pub fn twilio_auth_token_previous(&self) -> Option<SecretString> {
        self.opt("TWILIO_AUTH_TOKEN_PREVIOUS").map(SecretString::from)
    }

    /// `BIGCOMMERCE_API_BASE`, default `https://api.bigcommerce.com`, without a trailing slash.
    pub fn bigcommerce_api_base(&self) -> Result<String, ConfigError> {
        let base =
            self.opt("BIGCOMMERCE_API_BASE").unwrap_or_else(|| crate::adapters::bigcommerce::DEFAULT_API_BASE.into());
        validate_base_url("BIGCOMMERCE_API_BASE", &base)?;
        Ok(base.trim_end_matches('/').to_string())
    }

    pub fn local_now(&self) -> Result<Option<DateTime<Utc>>, ConfigError> {
        self.opt("CALLFY_LOCAL_NOW")
            .map(|v| {
                DateTime::parse_from_rfc3339(&v).map(|t| t.with_timezone(&Utc)).map_err(|e| ConfigError::Invalid {
                    name: "CALLFY_LOCAL_NOW",
                    reason: format!("not an RFC 3339 instant: {e}"),
                })
            })
            .transpose()
    }

    /// `CALLFY_MARKER_KEY` (from `MARKER_KEY_SECRET_ID` in AWS), else the local default shared by
    /// every local binary. In Lambda there is no default: markers under a public key would match
    /// nothing a deployment wrote, and the key must never change once data exists.
    pub fn marker_key(&self) -> Result<SecretString, ConfigError> {
        match self.opt("CALLFY_MARKER_KEY") {
            Some(v) if v.len() < MIN_LOG_KEY_BYTES => Err(ConfigError::Invalid {
                name: "CALLFY_MARKER_KEY",
                reason: format!("expected at least {MIN_LOG_KEY_BYTES} bytes, got {}", v.len()),
            }),
            Some(v) => Ok(v.into()),
            None if self.opt("AWS_LAMBDA_FUNCTION_NAME").is_some() => Err(ConfigError::Missing("MARKER_KEY_SECRET_ID")),
            None => Ok(crate::domain::phone::LOCAL_MARKER_KEY.into()),
        }
    }

    /// Set but empty is refused rather than defaulted: a blank secret is a deployment mistake.
    pub fn log_key(&self) -> Result<SecretString, ConfigError> {
        match (self.0)("CALLFY_LOG_KEY").map(|v| v.trim().to_string()) {
            None => Ok(LOCAL_LOG_KEY.into()),
            Some(v) if v.len() < MIN_LOG_KEY_BYTES => Err(ConfigError::Invalid {
                name: "CALLFY_LOG_KEY",
                reason: format!("expected at least {MIN_LOG_KEY_BYTES} bytes, got {}", v.len()),
            }),
            Some(v) => Ok(v.into()),
        }
    }
}

/// A function's typed settings: read once at init, naming any variable that is missing.
pub trait Settings: Sized {
    /// The secrets this function reads at init, when their `*_SECRET_ID` variables are set
    /// (in AWS); locally the variables they stand for are set directly.
    const SECRETS: &'static [SecretVars] = &[LOG_KEY_SECRET];

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError>;

    /// The key log pseudonyms are made with (it may rotate: nothing durable depends on it).
    fn log_key(&self) -> &SecretString;

    fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

/// webhook-ingest: the table, the queue, the Shopify app secret, the BigCommerce API base, and
/// the bucket a webhook body too large for a queue message waits in.
#[derive(Clone, Debug)]
pub struct IngestSettings {
    pub table_name: String,
    pub outreach_queue_url: String,
    pub shopify_api_secret: SecretString,
    /// `BIGCOMMERCE_API_BASE`, default `https://api.bigcommerce.com`.
    pub bigcommerce_api_base: String,
    /// `RECORDINGS_BUCKET`: large webhook bodies wait under `deliveries/`.
    pub recordings_bucket: String,
    /// The KMS key those bodies are encrypted with; unset = the bucket's default key.
    pub recordings_kms_key_id: Option<String>,
    pub log_key: SecretString,
}

/// outreach-worker: the table, the queue, Twilio, the base URL its callbacks go to, the bucket
/// recordings are copied to, and what verifying a webhook's durable copy needs (the Shopify app
/// secret, the BigCommerce API base).
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub table_name: String,
    pub outreach_queue_url: String,
    pub public_base_url: String,
    pub twilio: TwilioConfig,
    pub recordings_bucket: String,
    /// The KMS key recordings are encrypted with; unset = the bucket's default key.
    pub recordings_kms_key_id: Option<String>,
    pub shopify_api_secret: SecretString,
    /// `BIGCOMMERCE_API_BASE`, default `https://api.bigcommerce.com`.
    pub bigcommerce_api_base: String,
    pub log_key: SecretString,
}

/// voice-callbacks: the table, the recordings queue, the URL Twilio signs, Twilio (its auth
/// token signs the callbacks; key 1 texts the link).
#[derive(Clone, Debug)]
pub struct VoiceCallbackSettings {
    pub table_name: String,
    pub recordings_queue_url: String,
    /// Where a key-9 opt-out is made durable before it is applied.
    pub outreach_queue_url: String,
    pub public_base_url: String,
    pub twilio: TwilioConfig,
    pub twilio_auth_token: SecretString,
    /// `TWILIO_AUTH_TOKEN_PREVIOUS`: also accepted while a token rotation is under way.
    pub twilio_auth_token_previous: Option<SecretString>,
    pub twilio_webhook_shared_key: Option<SecretString>,
    /// The voice agent's WebSocket (`PUBLIC_WS_URL`): the answer TwiML connects calls to it.
    pub public_ws_url: String,
    pub log_key: SecretString,
}

/// Which conversation model the voice agent talks through (`AGENT_MODEL`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentModel {
    /// The deterministic agent in our code (local and test default).
    Scripted,
    /// Amazon Bedrock ConverseStream with this model id.
    Bedrock(String),
}

impl AgentModel {
    pub fn parse(v: Option<&str>) -> Result<Self, ConfigError> {
        match v.map(str::trim) {
            None | Some("" | "scripted") => Ok(Self::Scripted),
            Some(v) => match v.strip_prefix("bedrock:") {
                Some(id) if !id.is_empty() && !id.contains(char::is_whitespace) => Ok(Self::Bedrock(id.to_string())),
                _ => Err(ConfigError::Invalid {
                    name: "AGENT_MODEL",
                    reason: format!("expected `scripted` or `bedrock:<model id>`, got {v:?}"),
                }),
            },
        }
    }
}

/// voice-agent: the ConversationRelay WebSocket.
#[derive(Clone, Debug)]
pub struct VoiceAgentSettings {
    pub table_name: String,
    /// Where a key-9 opt-out is made durable before it is applied.
    pub outreach_queue_url: String,
    /// Callback URLs of the link text.
    pub public_base_url: String,
    /// The URL Twilio opens (signatures cover it).
    pub public_ws_url: String,
    /// Texts the recovery link.
    pub twilio: TwilioConfig,
    pub twilio_auth_token: SecretString,
    /// `TWILIO_AUTH_TOKEN_PREVIOUS`: also accepted while a token rotation is under way.
    pub twilio_auth_token_previous: Option<SecretString>,
    pub agent_model: AgentModel,
    /// `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`: Bedrock elsewhere (a stand-in in tests).
    pub bedrock_endpoint: Option<String>,
    pub log_key: SecretString,
}

impl Settings for VoiceAgentSettings {
    const SECRETS: &'static [SecretVars] = &[TWILIO_SECRET, LOG_KEY_SECRET];

    fn log_key(&self) -> &SecretString {
        &self.log_key
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(get);
        let twilio = env.require_twilio()?;
        let twilio_auth_token = twilio.auth_token.clone().ok_or(ConfigError::Missing("TWILIO_AUTH_TOKEN"))?;
        Ok(Self {
            table_name: env.table_name()?,
            outreach_queue_url: env.outreach_queue_url()?,
            public_base_url: env.public_base_url()?,
            public_ws_url: env.public_ws_url()?,
            twilio,
            twilio_auth_token,
            twilio_auth_token_previous: env.twilio_auth_token_previous(),
            agent_model: AgentModel::parse(env.opt("AGENT_MODEL").as_deref())?,
            bedrock_endpoint: env.opt("AWS_ENDPOINT_URL_BEDROCK_RUNTIME"),
            log_key: env.log_key()?,
        })
    }
}

/// retention-purger: the table and the recordings bucket.
#[derive(Clone, Debug)]
pub struct PurgerSettings {
    pub table_name: String,
    pub recordings_bucket: String,
    /// `CLOSURE_GRACE_DAYS`, default 30: how long a closed account's data is kept.
    pub closure_grace_days: u32,
    /// `RECORDINGS_KMS_KEY_ID`: export files are written under the stack's key.
    pub recordings_kms_key_id: Option<String>,
    /// Where a deletion's unconfirmed Twilio copies are queued again for the worker.
    pub outreach_queue_url: String,
    pub log_key: SecretString,
}

impl Settings for PurgerSettings {
    fn log_key(&self) -> &SecretString {
        &self.log_key
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(get);
        let closure_grace_days = match env.opt("CLOSURE_GRACE_DAYS") {
            None => crate::app::retention::DEFAULT_CLOSURE_GRACE_DAYS,
            Some(v) => v.parse().ok().filter(|d| (1..=365).contains(d)).ok_or(ConfigError::Invalid {
                name: "CLOSURE_GRACE_DAYS",
                reason: format!("expected 1 to 365 days, got {v:?}"),
            })?,
        };
        Ok(Self {
            table_name: env.table_name()?,
            recordings_bucket: env.req("RECORDINGS_BUCKET")?,
            closure_grace_days,
            recordings_kms_key_id: env.opt("RECORDINGS_KMS_KEY_ID"),
            outreach_queue_url: env.outreach_queue_url()?,
            log_key: env.log_key()?,
        })
    }
}

/// consent-api: the table, the recordings bucket (exports link recordings, deletions remove
/// them), and the queue a deletion's Twilio copies go to (the worker holds Twilio's keys).
#[derive(Clone, Debug)]
pub struct ConsentApiSettings {
    pub table_name: String,
    pub recordings_bucket: String,
    pub outreach_queue_url: String,
    pub log_key: SecretString,
}

/// sms-inbound: the table, the queue (durable opt-outs), the URL Twilio signs, its signing keys.
#[derive(Clone, Debug)]
pub struct InboundSettings {
    pub table_name: String,
    pub outreach_queue_url: String,
    pub public_base_url: String,
    pub twilio_auth_token: SecretString,
    /// `TWILIO_AUTH_TOKEN_PREVIOUS`: also accepted while a token rotation is under way.
    pub twilio_auth_token_previous: Option<SecretString>,
    pub twilio_webhook_shared_key: Option<SecretString>,
    pub log_key: SecretString,
}

impl Settings for IngestSettings {
    const SECRETS: &'static [SecretVars] = &[SHOPIFY_SECRET, LOG_KEY_SECRET];

    fn log_key(&self) -> &SecretString {
        &self.log_key
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(get);
        Ok(Self {
            table_name: env.table_name()?,
            outreach_queue_url: env.outreach_queue_url()?,
            shopify_api_secret: env.req("SHOPIFY_API_SECRET")?.into(),
            bigcommerce_api_base: env.bigcommerce_api_base()?,
            recordings_bucket: env.req("RECORDINGS_BUCKET")?,
            recordings_kms_key_id: env.opt("RECORDINGS_KMS_KEY_ID"),
            log_key: env.log_key()?,
        })
    }
}

impl Settings for WorkerSettings {
    const SECRETS: &'static [SecretVars] = &[TWILIO_SECRET, SHOPIFY_SECRET, LOG_KEY_SECRET];

    fn log_key(&self) -> &SecretString {
        &self.log_key
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(get);
        Ok(Self {
            table_name: env.table_name()?,
            outreach_queue_url: env.outreach_queue_url()?,
            public_base_url: env.public_base_url()?,
            twilio: env.require_twilio()?,
            recordings_bucket: env.req("RECORDINGS_BUCKET")?,
            recordings_kms_key_id: env.opt("RECORDINGS_KMS_KEY_ID"),
            shopify_api_secret: env.req("SHOPIFY_API_SECRET")?.into(),
            bigcommerce_api_base: env.bigcommerce_api_base()?,
            log_key: env.log_key()?,
        })
    }
}

impl Settings for VoiceCallbackSettings {
    const SECRETS: &'static [SecretVars] = &[TWILIO_SECRET, LOG_KEY_SECRET];

    fn log_key(&self) -> &SecretString {
        &self.log_key
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(get);
        let twilio = env.require_twilio()?;
        let twilio_auth_token = twilio.auth_token.clone().ok_or(ConfigError::Missing("TWILIO_AUTH_TOKEN"))?;
        let recordings_queue_url = env.req("RECORDINGS_QUEUE_URL")?;
        validate_base_url("RECORDINGS_QUEUE_URL", &recordings_queue_url)?;
        Ok(Self {
            table_name: env.table_name()?,
            recordings_queue_url,
            outreach_queue_url: env.outreach_queue_url()?,
            public_base_url: env.public_base_url()?,
            twilio,
            twilio_auth_token,
            twilio_auth_token_previous: env.twilio_auth_token_previous(),
            twilio_webhook_shared_key: env.opt("TWILIO_WEBHOOK_SHARED_KEY").map(SecretString::from),
            public_ws_url: env.public_ws_url()?,
            log_key: env.log_key()?,
        })
    }
}

impl Settings for ConsentApiSettings {
    fn log_key(&self) -> &SecretString {
        &self.log_key
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(get);
        Ok(Self {
            table_name: env.table_name()?,
            recordings_bucket: env.req("RECORDINGS_BUCKET")?,
            outreach_queue_url: env.outreach_queue_url()?,
            log_key: env.log_key()?,
        })
    }
}

impl Settings for InboundSettings {
    const SECRETS: &'static [SecretVars] = &[TWILIO_SECRET, LOG_KEY_SECRET];

    fn log_key(&self) -> &SecretString {
        &self.log_key
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(get);
        // Twilio signs its webhooks with the account's auth token, even where API keys call it.
        let twilio_auth_token = env.require_twilio()?.auth_token.ok_or(ConfigError::Missing("TWILIO_AUTH_TOKEN"))?;
        Ok(Self {
            table_name: env.table_name()?,
            outreach_queue_url: env.outreach_queue_url()?,
            public_base_url: env.public_base_url()?,
            twilio_auth_token,
            twilio_auth_token_previous: env.twilio_auth_token_previous(),
            twilio_webhook_shared_key: env.opt("TWILIO_WEBHOOK_SHARED_KEY").map(SecretString::from),
            log_key: env.log_key()?,
        })
    }
}

fn validate_base_url(name: &'static str, value: &str) -> Result<(), ConfigError> {
    let ok = (value.starts_with("https://") || value.starts_with("http://"))
        && value.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid { name, reason: format!("expected an http(s) URL, got {value:?}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn each_function_asks_only_for_what_it_uses() {
        // The consent API runs with its table, the recordings bucket and the queue (a
        // deletion's Twilio copies go to the worker).
        let queue = ("OUTREACH_QUEUE_URL", "http://127.0.0.1:5000/123456789012/outreach");
        let consent =
            ConsentApiSettings::from_lookup(lookup(&[("TABLE_NAME", "callfy"), ("RECORDINGS_BUCKET", "rec"), queue]))
                .unwrap();
        assert_eq!(consent.table_name, "callfy");
        assert!(matches!(ConsentApiSettings::from_lookup(lookup(&[])), Err(ConfigError::Missing("TABLE_NAME"))));

        let ingest = [("TABLE_NAME", "callfy"), queue];
        assert!(matches!(
            IngestSettings::from_lookup(lookup(&ingest)),
            Err(ConfigError::Missing("SHOPIFY_API_SECRET"))
        ));
        let with_secret = [ingest[0], ingest[1], ("SHOPIFY_API_SECRET", "s")];
        assert!(matches!(
            IngestSettings::from_lookup(lookup(&with_secret)),
            Err(ConfigError::Missing("RECORDINGS_BUCKET"))
        ));
        let with_bucket = [ingest[0], ingest[1], with_secret[2], ("RECORDINGS_BUCKET", "rec")];
        assert_eq!(IngestSettings::from_lookup(lookup(&with_bucket)).unwrap().shopify_api_secret.expose_secret(), "s");

        let worker = [("TABLE_NAME", "callfy"), queue, ("PUBLIC_BASE_URL", "https://hooks.callfy.test/")];
        assert!(matches!(
            WorkerSettings::from_lookup(lookup(&worker)),
            Err(ConfigError::Missing("TWILIO_ACCOUNT_SID"))
        ));
        let sid = ("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000000");
        let keyed =
            [worker[0], worker[1], worker[2], sid, ("TWILIO_API_KEY_SID", "SK1"), ("TWILIO_API_KEY_SECRET", "x")];
        assert!(matches!(WorkerSettings::from_lookup(lookup(&keyed)), Err(ConfigError::Missing("RECORDINGS_BUCKET"))));
        let bucket = ("RECORDINGS_BUCKET", "callfy-recordings");
        let keyed = [keyed[0], keyed[1], keyed[2], keyed[3], keyed[4], keyed[5], bucket];
        // The worker verifies webhooks' durable copies: Shopify's with the app secret.
        assert!(matches!(WorkerSettings::from_lookup(lookup(&keyed)), Err(ConfigError::Missing("SHOPIFY_API_SECRET"))));
        let shopify = ("SHOPIFY_API_SECRET", "s");
        let keyed = [keyed[0], keyed[1], keyed[2], keyed[3], keyed[4], keyed[5], keyed[6], shopify];
        let w = WorkerSettings::from_lookup(lookup(&keyed)).unwrap();
        assert_eq!(w.public_base_url, "https://hooks.callfy.test");
        // sms-inbound verifies Twilio's signatures: an API key is not enough there.
        assert!(matches!(InboundSettings::from_lookup(lookup(&keyed)), Err(ConfigError::Missing("TWILIO_AUTH_TOKEN"))));
        let tokened = [worker[0], worker[1], worker[2], sid, ("TWILIO_AUTH_TOKEN", "t")];
        assert_eq!(InboundSettings::from_lookup(lookup(&tokened)).unwrap().twilio_auth_token.expose_secret(), "t");
        assert!(InboundSettings::from_lookup(lookup(&tokened)).unwrap().twilio_auth_token_previous.is_none());
        let rotating = [tokened[0], tokened[1], tokened[2], sid, tokened[4], ("TWILIO_AUTH_TOKEN_PREVIOUS", " old ")];
        let inbound = InboundSettings::from_lookup(lookup(&rotating)).unwrap();
        assert_eq!(inbound.twilio_auth_token_previous.as_ref().map(|t| t.expose_secret()), Some("old"));
    }

    const BASE: [(&str, &str); 3] = [
        ("TABLE_NAME", "callfy"),
        ("OUTREACH_QUEUE_URL", "http://127.0.0.1:5000/123456789012/outreach"),
        ("PUBLIC_BASE_URL", "https://hooks.callfy.test/"),
    ];

    fn base() -> HashMap<String, String> {
        BASE.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn env(vars: &HashMap<String, String>) -> Env<impl Fn(&str) -> Option<String> + '_> {
        Env(move |k: &str| vars.get(k).cloned())
    }

    fn twilio_vars() -> HashMap<String, String> {
        let mut vars = base();
        vars.insert("RECORDINGS_BUCKET".into(), "callfy-recordings".into());
        vars.insert("TWILIO_ACCOUNT_SID".into(), format!("AC{}", "0".repeat(32)));
        vars.insert("TWILIO_AUTH_TOKEN".into(), "token".into());
        vars
    }

    #[test]
    fn reads_required_values_and_defaults() {
        let vars = base();
        let e = env(&vars);
        assert_eq!(e.table_name().unwrap(), "callfy");
        assert_eq!(e.public_base_url().unwrap(), "https://hooks.callfy.test");
        assert_eq!(e.log_key().unwrap().expose_secret(), LOCAL_LOG_KEY);
        assert!(e.twilio().unwrap().is_none());
        assert_eq!(e.require_twilio().unwrap_err(), ConfigError::Missing("TWILIO_ACCOUNT_SID"));
    }

    #[test]
    fn names_the_missing_variable() {
        for name in ["TABLE_NAME", "OUTREACH_QUEUE_URL", "PUBLIC_BASE_URL"] {
            let mut vars = twilio_vars();
            vars.remove(name);
            let err = WorkerSettings::from_lookup(|k| vars.get(k).cloned()).err().unwrap();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn rejects_malformed_values_by_name() {
        let mut vars = twilio_vars();
        vars.insert("PUBLIC_BASE_URL".into(), "hooks.callfy.test".into());
        let err = WorkerSettings::from_lookup(|k| vars.get(k).cloned()).err().unwrap();
        assert!(err.to_string().contains("PUBLIC_BASE_URL"));

        let mut vars = base();
        vars.insert("CALLFY_LOCAL_NOW".into(), "yesterday".into());
        assert!(env(&vars).local_now().unwrap_err().to_string().contains("CALLFY_LOCAL_NOW"));

        let mut vars = twilio_vars();
        vars.insert("TWILIO_ACCOUNT_SID".into(), "nope".into());
        let err = WorkerSettings::from_lookup(|k| vars.get(k).cloned()).err().unwrap();
        assert!(err.to_string().contains("TWILIO_ACCOUNT_SID"));
    }

    #[test]
    fn log_key_is_optional_but_never_blank_or_short() {
        let mut vars = base();
        vars.insert("CALLFY_LOG_KEY".into(), " 0123456789abcdef\n".into());
        vars.insert("RECORDINGS_BUCKET".into(), "rec".into());
        assert_eq!(env(&vars).log_key().unwrap().expose_secret(), "0123456789abcdef");
        let settings = ConsentApiSettings::from_lookup(|k| vars.get(k).cloned()).unwrap();
        assert_eq!(settings.log_key.expose_secret(), "0123456789abcdef");
        for bad in ["", "  ", "0123456789abcde"] {
            vars.insert("CALLFY_LOG_KEY".into(), bad.into());
            let err = ConsentApiSettings::from_lookup(|k| vars.get(k).cloned()).err().unwrap();
            assert!(matches!(err, ConfigError::Invalid { name: "CALLFY_LOG_KEY", .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn twilio_needs_a_token_or_an_api_key() {
        let mut vars = base();
        vars.insert("TWILIO_ACCOUNT_SID".into(), format!("AC{}", "0".repeat(32)));
        assert_eq!(env(&vars).twilio().unwrap_err(), ConfigError::Missing("TWILIO_AUTH_TOKEN"));

        vars.insert("TWILIO_API_KEY_SID".into(), format!("SK{}", "1".repeat(32)));
        vars.insert("TWILIO_API_KEY_SECRET".into(), "secret".into());
        vars.insert("RECORDINGS_BUCKET".into(), "callfy-recordings".into());
        vars.insert("SHOPIFY_API_SECRET".into(), "s".into());
        let tw = WorkerSettings::from_lookup(|k| vars.get(k).cloned()).unwrap().twilio;
        assert_eq!(tw.api_base, DEFAULT_TWILIO_API_BASE);
        assert!(matches!(tw.auth, TwilioAuth::ApiKey { .. }));
        assert!(!format!("{:?}", tw.auth).contains("secret"));
    }

    #[test]
    fn twilio_secret_may_hold_the_previous_auth_token() {
        let json = r#"{"account_sid":"AC1","auth_token":"new","auth_token_previous":"old"}"#;
        let values = TWILIO_SECRET.values("arn:twilio", json).unwrap();
        assert!(values.contains(&("TWILIO_AUTH_TOKEN_PREVIOUS", "old".to_string())), "{values:?}");
        let done = TWILIO_SECRET.values("arn:twilio", r#"{"auth_token":"new","auth_token_previous":""}"#).unwrap();
        assert!(done.iter().all(|(var, _)| *var != "TWILIO_AUTH_TOKEN_PREVIOUS"), "{done:?}");
    }

    #[test]
    fn secrets_never_print() {
        let vars = [
            ("TABLE_NAME", "callfy"),
            ("OUTREACH_QUEUE_URL", "http://127.0.0.1:5000/123456789012/outreach"),
            ("PUBLIC_BASE_URL", "https://hooks.callfy.test"),
            ("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000000"),
            ("TWILIO_AUTH_TOKEN", "tok-visible-if-leaked"),
            ("TWILIO_AUTH_TOKEN_PREVIOUS", "prev-visible-if-leaked"),
            ("TWILIO_WEBHOOK_SHARED_KEY", "shared-visible-if-leaked"),
            ("CALLFY_LOG_KEY", "logkey-visible-if-leaked-0123"),
        ];
        let printed = format!("{:?}", InboundSettings::from_lookup(lookup(&vars)).unwrap());
        for secret in ["tok-visible", "prev-visible", "shared-visible", "logkey-visible"] {
            assert!(!printed.contains(secret), "{secret} leaked: {printed}");
        }
        let shopify =
            [vars[0], vars[1], ("SHOPIFY_API_SECRET", "shpss-visible-if-leaked"), ("RECORDINGS_BUCKET", "rec")];
        let printed = format!("{:?}", IngestSettings::from_lookup(lookup(&shopify)).unwrap());
        assert!(!printed.contains("shpss-visible"), "{printed}");
        assert!(printed.contains("REDACTED"), "{printed}");
    }
}

/// Resource names and secrets `callfy-local` and `callfy-admin` share, so that with only
/// `AWS_ENDPOINT_URL` set they find each other.
pub mod local_defaults {
    pub const TABLE_NAME: &str = "callfy-local";
    pub const QUEUE_NAME: &str = "callfy-outreach-local";
    pub const DLQ_NAME: &str = "callfy-outreach-dlq-local";
    pub const RECORDINGS_QUEUE_NAME: &str = "callfy-recordings-local";
    pub const RECORDINGS_DLQ_NAME: &str = "callfy-recordings-dlq-local";
    pub const BUCKET_NAME: &str = "callfy-recordings-local";
    pub const SHOPIFY_API_SECRET: &str = "callfy-local-shopify-secret";
    pub const TWILIO_ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
    pub const TWILIO_AUTH_TOKEN: &str = "callfy-local-twilio-token";
    pub const REGION: &str = "us-east-1";

    /// The table name from `TABLE_NAME`, else the local default.
    pub fn table_name() -> String {
        std::env::var("TABLE_NAME").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| TABLE_NAME.into())
    }
}
