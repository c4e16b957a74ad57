//! The outreach worker's wall time per job next to the same DynamoDB round trips made bare with
//! the SDK client (and the Twilio sandbox send alone): what our code adds on top of its I/O.
//!
//! Both run in this process against the same moto table, one job at a time, interleaved so
//! that moto's state (its table grows with every job) weighs on both alike. Every job gets its
//! own cart and phone, so the frequency rule never holds one, and the clock stands at a daytime
//! instant, so quiet hours never do: each measured job sends one SMS.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};
use callfy_bench::{Latency, ms};
use callfy_local::LocalOptions;
use callfy_shared::adapters::dynamo::keys::{self, attr};
use callfy_shared::adapters::store::{ConsentAppend, Direction, IngestWrite};
use callfy_shared::adapters::twilio::{SendSms, SmsSender};
use callfy_shared::app::outreach::JobOutcome;
use callfy_shared::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, Evidence};
use callfy_shared::domain::flow::OutreachJob;
use callfy_shared::domain::merchant::{Channel, Merchant};
use callfy_shared::{CartToken, Clock, MerchantId, OffsetClock, Phone};
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// The fewest jobs whose p99 means something.
pub const MIN_JOBS: usize = 50;
/// Unmeasured jobs of each kind first: connections, moto's first requests.
const WARMUP: usize = 5;
/// A Saturday afternoon in both the merchant's (Toronto) and the shoppers' (California) time.
const START: &str = "2026-11-28T19:00:00Z";
const BODY: &str = "Snowdevil: Hi Ann, you left something in your cart. Finish your order here: \
                    https://snowdevil.myshopify.com/r/abc Reply STOP to opt out.";

type Item = HashMap<String, AttributeValue>;

pub struct Report {
    pub jobs: usize,
    /// `process_job` from the first read to the step recorded as sent.
    pub worker: Latency,
    /// The worker's DynamoDB calls, made with the SDK client alone.
    pub bare: Latency,
    /// One `Messages.json` POST to the sandbox, through the worker's Twilio client.
    pub twilio: Latency,
    /// 10-job batches processed as `handle_batch` does (concurrently).
    pub batches: Batches,
}

pub const BATCH: usize = 10;

pub struct Batches {
    pub count: usize,
    /// Wall time of a whole batch.
    pub wall: Latency,
    /// The slowest job of each batch, timed alone inside it.
    pub slowest: Latency,
    /// The sum of each batch's jobs: what one-at-a-time would cost.
    pub sum: Latency,
    pub jobs_per_second: f64,
}

