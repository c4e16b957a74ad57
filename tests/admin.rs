//! `callfy-admin dlq replay` and `callfy-admin report` against moto and the Twilio sandbox:
//! a dead-lettered step replayed and processed by the worker is sent once, and a replay of a
//! step already sent sends nothing; a dry run moves nothing; the report's figures equal a seeded
//! merchant's, in the table and in the HTML page as headless Chromium renders it.

use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use callfy_admin::dlq::{self, QueuePair};
use callfy_admin::report::{self, Report};
use callfy_integration_tests::*;
use callfy_local::LocalHandle;
use callfy_local::sandbox::{Fault, InboundRequest};
use callfy_shared::adapters::queue::{OutreachQueue, QueuedWork};
use callfy_shared::adapters::store::{ConsentAppend, IngestWrite};
use callfy_shared::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, Evidence};
use callfy_shared::domain::flow::{OutreachJob, SkipReason};
use callfy_shared::domain::merchant::{Channel, Merchant};
use callfy_shared::domain::voice::KeyOptOut;
use callfy_shared::{CartToken, ManualClock, MerchantId, Phone};
use chrono::{DateTime, Duration, Utc};
use outreach_worker::{JobOutcome, Processed};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

fn t0() -> DateTime<Utc> {
    // 11:00 in San Francisco (the shoppers' area code), 14:00 for the merchant.
    "2026-11-28T19:00:00Z".parse().unwrap()
}

fn snowdevil() -> MerchantId {
    MerchantId::parse("snowdevil").unwrap()
}

/// Stores a cart as ingest does, with the shopper's consent to texts (and calls).
async fn seed_cart(local: &LocalHandle, token: &CartToken, phone: Option<&Phone>, consents: &[Channel]) {
    let m = snowdevil();
    let fallback = Phone::parse(PHONE, None).unwrap();
    let mut cart = callfy_local::fixtures::demo_cart(&m, token.clone(), phone.unwrap_or(&fallback).clone(), t0());
    if phone.is_none() {
        cart.phone = None;
        cart.email = None;
    }
    let consents = phone
        .map(|phone| {
            consents
                .iter()
                .map(|&channel| ConsentAppend {
                    merchant_id: m.clone(),
                    phone: phone.clone(),
                    state: Default::default(),
                    event: ConsentEvent {
                        channel,
                        action: ConsentAction::OptIn,
                        source: ConsentSource::Checkout,
                        occurred_at: t0(),
                        recorded_at: t0(),
                        evidence: Evidence::default(),
                    },
                    purge_at: t0() + Duration::days(730),
                })
                .collect()
        })
        .unwrap_or_default();
    local
        .store()
        .write_ingest(&IngestWrite {
            deletions_seen: Vec::new(),
            merchant_id: m,
            event_key: unique("test"),
            received_at: t0(),
            cart: Some((cart, None)),
            consents,
        })
        .await
        .unwrap();
}

fn job(token: &CartToken, step: u8) -> OutreachJob {
    OutreachJob { merchant_id: snowdevil(), cart_token: token.clone(), step, due_at: t0() }
}

async fn run(local: &LocalHandle, token: &CartToken, step: u8) -> JobOutcome {
    outreach_worker::process_job(&local.functions().worker.outreach, &job(token, step)).await.unwrap()
}

fn sqs_client(sdk: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(sdk)
}

/// A received SQS message as Lambda hands it to the worker.
fn record(m: &aws_sdk_sqs::types::Message) -> SqsMessage {
    serde_json::from_value(json!({
        "messageId": m.message_id(), "body": m.body(), "attributes": {}, "messageAttributes": {},
    }))
    .expect("an SQS record")
}

async fn receive(sqs: &aws_sdk_sqs::Client, url: &str, visibility: i32) -> Vec<aws_sdk_sqs::types::Message> {
    sqs.receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .visibility_timeout(visibility)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
}

async fn visible(sqs: &aws_sdk_sqs::Client, url: &str) -> usize {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    attrs.attributes().unwrap()[&QueueAttributeName::ApproximateNumberOfMessages].parse().unwrap()
}

