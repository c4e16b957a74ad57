//! Every adapter operation against the real DynamoDB/SQS/S3 API (moto) and Twilio's sandbox.

use callfy_integration_tests::*;
use callfy_local::resources::{self, ResourceNames};
use callfy_local::sandbox::Sandbox;
use callfy_shared::adapters::queue::OutreachQueue;
use callfy_shared::adapters::store::{
    ClaimOutcome, ConsentAppend, Direction, IngestOutcome, IngestWrite, MerchantStatus, PortError, SmsLogEntry,
    StepResult, StepState, Store,
};
use callfy_shared::adapters::twilio::{SendSms, SmsSender, TwilioClient, TwilioError};
use callfy_shared::config::ExposeSecret;
use callfy_shared::config::{TwilioAuth, TwilioConfig, local_defaults};
use callfy_shared::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, ConsentStatus, Evidence, entry_hash};
use callfy_shared::domain::flow::OutreachJob;
use callfy_shared::domain::merchant::Channel;
use callfy_shared::domain::subject::SubjectKey;
use callfy_shared::ports::Classify;
use callfy_shared::signature::sha256_hex;
use callfy_shared::{CartToken, ManualClock, MerchantId, Phone};
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;

fn t0() -> DateTime<Utc> {
    "2026-11-28T15:00:00Z".parse().unwrap()
}

async fn store(prefix: &str) -> (Store, resources::Resources) {
    let sdk = sdk().await;
    let res = resources::ensure(&sdk, &ResourceNames::unique(prefix)).await.unwrap();
    (Store::new(aws_sdk_dynamodb::Client::new(&sdk), &res.names.table), res)
}

fn event(action: ConsentAction, at: DateTime<Utc>) -> ConsentEvent {
    ConsentEvent {
        channel: Channel::Sms,
        action,
        source: ConsentSource::Api,
        occurred_at: at,
        recorded_at: at,
        evidence: Evidence { ip: Some("203.0.113.7".into()), ..Default::default() },
    }
}

#[tokio::test]
async fn resources_are_created_once_with_the_template_settings() {
    let sdk = sdk().await;
    let names = ResourceNames::unique("ad-res");
    let first = resources::ensure(&sdk, &names).await.unwrap();
    let again = resources::ensure(&sdk, &names).await.unwrap();
    assert_eq!(first.queue_url, again.queue_url);

    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = ddb.describe_table().table_name(&names.table).send().await.unwrap().table.unwrap();
    let mut gsis: Vec<String> =
        table.global_secondary_indexes().iter().filter_map(|g| g.index_name().map(String::from)).collect();
    gsis.sort();
    assert_eq!(gsis, vec!["lookup", "purge", "tenant"]);
    let ttl = ddb.describe_time_to_live().table_name(&names.table).send().await.unwrap();
    assert_eq!(ttl.time_to_live_description().unwrap().attribute_name(), Some("expires_at"));

    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&first.queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attrs = attrs.attributes().unwrap();
    let redrive: serde_json::Value =
        serde_json::from_str(attrs.get(&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy).unwrap()).unwrap();
    assert_eq!(redrive["maxReceiveCount"].to_string().trim_matches('"'), "10");
    assert!(redrive["deadLetterTargetArn"].as_str().unwrap().ends_with(&names.dlq));

    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    let pab = s3.get_public_access_block().bucket(&names.bucket).send().await.unwrap();
    let cfg = pab.public_access_block_configuration().unwrap();
    assert_eq!(cfg.block_public_acls(), Some(true));
    assert_eq!(cfg.restrict_public_buckets(), Some(true));
    let lc = s3.get_bucket_lifecycle_configuration().bucket(&names.bucket).send().await.unwrap();
    assert_eq!(lc.rules()[0].expiration().unwrap().days(), Some(callfy_local::resources::BUCKET.expiration_days));
    let enc = s3.get_bucket_encryption().bucket(&names.bucket).send().await.unwrap();
    let rule = &enc.server_side_encryption_configuration().unwrap().rules()[0];
    assert_eq!(rule.apply_server_side_encryption_by_default().unwrap().sse_algorithm().as_str(), "aws:kms");
}

