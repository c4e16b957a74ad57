use phonenumber::{Mode, country};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PhoneError {
    #[error("not a phone number")]
    Unparseable,
    #[error("not a valid, dialable phone number")]
    Invalid,
    #[error("unknown default region {0:?}")]
    Region(String),
}

/// A phone number in E.164, parsed and validated by libphonenumber's rules.
///
/// `Debug` masks the number so a stray `{:?}` never leaks it into a log line.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

impl Phone {
    /// Parses any common format; `default_region` (ISO 3166 alpha-2) applies to national numbers.
    pub fn parse(input: &str, default_region: Option<&str>) -> Result<Self, PhoneError> {
        let region = match default_region {
            None => None,
            Some(r) => {
                Some(r.to_ascii_uppercase().parse::<country::Id>().map_err(|_| PhoneError::Region(r.to_string()))?)
            }
        };
        let trimmed = input.trim();
        if trimmed.is_empty() || trimmed.len() > 40 {
            return Err(PhoneError::Unparseable);
        }
        let number = phonenumber::parse(region, trimmed).map_err(|_| PhoneError::Unparseable)?;
        if !phonenumber::is_valid(&number) {
            return Err(PhoneError::Invalid);
        }
        Ok(Self(number.format().mode(Mode::E164).to_string()))
    }

    /// Whether `region` is an ISO 3166 alpha-2 code libphonenumber knows.
    pub fn is_known_region(region: &str) -> bool {
        region.len() == 2 && region.to_ascii_uppercase().parse::<country::Id>().is_ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For humans reading logs: country code and the last two digits.
    pub fn masked(&self) -> String {
        let digits = &self.0[1..];
        let keep_front = if digits.starts_with('1') { 1 } else { 2.min(digits.len()) };
        let tail = 2.min(digits.len().saturating_sub(keep_front));
        format!(
            "+{}{}{}",
            &digits[..keep_front],
            "*".repeat(digits.len() - keep_front - tail),
            &digits[digits.len() - tail..]
        )
    }

    /// A stable pseudonym for correlating log lines and metrics without the number itself.
    pub fn log_id(&self) -> String {
        let digest = Sha256::digest(format!("callfy-log:{}", self.0).as_bytes());
        hex::encode(&digest[..8])
    }

    /// The calling code and national number, for area-code rules.
    pub fn country_code(&self) -> Option<u16> {
        phonenumber::parse(None, &self.0).ok().map(|n| n.code().value())
    }
}

impl std::fmt::Debug for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Phone({})", self.masked())
    }
}

impl TryFrom<String> for Phone {
    type Error = PhoneError;
    fn try_from(s: String) -> Result<Self, PhoneError> {
        if !s.starts_with('+') {
            return Err(PhoneError::Unparseable);
        }
        Self::parse(&s, None)
    }
}

impl From<Phone> for String {
    fn from(p: Phone) -> String {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_common_formats_to_e164() {
        for input in ["+1 415 555 2671", "(415) 555-2671", "415.555.2671", "1-415-555-2671", "+14155552671"] {
            assert_eq!(Phone::parse(input, Some("US")).unwrap().as_str(), "+14155552671", "{input}");
        }
        assert_eq!(Phone::parse("020 7946 0958", Some("GB")).unwrap().as_str(), "+442079460958");
        assert_eq!(Phone::parse("+44 20 7946 0958", None).unwrap().as_str(), "+442079460958");
    }

    #[test]
    fn rejects_garbage_and_impossible_numbers() {
        assert_eq!(Phone::parse("call me", Some("US")), Err(PhoneError::Unparseable));
        assert_eq!(Phone::parse("", Some("US")), Err(PhoneError::Unparseable));
        assert_eq!(Phone::parse("+1 123", None), Err(PhoneError::Invalid));
        assert!(matches!(Phone::parse("4155552671", Some("ZZ")), Err(PhoneError::Region(_))));
        assert!(Phone::parse("4155552671", None).is_err());
    }

    #[test]
    fn never_shows_the_number_in_debug_or_log_ids() {
        let p = Phone::parse("+14155552671", None).unwrap();
        assert_eq!(p.masked(), "+1********71");
        assert!(!format!("{p:?}").contains("5552671"));
        assert_eq!(p.log_id().len(), 16);
        assert!(!p.log_id().contains("4155552671"));
        assert_eq!(p.country_code(), Some(1));
    }

    #[test]
    fn deserialises_only_e164() {
        assert!(serde_json::from_str::<Phone>("\"+14155552671\"").is_ok());
        assert!(serde_json::from_str::<Phone>("\"4155552671\"").is_err());
    }
}