fn outreach_pair(local: &LocalHandle) -> QueuePair {
    QueuePair {
        name: "outreach-dlq",
        dlq_url: local.resources.dlq_url.clone(),
        source_url: local.resources.queue_url.clone(),
    }
}

async fn replay(local: &LocalHandle, dry_run: bool) -> (dlq::ReplaySummary, String) {
    let sqs = sqs_client(&sdk().await);
    let mut out = Vec::new();
    let summary = dlq::replay(&sqs, Some(local.store()), &outreach_pair(local), dry_run, &mut out).await.unwrap();
    (summary, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn a_dead_lettered_step_replayed_is_sent_once_and_a_replay_of_a_sent_step_sends_nothing() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local =
        start_local("adm-dlq", clock, &merchant(|v| v["flow"] = json!([{ "after_minutes": 0, "channel": "sms" }])))
            .await;
    let sqs = sqs_client(&sdk().await);
    let token = CartToken::parse(&unique("tok")).unwrap();
    let phone = Phone::parse(PHONE, None).unwrap();
    seed_cart(&local, &token, Some(&phone), &[Channel::Sms]).await;
    let queue = OutreachQueue::new(sqs.clone(), &local.resources.queue_url);
    queue.enqueue(&job(&token, 0), 0).await.unwrap();

    // Twilio answers 503 to every attempt: after maxReceiveCount failures SQS dead-letters it.
    for attempt in 0..callfy_local::resources::QUEUE.max_receive_count {
        let got = receive(&sqs, &local.resources.queue_url, 0).await;
        assert_eq!(got.len(), 1, "attempt {attempt} receives the job");
        local.sandbox.inject(Fault::error(503, 20500));
        assert!(outreach_worker::process_record(&local.functions().worker, &record(&got[0])).await.is_err());
    }
    assert!(receive(&sqs, &local.resources.queue_url, 0).await.is_empty(), "the job left the queue");
    assert_eq!(visible(&sqs, &local.resources.dlq_url).await, 1, "and waits in the dead-letter queue");
    assert!(local.sandbox.messages().is_empty());

    // A dry run lists it and leaves it there, visible.
    let (summary, out) = replay(&local, true).await;
    assert_eq!((summary.seen, summary.replayed), (1, 0), "{out}");
    assert!(out.contains(&format!("[1/1] flow step: merchant snowdevil, cart {token}, step 1 (sms)")), "{out}");
    assert!(out.contains("received "), "SQS's receive count is shown: {out}");
    assert_eq!(visible(&sqs, &local.resources.dlq_url).await, 1, "a dry run moves nothing: {out}");

    // The replay moves it back; the worker sends it, once.
    let (summary, out) = replay(&local, false).await;
    assert_eq!((summary.seen, summary.replayed, summary.left), (1, 1, 0), "{out}");
    assert!(out.contains(&format!("replayed 1/1: flow step: merchant snowdevil, cart {token}, step 1 (sms)")), "{out}");
    assert_eq!(visible(&sqs, &local.resources.dlq_url).await, 0);
    let stats = local.drain().await.unwrap();
    assert_eq!((stats.received, stats.failed), (1, 0));
    assert_eq!(local.sandbox.messages().len(), 1, "the replayed step is sent");
    assert_eq!(local.sandbox.messages()[0].to, PHONE);

    // The same step dead-lettered again (a stale duplicate), with a message attribute: the replay
    // keeps body and attributes, and the worker's claim sends nothing more.
    let body = serde_json::to_string(&QueuedWork::Step(job(&token, 0))).unwrap();
    sqs.send_message()
        .queue_url(&local.resources.dlq_url)
        .message_body(&body)
        .message_attributes(
            "origin",
            MessageAttributeValue::builder().data_type("String").string_value("test").build().unwrap(),
        )
        .send()
        .await
        .unwrap();
    let (summary, out) = replay(&local, false).await;
    assert_eq!(summary.replayed, 1, "{out}");
    let back = receive(&sqs, &local.resources.queue_url, 30).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body(), Some(body.as_str()), "the same body");
    let attr = back[0].message_attributes().and_then(|a| a.get("origin")).and_then(|v| v.string_value());
    assert_eq!(attr, Some("test"), "the same message attributes");
    let processed = outreach_worker::process_record(&local.functions().worker, &record(&back[0])).await.unwrap();
    assert_eq!(processed, Processed::Outreach(JobOutcome::Duplicate));
    assert_eq!(local.sandbox.messages().len(), 1, "a replay of a sent step sends nothing");
    assert!(!out.contains("4155552671"), "no phone number in the output: {out}");
    local.shutdown().await;
}