#[tokio::test]
async fn merchants_round_trip_with_lookup_by_shop_and_hashed_api_keys() {
    let (store, _) = store("ad-merchant").await;
    let m = merchant(|_| {});
    store.put_merchant(&m, t0()).await.unwrap();
    let got = store.get_merchant(&m.id).await.unwrap().unwrap();
    assert_eq!(got.merchant, m);
    assert_eq!(got.status, MerchantStatus::Active);
    assert!(got.api_key_sha256.is_none() && !got.legal_hold);
    let by_shop = store.merchant_by_shop_domain(SHOP).await.unwrap().unwrap();
    assert_eq!(by_shop.merchant.id, m.id);
    assert!(store.merchant_by_shop_domain("other.myshopify.com").await.unwrap().is_none());

    let hash = sha256_hex(b"cfy_live_secret");
    store.set_api_key_hash(&m.id, &hash).await.unwrap();
    // Replacing the profile keeps the key.
    store.put_merchant(&merchant(|v| v["name"] = "Snowdevil Inc".into()), t0()).await.unwrap();
    let got = store.get_merchant(&m.id).await.unwrap().unwrap();
    assert_eq!(got.api_key_sha256.as_deref(), Some(hash.as_str()));
    assert_eq!(got.merchant.name, "Snowdevil Inc");

    let unknown = MerchantId::parse("nobody").unwrap();
    assert!(matches!(store.set_api_key_hash(&unknown, &hash).await, Err(PortError::NotFound(_))));
    assert!(store.get_merchant(&unknown).await.unwrap().is_none());

    // A second merchant cannot claim the same shop.
    let thief = merchant(|v| v["id"] = "thief".into());
    assert!(matches!(store.put_merchant(&thief, t0()).await, Err(PortError::Invalid(_))));
}

#[tokio::test]
async fn an_ingest_write_holds_only_while_the_deletion_markers_are_as_read() {
    let (store, _) = store("ad-ingest-deleted").await;
    let m = MerchantId::parse("snowdevil").unwrap();
    let c = new_cart("tok-1", t0());
    let phone = c.phone.clone().unwrap();
    let write = |seen: Option<DateTime<Utc>>| IngestWrite {
        deletions_seen: vec![(SubjectKey::phone(&phone), seen)],
        merchant_id: m.clone(),
        event_key: "shopify#e1".into(),
        received_at: t0(),
        cart: Some((c.clone(), None)),
        consents: Vec::new(),
    };
    // Read "no deletion", then a deletion lands before the write: refused, nothing of it stored.
    let deleted_at = t0() + Duration::milliseconds(1_500);
    store.put_deletion_marker(&m, &SubjectKey::phone(&phone), deleted_at).await.unwrap();
    assert!(matches!(store.write_ingest(&write(None)).await, Err(PortError::Conflict)));
    assert!(store.get_cart(&m, &c.token).await.unwrap().is_none(), "no cart");
    assert_eq!(store.cart_token_for_checkout(&m, "42").await.unwrap(), None, "no pointer");
    // A marker read as it stands (a checkout made after the deletion) lets it through, with its
    // dedupe marker: nothing of the refused attempt was left behind.
    let read = store.deletion_marker(&m, &SubjectKey::phone(&phone)).await.unwrap();
    assert_eq!(read, Some(deleted_at));
    assert_eq!(store.write_ingest(&write(read)).await.unwrap(), IngestOutcome::Applied);
    assert_eq!(store.write_ingest(&write(read)).await.unwrap(), IngestOutcome::Duplicate);
    // A second deletion moves the marker: what was read before no longer holds.
    let again = IngestWrite { event_key: "shopify#e2".into(), cart: None, ..write(read) };
    store.put_deletion_marker(&m, &SubjectKey::phone(&phone), deleted_at + Duration::days(1)).await.unwrap();
    assert!(matches!(store.write_ingest(&again).await, Err(PortError::Conflict)));
}

