//! Our own recovery links, `GET /r/{code}`, through `callfy-local` over real HTTP: a BigCommerce
//! cart's text links to our redirect, which makes a fresh single-use URL through the (stand-in)
//! store API at every click; other platforms keep the store's URL unless the merchant counts
//! clicks; every click is counted and reaches the report; an unknown code is 404 and a store
//! API outage a 503 page.

use callfy_integration_tests::*;
use callfy_local::LocalHandle;
use callfy_shared::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, Evidence};
use callfy_shared::domain::link::{CODE_LEN, LinkCode};
use callfy_shared::domain::merchant::{Channel, Merchant};
use callfy_shared::{ManualClock, MerchantId, Phone};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use std::sync::Arc;

fn t0() -> DateTime<Utc> {
    "2026-11-28T19:00:00Z".parse().unwrap()
}

const BC: &str = "events/demo-merchant-bigcommerce.json";

/// Follows no redirect: the test reads each 302 itself.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// `(status, Location, body)` of one click.
async fn click(local: &LocalHandle, url: &str) -> (u16, Option<String>, String) {
    assert!(url.starts_with(&local.base_url), "{url}");
    let resp = browser().get(url).send().await.expect("local runner answers");
    let status = resp.status().as_u16();
    let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, location, resp.text().await.unwrap_or_default())
}

/// Our link in a text body, and its code.
fn our_link(local: &LocalHandle, body: &str) -> (String, LinkCode) {
    let prefix = format!("{}/r/", local.base_url);
    let at = body.find(&prefix).unwrap_or_else(|| panic!("no {prefix} in {body}")) + prefix.len();
    let code = LinkCode::parse(&body[at..at + CODE_LEN]).expect("a well-formed code");
    (format!("{prefix}{code}"), code)
}

#[tokio::test]
async fn bigcommerce_link_gets_a_fresh_store_url_at_every_click_and_counts_each() {
    let clock = Arc::new(ManualClock::new(t0()));
    let m = Merchant::from_json(&read_json(BC).to_string()).unwrap();
    let local = start_local("links-bc", clock.clone(), &m).await;
    let mid = MerchantId::parse("snowdevil-bc").unwrap();
    let phone = Phone::parse(PHONE, None).unwrap();
    let consent = ConsentEvent {
        channel: Channel::Sms,
        action: ConsentAction::OptIn,
        source: ConsentSource::Api,
        occurred_at: t0() - Duration::hours(6),
        recorded_at: t0(),
        evidence: Evidence { consent_text: Some("Text me about my cart".into()), ..Default::default() },
    };
    local.store().record_consent(&mid, &phone, &consent, t0() + Duration::days(730)).await.unwrap();
    let body = serde_json::to_vec(&read_json("events/bigcommerce/cart-abandoned.json")).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/webhooks/bigcommerce/snowdevil-bc", local.base_url))
        .header("content-type", "application/json")
        .header("x-callfy-secret", m.webhook_secret.clone().unwrap().to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    local.drain().await.unwrap();
    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(!sent[0].body.contains("loadInCheckout"), "no single-use store URL in the text: {}", sent[0].body);
    let (url, code) = our_link(&local, &sent[0].body);

    // Two clicks: two store API calls, two fresh URLs, two clicks counted.
    let made = local.bigcommerce.redirects_made();
    let (s1, first, _) = click(&local, &url).await;
    let (s2, second, _) = click(&local, &url).await;
    assert_eq!((s1, s2), (302, 302));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_ne!(first, second, "each click gets its own single-use URL");
    assert!(first.contains("token=fresh") && first.contains("utm_source=callfy"), "{first}");
    assert_eq!(local.bigcommerce.redirects_made(), made + 2);
    let link = local.store().find_link(&code).await.unwrap().unwrap();
    assert_eq!((link.clicks, link.step, link.channel), (2, 0, Channel::Sms));
    assert!(!serde_json::to_string(&link).unwrap().contains(PHONE), "no personal data on the link");

    // The report shows them, by step and channel.
    let report = callfy_admin::report::gather(local.store(), &mid, None, t0(), &mut |_| {}).await.unwrap();
    assert_eq!(report.clicks, 2);
    assert_eq!(report.by_step[0].clicks, 2);
    assert_eq!(report.by_channel[0].clicks, 2);
    let table = callfy_admin::report::render_table(&report);
    assert!(table.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Step", "1", "SMS", "2"]), "{table}");

    // Unknown or malformed codes: 404, nothing asked of the store.
    for bad in ["ZZZZZZZZZZZ", "short", "not-a-code!"] {
        let (status, location, page) = click(&local, &format!("{}/r/{bad}", local.base_url)).await;
        assert_eq!((status, location), (404, None), "{bad}: {page}");
    }
    assert_eq!(local.bigcommerce.redirects_made(), made + 2);

    // The store API is down: a clear 503 page, no personal data, nothing cached.
    local.bigcommerce.fail_next(1);
    let (status, location, page) = click(&local, &url).await;
    assert_eq!((status, location), (503, None), "{page}");
    assert!(page.contains("try the link again") && !page.contains(PHONE) && !page.contains("Ann"), "{page}");
    local.shutdown().await;
}

/// A Shopify checkout's text with merchant `m`, and the checkout's own recovery URL.
async fn shopify_text(prefix: &str, m: &Merchant) -> (LocalHandle, String, String) {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local(prefix, clock, m).await;
    let body = checkout(t0());
    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &body).await;
    assert_eq!(status, 200, "{answer}");
    local.drain().await.unwrap();
    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let store_url = body["abandoned_checkout_url"].as_str().unwrap().to_string();
    (local, sent[0].body.clone(), store_url)
}

#[tokio::test]
async fn other_platforms_keep_the_store_url_unless_the_merchant_tracks_clicks() {
    // Default: the store's own URL, no redirect of ours.
    let (local, text, store_url) = shopify_text("links-off", &merchant(|_| {})).await;
    assert!(text.contains(&store_url) && !text.contains(&format!("{}/r/", local.base_url)), "{text}");
    local.shutdown().await;

    // `links.track_clicks`: our link in the text, a 302 to the cart's recovery URL, counted.
    let m = merchant(|v| v["links"] = json!({ "track_clicks": true }));
    let (local, text, store_url) = shopify_text("links-on", &m).await;
    assert!(!text.contains(&store_url), "{text}");
    let (url, code) = our_link(&local, &text);
    let (status, location, _) = click(&local, &url).await;
    assert_eq!(status, 302);
    let location = location.unwrap();
    assert!(location.starts_with(&store_url) && location.contains("utm_medium=sms"), "{location}");
    assert_eq!(local.store().find_link(&code).await.unwrap().unwrap().clicks, 1);
    let report = callfy_admin::report::gather(local.store(), &m.id, None, t0(), &mut |_| {}).await.unwrap();
    assert_eq!((report.clicks, report.by_step[0].clicks), (1, 1));
    assert_eq!(local.bigcommerce.redirects_made(), 0, "only BigCommerce carts ask the store for a URL");
    local.shutdown().await;
}