#[tokio::test]
async fn a_dry_run_lists_every_kind_of_work_with_phones_masked_and_moves_nothing() {
    let clock = Arc::new(ManualClock::new(t0()));
    let flow = json!([{ "after_minutes": 0, "channel": "sms" }, { "after_minutes": 60, "channel": "sms" }]);
    let local = start_local("adm-dry", clock, &merchant(|v| v["flow"] = flow)).await;
    let sqs = sqs_client(&sdk().await);
    let token = CartToken::parse(&unique("tok")).unwrap();
    let phone = Phone::parse(PHONE, None).unwrap();
    let opt_out = KeyOptOut::key_9(snowdevil(), phone.clone(), "CA0001".into(), t0());
    let bodies = [
        serde_json::to_string(&QueuedWork::Step(job(&token, 1))).unwrap(),
        serde_json::to_string(&QueuedWork::KeyOptOut { key_opt_out: opt_out }).unwrap(),
        "not json".to_string(),
    ];
    for body in &bodies {
        sqs.send_message().queue_url(&local.resources.dlq_url).message_body(body).send().await.unwrap();
    }
    let (summary, out) = replay(&local, true).await;
    assert_eq!((summary.seen, summary.replayed, summary.left), (3, 0, 1), "{out}");
    assert!(out.contains("outreach-dlq: 3 message(s) waiting (dry run"), "{out}");
    assert!(out.contains(&format!("flow step: merchant snowdevil, cart {token}, step 2 (sms)")), "{out}");
    assert!(
        out.contains(&format!("key-9 opt-out (voice): merchant snowdevil, phone {}, call CA0001", phone.masked())),
        "{out}"
    );
    assert!(out.contains("not Callfy work (8 bytes)"), "{out}");
    assert!(!out.contains("4155552671"), "phones are masked: {out}");
    assert_eq!(visible(&sqs, &local.resources.dlq_url).await, 3, "every message is back in the dead-letter queue");
    assert_eq!(visible(&sqs, &local.resources.queue_url).await, 0);

    // A real replay moves the two jobs and leaves what is not Callfy work.
    let (summary, out) = replay(&local, false).await;
    assert_eq!((summary.replayed, summary.left), (2, 1), "{out}");
    assert_eq!(visible(&sqs, &local.resources.dlq_url).await, 1);
    assert_eq!(visible(&sqs, &local.resources.queue_url).await, 2);
    local.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The report.

const PHONES: [&str; 6] =
    ["+14155552672", "+14155552673", "+14155552674", "+14155552675", "+14155552676", "+14155552677"];

fn voice_merchant() -> Merchant {
    let mut v = read_json("events/demo-merchant-voice.json");
    v["flow"] = json!([{ "after_minutes": 0, "channel": "sms" }, { "after_minutes": 60, "channel": "voice" }]);
    Merchant::from_json(&v.to_string()).expect("valid voice merchant")
}

async fn order(local: &LocalHandle, token: &CartToken, total: &str) {
    let mut o = read_json("events/shopify/orders-create.json");
    o["id"] = json!(u64::from_str_radix(&uuid::Uuid::new_v4().simple().to_string()[..12], 16).unwrap());
    o["checkout_token"] = json!(token.as_str());
    o["total_price"] = json!(total);
    o["currency"] = json!("USD");
    let (status, answer) = post_shopify(&local.base_url, "orders/create", &unique("evt"), &o).await;
    assert_eq!(status, 200, "{answer}");
}

/// Seven carts through the real adapters, worker, webhooks and sandbox:
/// A texted, then ordered (credited to step 1, USD 100.00); B texted, called, then ordered
/// (credited to the call, USD 57.50); C texted (undelivered) and called (no answer); D texted,
/// then STOP; E no consent; F no phone; G ordered before any message (USD 20.00, not credited);
/// and an order for a cart never seen, which the report leaves out.
async fn seeded_report_world() -> (LocalHandle, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("adm-report", clock.clone(), &voice_merchant()).await;
    let tokens: Vec<CartToken> = (0..7).map(|i| CartToken::parse(&unique(&format!("c{i}"))).unwrap()).collect();
    let phones: Vec<Phone> = PHONES.iter().map(|p| Phone::parse(p, None).unwrap()).collect();
    let (a, b, c, d, e, f, g) = (&tokens[0], &tokens[1], &tokens[2], &tokens[3], &tokens[4], &tokens[5], &tokens[6]);
    seed_cart(&local, a, Some(&phones[0]), &[Channel::Sms]).await;
    seed_cart(&local, b, Some(&phones[1]), &[Channel::Sms, Channel::Voice]).await;
    seed_cart(&local, c, Some(&phones[2]), &[Channel::Sms, Channel::Voice]).await;
    seed_cart(&local, d, Some(&phones[3]), &[Channel::Sms]).await;
    seed_cart(&local, e, Some(&phones[4]), &[]).await;
    seed_cart(&local, f, None, &[]).await;
    seed_cart(&local, g, Some(&phones[5]), &[Channel::Sms]).await;

    order(&local, g, "20.00").await;
    // An order for a cart whose checkout never reached us is kept as a closed cart: not an
    // abandoned cart, not an order of the report's.
    order(&local, &CartToken::parse(&unique("h")).unwrap(), "30.00").await;
    for t in [a, b, c, d] {
        assert!(matches!(run(&local, t, 0).await, JobOutcome::Sent { .. }));
    }
    assert_eq!(run(&local, e, 0).await, JobOutcome::Skipped(SkipReason::NoConsent));
    assert_eq!(run(&local, g, 0).await, JobOutcome::Skipped(SkipReason::CartRecovered));

    clock.set(t0() + Duration::minutes(10));
    order(&local, a, "100.00").await;
    let stop = local
        .sandbox
        .receive(&InboundRequest {
            from: PHONES[3].into(),
            to: "+15005550006".into(),
            body: "STOP".into(),
            messaging_service_sid: Some("MG0123456789abcdef0123456789abcdef".into()),
        })
        .await
        .unwrap();
    assert_eq!(stop.status, 200);

    clock.set(t0() + Duration::minutes(61));
    let JobOutcome::Called { call_sid: b_call } = run(&local, b, 1).await else { panic!("B is called") };
    let JobOutcome::Called { call_sid: c_call } = run(&local, c, 1).await else { panic!("C is called") };
    local.sandbox.end_call(&b_call, "completed", 40).await.unwrap();
    local.sandbox.end_call(&c_call, "no-answer", 0).await.unwrap();
    clock.set(t0() + Duration::minutes(70));
    order(&local, b, "57.50").await;
    let c_text = local.sandbox.messages().into_iter().find(|m| m.to == PHONES[2]).unwrap();
    assert_eq!(local.sandbox.report_status(&c_text.sid, "undelivered", Some(30003)).await.unwrap(), 200);
    (local, clock)
}

async fn report_of(local: &LocalHandle, since: Option<DateTime<Utc>>) -> (Report, Vec<String>) {
    let mut progress = Vec::new();
    let r = report::gather(local.store(), &snowdevil(), since, t0() + Duration::hours(2), &mut |l: &str| {
        progress.push(l.to_string())
    })
    .await
    .unwrap();
    (r, progress)
}

/// The seeded figures, as (chart, row, series) → (value, printed label).
fn expected_bars() -> HashMap<(&'static str, &'static str, &'static str), (f64, &'static str)> {
    HashMap::from([
        (("funnel", "Abandoned carts with a phone", "carts"), (6.0, "6")),
        (("funnel", "Consented", "carts"), (5.0, "5")),
        (("funnel", "Messaged or called", "carts"), (4.0, "4")),
        (("funnel", "Recovered", "carts"), (2.0, "2")),
        (("steps", "Step 1 · SMS", "sent"), (4.0, "4")),
        (("steps", "Step 1 · SMS", "recovered"), (1.0, "1")),
        (("steps", "Step 2 · Call", "sent"), (2.0, "2")),
        (("steps", "Step 2 · Call", "recovered"), (1.0, "1")),
        (("step-revenue", "Step 1 · SMS", "revenue"), (100.0, "USD 100.00")),
        (("step-revenue", "Step 2 · Call", "revenue"), (57.5, "USD 57.50")),
        (("channels", "Text messages", "sent"), (4.0, "4")),
        (("channels", "Text messages", "recovered"), (1.0, "1")),
        (("channels", "Calls", "sent"), (2.0, "2")),
        (("channels", "Calls", "recovered"), (1.0, "1")),
        (("channel-revenue", "SMS", "revenue"), (100.0, "USD 100.00")),
        (("channel-revenue", "Call", "revenue"), (57.5, "USD 57.50")),
        (("opt-outs", "People messaged", "people"), (4.0, "4")),
        (("opt-outs", "Opted out", "people"), (1.0, "1")),
        (("failures", "Texts undelivered", "failures"), (1.0, "1")),
        (("failures", "Texts failed", "failures"), (0.0, "0")),
        (("failures", "Calls failed", "failures"), (0.0, "0")),
        (("failures", "Calls not answered", "failures"), (1.0, "1")),
        (("failures", "Calls busy", "failures"), (0.0, "0")),
        (("failures", "Refused by Twilio", "failures"), (0.0, "0")),
    ])
}

#[tokio::test]
async fn the_report_table_gives_the_seeded_funnel_by_step_and_channel_opt_outs_and_failures() {
    let (local, _clock) = seeded_report_world().await;
    let (r, progress) = report_of(&local, None).await;
    assert!(progress.iter().any(|l| l.starts_with("scanning ")), "the scan shows progress: {progress:?}");
    assert_eq!(
        (r.carts, r.with_phone, r.consented, r.messaged, r.recovered),
        (7, 6, 5, 4, 2),
        "carts, with a phone, consented, messaged or called, recovered"
    );
    assert_eq!(r.revenue.text(), "USD 157.50");
    assert_eq!((r.other_orders, r.other_revenue.text()), (1, "USD 20.00".to_string()));
    assert_eq!((r.people_messaged, r.opt_outs), (4, 1));
    assert_eq!(r.opt_out_rate(), 25.0);
    let f = r.failures;
    assert_eq!(
        (f.sms_undelivered, f.sms_failed, f.calls_failed, f.calls_no_answer, f.calls_busy, f.refused),
        (1, 0, 0, 1, 0, 0)
    );

    let table = report::render_table(&r);
    let lines: Vec<String> =
        table.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>();
    for expected in [
        "Recovery report: Snowdevil (snowdevil), all carts",
        "Abandoned carts 7",
        "Abandoned carts with a phone 6 100.0%",
        "Consented 5 83.3%",
        "Messaged or called 4 66.7%",
        "Recovered 2 33.3%",
        "Recovered revenue USD 157.50",
        "Orders not credited to outreach 1",
        "Their revenue USD 20.00",
        "Step 1 SMS 4 1 USD 100.00",
        "Step 2 Call 2 1 USD 57.50",
        "SMS 4 4 1 USD 100.00",
        "Call 2 2 1 USD 57.50",
        "OPT-OUTS 1 of 4 people messaged (25.0%)",
        "DELIVERY FAILURES 2",
        "Texts undelivered 1",
        "Calls not answered 1",
        "Refused by Twilio 0",
    ] {
        assert!(lines.iter().any(|l| l == expected), "no line {expected:?} in\n{table}");
    }
    for p in PHONES {
        assert!(!table.contains(&p[2..]), "no phone number in the report");
    }

    // --since after every cart: nothing.
    let (later, _) = report_of(&local, Some(t0() + Duration::days(1))).await;
    assert_eq!((later.carts, later.messaged, later.recovered, later.people_messaged), (0, 0, 0, 0));
    local.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The HTML page in a real browser.

/// Debian's Chromium, which `scripts/test` installs (`ensure_chromium`) and names in
/// `CALLFY_CHROMIUM`.
fn chromium() -> std::path::PathBuf {
    let path = std::env::var("CALLFY_CHROMIUM").ok().filter(|v| !v.is_empty()).unwrap_or("/usr/bin/chromium".into());
    let path = std::path::PathBuf::from(path);
    assert!(
        path.exists(),
        "the report's browser test needs headless Chromium at {} and it is missing: run scripts/test, which \
         installs Debian's chromium (scripts/lib.sh ensure_chromium), or set CALLFY_CHROMIUM",
        path.display()
    );
    path
}

/// Opens `page` in headless Chromium with a check script appended and returns what it measured.
fn measure_in_chromium(html: &str) -> Value {
    const ERRORS: &str = "<script>window.__errors=[];window.addEventListener('error',function(e){\
        window.__errors.push(String(e.message||e.type))},true);</script>";
    const CHECK: &str = r#"<script>(function(){
var out={errors:window.__errors,resources:performance.getEntriesByType('resource').map(function(e){return e.name}),bars:[],values:[],charts:[],kpis:[]};
document.querySelectorAll('rect.bar').forEach(function(r){var b=r.getBoundingClientRect();
 out.bars.push({chart:r.dataset.chart,row:r.dataset.row,series:r.dataset.series,value:parseFloat(r.dataset.value),width:b.width,height:b.height,right:b.right});});
document.querySelectorAll('text.value').forEach(function(t){var b=t.getBoundingClientRect();
 out.values.push({chart:t.dataset.chart,row:t.dataset.row,series:t.dataset.series,text:t.textContent,left:b.left,width:b.width});});
document.querySelectorAll('svg.chart').forEach(function(s){var b=s.getBoundingClientRect();var c=s.parentElement.getBoundingClientRect();
 var clipped=[];s.querySelectorAll('text').forEach(function(t){var r=t.getBoundingClientRect();if(r.left<b.left-0.5||r.right>b.right+0.5||r.left<c.left||r.right>c.right)clipped.push(t.textContent)});
 out.charts.push({id:s.id,width:b.width,height:b.height,clipped:clipped});});
document.querySelectorAll('.kpi').forEach(function(k){out.kpis.push(k.innerText.replace(/\s+/g,' ').trim())});
var pre=document.createElement('pre');pre.id='check-result';pre.textContent=JSON.stringify(out);document.body.appendChild(pre);
})();</script>"#;
    let dir = std::env::temp_dir().join(unique("callfy-report"));
    std::fs::create_dir_all(&dir).unwrap();
    let page =
        html.replacen("<head>", &format!("<head>{ERRORS}"), 1).replacen("</body>", &format!("{CHECK}</body>"), 1);
    let file = dir.join("report-check.html");
    std::fs::write(&file, page).unwrap();
    let profile = dir.join("profile");
    let mut child = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1024,4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", file.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let dom = String::from_utf8_lossy(&output.stdout).to_string();
    let _ = std::fs::remove_dir_all(&dir);
    let start = dom.find(r#"<pre id="check-result">"#).unwrap_or_else(|| {
        panic!("chromium rendered no check result; stderr:\n{}", String::from_utf8_lossy(&output.stderr))
    }) + r#"<pre id="check-result">"#.len();
    let end = start + dom[start..].find("</pre>").unwrap();
    let text = dom[start..end].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn the_report_page_renders_in_chromium_with_bars_and_labels_showing_the_seeded_figures() {
    let chromium_path = chromium();
    let (local, _clock) = seeded_report_world().await;
    let (r, _) = report_of(&local, None).await;
    local.shutdown().await;
    let html = callfy_admin::html::render_html(&r);
    assert!(!html.contains("<script"), "the page needs no script");
    for attr in ["src=", "href=", "url(", "@import", "@font-face"] {
        assert!(!html.contains(attr), "self-contained: no {attr}");
    }
    for p in PHONES {
        assert!(!html.contains(&p[2..]), "no phone number in the page");
    }
    let _ = chromium_path;
    let m = tokio::task::spawn_blocking(move || measure_in_chromium(&html)).await.unwrap();

    assert_eq!(m["errors"], json!([]), "no errors while rendering");
    assert_eq!(m["resources"], json!([]), "nothing loaded from anywhere");
    let charts = m["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 7, "{charts:?}");
    for c in charts {
        assert!(c["width"].as_f64().unwrap() > 300.0 && c["height"].as_f64().unwrap() > 40.0, "{c} is visible");
        assert_eq!(c["clipped"], json!([]), "every label of {} is inside its chart", c["id"]);
    }
    let kpis: Vec<&str> = m["kpis"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    for expected in [
        "Recovered revenue USD 157.50 from 2 recovered carts",
        "Recovery rate 50.0% 2 of 4 carts messaged or called",
        "Opt-out rate 25.0% 1 of 4 people messaged",
        "Delivery failures 2",
    ] {
        assert!(kpis.iter().any(|k| k.starts_with(expected)), "no {expected:?} in {kpis:?}");
    }

    let expected = expected_bars();
    let bars = m["bars"].as_array().unwrap();
    let values = m["values"].as_array().unwrap();
    assert_eq!(bars.len(), expected.len(), "one bar per figure");
    let key = |v: &Value| {
        (
            v["chart"].as_str().unwrap().to_string(),
            v["row"].as_str().unwrap().to_string(),
            v["series"].as_str().unwrap().to_string(),
        )
    };
    // Per chart, pixels per unit: the same for every bar (bars are proportional to the figures).
    let mut scale: HashMap<String, f64> = HashMap::new();
    for bar in bars {
        let (chart, row, series) = key(bar);
        let (value, label) = expected
            .get(&(chart.as_str(), row.as_str(), series.as_str()))
            .copied()
            .unwrap_or_else(|| panic!("unexpected bar {bar}"));
        assert_eq!(bar["value"].as_f64().unwrap(), value, "{bar}");
        let width = bar["width"].as_f64().unwrap();
        if value == 0.0 {
            assert!(width < 0.5, "an empty figure has no bar: {bar}");
        } else {
            assert!(bar["height"].as_f64().unwrap() > 10.0, "{bar}");
            let per_unit = width / value;
            let s = *scale.entry(chart.clone()).or_insert(per_unit);
            assert!(
                (per_unit - s).abs() / s < 0.01,
                "{chart}: {row} {series} is {width}px for {value}, not in proportion ({s} px per unit)"
            );
        }
        let text = values.iter().find(|v| key(v) == key(bar)).unwrap_or_else(|| panic!("no label for {bar}"));
        assert_eq!(text["text"].as_str().unwrap(), label, "{bar}");
        assert!(text["width"].as_f64().unwrap() > 3.0, "the label is drawn: {text}");
        assert!(
            text["left"].as_f64().unwrap() >= bar["right"].as_f64().unwrap() - 0.5,
            "the label follows its bar: {text}"
        );
    }
    // The longest bar of each chart spans the bar area.
    for (chart, s) in &scale {
        let max = expected.iter().filter(|(k, _)| k.0 == chart).map(|(_, v)| v.0).fold(0.0, f64::max);
        assert!((s * max - callfy_admin::html::BAR_SPAN).abs() < 2.0, "{chart}: longest bar {}", s * max);
    }
}