#[tokio::test]
async fn ingest_writes_are_atomic_deduplicated_and_versioned() {
    let (store, _) = store("ad-ingest").await;
    let m = MerchantId::parse("snowdevil").unwrap();
    let c = new_cart("tok-1", t0());
    let phone = c.phone.clone().unwrap();
    let write = IngestWrite {
        deletions_seen: Vec::new(),
        merchant_id: m.clone(),
        event_key: "shopify#e1".into(),
        received_at: t0(),
        cart: Some((c.clone(), None)),
        consents: vec![ConsentAppend {
            merchant_id: m.clone(),
            phone: phone.clone(),
            state: Default::default(),
            event: event(ConsentAction::OptIn, t0()),
            purge_at: t0() + Duration::days(730),
        }],
    };
    assert_eq!(store.write_ingest(&write).await.unwrap(), IngestOutcome::Applied);
    assert_eq!(store.write_ingest(&write).await.unwrap(), IngestOutcome::Duplicate);
    assert_eq!(store.get_cart(&m, &c.token).await.unwrap().unwrap(), c);
    assert_eq!(store.cart_token_for_checkout(&m, "42").await.unwrap(), Some(c.token.clone()));
    assert_eq!(store.consent_state(&m, &phone, Channel::Sms).await.unwrap().seq, 1);

    // A stale version (someone wrote in between) is a conflict, and nothing of it lands.
    let mut stale = c.clone();
    stale.version = 2;
    stale.total_price = Some("99.00".into());
    let conflict = IngestWrite {
        deletions_seen: Vec::new(),
        event_key: "shopify#e2".into(),
        cart: Some((stale.clone(), Some(7))),
        consents: Vec::new(),
        ..write.clone()
    };
    assert!(matches!(store.write_ingest(&conflict).await, Err(PortError::Conflict)));
    assert_eq!(store.get_cart(&m, &c.token).await.unwrap().unwrap().total_price.as_deref(), Some("1.00"));
    let ok = IngestWrite { cart: Some((stale, Some(1))), ..conflict };
    assert_eq!(store.write_ingest(&ok).await.unwrap(), IngestOutcome::Applied);

    // Forgetting an event lets its retry through; flags and timestamps bump the version.
    store.forget_event(&m, "shopify#e1").await.unwrap();
    let retry = IngestWrite { cart: None, consents: Vec::new(), ..write };
    assert_eq!(store.write_ingest(&retry).await.unwrap(), IngestOutcome::Applied);
    store.set_outreach_scheduled(&m, &c.token, true).await.unwrap();
    store.set_last_message_at(&m, &c.token, t0()).await.unwrap();
    let now = store.get_cart(&m, &c.token).await.unwrap().unwrap();
    assert!(now.outreach_scheduled);
    assert_eq!(now.last_message_at, Some(t0()));
    assert_eq!(now.version, 4);
}

#[tokio::test]
async fn the_consent_ledger_appends_with_a_hash_chain_and_rejects_stale_state() {
    let (store, _) = store("ad-consent").await;
    let m = MerchantId::parse("snowdevil").unwrap();
    let phone = Phone::parse(PHONE, None).unwrap();
    let append = |state, action, at| ConsentAppend {
        merchant_id: m.clone(),
        phone: phone.clone(),
        state,
        event: event(action, at),
        purge_at: at + Duration::days(730),
    };
    let s1 = store.append_consent(&append(Default::default(), ConsentAction::OptIn, t0())).await.unwrap();
    assert_eq!((s1.status, s1.seq), (ConsentStatus::OptedIn, 1));
    let s2 = store.append_consent(&append(s1.clone(), ConsentAction::OptOut, t0() + Duration::hours(1))).await.unwrap();
    assert_eq!((s2.status, s2.seq), (ConsentStatus::OptedOut, 2));
    // Appending on top of an outdated head fails: the ledger never forks.
    assert!(matches!(
        store.append_consent(&append(s1, ConsentAction::OptIn, t0() + Duration::hours(2))).await,
        Err(PortError::Conflict)
    ));

    let ledger = store.consent_ledger(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(ledger.len(), 2);
    let mut prev: Option<String> = None;
    for entry in &ledger {
        assert_eq!(entry.prev_hash, prev);
        assert_eq!(entry.hash, entry_hash(prev.as_deref(), entry.seq, &entry.event));
        prev = Some(entry.hash.clone());
    }
    assert_eq!(s2.head_hash, prev);
    assert_eq!(ledger[0].event.evidence.ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(store.consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::Unknown);
}

#[tokio::test]
async fn keeping_a_suppression_record_fails_when_its_transaction_meets_a_conflict_and_not_when_the_ledger_moved() {
    let (store, res) = store("ad-keep-sup").await;
    let m = MerchantId::parse("snowdevil").unwrap();
    let phone = Phone::parse(PHONE, None).unwrap();
    let append = ConsentAppend {
        merchant_id: m.clone(),
        phone: phone.clone(),
        state: Default::default(),
        event: event(ConsentAction::OptOut, t0()),
        purge_at: t0() + Duration::days(730),
    };
    let state = store.append_consent(&append).await.unwrap();
    let sup = state.suppression().expect("an opt-out");
    // The ledger moved on since it was read (seq 0): a condition failed, nothing to keep.
    store.keep_suppression(&m, &phone, Channel::Sms, &sup, 0).await.expect("nothing to do");
    // Cancelled by a concurrent transaction: nothing may be assumed kept, so the caller, about
    // to delete the ledger, is stopped (a retention run or a deletion tries again).
    let conflict = ConflictNextTransaction(Arc::new(std::sync::atomic::AtomicBool::new(true)));
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk().await).interceptor(conflict.clone()).build();
    let contended = Store::new(aws_sdk_dynamodb::Client::from_conf(conf), &res.names.table);
    let kept = contended.keep_suppression(&m, &phone, Channel::Sms, &sup, state.seq).await;
    assert!(matches!(kept, Err(PortError::Conflict)), "{kept:?}");
    assert!(!conflict.0.load(std::sync::atomic::Ordering::SeqCst), "the transaction was answered as contended");
    assert!(kept.unwrap_err().is_transient());
}

#[tokio::test]
async fn step_claims_are_exclusive_and_only_retry_can_be_reclaimed() {
    let (store, _) = store("ad-claim").await;
    let m = MerchantId::parse("snowdevil").unwrap();
    let token = CartToken::parse("tok-claim").unwrap();
    assert_eq!(
        store.claim_step(&m, &token, 0, "a", "body-hash", t0()).await.unwrap(),
        ClaimOutcome::Claimed { uncertain: None }
    );
    let ClaimOutcome::Taken(rec) = store.claim_step(&m, &token, 0, "b", "body-hash", t0()).await.unwrap() else {
        panic!("second claim must fail")
    };
    assert_eq!((rec.state, rec.claim_id.as_deref()), (StepState::Claimed, Some("a")));
    // Only the holder may finish.
    let retry = StepResult::Retry { reason: "503".into(), uncertain: false };
    assert!(matches!(store.finish_step(&m, &token, 0, "b", &retry, t0()).await, Err(PortError::Conflict)));
    store.finish_step(&m, &token, 0, "a", &retry, t0()).await.unwrap();
    assert_eq!(
        store.claim_step(&m, &token, 0, "c", "body-hash", t0()).await.unwrap(),
        ClaimOutcome::Claimed { uncertain: None }
    );
    let sent = StepResult::Sent { message_sid: "SM1".into() };
    store.finish_step(&m, &token, 0, "c", &sent, t0()).await.unwrap();
    let rec = store.get_step(&m, &token, 0).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.attempts, rec.message_sid.as_deref()), (StepState::Sent, 2, Some("SM1")));
    assert!(matches!(store.claim_step(&m, &token, 0, "d", "body-hash", t0()).await.unwrap(), ClaimOutcome::Taken(_)));
    assert!(!store.skip_step(&m, &token, 0, "too_late", t0()).await.unwrap(), "a sent step stays sent");

    assert!(store.skip_step(&m, &token, 1, "opted_out", t0()).await.unwrap());
    assert!(!store.skip_step(&m, &token, 1, "other", t0()).await.unwrap());
    let rec = store.get_step(&m, &token, 1).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.reason.as_deref()), (StepState::Skipped, Some("opted_out")));
    let failed = StepResult::Failed { error_code: Some(21211), reason: "invalid".into() };
    assert_eq!(
        store.claim_step(&m, &token, 2, "e", "body-hash", t0()).await.unwrap(),
        ClaimOutcome::Claimed { uncertain: None }
    );
    store.finish_step(&m, &token, 2, "e", &failed, t0()).await.unwrap();
    assert_eq!(store.get_step(&m, &token, 2).await.unwrap().unwrap().error_code, Some(21211));
}

