//! Whom a data-subject deletion was about, as its marker and proof keep it: an HMAC under the
//! marker key (which never rotates), never the number, email or id itself.

use crate::domain::phone::{Phone, marker_hash};

/// The key of a person's deletion marker: a phone, an email (trimmed, lower-cased) or a
/// platform customer id, each HMAC'd in its own domain. A checkout naming any key deleted after
/// the checkout was made is from before the deletion, and is not stored again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectKey(String);

impl SubjectKey {
    pub fn phone(p: &Phone) -> Self {
        Self(p.subject_id())
    }

    pub fn email(e: &str) -> Self {
        Self(format!("email:{}", marker_hash("email", &e.trim().to_lowercase())))
    }

    /// Trimmed and lower-cased, as the customer-id pointer is keyed.
    pub fn customer(id: &str) -> Self {
        Self(format!("customer:{}", marker_hash("customer", &id.trim().to_lowercase())))
    }

    /// Every key a checkout names: its number, its email and its platform customer id.
    pub fn of_checkout(phone: Option<&Phone>, email: Option<&str>, customer_id: Option<&str>) -> Vec<Self> {
        let mut keys: Vec<Self> = phone.map(Self::phone).into_iter().collect();
        keys.extend(email.filter(|e| !e.trim().is_empty()).map(Self::email));
        keys.extend(customer_id.filter(|c| !c.trim().is_empty()).map(Self::customer));
        keys
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_is_keyed_as_the_person_typed_it_in_any_case() {
        assert_eq!(SubjectKey::email(" Ann@Example.com "), SubjectKey::email("ann@example.com"));
    }

    #[test]
    fn each_kind_has_its_own_domain_and_no_key_holds_its_value() {
        let p = Phone::parse("+14155550100", None).unwrap();
        let keys = SubjectKey::of_checkout(Some(&p), Some("ann@example.com"), Some("14155550100"));
        assert_eq!(keys.len(), 3);
        assert_ne!(keys[2], SubjectKey::email("14155550100"));
        for k in &keys {
            assert!(!k.as_str().contains("4155550100") && !k.as_str().contains("ann"), "{k:?}");
        }
        assert_eq!(SubjectKey::of_checkout(None, Some("  "), Some("")), Vec::new());
    }
}