/// A cart with an opted-in phone of its own.
struct Target {
    merchant: MerchantId,
    token: CartToken,
    phone: Phone,
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub async fn measure(sdk: &SdkConfig, merchant_json: &serde_json::Value, jobs: usize) -> Result<Report, String> {
    if jobs < MIN_JOBS {
        return Err(format!("--jobs must be at least {MIN_JOBS}"));
    }
    // Two carts per job (worker, bare), each with its own +1 415 555 xxxx number.
    if 2 * (jobs + WARMUP) > 10_000 {
        return Err(format!("--jobs can be at most {}", 5_000 - WARMUP));
    }
    let start: DateTime<Utc> = START.parse().map_err(text)?;
    let clock: Arc<dyn Clock> = Arc::new(OffsetClock::starting_at(start));
    let local =
        callfy_local::start(sdk, LocalOptions::for_test("bench-worker", Arc::clone(&clock))).await.map_err(text)?;
    let mut merchant_json = merchant_json.clone();
    merchant_json["flow"] = serde_json::json!([{ "after_minutes": 0, "channel": "sms" }]);
    merchant_json["send_guard"] = serde_json::json!({ "daily_send_budget": 1_000_000 });
    let merchant = Merchant::from_json(&merchant_json.to_string()).map_err(text)?;
    local.store().put_merchant(&merchant, start).await.map_err(text)?;
    let sender = merchant.sender.messaging_service_sid.clone().ok_or("the demo merchant has no Messaging Service")?;

    let mut targets = Vec::with_capacity(2 * (jobs + WARMUP));
    for i in 0..2 * (jobs + WARMUP) {
        targets.push(seed(&local, &merchant.id, i, start).await?);
    }
    let (for_worker, for_bare) = targets.split_at(jobs + WARMUP);

    let worker = &local.functions().worker.outreach;
    let db = Client::new(sdk);
    let table = local.resources.names.table.clone();
    let (mut w, mut b, mut t) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (wt, bt)) in for_worker.iter().zip(for_bare).enumerate() {
        let job =
            OutreachJob { merchant_id: wt.merchant.clone(), cart_token: wt.token.clone(), step: 0, due_at: start };
        let began = Instant::now();
        let outcome = worker.process_job(&job).await.map_err(|e| format!("worker job {i}: {e}"))?;
        let took = began.elapsed();
        if !matches!(outcome, JobOutcome::Sent { .. }) {
            return Err(format!("worker job {i} did not send: {outcome:?}"));
        }

        let began = Instant::now();
        bare_job(&db, &table, bt, clock.now()).await.map_err(|e| format!("bare job {i}: {e}"))?;
        let bare_took = began.elapsed();

        let request = SendSms {
            to: bt.phone.as_str().to_string(),
            sender: SmsSender::MessagingService(sender.clone()),
            body: BODY.into(),
            status_callback: Some(format!("{}/twilio/sms/status", worker.public_base_url)),
            validity_seconds: Some(callfy_shared::domain::flow::MAX_QUEUED_SECONDS),
        };
        let began = Instant::now();
        worker.twilio.send_sms(&request).await.map_err(|e| format!("Twilio send {i}: {e}"))?;
        let twilio_took = began.elapsed();

        if i >= WARMUP {
            w.push(took);
            b.push(bare_took);
            t.push(twilio_took);
        }
    }
    // Throughput: batches of ten, each job timed inside its batch, as `handle_batch` runs them.
    let count = (jobs / BATCH).max(5);
    let first = 2 * (jobs + WARMUP);
    let mut batch_targets = Vec::with_capacity(count * BATCH);
    for i in 0..count * BATCH {
        batch_targets.push(seed(&local, &merchant.id, first + i, start).await?);
    }
    let (mut wall, mut slowest, mut sum) = (Vec::new(), Vec::new(), Vec::new());
    let all_began = Instant::now();
    for (b, batch) in batch_targets.chunks(BATCH).enumerate() {
        let began = Instant::now();
        let timed = futures::future::join_all(batch.iter().map(|bt| async move {
            let job =
                OutreachJob { merchant_id: bt.merchant.clone(), cart_token: bt.token.clone(), step: 0, due_at: start };
            let began = Instant::now();
            let outcome = worker.process_job(&job).await;
            (outcome, began.elapsed())
        }))
        .await;
        wall.push(began.elapsed());
        for (outcome, _) in &timed {
            match outcome {
                Ok(JobOutcome::Sent { .. }) => {}
                other => return Err(format!("batch {b}: a job did not send: {other:?}")),
            }
        }
        slowest.push(timed.iter().map(|(_, d)| *d).max().unwrap_or_default());
        sum.push(timed.iter().map(|(_, d)| *d).sum());
    }
    let jobs_per_second = (count * BATCH) as f64 / all_began.elapsed().as_secs_f64();
    let sent = local.sandbox.messages().len();
    local.shutdown().await;
    if sent != first + count * BATCH {
        return Err(format!("the sandbox got {sent} messages, expected {}", first + count * BATCH));
    }
    Ok(Report {
        jobs,
        worker: Latency::of(&w).ok_or("no jobs")?,
        bare: Latency::of(&b).ok_or("no jobs")?,
        twilio: Latency::of(&t).ok_or("no jobs")?,
        batches: Batches {
            count,
            wall: Latency::of(&wall).ok_or("no batches")?,
            slowest: Latency::of(&slowest).ok_or("no batches")?,
            sum: Latency::of(&sum).ok_or("no batches")?,
            jobs_per_second,
        },
    })
}