#[tokio::test]
async fn sms_log_is_kept_per_customer_and_found_by_sid() {
    let (store, _) = store("ad-sms").await;
    let m = MerchantId::parse("snowdevil").unwrap();
    let phone = Phone::parse(PHONE, None).unwrap();
    assert!(!store.has_outbound_sms(&m, &phone).await.unwrap());
    let entry = SmsLogEntry {
        merchant_id: m.clone(),
        phone: phone.clone(),
        direction: Direction::Outbound,
        message_sid: "SM0123".into(),
        body: "hello".into(),
        status: "queued".into(),
        cart_token: Some(CartToken::parse("tok").unwrap()),
        step: Some(0),
        segments: 1,
        created_at: t0(),
        purge_at: t0() + Duration::days(730),
        status_history: std::collections::BTreeMap::from([("queued".to_string(), t0())]),
        error_code: None,
        senders: vec!["MG0123456789abcdef0123456789abcdef".into()],
    };
    store.put_sms_log(&entry).await.unwrap();
    assert!(store.has_outbound_sms(&m, &phone).await.unwrap());
    assert_eq!(store.sms_log(&m, &phone).await.unwrap(), vec![entry.clone()]);
    assert_eq!(store.sms_by_sid("SM0123").await.unwrap(), Some(entry.clone()));
    assert_eq!(store.outbound_sms(&m, &phone, "SM0123").await.unwrap(), Some(entry));
    assert_eq!(store.outbound_sms(&m, &phone, "SM9999").await.unwrap(), None);
    assert!(store.sms_by_sid("SMnope").await.unwrap().is_none());
    let other = Phone::parse("+442079460958", None).unwrap();
    assert!(!store.has_outbound_sms(&m, &other).await.unwrap());
}

