//! Typed configuration, read once at init from the environment (DESIGN.md §4).

use crate::domain::phone::LOCAL_LOG_KEY;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// How we authenticate to Twilio's REST API.
#[derive(Clone)]
pub enum TwilioAuth {
    AuthToken(String),
    ApiKey { sid: String, secret: String },
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
    pub auth_token: Option<String>,
}

#[derive(Clone)]
pub struct Config {
    pub table_name: String,
    pub outreach_queue_url: String,
    pub recordings_bucket: Option<String>,
    pub public_base_url: String,
    pub twilio: Option<TwilioConfig>,
    pub shopify_api_secret: Option<String>,
    /// Secret of a Twilio SharedKey, where Webhook Rules sign with one instead of the auth token.
    pub twilio_webhook_shared_key: Option<String>,
    pub http_addr: String,
    pub local_now: Option<DateTime<Utc>>,
    /// Keys `Phone::log_id`; pass it to `domain::phone::set_log_key` at init.
    pub log_key: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("table_name", &self.table_name)
            .field("outreach_queue_url", &self.outreach_queue_url)
            .field("recordings_bucket", &self.recordings_bucket)
            .field("public_base_url", &self.public_base_url)
            .field("twilio", &self.twilio)
            .field("shopify_api_secret", &self.shopify_api_secret.as_ref().map(|_| "***"))
            .field("twilio_webhook_shared_key", &self.twilio_webhook_shared_key.as_ref().map(|_| "***"))
            .field("http_addr", &self.http_addr)
            .field("log_key", &"***")
            .finish()
    }
}

