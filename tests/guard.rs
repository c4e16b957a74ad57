//! The SMS-pumping guard through callfy-local: destination countries, burst limits per shopper
//! IP and per number prefix on webhook-created carts, and the merchant's daily send budget,
//! each refusal recorded on the cart or step with its reason and counted in a metric.

use callfy_integration_tests::*;
use callfy_shared::domain::flow::SkipReason;
use callfy_shared::{CartToken, ManualClock, MerchantId};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::sync::Arc;

fn t0() -> DateTime<Utc> {
    "2026-11-28T19:00:00Z".parse().unwrap()
}

/// A consented checkout from `phone` at `ip`, with its own token.
fn checkout_from(phone: &str, ip: &str) -> (String, Value) {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let mut c = checkout(t0());
    c["token"] = token.clone().into();
    c["id"] = (rand_id()).into();
    c["phone"] = phone.into();
    c["customer"]["phone"] = phone.into();
    c["shipping_address"]["phone"] = phone.into();
    c["billing_address"]["phone"] = phone.into();
    if c.get("sms_marketing_phone").is_some() {
        c["sms_marketing_phone"] = phone.into();
    }
    c["client_details"] = json!({ "browser_ip": ip, "user_agent": "Mozilla/5.0" });
    (token, c)
}

fn rand_id() -> u64 {
    u64::from_str_radix(&uuid::Uuid::new_v4().simple().to_string()[..12], 16).unwrap()
}

async fn refused(local: &callfy_local::LocalHandle, token: &str) -> Option<String> {
    let m = MerchantId::parse("snowdevil").unwrap();
    let cart = local.store().get_cart(&m, &CartToken::parse(token).unwrap()).await.unwrap().unwrap();
    cart.outreach_refused
}

#[tokio::test]
async fn numbers_outside_the_merchants_countries_get_nothing() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("guard-country", clock, &merchant(|_| {})).await;
    let logs = LogCapture::default();
    let _guard = logs.install();
    // A Lithuanian mobile on a US store: refused. A Canadian number: the US default allows it.
    let (lt, body) = checkout_from("+37061234567", "198.51.100.7");
    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &body).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    let (ca, body) = checkout_from("+16135550123", "198.51.100.8");
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &body).await.0, 200);
    local.drain().await.unwrap();
    assert_eq!(refused(&local, &lt).await.as_deref(), Some("destination_country"));
    assert_eq!(refused(&local, &ca).await, None);
    let sent: Vec<String> = local.sandbox.messages().into_iter().map(|m| m.to).collect();
    assert_eq!(sent, vec!["+16135550123".to_string()]);
    assert_eq!(logs.metric("CartsRefused"), vec![(1.0, Some("destination_country".into()))]);
    assert!(!logs.text().contains("37061234567"), "the refused number reached the logs");
    local.shutdown().await;
}

#[tokio::test]
async fn bursts_per_ip_and_per_prefix_are_refused_and_redeliveries_do_not_count() {
    let clock = Arc::new(ManualClock::new(t0()));
    let guard = json!({ "carts_per_ip": 2, "carts_per_prefix": 3, "burst_window_minutes": 60 });
    let local = start_local("guard-burst", clock, &merchant(|v| v["send_guard"] = guard)).await;
    // One IP, three numbers in different exchanges: the third cart is refused. Redelivering
    // the first changes no count.
    let mut tokens = Vec::new();
    for (i, phone) in ["+14155552671", "+12125550147", "+13125550199"].into_iter().enumerate() {
        let (token, body) = checkout_from(phone, "203.0.113.9");
        let event = unique("evt");
        assert_eq!(post_shopify(&local.base_url, "checkouts/create", &event, &body).await.0, 200);
        if i == 0 {
            assert_eq!(post_shopify(&local.base_url, "checkouts/create", &event, &body).await.1["status"], "duplicate");
        }
        tokens.push(token);
    }
    assert_eq!(refused(&local, &tokens[0]).await, None);
    assert_eq!(refused(&local, &tokens[1]).await, None);
    assert_eq!(refused(&local, &tokens[2]).await.as_deref(), Some("burst_ip"));

    // Many IPs walking one exchange (+1 646 555 xxxx): the fourth is refused.
    let mut walked = Vec::new();
    for (i, last) in ["0101", "0102", "0103", "0104"].into_iter().enumerate() {
        let (token, body) = checkout_from(&format!("+1646555{last}"), &format!("192.0.2.{}", 10 + i));
        assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &body).await.0, 200);
        walked.push(token);
    }
    for t in &walked[..3] {
        assert_eq!(refused(&local, t).await, None);
    }
    assert_eq!(refused(&local, &walked[3]).await.as_deref(), Some("burst_prefix"));
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), 5, "two from the IP, three from the exchange");
    local.shutdown().await;
}

