//! Webhook signatures. Every comparison is constant-time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

pub fn hmac_sha256_base64(key: &[u8], message: &[u8]) -> String {
    B64.encode(hmac_sha256(key, message))
}

/// Checks a base64 HMAC-SHA256 (Shopify, WooCommerce) without leaking timing.
pub fn verify_hmac_sha256_base64(key: &[u8], message: &[u8], signature_b64: &str) -> bool {
    let Ok(given) = B64.decode(signature_b64.trim()) else {
        return false;
    };
    let expected = hmac_sha256(key, message);
    given.len() == expected.len() && bool::from(given.ct_eq(&expected))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Constant-time equality of two secrets or digests.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn verifies_and_rejects() {
        let sig = hmac_sha256_base64(b"secret", b"{\"a\":1}");
        assert!(verify_hmac_sha256_base64(b"secret", b"{\"a\":1}", &sig));
        assert!(!verify_hmac_sha256_base64(b"secret", b"{\"a\":2}", &sig));
        assert!(!verify_hmac_sha256_base64(b"other", b"{\"a\":1}", &sig));
        assert!(!verify_hmac_sha256_base64(b"secret", b"{\"a\":1}", "not base64!"));
        assert!(!verify_hmac_sha256_base64(b"secret", b"{\"a\":1}", ""));
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"abc", b"ab"));
    }
}