/// Stores cart `i` with an opted-in number of its own, as a checkout webhook would.
async fn seed(
    local: &callfy_local::LocalHandle,
    m: &MerchantId,
    i: usize,
    at: DateTime<Utc>,
) -> Result<Target, String> {
    let phone = Phone::parse(&format!("+1415555{i:04}"), None).map_err(|e| format!("+1415555{i:04}: {e}"))?;
    let token = CartToken::parse(&format!("bench-{}", uuid::Uuid::new_v4().simple())).map_err(text)?;
    let mut cart = callfy_local::fixtures::demo_cart(m, token.clone(), phone.clone(), at);
    cart.checkout_id = Some(i.to_string());
    let consent = ConsentAppend {
        merchant_id: m.clone(),
        phone: phone.clone(),
        state: Default::default(),
        event: ConsentEvent {
            channel: Channel::Sms,
            action: ConsentAction::OptIn,
            source: ConsentSource::Checkout,
            occurred_at: at,
            recorded_at: at,
            evidence: Evidence::default(),
        },
        purge_at: at + Duration::days(730),
    };
    let write = IngestWrite {
        deletions_seen: Vec::new(),
        merchant_id: m.clone(),
        event_key: format!("bench#{}", uuid::Uuid::new_v4().simple()),
        received_at: at,
        cart: Some((cart, None)),
        consents: vec![consent],
    };
    local.store().write_ingest(&write).await.map_err(text)?;
    Ok(Target { merchant: m.clone(), token, phone })
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn num(item: &Item, name: &str) -> Option<u64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

fn string<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn sdk_error(e: impl std::error::Error) -> String {
    DisplayErrorContext(e).to_string()
}

/// GetItem, strongly consistent, as the worker reads.
async fn get(db: &Client, table: &str, pk: String, sk: String) -> Result<Option<Item>, String> {
    let out = db
        .get_item()
        .table_name(table)
        .key(attr::PK, s(pk))
        .key(attr::SK, s(sk))
        .consistent_read(true)
        .send()
        .await
        .map_err(sdk_error)?;
    Ok(out.item)
}

/// Whether any outbound SMS is in the customer's partition: one Query, limit 1.
async fn any_outbound(db: &Client, table: &str, pk: String) -> Result<bool, String> {
    let out = db
        .query()
        .table_name(table)
        .key_condition_expression("#pk = :pk AND begins_with(#sk, :p)")
        .expression_attribute_names("#pk", attr::PK)
        .expression_attribute_names("#sk", attr::SK)
        .expression_attribute_values(":pk", s(pk))
        .expression_attribute_values(":p", s(keys::SMS_OUT_PREFIX))
        .consistent_read(true)
        .limit(1)
        .send()
        .await
        .map_err(sdk_error)?;
    Ok(out.count > 0)
}

async fn transact(db: &Client, items: Vec<TransactWriteItem>) -> Result<(), String> {
    db.transact_write_items().set_transact_items(Some(items)).send().await.map_err(sdk_error)?;
    Ok(())
}

/// The worker's DynamoDB round trips for one sent step, without our code: three reads, four
/// more reads, the claim (5 items) and the record of the send (3 items), with the same
/// consistency, conditions and item shapes.
async fn bare_job(db: &Client, table: &str, t: &Target, now: DateTime<Utc>) -> Result<(), String> {
    let cart_pk = keys::cart_pk(&t.merchant, &t.token);
    let customer = keys::customer_pk(&t.merchant, &t.phone);
    let (profile, cart, step) = tokio::try_join!(
        get(db, table, keys::merchant_pk(&t.merchant), keys::PROFILE.into()),
        get(db, table, cart_pk.clone(), keys::CART.into()),
        get(db, table, cart_pk.clone(), keys::step_sk(0)),
    )?;
    let (consent, freq, reach, outbound) = tokio::try_join!(
        get(db, table, customer.clone(), keys::consent_state_sk(Channel::Sms)),
        get(db, table, customer.clone(), keys::FREQ.into()),
        get(db, table, customer.clone(), keys::REACH_SMS.into()),
        any_outbound(db, table, customer.clone()),
    )?;
    // What the claim is conditioned on; anything else would not be the path that sends.
    let (Some(_), Some(cart), None, Some(consent), None, None, false) =
        (profile, cart, step, consent, freq, reach, outbound)
    else {
        return Err("the seeded cart is not a fresh, opted-in one".into());
    };
    let cart_version = num(&cart, attr::VERSION).ok_or("cart without version")?;
    let consent_seq = num(&consent, attr::SEQ).ok_or("consent state without seq")?;
    if string(&cart, attr::STATUS) != Some("open") || string(&consent, attr::STATUS) != Some("opted_in") {
        return Err("the seeded cart is not open and opted in".into());
    }

    let claim_id = uuid::Uuid::new_v4().to_string();
    let at = keys::sort_time(now);
    let step_key = || -> Item {
        HashMap::from([(attr::PK.to_string(), s(cart_pk.clone())), (attr::SK.to_string(), s(keys::step_sk(0)))])
    };
    let key =
        |pk: &str, sk: &str| -> Item { HashMap::from([(attr::PK.to_string(), s(pk)), (attr::SK.to_string(), s(sk))]) };
    let claim = Update::builder()
        .table_name(table)
        .set_key(Some(step_key()))
        .update_expression(
            "SET #st = :claimed, #cid = :c, body_sha256 = :h, updated_at = :now, #lease = :lease, \
             #att = if_not_exists(#att, :zero) + :one",
        )
        .condition_expression("attribute_not_exists(#pk)")
        .expression_attribute_names("#pk", attr::PK)
        .expression_attribute_names("#st", attr::STATE)
        .expression_attribute_names("#cid", attr::CLAIM_ID)
        .expression_attribute_names("#lease", attr::LEASE_UNTIL)
        .expression_attribute_names("#att", attr::ATTEMPTS)
        .expression_attribute_values(":claimed", s("claimed"))
        .expression_attribute_values(":c", s(&claim_id))
        .expression_attribute_values(":h", s("0".repeat(64)))
        .expression_attribute_values(":now", s(&at))
        .expression_attribute_values(":lease", s(keys::sort_time(now + Duration::minutes(5))))
        .expression_attribute_values(":zero", n(0))
        .expression_attribute_values(":one", n(1))
        .build()
        .map_err(text)?;
    let cart_check = ConditionCheck::builder()
        .table_name(table)
        .set_key(Some(key(&cart_pk, keys::CART)))
        .condition_expression("#v = :v AND #st = :open")
        .expression_attribute_names("#v", attr::VERSION)
        .expression_attribute_names("#st", attr::STATUS)
        .expression_attribute_values(":v", n(cart_version))
        .expression_attribute_values(":open", s("open"))
        .build()
        .map_err(text)?;
    let consent_check = ConditionCheck::builder()
        .table_name(table)
        .set_key(Some(key(&customer, &keys::consent_state_sk(Channel::Sms))))
        .condition_expression("#seq = :seq AND #st = :in")
        .expression_attribute_names("#seq", attr::SEQ)
        .expression_attribute_names("#st", attr::STATUS)
        .expression_attribute_values(":seq", n(consent_seq))
        .expression_attribute_values(":in", s("opted_in"))
        .build()
        .map_err(text)?;
    let merchant_check = ConditionCheck::builder()
        .table_name(table)
        .set_key(Some(key(&keys::merchant_pk(&t.merchant), keys::PROFILE)))
        .condition_expression("#st = :active")
        .expression_attribute_names("#st", attr::STATUS)
        .expression_attribute_values(":active", s("active"))
        .build()
        .map_err(text)?;
    let mut counter = key(&customer, keys::FREQ);
    counter.insert(attr::VERSION.into(), n(1));
    counter.insert(
        "sends".into(),
        AttributeValue::L(vec![AttributeValue::M(HashMap::from([
            ("cart".to_string(), s(t.token.as_str())),
            ("step".to_string(), n(0)),
            ("at".to_string(), s(now.to_rfc3339())),
        ]))]),
    );
    counter.insert(attr::PURGE_BUCKET.into(), s(callfy_shared::domain::retention::purge_bucket(&customer)));
    counter.insert(attr::PURGE_AT.into(), s(keys::sort_time(now + Duration::days(2))));
    let counter = Put::builder()
        .table_name(table)
        .set_item(Some(counter))
        .condition_expression("attribute_not_exists(#pk)")
        .expression_attribute_names("#pk", attr::PK)
        .build()
        .map_err(text)?;
    transact(
        db,
        vec![
            TransactWriteItem::builder().update(claim).build(),
            TransactWriteItem::builder().condition_check(cart_check).build(),
            TransactWriteItem::builder().condition_check(consent_check).build(),
            TransactWriteItem::builder().condition_check(merchant_check).build(),
            TransactWriteItem::builder().put(counter).build(),
        ],
    )
    .await?;

    // Twilio would answer here; the bare path only records the send.
    let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
    let purge_at = now + Duration::days(730);
    let mut log = key(&customer, &keys::sms_sk(Direction::Outbound, now, &sid));
    for (name, value) in [
        ("merchant_id", s(t.merchant.as_str())),
        ("phone", s(t.phone.as_str())),
        ("direction", s("outbound")),
        (attr::MESSAGE_SID, s(&sid)),
        ("body", s(BODY)),
        ("status", s("accepted")),
        ("cart_token", s(t.token.as_str())),
        ("step", n(0)),
        ("segments", n(1)),
        ("created_at", s(now.to_rfc3339())),
        ("purge_at", s(purge_at.to_rfc3339())),
        ("status_history", AttributeValue::M(HashMap::from([("accepted".to_string(), s(now.to_rfc3339()))]))),
        ("error_code", AttributeValue::Null(true)),
        (attr::STATUS_RANK, n(1)),
        (attr::GSI1PK, s(keys::sid_lookup(&sid))),
        (attr::GSI1SK, s(&customer)),
        (attr::PURGE_BUCKET, s(callfy_shared::domain::retention::purge_bucket(&customer))),
        (attr::PURGE_AT, s(keys::sort_time(purge_at))),
    ] {
        log.insert(name.to_string(), value);
    }
    let log = Put::builder().table_name(table).set_item(Some(log)).build().map_err(text)?;
    let sent = Update::builder()
        .table_name(table)
        .set_key(Some(step_key()))
        .update_expression("SET #st = :sent, message_sid = :sid, updated_at = :now REMOVE #lease")
        .condition_expression("#cid = :c AND #st = :claimed")
        .expression_attribute_names("#st", attr::STATE)
        .expression_attribute_names("#cid", attr::CLAIM_ID)
        .expression_attribute_names("#lease", attr::LEASE_UNTIL)
        .expression_attribute_values(":sent", s("sent"))
        .expression_attribute_values(":claimed", s("claimed"))
        .expression_attribute_values(":sid", s(&sid))
        .expression_attribute_values(":c", s(&claim_id))
        .expression_attribute_values(":now", s(&at))
        .build()
        .map_err(text)?;
    let cart_update = Update::builder()
        .table_name(table)
        .set_key(Some(key(&cart_pk, keys::CART)))
        .update_expression("SET last_message_at = :t, #v = #v + :one")
        .condition_expression("attribute_exists(#pk)")
        .expression_attribute_names("#pk", attr::PK)
        .expression_attribute_names("#v", attr::VERSION)
        .expression_attribute_values(":t", s(now.to_rfc3339()))
        .expression_attribute_values(":one", n(1))
        .build()
        .map_err(text)?;
    transact(
        db,
        vec![
            TransactWriteItem::builder().put(log).build(),
            TransactWriteItem::builder().update(sent).build(),
            TransactWriteItem::builder().update(cart_update).build(),
        ],
    )
    .await?;
    Ok(())
}

pub fn print(r: &Report) {
    let ratio = r.worker.p50.as_secs_f64() / r.bare.p50.as_secs_f64();
    println!();
    println!(
        "Outreach worker per job (one SMS sent) next to its DynamoDB calls made bare, {} jobs one at a time \
         (nearest-rank percentiles):",
        r.jobs
    );
    println!("| worker per job | p50 | p99 | bare DynamoDB | p50 | p99 | ratio (worker/bare p50) |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| `process_job` (7 reads, 2 transactions, 1 Twilio POST) | {} | {} | 7 reads, TransactWriteItems of 5 and 3 | {} | {} | {ratio:.2}× |",
        ms(r.worker.p50),
        ms(r.worker.p99),
        ms(r.bare.p50),
        ms(r.bare.p99),
    );
    println!();
    println!("| per job ({} jobs) | p50 | p99 | mean |", r.jobs);
    println!("|---|---|---|---|");
    for (name, l) in [
        ("outreach worker (`process_job`)", &r.worker),
        ("bare DynamoDB (same calls, SDK client only)", &r.bare),
        ("Twilio sandbox send alone", &r.twilio),
    ] {
        println!("| {name} | {} | {} | {} |", ms(l.p50), ms(l.p99), ms(l.mean));
    }
    let rest = |w: std::time::Duration, b: std::time::Duration, t: std::time::Duration| {
        let d = w.as_secs_f64() - b.as_secs_f64() - t.as_secs_f64();
        format!("{:.1} ms", d * 1e3)
    };
    println!(
        "| worker − bare − Twilio (our code) | {} | – | {} |",
        rest(r.worker.p50, r.bare.p50, r.twilio.p50),
        rest(r.worker.mean, r.bare.mean, r.twilio.mean),
    );
    let b = &r.batches;
    println!();
    println!("| worker, {} batches of {BATCH} (concurrent, as `handle_batch`) | p50 | p99 |", b.count);
    println!("|---|---|---|");
    println!("| wall time per batch | {} | {} |", ms(b.wall.p50), ms(b.wall.p99));
    println!("| the slowest job of the batch | {} | {} |", ms(b.slowest.p50), ms(b.slowest.p99));
    println!("| the sum of the batch's jobs (one at a time) | {} | {} |", ms(b.sum.p50), ms(b.sum.p99));
    println!(
        "| **wall ÷ slowest job (p50; 1.0 = fully concurrent, {BATCH} = a sum)** | **{:.2}×** | |",
        b.wall.p50.as_secs_f64() / b.slowest.p50.as_secs_f64()
    );
    println!("| throughput | {:.1} jobs/s | |", b.jobs_per_second);
}
