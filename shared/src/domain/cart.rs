//! A shopper's checkout as Callfy keeps it: normalised from any platform.

use crate::domain::ids::{CartToken, MerchantId};
use crate::domain::merchant::Channel;
use crate::domain::phone::Phone;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// At most this many line items are kept for the message's item summary.
pub const MAX_ITEMS: usize = 10;
const MAX_ITEM_TITLE_CHARS: usize = 80;

/// One line of the cart, for the item summary in messages and calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartItem {
    pub title: String,
    pub quantity: u32,
}

impl CartItem {
    /// A line item as the platform sent it; a blank title is no item.
    pub fn new(title: &str, quantity: u32) -> Option<Self> {
        let title: String = title.split_whitespace().collect::<Vec<_>>().join(" ");
        let title: String = title.chars().take(MAX_ITEM_TITLE_CHARS).collect();
        (!title.is_empty()).then(|| Self { title, quantity: quantity.max(1) })
    }
}

/// The last message or call the flow made for a cart: what a recovery is attributed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touch {
    pub step: u8,
    pub channel: Channel,
    pub at: DateTime<Utc>,
}

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
    /// The step and channel that preceded the recovery (last touch), when attributed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub touch: Option<Touch>,
}

/// What a platform customer id is looked up by, beside an email: `customer:{id}` (no email has
/// that shape), so a `customers/redact` finds the carts its customer id names.
pub fn customer_ref(id: &str) -> String {
    format!("customer:{id}")
}

/// What a platform told us about a checkout, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSnapshot {
    pub token: CartToken,
    pub checkout_id: Option<String>,
    /// The platform's customer id (Shopify's), so `customers/redact` finds the carts by it.
    pub customer_id: Option<String>,
    pub phone: Option<Phone>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub recovery_url: Option<String>,
    pub total_price: Option<String>,
    pub currency: Option<String>,
    pub item_count: u32,
    pub items: Vec<CartItem>,
    pub province_code: Option<String>,
    pub country_code: Option<String>,
    pub locale: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub completed: bool,
    /// Checkout attributes (Shopify `note_attributes`), for merchant-configured consent fields.
    pub attributes: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    pub merchant_id: MerchantId,
    pub token: CartToken,
    #[serde(default)]
    pub checkout_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<CartItem>,
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
    /// Step 0's job is on the queue (set after the queue took it): a delivery's copy then
    /// knows the attempt that scheduled it did not die before queuing it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_step_queued: bool,
    #[serde(default)]
    pub last_message_at: Option<DateTime<Utc>>,
    /// The step and channel of the last message or call, set with `last_message_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_touch: Option<Touch>,
    #[serde(default)]
    pub recovery: Option<Recovery>,
    /// Why the latest checkout's consent signal was not applied (`opted_out_later`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_note: Option<String>,
    /// Why outreach was refused for this cart by the pumping guard (`destination_country`,
    /// `burst_ip`, `burst_prefix`); a refused cart is never scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outreach_refused: Option<String>,
    /// Optimistic-locking counter, bumped on every write.
    #[serde(default)]
    pub version: u64,
    /// When retention purges the cart with its steps and pointer (`retention_days.carts` after
    /// its last update); set by ingest on every write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_at: Option<DateTime<Utc>>,
}

impl Cart {
    pub fn new(merchant_id: MerchantId, snap: CheckoutSnapshot, now: DateTime<Utc>) -> Self {
        let mut cart = Self {
            merchant_id,
            token: snap.token.clone(),
            checkout_id: None,
            customer_id: None,
            phone: None,
            email: None,
            first_name: None,
            recovery_url: None,
            total_price: None,
            currency: None,
            item_count: 0,
            items: Vec::new(),
            province_code: None,
            country_code: None,
            locale: None,
            status: CartStatus::Open,
            created_at: now,
            updated_at: snap.updated_at,
            outreach_scheduled: false,
            first_step_queued: false,
            last_message_at: None,
            last_touch: None,
            recovery: None,
            consent_note: None,
            outreach_refused: None,
            version: 0,
            purge_at: None,
        };
        cart.absorb(snap);
        cart
    }

    /// A cart known only by a platform's word that it closed (an order, a deletion) before its
    /// checkout reached us: kept so that the checkout, arriving late (a queued copy, a
    /// platform's retry), fills it in but cannot open it. Dated as older than any checkout.
    pub fn unseen(merchant_id: MerchantId, token: CartToken, now: DateTime<Utc>) -> Self {
        let snap = CheckoutSnapshot {
            token,
            checkout_id: None,
            customer_id: None,
            phone: None,
            email: None,
            first_name: None,
            recovery_url: None,
            total_price: None,
            currency: None,
            item_count: 0,
            items: Vec::new(),
            province_code: None,
            country_code: None,
            locale: None,
            updated_at: DateTime::UNIX_EPOCH,
            completed: false,
            attributes: Vec::new(),
        };
        Self::new(merchant_id, snap, now)
    }