pub const DEFAULT_TWILIO_API_BASE: &str = "https://api.twilio.com";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:3000";
pub const MIN_LOG_KEY_BYTES: usize = 16;

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads from any source of variables, so tests need not touch the process environment.
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|k| vars.get(k).cloned())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let opt = |name: &'static str| get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let req = |name: &'static str| opt(name).ok_or(ConfigError::Missing(name));

        let public_base_url = req("PUBLIC_BASE_URL")?;
        validate_base_url("PUBLIC_BASE_URL", &public_base_url)?;
        let public_base_url = public_base_url.trim_end_matches('/').to_string();

        let outreach_queue_url = req("OUTREACH_QUEUE_URL")?;
        validate_base_url("OUTREACH_QUEUE_URL", &outreach_queue_url)?;

        let twilio = match opt("TWILIO_ACCOUNT_SID") {
            None => None,
            Some(account_sid) => {
                if !(account_sid.starts_with("AC") && account_sid.len() == 34) {
                    return Err(ConfigError::Invalid {
                        name: "TWILIO_ACCOUNT_SID",
                        reason: "expected AC followed by 32 hex characters".into(),
                    });
                }
                let api_base = opt("TWILIO_API_BASE").unwrap_or_else(|| DEFAULT_TWILIO_API_BASE.into());
                validate_base_url("TWILIO_API_BASE", &api_base)?;
                let auth_token = opt("TWILIO_AUTH_TOKEN");
                let auth = match (opt("TWILIO_API_KEY_SID"), opt("TWILIO_API_KEY_SECRET"), &auth_token) {
                    (Some(sid), Some(secret), _) => TwilioAuth::ApiKey { sid, secret },
                    (Some(_), None, _) => {
                        return Err(ConfigError::Missing("TWILIO_API_KEY_SECRET"));
                    }
                    (None, _, Some(token)) => TwilioAuth::AuthToken(token.clone()),
                    (None, _, None) => return Err(ConfigError::Missing("TWILIO_AUTH_TOKEN")),
                };
                Some(TwilioConfig {
                    api_base: api_base.trim_end_matches('/').to_string(),
                    account_sid,
                    auth,
                    auth_token,
                })
            }
        };

        let local_now = match opt("CALLFY_LOCAL_NOW") {
            None => None,
            Some(v) => Some(
                DateTime::parse_from_rfc3339(&v)
                    .map_err(|e| ConfigError::Invalid {
                        name: "CALLFY_LOCAL_NOW",
                        reason: format!("not an RFC 3339 instant: {e}"),
                    })?
                    .with_timezone(&Utc),
            ),
        };

        // Set but empty is refused rather than defaulted: a blank secret is a deployment mistake.
        let log_key = match get("CALLFY_LOG_KEY").map(|v| v.trim().to_string()) {
            None => LOCAL_LOG_KEY.to_string(),
            Some(v) if v.len() < MIN_LOG_KEY_BYTES => {
                return Err(ConfigError::Invalid {
                    name: "CALLFY_LOG_KEY",
                    reason: format!("expected at least {MIN_LOG_KEY_BYTES} bytes, got {}", v.len()),
                });
            }
            Some(v) => v,
        };

        Ok(Self {
            table_name: req("TABLE_NAME")?,
            outreach_queue_url,
            recordings_bucket: opt("RECORDINGS_BUCKET"),
            public_base_url,
            twilio,
            shopify_api_secret: opt("SHOPIFY_API_SECRET"),
            twilio_webhook_shared_key: opt("TWILIO_WEBHOOK_SHARED_KEY"),
            http_addr: opt("CALLFY_HTTP_ADDR").unwrap_or_else(|| DEFAULT_HTTP_ADDR.into()),
            local_now,
            log_key,
        })
    }

    pub fn require_twilio(&self) -> Result<&TwilioConfig, ConfigError> {
        self.twilio.as_ref().ok_or(ConfigError::Missing("TWILIO_ACCOUNT_SID"))
    }

    /// Twilio signs its webhooks with the account's auth token, even when API keys call the API.
    pub fn require_twilio_auth_token(&self) -> Result<&str, ConfigError> {
        self.require_twilio()?.auth_token.as_deref().ok_or(ConfigError::Missing("TWILIO_AUTH_TOKEN"))
    }

    pub fn require_shopify_secret(&self) -> Result<&str, ConfigError> {
        self.shopify_api_secret.as_deref().ok_or(ConfigError::Missing("SHOPIFY_API_SECRET"))
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

    fn base() -> HashMap<String, String> {
        [
            ("TABLE_NAME", "callfy"),
            ("OUTREACH_QUEUE_URL", "http://127.0.0.1:5000/123456789012/outreach"),
            ("PUBLIC_BASE_URL", "https://hooks.callfy.test/"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn reads_required_values_and_defaults() {
        let cfg = Config::from_map(&base()).unwrap();
        assert_eq!(cfg.table_name, "callfy");
        assert_eq!(cfg.public_base_url, "https://hooks.callfy.test");
        assert_eq!(cfg.http_addr, DEFAULT_HTTP_ADDR);
        assert_eq!(cfg.log_key, LOCAL_LOG_KEY);
        assert!(cfg.twilio.is_none());
        assert_eq!(cfg.require_twilio().unwrap_err(), ConfigError::Missing("TWILIO_ACCOUNT_SID"));
    }

    #[test]
    fn names_the_missing_variable() {
        for name in ["TABLE_NAME", "OUTREACH_QUEUE_URL", "PUBLIC_BASE_URL"] {
            let mut vars = base();
            vars.remove(name);
            let err = Config::from_map(&vars).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn rejects_malformed_values_by_name() {
        let mut vars = base();
        vars.insert("PUBLIC_BASE_URL".into(), "hooks.callfy.test".into());
        assert!(Config::from_map(&vars).unwrap_err().to_string().contains("PUBLIC_BASE_URL"));

        let mut vars = base();
        vars.insert("CALLFY_LOCAL_NOW".into(), "yesterday".into());
        assert!(Config::from_map(&vars).unwrap_err().to_string().contains("CALLFY_LOCAL_NOW"));

        let mut vars = base();
        vars.insert("TWILIO_ACCOUNT_SID".into(), "nope".into());
        assert!(Config::from_map(&vars).unwrap_err().to_string().contains("TWILIO_ACCOUNT_SID"));
    }

    #[test]
    fn log_key_is_optional_but_never_blank_or_short() {
        let mut vars = base();
        vars.insert("CALLFY_LOG_KEY".into(), " 0123456789abcdef\n".into());
        let cfg = Config::from_map(&vars).unwrap();
        assert_eq!(cfg.log_key, "0123456789abcdef");
        assert!(!format!("{cfg:?}").contains("0123456789abcdef"));
        for bad in ["", "  ", "0123456789abcde"] {
            vars.insert("CALLFY_LOG_KEY".into(), bad.into());
            let err = Config::from_map(&vars).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { name: "CALLFY_LOG_KEY", .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn twilio_needs_a_token_or_an_api_key() {
        let mut vars = base();
        vars.insert("TWILIO_ACCOUNT_SID".into(), format!("AC{}", "0".repeat(32)));
        assert_eq!(Config::from_map(&vars).unwrap_err(), ConfigError::Missing("TWILIO_AUTH_TOKEN"));

        vars.insert("TWILIO_API_KEY_SID".into(), format!("SK{}", "1".repeat(32)));
        vars.insert("TWILIO_API_KEY_SECRET".into(), "secret".into());
        let cfg = Config::from_map(&vars).unwrap();
        let tw = cfg.twilio.unwrap();
        assert_eq!(tw.api_base, DEFAULT_TWILIO_API_BASE);
        assert!(matches!(tw.auth, TwilioAuth::ApiKey { .. }));
        assert!(!format!("{:?}", tw.auth).contains("secret"));
    }
}

/// Resource names and secrets `callfy-local` and `callfy-admin` share, so that with only
/// `AWS_ENDPOINT_URL` set they find each other (DESIGN.md §8).
pub mod local_defaults {
    pub const TABLE_NAME: &str = "callfy-local";
    pub const QUEUE_NAME: &str = "callfy-outreach-local";
    pub const DLQ_NAME: &str = "callfy-outreach-dlq-local";
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
