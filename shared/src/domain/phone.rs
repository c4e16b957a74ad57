use hmac::{Hmac, Mac};
use phonenumber::{Mode, country};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::sync::OnceLock;
use thiserror::Error;

/// The `log_id` key when none was set (local runs, tests). Not a secret: deployments set their own.
pub const LOCAL_LOG_KEY: &str = "callfy-local-log-key-not-secret";

static LOG_KEY: OnceLock<Vec<u8>> = OnceLock::new();

/// Sets the process-wide `log_id` key, once at init (`Config::log_key`). The first call wins and
/// later ones are ignored, so a warm Lambda's ids stay comparable across invocations.
pub fn set_log_key(key: &[u8]) {
    let _ = LOG_KEY.set(key.to_vec());
}

fn log_key() -> &'static [u8] {
    LOG_KEY.get().map_or(LOCAL_LOG_KEY.as_bytes(), Vec::as_slice)
}

/// The marker key when none was set (local runs, tests): shared by every local binary, so what
/// `callfy-admin` writes matches what the functions read. Deployments set their own (§3d).
pub const LOCAL_MARKER_KEY: &str = "callfy-local-marker-key-not-secret";

static MARKER_KEY: OnceLock<Vec<u8>> = OnceLock::new();

/// Sets the process-wide marker key, once at init. Unlike the log key it never rotates:
/// suppression records, deletion markers and email pointers are found by it.
pub fn set_marker_key(key: &[u8]) {
    let _ = MARKER_KEY.set(key.to_vec());
}

fn marker_key() -> &'static [u8] {
    MARKER_KEY.get().map_or(LOCAL_MARKER_KEY.as_bytes(), Vec::as_slice)
}

/// An HMAC-SHA256 of `text` (in its `purpose`'s domain) under the marker key: what durable
/// lookups keep instead of a phone or an email (suppression records, deletion markers, email
/// pointers). Independent of the log key, which may rotate.
pub fn marker_hash(purpose: &str, text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(marker_key()).expect("HMAC takes any key length");
    mac.update(purpose.as_bytes());
    mac.update(b":");
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// An HMAC-SHA256 of `text` (in its `purpose`'s domain) under the log key, for short-lived
/// pseudonyms (burst counters of a window); durable lookups use `marker_hash`.
pub fn keyed_hash(purpose: &str, text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(log_key()).expect("HMAC takes any key length");
    mac.update(purpose.as_bytes());
    mac.update(b":");
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

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

    /// A stable pseudonym for correlating log lines and metrics without the number itself. Keyed,
    /// because phone numbers are few enough that an unkeyed hash is reversed by enumeration.
    pub fn log_id(&self) -> String {
        self.log_id_with_key(log_key())
    }

    /// The whole HMAC-SHA256 of the number under the marker key: what a deletion marker and its
    /// proof keep instead of the number.
    pub fn subject_id(&self) -> String {
        marker_hash("subject", &self.0)
    }

    /// `log_id` under an explicit key (HMAC-SHA256, first 8 bytes as hex).
    pub fn log_id_with_key(&self, key: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(self.0.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    /// The number's region (ISO 3166 alpha-2), e.g. `US` or `CA` for +1.
    pub fn region(&self) -> Option<String> {
        let number = phonenumber::parse(None, &self.0).ok()?;
        number.country().id().map(|id| format!("{id:?}"))
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
    fn log_ids_are_keyed() {
        use sha2::Digest;
        let p = Phone::parse("+14155552671", None).unwrap();
        let a = p.log_id_with_key(b"deployment-a-key-0123456789");
        assert_eq!(a, p.log_id_with_key(b"deployment-a-key-0123456789"));
        assert_ne!(a, p.log_id_with_key(b"deployment-b-key-0123456789"));
        assert_eq!(a.len(), 16);
        let unkeyed = hex::encode(&Sha256::digest(p.as_str().as_bytes())[..8]);
        let old = hex::encode(&Sha256::digest(format!("callfy-log:{}", p.as_str()).as_bytes())[..8]);
        assert!(a != unkeyed && a != old);

        // Whatever key the process holds, repeated calls never panic and the id stays stable.
        set_log_key(LOCAL_LOG_KEY.as_bytes());
        set_log_key(b"a-second-key-is-ignored");
        assert_eq!(p.log_id(), p.log_id_with_key(log_key()));
        assert_eq!(p.log_id(), p.log_id());
        assert_ne!(p.log_id(), unkeyed);
    }

    #[test]
    fn deserialises_only_e164() {
        assert!(serde_json::from_str::<Phone>("\"+14155552671\"").is_ok());
        assert!(serde_json::from_str::<Phone>("\"4155552671\"").is_err());
    }
}
