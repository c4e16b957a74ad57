use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdError {
    #[error("merchant id must be 2-64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit")]
    Merchant,
    #[error("cart token must be 1-128 characters of A-Z, a-z, 0-9, '-' or '_'")]
    CartToken,
}

/// A merchant's id: lower-case slug, safe to embed in keys and URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MerchantId(String);

impl MerchantId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let bytes = s.as_bytes();
        let ok = (2..=64).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase() | bytes[0].is_ascii_digit()
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_');
        if ok { Ok(Self(s.to_string())) } else { Err(IdError::Merchant) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MerchantId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<MerchantId> for String {
    fn from(id: MerchantId) -> String {
        id.0
    }
}

impl std::fmt::Display for MerchantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A platform's checkout token: the key a checkout and its order share.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CartToken(String);

impl CartToken {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok { Ok(Self(s.to_string())) } else { Err(IdError::CartToken) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CartToken {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<CartToken> for String {
    fn from(t: CartToken) -> String {
        t.0
    }
}

impl std::fmt::Display for CartToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchant_ids() {
        for ok in ["snowdevil", "shop-42", "a_b", "9lives"] {
            assert!(MerchantId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "Snowdevil", "-shop", "shop#1", "shop/1", &"x".repeat(65)] {
            assert_eq!(MerchantId::parse(bad), Err(IdError::Merchant), "{bad}");
        }
    }

    #[test]
    fn cart_tokens() {
        assert!(CartToken::parse("c1-abc_DEF").is_ok());
        for bad in ["", "a b", "a#b", "tok/../x"] {
            assert_eq!(CartToken::parse(bad), Err(IdError::CartToken), "{bad}");
        }
        assert!(serde_json::from_str::<CartToken>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<CartToken>("\"not ok\"").is_err());
    }
}
