//! A shopper's checkout as Callfy keeps it: normalised from any platform.

use crate::domain::ids::{CartToken, MerchantId};
use crate::domain::phone::Phone;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Orders placed this long after our last message are still credited to Callfy.
pub const ATTRIBUTION_WINDOW_DAYS: i64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CartStatus {
    Open,
    /// Checkout completed on the platform.
    Completed,
    /// A matching order arrived.
    Recovered,
    Deleted,
}

impl CartStatus {
    /// As stored (serde's snake_case), for conditions on it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Completed => "completed",
            Self::Recovered => "recovered",
            Self::Deleted => "deleted",
        }
    }

    pub fn is_closed(self) -> bool {
        !matches!(self, Self::Open)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    pub order_id: String,
    /// Money as the platform's decimal string, never a float.
    pub revenue: String,
    pub currency: String,
    pub recovered_at: DateTime<Utc>,
    /// True when the order came within the attribution window of a message we sent.
    pub attributed: bool,
}

/// What a platform told us about a checkout, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSnapshot {
    pub token: CartToken,
    pub checkout_id: Option<String>,
    pub phone: Option<Phone>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub recovery_url: Option<String>,
    pub total_price: Option<String>,
    pub currency: Option<String>,
    pub item_count: u32,
    pub province_code: Option<String>,
    pub country_code: Option<String>,
    pub locale: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub completed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    pub merchant_id: MerchantId,
    pub token: CartToken,
    #[serde(default)]
    pub checkout_id: Option<String>,
    #[serde(default)]
    pub phone: Option<Phone>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub recovery_url: Option<String>,
    #[serde(default)]
    pub total_price: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub item_count: u32,
    #[serde(default)]
    pub province_code: Option<String>,
    #[serde(default)]
    pub country_code: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    pub status: CartStatus,
    pub created_at: DateTime<Utc>,
    /// The platform's last update: flow steps are due relative to it.
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub outreach_scheduled: bool,
    #[serde(default)]
    pub last_message_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub recovery: Option<Recovery>,
    /// Why the latest checkout's consent signal was not applied (`opted_out_later`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_note: Option<String>,
    /// Optimistic-locking counter, bumped on every write.
    #[serde(default)]
    pub version: u64,
}

impl Cart {
    pub fn new(merchant_id: MerchantId, snap: CheckoutSnapshot, now: DateTime<Utc>) -> Self {
        let mut cart = Self {
            merchant_id,
            token: snap.token.clone(),
            checkout_id: None,
            phone: None,
            email: None,
            first_name: None,
            recovery_url: None,
            total_price: None,
            currency: None,
            item_count: 0,
            province_code: None,
            country_code: None,
            locale: None,
            status: CartStatus::Open,
            created_at: now,
            updated_at: snap.updated_at,
            outreach_scheduled: false,
            last_message_at: None,
            recovery: None,
            consent_note: None,
            version: 0,
        };
        cart.absorb(snap);
        cart
    }

    /// Applies a newer snapshot; an older one (out-of-order delivery) changes nothing but can
    /// still complete the cart.
    pub fn absorb(&mut self, snap: CheckoutSnapshot) {
        if snap.completed && self.status == CartStatus::Open {
            self.status = CartStatus::Completed;
        }
        if snap.updated_at < self.updated_at {
            return;
        }
        self.updated_at = snap.updated_at;
        self.checkout_id = snap.checkout_id.or(self.checkout_id.take());
        self.phone = snap.phone.or(self.phone.take());
        self.email = snap.email.or(self.email.take());
        self.first_name = snap.first_name.or(self.first_name.take());
        self.recovery_url = snap.recovery_url.or(self.recovery_url.take());
        self.total_price = snap.total_price.or(self.total_price.take());
        self.currency = snap.currency.or(self.currency.take());
        self.item_count = snap.item_count;
        self.province_code = snap.province_code.or(self.province_code.take());
        self.country_code = snap.country_code.or(self.country_code.take());
        self.locale = snap.locale.or(self.locale.take());
    }

