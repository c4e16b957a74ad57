//! `X-Twilio-Signature`, computed exactly as Twilio does (its "Webhooks security" guide):
//! the full URL, then each form parameter's name and value with names sorted, HMAC-SHA1 with
//! the auth token, base64. JSON bodies are covered by a `bodySHA256` query parameter instead.
//!
//! Where a Twilio Webhook Rule signs with a SharedKey instead, Twilio adds
//! `X-Twilio-Webhooks-Signature-Settings: key=…,algorithm=HMAC_SHA256`: the same string is then
//! signed with the SharedKey's secret and the named algorithm.

use crate::signature::{ct_eq, sha256_hex};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use thiserror::Error;

pub const HEADER: &str = "x-twilio-signature";
pub const SETTINGS_HEADER: &str = "x-twilio-webhooks-signature-settings";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha1,
    HmacSha256,
}

impl Algorithm {
    /// The algorithm a settings header names; no header (or no `algorithm=`) is the auth
    /// token's HMAC-SHA1.
    pub fn from_settings(settings: Option<&str>) -> Result<Self, TwilioSignatureError> {
        let named = settings.unwrap_or_default().split(',').find_map(|part| {
            let (name, value) = part.split_once('=')?;
            (name.trim() == "algorithm" && !value.trim().is_empty()).then(|| value.trim().to_ascii_uppercase())
        });
        match named.as_deref() {
            None | Some("HMAC_SHA1") => Ok(Self::HmacSha1),
            Some("HMAC_SHA256") => Ok(Self::HmacSha256),
            Some(other) => Err(TwilioSignatureError::UnsupportedAlgorithm(other.to_string())),
        }
    }
}

/// The secrets Twilio may sign with: the account's auth token (and, while it is being rotated,
/// the previous one: `TWILIO_AUTH_TOKEN_PREVIOUS`), and the SharedKey secret for webhooks that a
/// Webhook Rule signs.
#[derive(Clone, Copy)]
pub struct SigningKeys<'a> {
    pub auth_token: &'a str,
    /// Accepted as well as `auth_token` while set (a token rotation's window).
    pub previous_auth_token: Option<&'a str>,
    pub shared_key: Option<&'a str>,
}