    /// Whether nothing of this cart's checkout has reached us yet (`unseen`): not an abandoned
    /// cart, whatever a report counts.
    pub fn is_unseen(&self) -> bool {
        self.updated_at == DateTime::UNIX_EPOCH
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
        self.customer_id = snap.customer_id.or(self.customer_id.take());
        self.phone = snap.phone.or(self.phone.take());
        self.email = snap.email.or(self.email.take());
        self.first_name = snap.first_name.or(self.first_name.take());
        self.recovery_url = snap.recovery_url.or(self.recovery_url.take());
        self.total_price = snap.total_price.or(self.total_price.take());
        self.currency = snap.currency.or(self.currency.take());
        self.item_count = snap.item_count;
        self.items = snap.items.into_iter().take(MAX_ITEMS).collect();
        self.province_code = snap.province_code.or(self.province_code.take());
        self.country_code = snap.country_code.or(self.country_code.take());
        self.locale = snap.locale.or(self.locale.take());
    }

    /// Sets when retention purges this cart: `days` after its last update, and never before
    /// `now` (a late or back-dated update must not land where the purger has already been).
    pub fn keep_for(&mut self, days: u32, now: DateTime<Utc>) {
        // A cart known only by its closing (`unseen`) counts from when we heard of it, so it
        // outlives the platform's retries of its checkout.
        let last = if self.is_unseen() { self.created_at } else { self.updated_at };
        self.purge_at = Some((last + Duration::days(i64::from(days))).max(now));
    }

    /// Records a matching order; a cart recovers once. It is attributed to the last message or
    /// call when the order came within `window_days` of it.
    pub fn recover(
        &mut self,
        order_id: String,
        revenue: String,
        currency: String,
        window_days: u32,
        now: DateTime<Utc>,
    ) -> bool {
        if self.status == CartStatus::Recovered {
            return false;
        }
        let attributed = self
            .last_message_at
            .is_some_and(|sent| now >= sent && now - sent <= Duration::days(i64::from(window_days)));
        let touch = if attributed { self.last_touch.clone() } else { None };
        self.status = CartStatus::Recovered;
        self.recovery = Some(Recovery { order_id, revenue, currency, recovered_at: now, attributed, touch });
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
            customer_id: None,
            phone: Some(Phone::parse("+14155552671", None).unwrap()),
            email: None,
            first_name: Some("Ann".into()),
            recovery_url: Some("https://shop.test/recover/1".into()),
            total_price: Some("20.00".into()),
            currency: Some("USD".into()),
            item_count: 1,
            items: vec![CartItem::new("Wax Puck", 1).unwrap()],
            province_code: Some("CA".into()),
            country_code: Some("US".into()),
            locale: None,
            updated_at: updated_at.parse().unwrap(),
            completed: false,
            attributes: Vec::new(),
        }
    }

    #[test]
    fn a_cart_known_only_by_its_order_takes_its_late_checkout_and_stays_closed() {
        let now: DateTime<Utc> = "2026-06-01T12:00:00Z".parse().unwrap();
        let mut cart = Cart::unseen(MerchantId::parse("m1").unwrap(), CartToken::parse("tok1").unwrap(), now);
        assert!(cart.recover("1001".into(), "20.00".into(), "USD".into(), 7, now));
        cart.keep_for(30, now);
        assert_eq!(cart.purge_at, Some(now + Duration::days(30)), "from when we heard of it");
        assert!(cart.is_unseen());
        cart.absorb(snapshot("2026-06-01T11:00:00Z"));
        assert!(!cart.is_unseen());
        assert_eq!(cart.status, CartStatus::Recovered);
        assert_eq!(cart.first_name.as_deref(), Some("Ann"), "the checkout fills it in");
        assert!(!cart.recovery.as_ref().unwrap().attributed);
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
        assert!(cart.recover("o1".into(), "20.00".into(), "USD".into(), 5, now));
        assert!(!cart.recovery.as_ref().unwrap().attributed, "no message sent");
        assert!(!cart.recover("o1".into(), "20.00".into(), "USD".into(), 5, now), "recovers once");

        let mut cart = Cart::new(MerchantId::parse("m1").unwrap(), snapshot("2026-06-01T11:00:00Z"), now);
        let call = Touch { step: 1, channel: Channel::Voice, at: now - Duration::days(2) };
        cart.last_message_at = Some(call.at);
        cart.last_touch = Some(call.clone());
        cart.recover("o2".into(), "20.00".into(), "USD".into(), 5, now);
        let recovery = cart.recovery.unwrap();
        assert!(recovery.attributed);
        assert_eq!(recovery.touch, Some(call), "the call that preceded the order is credited");

        let mut cart = Cart::new(MerchantId::parse("m1").unwrap(), snapshot("2026-06-01T11:00:00Z"), now);
        cart.last_message_at = Some(now - Duration::days(6));
        cart.recover("o3".into(), "20.00".into(), "USD".into(), 5, now);
        assert!(!cart.recovery.unwrap().attributed);

        // The merchant's own window: 7 days credits the same order.
        let mut cart = Cart::new(MerchantId::parse("m1").unwrap(), snapshot("2026-06-01T11:00:00Z"), now);
        cart.last_message_at = Some(now - Duration::days(6));
        cart.recover("o4".into(), "20.00".into(), "USD".into(), 7, now);
        assert!(cart.recovery.unwrap().attributed);
    }
}