/// The budget is counted inside the claim's transaction: four carts claimed at once against a
/// budget of two send exactly two messages; the others are skipped with the reason.
#[tokio::test]
async fn the_daily_budget_holds_under_concurrent_claims() {
    let clock = Arc::new(ManualClock::new(t0()));
    let guard = json!({ "daily_send_budget": 2 });
    let local = start_local("guard-budget", clock, &merchant(|v| v["send_guard"] = guard)).await;
    let logs = LogCapture::default();
    let _guard = logs.install();
    let phones = ["+14155550101", "+12125550102", "+13125550103", "+16175550104"];
    let mut tokens = Vec::new();
    for (i, phone) in phones.into_iter().enumerate() {
        let (token, body) = checkout_from(phone, &format!("198.51.100.{}", 20 + i));
        assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &body).await.0, 200);
        tokens.push(token);
    }
    // All four jobs arrive in one batch and are processed concurrently.
    local.drain().await.unwrap();
    assert_eq!(local.sandbox.messages().len(), 2);
    let m = MerchantId::parse("snowdevil").unwrap();
    let mut skipped = 0;
    for t in &tokens {
        let step = local.store().get_step(&m, &CartToken::parse(t).unwrap(), 0).await.unwrap().unwrap();
        if step.reason.as_deref() == Some(SkipReason::DailyBudget.as_str()) {
            skipped += 1;
        }
    }
    assert_eq!(skipped, 2);
    assert_eq!(logs.metric("SendsRefused"), vec![(1.0, Some("daily_budget".into())); 2]);
    local.shutdown().await;
}

/// The day's count is sharded over several items (no one hot item for a large merchant's sends),
/// and still exact: 50 claims of 50 carts (50 people) at once against a budget of 20 give
/// exactly 20 claims and 30 `BudgetSpent`, and every shard ends at its share.
#[tokio::test]
async fn fifty_concurrent_claims_against_a_sharded_budget_of_twenty_claim_exactly_twenty() {
    use callfy_shared::Phone;
    use callfy_shared::adapters::store::{ClaimGuard, ClaimOutcome, ConsentAppend, IngestWrite, StepAvailability};
    use callfy_shared::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, Evidence};
    use callfy_shared::domain::guard::{BudgetShards, budget_day};
    use callfy_shared::domain::merchant::Channel;

    let clock = Arc::new(ManualClock::new(t0()));
    let merchant = merchant(|v| v["send_guard"] = json!({ "daily_send_budget": 20 }));
    let local = start_local("guard-budget50", clock, &merchant).await;
    let (m, store) = (merchant.id.clone(), local.store());
    let mut guards = Vec::new();
    for i in 0..50 {
        let phone = Phone::parse(&format!("+1415555{:04}", 3000 + i), None).unwrap();
        let token = CartToken::parse(&unique("tok")).unwrap();
        let cart = callfy_local::fixtures::demo_cart(&m, token.clone(), phone.clone(), t0());
        let event = ConsentEvent {
            channel: Channel::Sms,
            action: ConsentAction::OptIn,
            source: ConsentSource::Checkout,
            occurred_at: t0(),
            recorded_at: t0(),
            evidence: Evidence::default(),
        };
        let consent = ConsentAppend {
            merchant_id: m.clone(),
            phone: phone.clone(),
            state: Default::default(),
            event,
            purge_at: t0() + chrono::Duration::days(730),
        };
        let write = IngestWrite {
            deletions_seen: Vec::new(),
            merchant_id: m.clone(),
            event_key: unique("budget50"),
            received_at: t0(),
            cart: Some((cart, None)),
            consents: vec![consent],
        };
        store.write_ingest(&write).await.unwrap();
        let consent_seq = store.consent_state(&m, &phone, Channel::Sms).await.unwrap().seq;
        guards.push(ClaimGuard {
            merchant_id: m.clone(),
            cart: token,
            step: 0,
            phone,
            channel: Channel::Sms,
            cart_version: 1,
            consent_seq,
            step_seen: StepAvailability::Fresh,
            counter: Default::default(),
            reach_at: None,
            daily_budget: 20,
        });
    }

    // Every claim at once, each with its own id (so they start on different shards).
    let ids: Vec<String> = guards.iter().map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let claims = guards.iter().zip(&ids).map(|(g, id)| store.claim(g, id, "body", t0()));
    let outcomes = futures::future::join_all(claims).await;
    let claimed = outcomes.iter().filter(|o| matches!(o, Ok(ClaimOutcome::Claimed { .. }))).count();
    let spent = outcomes.iter().filter(|o| matches!(o, Ok(ClaimOutcome::BudgetSpent))).count();
    assert_eq!((claimed, spent), (20, 30), "{outcomes:?}");
    let counts = store.budget_counts(&m, &budget_day(t0())).await.unwrap();
    let shards = BudgetShards::new(20);
    assert_eq!(counts.len() as u32, shards.count(), "the count is spread over every shard");
    for (shard, sends) in &counts {
        assert_eq!(*sends, u64::from(shards.share(*shard)), "shard {shard} ends at its share");
    }
    local.shutdown().await;
}