#[tokio::test]
async fn the_outreach_queue_carries_jobs() {
    let sdk = sdk().await;
    let (_, res) = store("ad-queue").await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = OutreachQueue::new(sqs.clone(), &res.queue_url);
    let job = OutreachJob {
        merchant_id: MerchantId::parse("snowdevil").unwrap(),
        cart_token: CartToken::parse("tok").unwrap(),
        step: 1,
        due_at: t0(),
    };
    let id = queue.enqueue(&job, 0).await.unwrap();
    assert!(!id.is_empty());
    let got = sqs.receive_message().queue_url(&res.queue_url).wait_time_seconds(1).send().await.unwrap();
    let msg = &got.messages()[0];
    assert_eq!(serde_json::from_str::<OutreachJob>(msg.body().unwrap()).unwrap(), job);
    let bad = OutreachQueue::new(sqs, format!("{}-missing", res.queue_url));
    assert!(bad.enqueue(&job, 0).await.is_err());
}

async fn sandbox_server() -> (String, Arc<Sandbox>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let sandbox = Arc::new(Sandbox::new(
        local_defaults::TWILIO_ACCOUNT_SID,
        local_defaults::TWILIO_AUTH_TOKEN,
        clock,
        "http://127.0.0.1:9",
        false,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = callfy_local::sandbox::router(Arc::clone(&sandbox));
    tokio::spawn(async move { axum_serve(listener, app).await });
    (format!("http://{addr}"), sandbox)
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) {
    let _ = axum::serve(listener, app).await;
}

fn twilio(base: &str, token: &str) -> TwilioClient {
    TwilioClient::new(&TwilioConfig {
        api_base: base.into(),
        account_sid: local_defaults::TWILIO_ACCOUNT_SID.into(),
        auth: TwilioAuth::AuthToken(token.into()),
        auth_token: Some(token.into()),
        timeout: callfy_shared::config::DEFAULT_TWILIO_TIMEOUT,
    })
    .unwrap()
}

fn sms(to: &str) -> SendSms {
    SendSms {
        to: to.into(),
        sender: SmsSender::From("+15005550006".into()),
        body: "Snowdevil: hello. Reply STOP to opt out.".into(),
        status_callback: Some("https://hooks.callfy.test/twilio/sms/status".into()),
        validity_seconds: None,
    }
}

#[tokio::test]
async fn twilio_client_sends_and_classifies_errors() {
    let (base, sandbox) = sandbox_server().await;
    let client = twilio(&base, local_defaults::TWILIO_AUTH_TOKEN);
    let msg = client.send_sms(&sms(PHONE)).await.unwrap();
    assert!(msg.sid.starts_with("SM") && msg.sid.len() == 34);
    assert_eq!(msg.status.as_deref(), Some("queued"));
    let recorded = &sandbox.messages()[0];
    assert_eq!((recorded.to.as_str(), recorded.from.as_deref()), (PHONE, Some("+15005550006")));

    let listed = client.recent_messages_to(PHONE).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sid, msg.sid);
    assert_eq!(listed[0].body.as_deref(), Some(sms(PHONE).body.as_str()));
    assert_eq!(listed[0].created_at(), Some(t0()));
    assert!(client.recent_messages_to("+15005550006").await.unwrap().is_empty());

    let err = client.send_sms(&sms("+15005550001")).await.unwrap_err();
    assert!(matches!(err, TwilioError::Api { status: 400, code: Some(21211), .. }), "{err}");
    assert!(!err.is_retryable());

    sandbox.inject(callfy_local::sandbox::Fault::error(429, 20429));
    let err = client.send_sms(&sms(PHONE)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");

    let err = twilio(&base, "wrong-token").send_sms(&sms(PHONE)).await.unwrap_err();
    assert!(matches!(err, TwilioError::Api { status: 401, code: Some(20003), .. }), "{err}");
    assert!(sandbox.violations().is_empty());
}

#[tokio::test]
async fn twilio_timeouts_and_unreachable_hosts_are_retryable() {
    // A server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let cfg = TwilioConfig {
        api_base: format!("http://{addr}"),
        account_sid: local_defaults::TWILIO_ACCOUNT_SID.into(),
        auth: TwilioAuth::AuthToken("t".into()),
        auth_token: None,
        timeout: callfy_shared::config::DEFAULT_TWILIO_TIMEOUT,
    };
    let client = TwilioClient::with_timeout(&cfg, std::time::Duration::from_millis(300)).unwrap();
    let err = client.send_sms(&sms(PHONE)).await.unwrap_err();
    assert!(matches!(err, TwilioError::Timeout), "{err}");
    assert!(err.is_retryable());

    // Nothing listens on a freshly closed port.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let cfg = TwilioConfig { api_base: format!("http://{closed}"), ..cfg };
    let err = twilio(&cfg.api_base, "t").send_sms(&sms(PHONE)).await.unwrap_err();
    assert!(matches!(err, TwilioError::Connect(_)), "{err}");
    assert!(err.is_retryable());
    assert!(!err.may_have_sent(), "no connection, nothing sent");
    assert!(TwilioError::Timeout.may_have_sent());
}

#[tokio::test]
async fn sender_index_follows_merchant_changes() {
    let (store, _) = store("ad-senders").await;
    let demo = merchant(|_| {});
    store.put_merchant(&demo, t0()).await.unwrap();
    let service = "MG0123456789abcdef0123456789abcdef";
    let ids = |rs: Vec<callfy_shared::adapters::store::MerchantRecord>| {
        rs.into_iter().map(|r| r.merchant.id.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(ids(store.merchants_for_senders(&[service]).await.unwrap()), vec!["snowdevil"]);
    assert_eq!(ids(store.merchants_for_senders(&["+15005550006"]).await.unwrap()), vec!["snowdevil"], "voice number");
    assert!(store.merchants_for_senders(&["+15005559999", ""]).await.unwrap().is_empty());

    // A second merchant on the same Messaging Service: both are found, once each.
    let other = merchant(|v| {
        v["id"] = "acme".into();
        v["name"] = "Acme".into();
        v["shop_domain"] = "acme.myshopify.com".into();
        v["voice_from"] = serde_json::Value::Null;
    });
    store.put_merchant(&other, t0()).await.unwrap();
    let both = ids(store.merchants_for_senders(&[service, "+15005550006"]).await.unwrap());
    assert_eq!(both, vec!["acme", "snowdevil"]);

    // Moving to a number drops the old sender from the index.
    let moved = merchant(|v| {
        v["id"] = "acme".into();
        v["name"] = "Acme".into();
        v["shop_domain"] = "acme.myshopify.com".into();
        v["voice_from"] = serde_json::Value::Null;
        v["sender"] = serde_json::json!({ "from": "+15005550010" });
    });
    store.put_merchant(&moved, t0()).await.unwrap();
    assert_eq!(ids(store.merchants_for_senders(&[service]).await.unwrap()), vec!["snowdevil"]);
    assert_eq!(ids(store.merchants_for_senders(&["+15005550010"]).await.unwrap()), vec!["acme"]);
}

#[tokio::test]
async fn idempotency_records_bind_a_key_once() {
    use callfy_shared::adapters::store::IdempotencyRecord;
    let (store, _) = store("ad-idem").await;
    let m = MerchantId::parse("snowdevil").unwrap();
    let record =
        IdempotencyRecord { request_sha256: "ab".into(), status: 201, body: "{}".into(), created_at: Utc::now() };
    assert!(store.get_idempotency(&m, "k1").await.unwrap().is_none());
    assert!(store.put_idempotency(&m, "k1", &record).await.unwrap());
    assert!(!store.put_idempotency(&m, "k1", &record).await.unwrap(), "a key binds once");
    assert_eq!(store.get_idempotency(&m, "k1").await.unwrap(), Some(record.clone()));
    let other = MerchantId::parse("acme").unwrap();
    assert!(store.get_idempotency(&other, "k1").await.unwrap().is_none(), "keys are per merchant");
    // Past its 24 hours the record is still read until DynamoDB's TTL removes it: the use case
    // answers it (422 idempotency_key_expired), it is never mistaken for an unused key.
    let old = IdempotencyRecord { created_at: Utc::now() - Duration::hours(25), ..record };
    assert!(store.put_idempotency(&m, "k2", &old).await.unwrap());
    assert_eq!(store.get_idempotency(&m, "k2").await.unwrap(), Some(old));
}

#[tokio::test]
async fn one_inbound_message_is_logged_once_for_any_number_of_merchants_on_its_sender() {
    let (store, _) = store("ad-inbound").await;
    let phone = Phone::parse(PHONE, None).unwrap();
    // 60 merchants: 120 items, more than one transaction may hold.
    let entries: Vec<SmsLogEntry> = (0..60)
        .map(|i| SmsLogEntry {
            merchant_id: MerchantId::parse(&format!("shop{i}")).unwrap(),
            phone: phone.clone(),
            direction: Direction::Inbound,
            message_sid: "SMshared".into(),
            body: "STOP".into(),
            status: "received".into(),
            cart_token: None,
            step: None,
            segments: 1,
            created_at: t0(),
            purge_at: t0() + Duration::days(730),
            status_history: std::collections::BTreeMap::from([("received".to_string(), t0())]),
            error_code: None,
            senders: vec!["+15005550006".into()],
        })
        .collect();
    let unmarked = |entries: &[SmsLogEntry]| {
        entries.iter().map(|e| (e.clone(), callfy_shared::ports::MarkerGuard::AsRead(None))).collect::<Vec<_>>()
    };
    assert!(store.record_inbound(&unmarked(&entries), t0()).await.unwrap(), "first delivery");
    assert!(!store.record_inbound(&unmarked(&entries), t0()).await.unwrap(), "a redelivery writes nothing");
    for e in [&entries[0], &entries[59]] {
        assert_eq!(store.sms_log(&e.merchant_id, &phone).await.unwrap().len(), 1);
        assert_eq!(store.inbound_sms(&e.merchant_id, &phone, "SMshared").await.unwrap().as_ref(), Some(e));
        assert!(!store.inbound_applied(&e.merchant_id, "SMshared").await.unwrap(), "stored, not yet applied");
    }
    // Applied for two merchants: once only.
    let two = [entries[0].merchant_id.clone(), entries[59].merchant_id.clone()];
    assert!(store.finish_inbound(&two, "SMshared").await.unwrap());
    assert!(!store.finish_inbound(&two, "SMshared").await.unwrap(), "a second copy is a redelivery");
    assert!(store.inbound_applied(&two[0], "SMshared").await.unwrap());
    assert!(!store.inbound_applied(&entries[1].merchant_id, "SMshared").await.unwrap());
    // A delivery that got only part of the way is finished by the next one, which counts as first.
    let more: Vec<SmsLogEntry> = entries
        .iter()
        .cloned()
        .chain((60..70).map(|i| SmsLogEntry {
            merchant_id: MerchantId::parse(&format!("shop{i}")).unwrap(),
            ..entries[0].clone()
        }))
        .collect();
    assert!(store.record_inbound(&unmarked(&more), t0()).await.unwrap());
    assert_eq!(store.sms_log(&more[69].merchant_id, &phone).await.unwrap().len(), 1);
}

/// Secrets are read from Secrets Manager (moto) at init: each `*_SECRET_ID` stands for the
/// variables its secret holds, a rotated value is what the next process reads, and a missing
/// or malformed secret is named without its value.
#[tokio::test]
async fn settings_read_their_secrets_from_secrets_manager() {
    use callfy_shared::adapters::secrets::settings_from;
    use callfy_shared::config::{ConfigError, IngestSettings, WorkerSettings};
    let client = aws_sdk_secretsmanager::Client::new(&sdk().await);
    let twilio_id = unique("callfy/twilio");
    let log_id = unique("callfy/log-key");
    let sid = format!("AC{}", "1".repeat(32));
    let created = client
        .create_secret()
        .name(&twilio_id)
        .secret_string(serde_json::json!({"account_sid": sid, "auth_token": "token-one"}).to_string())
        .send()
        .await
        .unwrap();
    client.create_secret().name(&log_id).secret_string("k".repeat(48)).send().await.unwrap();
    let env = |twilio: String| {
        let log_id = log_id.clone();
        move |k: &str| match k {
            "TWILIO_SECRET_ID" => Some(twilio.clone()),
            "LOG_KEY_SECRET_ID" => Some(log_id.clone()),
            "TABLE_NAME" => Some("callfy".into()),
            "OUTREACH_QUEUE_URL" => Some("http://127.0.0.1:5000/123456789012/outreach".into()),
            "PUBLIC_BASE_URL" => Some("https://hooks.callfy.test".into()),
            "RECORDINGS_BUCKET" => Some("rec".into()),
            // The worker verifies Shopify webhooks' queued copies; set directly (no secret id).
            "SHOPIFY_API_SECRET" => Some("shopify-app-secret".into()),
            // A stale plaintext value loses to the secret.
            "TWILIO_AUTH_TOKEN" => Some("plaintext-from-env".into()),
            _ => None,
        }
    };
    // By name or by ARN.
    for id in [twilio_id.clone(), created.arn.clone().unwrap()] {
        let w: WorkerSettings = settings_from(&client, env(id)).await.unwrap();
        assert_eq!(w.twilio.account_sid, sid);
        assert_eq!(w.twilio.auth_token.as_ref().map(|t| t.expose_secret()), Some("token-one"));
        assert_eq!(w.log_key.expose_secret(), "k".repeat(48));
    }

    // Rotation: a new process reads the new value, no redeploy.
    client
        .put_secret_value()
        .secret_id(&twilio_id)
        .secret_string(serde_json::json!({"account_sid": sid, "auth_token": "token-two"}).to_string())
        .send()
        .await
        .unwrap();
    let w: WorkerSettings = settings_from(&client, env(twilio_id.clone())).await.unwrap();
    assert_eq!(w.twilio.auth_token.as_ref().map(|t| t.expose_secret()), Some("token-two"));

    // A missing secret names the variable and the id.
    let err = settings_from::<WorkerSettings>(&client, env("callfy/none".into())).await.err().unwrap();
    assert!(matches!(&err, ConfigError::Secret { id_var: "TWILIO_SECRET_ID", id, .. } if id == "callfy/none"), "{err}");
    // A malformed one never shows its value.
    let bad = unique("callfy/bad");
    client.create_secret().name(&bad).secret_string("not json s3cr3t").send().await.unwrap();
    let err = settings_from::<WorkerSettings>(&client, env(bad)).await.err().unwrap();
    assert!(!err.to_string().contains("s3cr3t"), "{err}");

    // Ingest reads only its own secrets: the Twilio id means nothing to it.
    let shopify_id = unique("callfy/shopify");
    client.create_secret().name(&shopify_id).secret_string(r#"{"api_secret":"shpss_1"}"#).send().await.unwrap();
    let ingest_env = |k: &str| match k {
        "SHOPIFY_SECRET_ID" => Some(shopify_id.clone()),
        "TWILIO_SECRET_ID" => Some("callfy/none".into()),
        "TABLE_NAME" => Some("callfy".into()),
        "OUTREACH_QUEUE_URL" => Some("http://127.0.0.1:5000/123456789012/outreach".into()),
        "RECORDINGS_BUCKET" => Some("rec".into()),
        _ => None,
    };
    let i: IngestSettings = settings_from(&client, ingest_env).await.unwrap();
    assert_eq!(i.shopify_api_secret.expose_secret(), "shpss_1");
}

/// Answers the next `n` deletion-marker PutItems with DynamoDB's TransactionConflictException
/// (the put meets a delivery's transaction checking the marker). The put itself is applied, as
/// it may be; it is idempotent.
#[derive(Debug, Clone)]
struct MarkerConflicts {
    left: Arc<std::sync::atomic::AtomicUsize>,
    marker_put: Arc<std::sync::atomic::AtomicBool>,
}

impl aws_sdk_dynamodb::config::Intercept for MarkerConflicts {
    fn name(&self) -> &'static str {
        "MarkerConflicts"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_dynamodb::config::RuntimeComponents,
        _: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let req = context.request();
        let put = req.headers().get("x-amz-target").unwrap_or_default().ends_with("PutItem");
        let body = req.body().bytes().map(|b| String::from_utf8_lossy(b).contains("DELETED")).unwrap_or(false);
        self.marker_put.store(put && body, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_dynamodb::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _: &aws_sdk_dynamodb::config::RuntimeComponents,
        _: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        use std::sync::atomic::Ordering::SeqCst;
        if !self.marker_put.load(SeqCst) || self.left.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_err() {
            return Ok(());
        }
        // Whatever moto answered (a later try meets the marker the first one wrote), DynamoDB's
        // refusal applied nothing.
        answer_with_error(
            context,
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionConflictException","message":"Transaction is ongoing for the item"}"#,
        );
        Ok(())
    }
}

#[tokio::test]
async fn a_deletion_marker_put_that_meets_a_deliverys_transaction_is_tried_again() {
    let (plain, res) = store("ad-marker-conflict").await;
    let base = sdk().await;
    let conflicts = |n: usize| {
        let fault = MarkerConflicts {
            left: Arc::new(std::sync::atomic::AtomicUsize::new(n)),
            marker_put: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let conf = aws_sdk_dynamodb::config::Builder::from(&base).interceptor(fault).build();
        Store::new(aws_sdk_dynamodb::Client::from_conf(conf), &res.names.table)
    };
    let m = MerchantId::parse("snowdevil").unwrap();
    let phone = Phone::parse("+14155552671", None).unwrap();
    conflicts(2).put_deletion_marker(&m, &SubjectKey::phone(&phone), t0()).await.expect("written on the third try");
    assert_eq!(plain.deletion_marker(&m, &SubjectKey::phone(&phone)).await.unwrap(), Some(t0()));
    let later = t0() + Duration::days(1);
    let err =
        conflicts(9).put_deletion_marker(&m, &SubjectKey::phone(&phone), later).await.expect_err("gives up after five");
    assert!(err.is_transient(), "the deletion is retried by its caller: {err:?}");
    // A marker only moves forward: an earlier deletion's put changes nothing.
    let key = SubjectKey::phone(&phone);
    plain.put_deletion_marker(&m, &key, later).await.unwrap();
    plain.put_deletion_marker(&m, &key, t0()).await.unwrap();
    assert_eq!(plain.deletion_marker(&m, &key).await.unwrap(), Some(later), "never moved back");
}