    /// Records a matching order; a cart recovers once.
    pub fn recover(&mut self, order_id: String, revenue: String, currency: String, now: DateTime<Utc>) -> bool {
        if self.status == CartStatus::Recovered {
            return false;
        }
        let attributed = self
            .last_message_at
            .is_some_and(|sent| now >= sent && now - sent <= Duration::days(ATTRIBUTION_WINDOW_DAYS));
        self.status = CartStatus::Recovered;
        self.recovery = Some(Recovery { order_id, revenue, currency, recovered_at: now, attributed });
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn snapshot(updated_at: &str) -> CheckoutSnapshot {
        CheckoutSnapshot {
            token: CartToken::parse("tok1").unwrap(),
            checkout_id: Some("123".into()),
            phone: Some(Phone::parse("+14155552671", None).unwrap()),
            email: None,
            first_name: Some("Ann".into()),
            recovery_url: Some("https://shop.test/recover/1".into()),
            total_price: Some("20.00".into()),
            currency: Some("USD".into()),
            item_count: 1,
            province_code: Some("CA".into()),
            country_code: Some("US".into()),
            locale: None,
            updated_at: updated_at.parse().unwrap(),
            completed: false,
        }
    }

    #[test]
    fn newer_snapshots_win_and_older_ones_are_ignored() {
        let now = "2026-06-01T12:00:00Z".parse().unwrap();
        let mut cart = Cart::new(MerchantId::parse("m1").unwrap(), snapshot("2026-06-01T11:00:00Z"), now);
        let mut newer = snapshot("2026-06-01T11:30:00Z");
        newer.total_price = Some("35.00".into());
        newer.first_name = None;
        cart.absorb(newer);
        assert_eq!(cart.total_price.as_deref(), Some("35.00"));
        assert_eq!(cart.first_name.as_deref(), Some("Ann"), "missing fields keep what we knew");

        let mut older = snapshot("2026-06-01T10:00:00Z");
        older.total_price = Some("1.00".into());
        cart.absorb(older);
        assert_eq!(cart.total_price.as_deref(), Some("35.00"));
        assert_eq!(cart.updated_at, "2026-06-01T11:30:00Z".parse::<DateTime<Utc>>().unwrap());
    }

    #[test]
    fn status_names_match_what_serde_stores() {
        for st in [CartStatus::Open, CartStatus::Completed, CartStatus::Recovered, CartStatus::Deleted] {
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
    }

    #[test]
    fn completion_closes_the_cart_even_out_of_order() {
        let now = "2026-06-01T12:00:00Z".parse().unwrap();
        let mut cart = Cart::new(MerchantId::parse("m1").unwrap(), snapshot("2026-06-01T11:00:00Z"), now);
        let mut done = snapshot("2026-06-01T10:00:00Z");
        done.completed = true;
        cart.absorb(done);
        assert_eq!(cart.status, CartStatus::Completed);
    }

    #[test]
    fn recovery_is_attributed_only_within_the_window() {
        let now: DateTime<Utc> = "2026-06-10T12:00:00Z".parse().unwrap();
        let mut cart = Cart::new(MerchantId::parse("m1").unwrap(), snapshot("2026-06-01T11:00:00Z"), now);
        assert!(cart.recover("o1".into(), "20.00".into(), "USD".into(), now));
        assert!(!cart.recovery.as_ref().unwrap().attributed, "no message sent");
        assert!(!cart.recover("o1".into(), "20.00".into(), "USD".into(), now), "recovers once");

        let mut cart = Cart::new(MerchantId::parse("m1").unwrap(), snapshot("2026-06-01T11:00:00Z"), now);
        cart.last_message_at = Some(now - Duration::days(2));
        cart.recover("o2".into(), "20.00".into(), "USD".into(), now);
        assert!(cart.recovery.unwrap().attributed);

        let mut cart = Cart::new(MerchantId::parse("m1").unwrap(), snapshot("2026-06-01T11:00:00Z"), now);
        cart.last_message_at = Some(now - Duration::days(6));
        cart.recover("o3".into(), "20.00".into(), "USD".into(), now);
        assert!(!cart.recovery.unwrap().attributed);
    }
}
