//! The demo shopper's cart, for tests and the benchmark: one opted-in checkout of the demo
//! merchant, as ingest would store it (version 1).

use callfy_shared::domain::cart::{Cart, CartItem, CheckoutSnapshot};
use callfy_shared::{CartToken, MerchantId, Phone};
use chrono::{DateTime, Utc};

pub fn demo_cart(merchant: &MerchantId, token: CartToken, phone: Phone, at: DateTime<Utc>) -> Cart {
    let snap = CheckoutSnapshot {
        token,
        checkout_id: Some("42".into()),
        customer_id: None,
        phone: Some(phone),
        email: Some("ann@example.com".into()),
        first_name: Some("Ann".into()),
        recovery_url: Some("https://snowdevil.myshopify.com/r/abc".into()),
        total_price: Some("1.00".into()),
        currency: Some("USD".into()),
        item_count: 1,
        items: CartItem::new("Wax Puck", 1).into_iter().collect(),
        province_code: None,
        country_code: Some("US".into()),
        locale: None,
        updated_at: at,
        completed: false,
        attributes: Vec::new(),
    };
    let mut cart = Cart::new(merchant.clone(), snap, at);
    cart.version = 1;
    cart
}