impl<'a> SigningKeys<'a> {
    /// Only the current auth token.
    pub fn auth_token(auth_token: &'a str) -> Self {
        Self { auth_token, previous_auth_token: None, shared_key: None }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TwilioSignatureError {
    #[error("X-Twilio-Signature header is missing")]
    Missing,
    #[error("the body's SHA-256 does not match the bodySHA256 query parameter")]
    BodyHash,
    #[error("X-Twilio-Signature does not match this URL and body")]
    Mismatch,
    #[error("the form body is not valid application/x-www-form-urlencoded: {0}")]
    Form(String),
    #[error("X-Twilio-Webhooks-Signature-Settings names an unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    #[error("the request is signed with a Twilio SharedKey, but TWILIO_WEBHOOK_SHARED_KEY is not configured")]
    SharedKeyNotConfigured,
}

/// The signature Twilio sends for a request to `url` with these form parameters (auth token).
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    compute_with(Algorithm::HmacSha1, auth_token, url, params)
}

/// The signature for `url` and `params` under `algorithm` with `secret`.
pub fn compute_with(algorithm: Algorithm, secret: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // Names first, then values: repeated names contribute each value in sorted order.
    sorted.sort();
    let parts = std::iter::once(url.as_bytes())
        .chain(sorted.into_iter().flat_map(|(name, value)| [name.as_bytes(), value.as_bytes()]));
    match algorithm {
        Algorithm::HmacSha1 => B64.encode(mac::<Hmac<Sha1>>(secret, parts)),
        Algorithm::HmacSha256 => B64.encode(mac::<Hmac<Sha256>>(secret, parts)),
    }
}

fn mac<'a, M: Mac + hmac::digest::KeyInit>(secret: &str, parts: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Validates a request Twilio made to `url` (the public URL, query included) with raw `body`,
/// signed with the auth token. Returns the form parameters (empty for a JSON body).
pub fn validate(
    auth_token: &str,
    url: &str,
    body: &[u8],
    signature: Option<&str>,
) -> Result<Vec<(String, String)>, TwilioSignatureError> {
    validate_request(SigningKeys::auth_token(auth_token), url, body, signature, None)
}

/// Validates a request as `validate` does, honouring `X-Twilio-Webhooks-Signature-Settings`:
/// with the header, the SharedKey secret and the header's algorithm; without it, HMAC-SHA1 with
/// the auth token or, while one is configured, the previous auth token. Every candidate is
/// compared in constant time, and all of them are always tried.
pub fn validate_request(
    keys: SigningKeys<'_>,
    url: &str,
    body: &[u8],
    signature: Option<&str>,
    settings: Option<&str>,
) -> Result<Vec<(String, String)>, TwilioSignatureError> {
    let signature = signature.map(str::trim).filter(|s| !s.is_empty()).ok_or(TwilioSignatureError::Missing)?;
    let settings = settings.map(str::trim).filter(|s| !s.is_empty());
    let algorithm = Algorithm::from_settings(settings)?;
    let secrets: Vec<&str> = match settings {
        None => std::iter::once(keys.auth_token).chain(keys.previous_auth_token.filter(|t| !t.is_empty())).collect(),
        Some(_) => vec![keys.shared_key.ok_or(TwilioSignatureError::SharedKeyNotConfigured)?],
    };
    let params: Vec<(String, String)> = match body_sha256_param(url) {
        Some(expected) => {
            if !ct_eq(sha256_hex(body).as_bytes(), expected.to_ascii_lowercase().as_bytes()) {
                return Err(TwilioSignatureError::BodyHash);
            }
            Vec::new()
        }
        None => serde_urlencoded::from_bytes(body).map_err(|e| TwilioSignatureError::Form(e.to_string()))?,
    };
    // Twilio may have signed the URL with or without the port; accept either form. Twilio's
    // own helper libraries differ on a repeated identical name=value pair (Python counts it
    // once), so such a body is also checked in that form.
    let mut forms = vec![params.clone()];
    let mut unique = params.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != params.len() {
        forms.push(unique);
    }
    let mut ok = false;
    for secret in &secrets {
        for candidate in port_variants(url) {
            for form in &forms {
                ok |= ct_eq(compute_with(algorithm, secret, &candidate, form).as_bytes(), signature.as_bytes());
            }
        }
    }
    if ok { Ok(params) } else { Err(TwilioSignatureError::Mismatch) }
}

fn body_sha256_param(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    pairs.into_iter().find(|(k, _)| k == "bodySHA256").map(|(_, v)| v)
}

/// The URL with its port removed and with the port present (the scheme's default if none).
pub fn port_variants(url: &str) -> [String; 2] {
    let Some((scheme, rest)) = url.split_once("://") else {
        return [url.to_string(), url.to_string()];
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    // A colon after the last ']' (IPv6 literal) starts the port.
    let host_end = hostport.rfind(']').map_or(0, |i| i + 1);
    let (host, port) = match hostport[host_end..].rfind(':') {
        Some(i) => (&hostport[..host_end + i], Some(&hostport[host_end + i + 1..])),
        None => (hostport, None),
    };
    let default_port = if scheme.eq_ignore_ascii_case("https") { "443" } else { "80" };
    let port = port.filter(|p| !p.is_empty()).unwrap_or(default_port);
    [format!("{scheme}://{userinfo}{host}{tail}"), format!("{scheme}://{userinfo}{host}:{port}{tail}")]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    #[test]
    fn twilio_published_vectors() {
        assert_eq!(compute("12345", URL, &vector_params()), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert_eq!(
            compute("12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2", &vector_params()),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        let body = serde_urlencoded::to_string(vector_params()).unwrap();
        for sig in ["RSOYDt4T1cUTdK1PDd93/VVr8B8=", "kvajT1Ptam85bY51eRf/AJRuM3w="] {
            assert_eq!(validate("12345", URL, body.as_bytes(), Some(sig)).unwrap(), vector_params());
            let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
            assert!(validate("12345", with_port, body.as_bytes(), Some(sig)).is_ok());
        }
    }

    #[test]
    fn twilio_published_json_vector() {
        let body = br#"{"property": "value", "boolean": true}"#;
        let url = format!("{URL}&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620");
        assert_eq!(sha256_hex(body), "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620");
        assert_eq!(compute("12345", &url, &[]), "a9nBmqA0ju/hNViExpshrM61xv4=");
        assert_eq!(validate("12345", &url, body, Some("a9nBmqA0ju/hNViExpshrM61xv4=")), Ok(vec![]));
        let tampered = br#"{"property": "value", "boolean": false}"#;
        assert_eq!(
            validate("12345", &url, tampered, Some("a9nBmqA0ju/hNViExpshrM61xv4=")),
            Err(TwilioSignatureError::BodyHash)
        );
    }

    #[test]
    fn rejects_tampering_wrong_url_wrong_token_and_missing_header() {
        let body = serde_urlencoded::to_string(vector_params()).unwrap();
        let sig = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        let tampered = body.replace("1234", "9999");
        assert_eq!(validate("12345", URL, tampered.as_bytes(), Some(sig)), Err(TwilioSignatureError::Mismatch));
        let other_url = "https://mycompany.com/other.php?foo=1&bar=2";
        assert_eq!(validate("12345", other_url, body.as_bytes(), Some(sig)), Err(TwilioSignatureError::Mismatch));
        assert_eq!(validate("54321", URL, body.as_bytes(), Some(sig)), Err(TwilioSignatureError::Mismatch));
        assert_eq!(validate("12345", URL, body.as_bytes(), None), Err(TwilioSignatureError::Missing));
        assert_eq!(validate("12345", URL, body.as_bytes(), Some("  ")), Err(TwilioSignatureError::Missing));
    }

    #[test]
    fn repeated_names_sign_each_value_in_order() {
        let a = vec![("To".to_string(), "b".to_string()), ("To".to_string(), "a".to_string())];
        let b = vec![("To".to_string(), "a".to_string()), ("To".to_string(), "b".to_string())];
        assert_eq!(compute("t", "https://x.test/", &a), compute("t", "https://x.test/", &b));
        let mut mac = Hmac::<Sha1>::new_from_slice(b"t").unwrap();
        mac.update(b"https://x.test/ToaTob");
        assert_eq!(compute("t", "https://x.test/", &a), B64.encode(mac.finalize().into_bytes()));
    }

    #[test]
    fn shared_key_signatures_follow_the_settings_header() {
        let body = serde_urlencoded::to_string(vector_params()).unwrap();
        let keys = SigningKeys { auth_token: "12345", previous_auth_token: None, shared_key: Some("shared-secret") };
        let settings = Some("key=KS0123456789abcdef0123456789abcdef,algorithm=HMAC_SHA256");
        let sig = compute_with(Algorithm::HmacSha256, "shared-secret", URL, &vector_params());
        assert_ne!(sig, compute_with(Algorithm::HmacSha256, "12345", URL, &vector_params()));
        assert!(validate_request(keys, URL, body.as_bytes(), Some(&sig), settings).is_ok());
        // The header decides: the same SHA-256 signature without it is checked as SHA-1.
        assert_eq!(validate_request(keys, URL, body.as_bytes(), Some(&sig), None), Err(TwilioSignatureError::Mismatch));
        // The auth token's SHA-1 signature still passes when no header is sent.
        assert!(validate_request(keys, URL, body.as_bytes(), Some("RSOYDt4T1cUTdK1PDd93/VVr8B8="), None).is_ok());
        let unconfigured = SigningKeys::auth_token("12345");
        assert_eq!(
            validate_request(unconfigured, URL, body.as_bytes(), Some(&sig), settings),
            Err(TwilioSignatureError::SharedKeyNotConfigured)
        );
        assert_eq!(
            validate_request(keys, URL, body.as_bytes(), Some(&sig), Some("key=KS1,algorithm=HMAC_MD5")),
            Err(TwilioSignatureError::UnsupportedAlgorithm("HMAC_MD5".into()))
        );
        assert_eq!(Algorithm::from_settings(Some("key=KS1")), Ok(Algorithm::HmacSha1));
        assert_eq!(Algorithm::from_settings(Some(" key=KS1 , algorithm = hmac_sha256 ")), Ok(Algorithm::HmacSha256));
    }

    #[test]
    fn previous_auth_token_is_accepted_only_while_configured() {
        let body = serde_urlencoded::to_string(vector_params()).unwrap();
        // Signed with the previous token ("12345"); the current one is "new-token".
        let old_sig = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        let new_sig = compute("new-token", URL, &vector_params());
        let rotating = SigningKeys { auth_token: "new-token", previous_auth_token: Some("12345"), shared_key: None };
        assert_eq!(validate_request(rotating, URL, body.as_bytes(), Some(old_sig), None).unwrap(), vector_params());
        assert!(validate_request(rotating, URL, body.as_bytes(), Some(&new_sig), None).is_ok());
        // Either form of the URL, with either token.
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert!(validate_request(rotating, with_port, body.as_bytes(), Some(old_sig), None).is_ok());
        // A third token, or a tampered body, is still refused.
        let wrong = compute("wrong-token", URL, &vector_params());
        assert_eq!(
            validate_request(rotating, URL, body.as_bytes(), Some(&wrong), None),
            Err(TwilioSignatureError::Mismatch)
        );
        let tampered = body.replace("1234", "9999");
        assert_eq!(
            validate_request(rotating, URL, tampered.as_bytes(), Some(old_sig), None),
            Err(TwilioSignatureError::Mismatch)
        );
        // Without a previous token (or with a blank one), the old signature is refused.
        let current_only = SigningKeys::auth_token("new-token");
        assert_eq!(
            validate_request(current_only, URL, body.as_bytes(), Some(old_sig), None),
            Err(TwilioSignatureError::Mismatch)
        );
        let blank = SigningKeys { previous_auth_token: Some(""), ..current_only };
        assert_eq!(
            validate_request(blank, URL, body.as_bytes(), Some(old_sig), None),
            Err(TwilioSignatureError::Mismatch)
        );
        // A SharedKey-signed request is checked with the SharedKey only, never a token.
        let settings = Some("key=KS1,algorithm=HMAC_SHA256");
        let shared = SigningKeys { shared_key: Some("shared-secret"), ..rotating };
        let by_old_token = compute_with(Algorithm::HmacSha256, "12345", URL, &vector_params());
        assert_eq!(
            validate_request(shared, URL, body.as_bytes(), Some(&by_old_token), settings),
            Err(TwilioSignatureError::Mismatch)
        );
        // An empty body (the voice agent's WebSocket upgrade) signed with the previous token.
        let ws = "wss://ws.callfy.test/relay?call=abc";
        let ws_sig = compute("12345", ws, &[]);
        assert!(validate_request(rotating, ws, b"", Some(&ws_sig), None).is_ok());
        assert_eq!(validate_request(current_only, ws, b"", Some(&ws_sig), None), Err(TwilioSignatureError::Mismatch));
    }

    #[test]
    fn port_variants_cover_default_and_explicit_ports() {
        assert_eq!(
            port_variants("https://a.test/p?q=1"),
            ["https://a.test/p?q=1".to_string(), "https://a.test:443/p?q=1".to_string()]
        );
        assert_eq!(
            port_variants("http://127.0.0.1:3000/twilio/sms"),
            ["http://127.0.0.1/twilio/sms".to_string(), "http://127.0.0.1:3000/twilio/sms".to_string()]
        );
        assert_eq!(port_variants("http://[::1]:8080"), ["http://[::1]".to_string(), "http://[::1]:8080".to_string()]);
        assert_eq!(
            port_variants("https://u:p@h.test"),
            ["https://u:p@h.test".to_string(), "https://u:p@h.test:443".to_string()]
        );
    }
}
