//! Settings from Secrets Manager, read once per process at init (so a rotated secret needs no
//! redeploy: the next process reads the new value).

use crate::config::{ConfigError, Env, MARKER_KEY_SECRET, SecretString, SecretVars, Settings};
use aws_config::SdkConfig;
use std::collections::HashMap;

/// Reads a secret's current string by id (ARN or name).
pub trait SecretSource {
    fn secret_string(&self, id: &str) -> impl Future<Output = Result<String, String>> + Send;
}

impl SecretSource for aws_sdk_secretsmanager::Client {
    async fn secret_string(&self, id: &str) -> Result<String, String> {
        let out = self.get_secret_value().secret_id(id).send().await.map_err(|e| {
            use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
            let e = e.into_service_error();
            format!("{}: {}", e.code().unwrap_or("error"), e.message().unwrap_or("GetSecretValue failed"))
        })?;
        out.secret_string.ok_or_else(|| "the secret has no string value".into())
    }
}

/// The variables the secrets named in the environment stand for, fetched concurrently.
pub async fn resolve(
    source: &impl SecretSource,
    secrets: &[SecretVars],
    env: &impl Fn(&str) -> Option<String>,
) -> Result<HashMap<&'static str, String>, ConfigError> {
    let named: Vec<(&SecretVars, String)> = secrets
        .iter()
        .filter_map(|s| env(s.id_var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).map(|id| (s, id)))
        .collect();
    let fetched = futures::future::join_all(named.iter().map(|(_, id)| source.secret_string(id))).await;
    let mut vars = HashMap::new();
    for ((secret, id), value) in named.iter().zip(fetched) {
        let value = value.map_err(|reason| ConfigError::Secret { id_var: secret.id_var, id: id.clone(), reason })?;
        vars.extend(secret.values(id, &value)?);
    }
    Ok(vars)
}

/// A function's settings over any secret source and environment: its secrets from the source
/// where `*_SECRET_ID` names them, everything else (and, locally, the secrets themselves) from
/// the environment; only named secrets are fetched (tests use moto and a map).
pub async fn settings_from<S: Settings>(
    source: &impl SecretSource,
    env: impl Fn(&str) -> Option<String>,
) -> Result<S, ConfigError> {
    let vars = resolve(source, S::SECRETS, &env).await?;
    S::from_lookup(|k| vars.get(k).cloned().or_else(|| env(k)))
}

/// The marker key, loaded the same way by every binary (§3d): Secrets Manager when
/// `MARKER_KEY_SECRET_ID` is set, else `CALLFY_MARKER_KEY`, else the shared local default (never
/// in Lambda).
pub async fn load_marker_key(sdk: &SdkConfig) -> Result<SecretString, ConfigError> {
    marker_key_from(&aws_sdk_secretsmanager::Client::new(sdk), |k| std::env::var(k).ok()).await
}

/// `load_marker_key` over any secret source and environment.
pub async fn marker_key_from(
    source: &impl SecretSource,
    env: impl Fn(&str) -> Option<String>,
) -> Result<SecretString, ConfigError> {
    let vars = resolve(source, &[MARKER_KEY_SECRET], &env).await?;
    Env(|k: &str| vars.get(k).cloned().or_else(|| env(k))).marker_key()
}

/// Loads the marker key and sets it for the process (before anything reads or writes a marker).
pub async fn init_marker_key(sdk: &SdkConfig) -> Result<(), ConfigError> {
    use secrecy::ExposeSecret;
    let key = load_marker_key(sdk).await?;
    crate::domain::phone::set_marker_key(key.expose_secret().as_bytes());
    Ok(())
}

/// A function's init (`startup::lambda`): its settings and the marker key (set for the process), fetched
/// concurrently through one Secrets Manager client. Building a client is a measurable share of
/// a cold start, so the two share one.
pub async fn init_settings<S: Settings>(sdk: &SdkConfig) -> Result<S, ConfigError> {
    use secrecy::ExposeSecret;
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    let env = |k: &str| std::env::var(k).ok();
    let (settings, key) = tokio::join!(settings_from::<S>(&client, env), marker_key_from(&client, env));
    crate::domain::phone::set_marker_key(key?.expose_secret().as_bytes());
    settings
}
