//! Merchant API keys: `cfy_live_{merchant id}_{64 hex}`. The id lets the API find the stored
//! SHA-256 with one read; the 256 random bits are the secret. Keys are shown once, never stored.

use crate::domain::ids::MerchantId;

pub const PREFIX: &str = "cfy_live_";

/// A new key for `merchant`: 256 random bits from the OS.
pub fn new_api_key(merchant: &MerchantId) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("{PREFIX}{merchant}_{}", hex::encode(bytes))
}

/// The merchant a key names, if it is shaped like one of ours.
pub fn key_merchant(key: &str) -> Option<MerchantId> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.rsplit_once('_')?;
    (secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())?;
    MerchantId::parse(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_merchant() {
        let id = MerchantId::parse("snow_devil").unwrap();
        let key = new_api_key(&id);
        assert!(key.starts_with("cfy_live_snow_devil_"));
        assert_eq!(key_merchant(&key), Some(id));
        assert_ne!(new_api_key(&MerchantId::parse("ab").unwrap()), new_api_key(&MerchantId::parse("ab").unwrap()));
        assert_eq!(key_merchant("cfy_live_snowdevil_abc"), None);
        assert_eq!(key_merchant("Bearer"), None);
        assert_eq!(key_merchant(&format!("cfy_live_{}", "a".repeat(64))), None);
    }
}
