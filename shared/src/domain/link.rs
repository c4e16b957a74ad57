//! Our own recovery links, `{PUBLIC_BASE_URL}/r/{code}`: which messages carry one, and the code.
//!
//! BigCommerce's cart redirect URLs are single-use (a link preview or a URL scanner uses one
//! up), so a BigCommerce cart's messages always link to our redirect, which asks the store for a
//! fresh URL at each click. Other platforms' links are wrapped only when the merchant counts
//! clicks (`links.track_clicks`); otherwise the text keeps the store's own URL.

use crate::domain::ids::{CartToken, MerchantId};
use crate::domain::merchant::{Channel, Merchant, Platform};
use serde::{Deserialize, Serialize};

/// The length of every code: 11 base62 characters (≈ 65 bits).
pub const CODE_LEN: usize = 11;
/// The path our redirect is served on (`GET /r/{code}`).
pub const ROUTE_PREFIX: &str = "/r/";

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The merchant's link settings (`links` in the merchant file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSettings {
    /// Count clicks: every message links to our redirect (default off: the store's own URL).
    #[serde(default)]
    pub track_clicks: bool,
}

/// Whether a message of this merchant links to our redirect rather than the store's URL.
pub fn wraps(merchant: &Merchant) -> bool {
    merchant.platform == Platform::Bigcommerce || merchant.links.track_clicks
}

/// An opaque link code: base62, `CODE_LEN` characters, no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LinkCode(String);

impl LinkCode {
    /// The code of one message's link: a keyed hash (marker key) of merchant, cart, step and
    /// channel, so a retried send renders the same body, and nobody without the key can derive
    /// or guess one.
    pub fn for_message(m: &MerchantId, cart: &CartToken, step: u8, channel: Channel) -> Self {
        let hex = crate::domain::phone::marker_hash("link", &format!("{m}|{cart}|{step}|{}", channel.as_str()));
        let mut n = u128::from_str_radix(&hex[..32], 16).expect("hex digest");
        let mut code = String::with_capacity(CODE_LEN);
        for _ in 0..CODE_LEN {
            code.push(BASE62[(n % 62) as usize] as char);
            n /= 62;
        }
        Self(code)
    }

    /// A code as it comes in a path; anything else is no code (404 without a lookup).
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == CODE_LEN && raw.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `{base}/r/{code}`.
    pub fn url(&self, public_base_url: &str) -> String {
        format!("{}{ROUTE_PREFIX}{}", public_base_url.trim_end_matches('/'), self.0)
    }
}

impl TryFrom<String> for LinkCode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("not a link code: {s:?}"))
    }
}

impl From<LinkCode> for String {
    fn from(c: LinkCode) -> String {
        c.0
    }
}

impl std::fmt::Display for LinkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One message's link as stored (in the cart's partition, so it is purged and deleted with the
/// cart): what a click resolves to. No phone, no URL: the cart is read at click time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryLink {
    pub code: LinkCode,
    pub merchant_id: MerchantId,
    pub cart_token: CartToken,
    pub step: u8,
    pub channel: Channel,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Clicks counted so far.
    #[serde(default)]
    pub clicks: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_short_opaque_stable_and_distinct() {
        let m = MerchantId::parse("snowdevil").unwrap();
        let t = CartToken::parse("cart-1").unwrap();
        let a = LinkCode::for_message(&m, &t, 0, Channel::Sms);
        assert_eq!(a.as_str().len(), CODE_LEN);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(a, LinkCode::for_message(&m, &t, 0, Channel::Sms), "a retried send renders the same body");
        assert_ne!(a, LinkCode::for_message(&m, &t, 1, Channel::Sms));
        assert_ne!(a, LinkCode::for_message(&m, &t, 0, Channel::Voice));
        assert!(!a.as_str().contains("snowdevil") && !a.as_str().contains("cart"));
        assert_eq!(LinkCode::parse(a.as_str()), Some(a.clone()));
        assert_eq!(a.url("https://cb.example/"), format!("https://cb.example/r/{a}"));
        for bad in ["", "short", "abc-def_ghi", "abcdefghijkl", "abcdefghij/"] {
            assert_eq!(LinkCode::parse(bad), None, "{bad}");
        }
    }
}
