//! The outreach worker against moto and the Twilio sandbox: retries, refusals, opt-outs,
//! redeliveries and concurrency, with an injected clock.

use aws_lambda_events::event::sqs::SqsEvent;
use callfy_integration_tests::*;
use callfy_local::LocalHandle;
use callfy_local::sandbox::Fault;
use callfy_shared::adapters::store::IngestWrite;
use callfy_shared::adapters::store::{ClaimOutcome, ConsentAppend, StepResult, StepState};
use callfy_shared::adapters::twilio::TwilioError;
use callfy_shared::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, ConsentStatus, Evidence};
use callfy_shared::domain::flow::{OutreachJob, SkipReason};
use callfy_shared::domain::merchant::Channel;
use callfy_shared::{CartToken, ManualClock, MerchantId, Phone};
use chrono::{DateTime, Duration, Utc};
use outreach_worker::{JobOutcome, WorkerError};
use serde_json::json;
use std::sync::Arc;

fn t0() -> DateTime<Utc> {
    "2026-11-28T19:00:00Z".parse().unwrap()
}

/// A test's world: callfy-local with a consented cart stored directly through the store.
struct World {
    local: LocalHandle,
    clock: Arc<ManualClock>,
    job: OutreachJob,
    merchant: MerchantId,
    phone: Phone,
    token: CartToken,
}

async fn world(prefix: &str, flow: serde_json::Value, consent: Option<ConsentAction>) -> World {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local(prefix, clock.clone(), &merchant(|v| v["flow"] = flow)).await;
    let merchant = MerchantId::parse("snowdevil").unwrap();
    let phone = Phone::parse(PHONE, None).unwrap();
    let token = CartToken::parse(&unique("tok")).unwrap();
    let cart = new_cart(token.as_str(), t0());
    let consent = consent.map(|action| ConsentAppend {
        merchant_id: merchant.clone(),
        phone: phone.clone(),
        state: Default::default(),
        event: ConsentEvent {
            channel: Channel::Sms,
            action,
            source: ConsentSource::Checkout,
            occurred_at: t0(),
            recorded_at: t0(),
            evidence: Evidence::default(),
        },
        purge_at: t0() + Duration::days(730),
    });
    local
        .store()
        .write_ingest(&IngestWrite {
            deletions_seen: Vec::new(),
            merchant_id: merchant.clone(),
            event_key: unique("test"),
            received_at: t0(),
            cart: Some((cart, None)),
            consents: consent.into_iter().collect(),
        })
        .await
        .unwrap();
    let job = OutreachJob { merchant_id: merchant.clone(), cart_token: token.clone(), step: 0, due_at: t0() };
    World { local, clock, job, merchant, phone, token }
}

fn immediate() -> serde_json::Value {
    json!([{ "after_minutes": 0, "channel": "sms" }])
}

async fn run(w: &World) -> Result<JobOutcome, WorkerError> {
    outreach_worker::process_job(&w.local.functions().worker.outreach, &w.job).await
}

#[tokio::test]
async fn twilio_5xx_and_429_are_retried_and_the_message_goes_out_once() {
    let w = world("wk-retry", immediate(), Some(ConsentAction::OptIn)).await;
    w.local.sandbox.inject(Fault::error(503, 20500));
    w.local.sandbox.inject(Fault::error(429, 20429));
    assert!(matches!(run(&w).await, Err(WorkerError::TwilioRetry(_))));
    let step = w.local.store().get_step(&w.merchant, &w.token, 0).await.unwrap().unwrap();
    assert_eq!(step.state, StepState::Retry);
    assert!(matches!(run(&w).await, Err(WorkerError::TwilioRetry(_))));
    assert!(matches!(run(&w).await.unwrap(), JobOutcome::Sent { .. }));
    assert_eq!(run(&w).await.unwrap(), JobOutcome::Duplicate);
    assert_eq!(w.local.sandbox.messages().len(), 1);
    let step = w.local.store().get_step(&w.merchant, &w.token, 0).await.unwrap().unwrap();
    assert_eq!(step.uncertain_since, None, "Twilio answered every attempt");
    let step = w.local.store().get_step(&w.merchant, &w.token, 0).await.unwrap().unwrap();
    assert_eq!((step.state, step.attempts), (StepState::Sent, 3));
}

#[tokio::test]
async fn a_permanent_twilio_refusal_is_recorded_and_dropped() {
    let w = world("wk-refuse", immediate(), Some(ConsentAction::OptIn)).await;
    w.local.sandbox.inject(Fault::error(400, 21211));
    assert_eq!(run(&w).await.unwrap(), JobOutcome::Rejected { error_code: Some(21211) });
    let step = w.local.store().get_step(&w.merchant, &w.token, 0).await.unwrap().unwrap();
    assert_eq!((step.state, step.error_code), (StepState::Failed, Some(21211)));
    assert_eq!(run(&w).await.unwrap(), JobOutcome::Duplicate, "a failed step is not retried");
    assert!(w.local.sandbox.messages().is_empty());
}

#[tokio::test]
async fn error_21610_opts_the_number_out() {
    let w = world(
        "wk-21610",
        json!([{ "after_minutes": 0, "channel": "sms" }, { "after_minutes": 60, "channel": "sms" }]),
        Some(ConsentAction::OptIn),
    )
    .await;
    w.local.sandbox.inject(Fault::error(400, 21610));
    assert_eq!(run(&w).await.unwrap(), JobOutcome::Rejected { error_code: Some(21610) });
    let state = w.local.store().consent_state(&w.merchant, &w.phone, Channel::Sms).await.unwrap();
    assert_eq!(state.status, ConsentStatus::OptedOut);
    let ledger = w.local.store().consent_ledger(&w.merchant, &w.phone, Channel::Sms).await.unwrap();
    assert_eq!(ledger.last().unwrap().event.source, ConsentSource::CarrierError);

    w.clock.advance(Duration::minutes(61));
    let next = OutreachJob { step: 1, ..w.job.clone() };
    let outcome = outreach_worker::process_job(&w.local.functions().worker.outreach, &next).await.unwrap();
    assert_eq!(outcome, JobOutcome::Skipped(SkipReason::OptedOut));
    assert!(w.local.sandbox.messages().is_empty());
}

#[tokio::test]
async fn no_message_without_consent_or_after_opt_out() {
    let w = world("wk-noconsent", immediate(), None).await;
    assert_eq!(run(&w).await.unwrap(), JobOutcome::Skipped(SkipReason::NoConsent));
    let w = world("wk-optout", immediate(), Some(ConsentAction::OptOut)).await;
    assert_eq!(run(&w).await.unwrap(), JobOutcome::Skipped(SkipReason::OptedOut));
    assert!(w.local.sandbox.messages().is_empty());
}

#[tokio::test]
async fn a_step_not_yet_due_waits_in_the_queue() {
    let w = world("wk-wait", json!([{ "after_minutes": 240, "channel": "sms" }]), Some(ConsentAction::OptIn)).await;
    let outcome = run(&w).await.unwrap();
    assert_eq!(outcome, JobOutcome::Waiting { until: t0() + Duration::minutes(240) });
    let sqs = aws_sdk_sqs::Client::new(&sdk().await);
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&w.local.resources.queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .unwrap();
    let delayed = attrs
        .attributes()
        .unwrap()
        .get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .unwrap();
    assert_eq!(delayed, "1", "re-enqueued with the 15-minute maximum delay");
    w.clock.advance(Duration::minutes(240));
    assert!(matches!(run(&w).await.unwrap(), JobOutcome::Sent { .. }));
}

#[tokio::test]
async fn concurrent_redeliveries_send_exactly_one_message() {
    let w = world("wk-race", immediate(), Some(ConsentAction::OptIn)).await;
    let results = futures::future::join_all((0..6).map(|_| run(&w))).await;
    let sent = results.iter().filter(|r| matches!(r, Ok(JobOutcome::Sent { .. }))).count();
    assert_eq!(sent, 1, "{results:?}");
    assert_eq!(w.local.sandbox.messages().len(), 1);
}

#[tokio::test]
async fn batches_report_only_the_failed_messages() {
    let w = world("wk-batch", immediate(), Some(ConsentAction::OptIn)).await;
    let event: SqsEvent = serde_json::from_value(json!({ "Records": [
        { "messageId": "good", "body": serde_json::to_string(&w.job).unwrap(), "attributes": {}, "messageAttributes": {} },
        { "messageId": "poison", "body": "{\"not\":\"a job\"}", "attributes": {}, "messageAttributes": {} },
    ]}))
    .unwrap();
    let response = outreach_worker::handle_batch(&w.local.functions().worker, event).await;
    let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, vec!["poison"]);
    assert_eq!(w.local.sandbox.messages().len(), 1);
}

#[tokio::test]
async fn later_steps_are_follow_ups_with_the_discount() {
    let flow = json!([{ "after_minutes": 0, "channel": "sms" }, { "after_minutes": 60, "channel": "voice" },
                      { "after_minutes": 120, "channel": "sms", "discount_code": "COMEBACK10" }]);
    let w = world("wk-flow", flow, Some(ConsentAction::OptIn)).await;
    assert!(matches!(run(&w).await.unwrap(), JobOutcome::Sent { .. }));
    w.clock.advance(Duration::minutes(60));
    let voice = OutreachJob { step: 1, ..w.job.clone() };
    let outcome = outreach_worker::process_job(&w.local.functions().worker.outreach, &voice).await.unwrap();
    // No consent to calls: the call step is skipped and the flow goes on to its last text.
    assert_eq!(outcome, JobOutcome::Skipped(SkipReason::NoVoiceConsent));
    w.clock.advance(Duration::minutes(60));
    let last = OutreachJob { step: 2, ..w.job.clone() };
    assert!(matches!(
        outreach_worker::process_job(&w.local.functions().worker.outreach, &last).await.unwrap(),
        JobOutcome::Sent { .. }
    ));
    let sent = w.local.sandbox.messages();
    assert_eq!(sent.len(), 2);
    assert!(
        sent[1].body.starts_with("Snowdevil: Hi Ann! Still thinking about Wax Puck? Your cart is waiting"),
        "{}",
        sent[1].body
    );
    assert!(sent[1].body.contains("utm_source=callfy&utm_medium=sms&utm_campaign=cart_recovery"), "{}", sent[1].body);
    assert!(sent[1].body.contains("COMEBACK10"));
}

#[tokio::test]
async fn quiet_hours_hold_the_message_until_the_recipients_morning() {
    let w = world("wk-quiet", immediate(), Some(ConsentAction::OptIn)).await;
    // 22:00 in San Francisco (the number's area code), the evening after the cart was left.
    w.clock.set("2026-11-29T06:00:00Z".parse().unwrap());
    let morning: DateTime<Utc> = "2026-11-29T17:00:00Z".parse().unwrap(); // the merchant's 09:00 there
    assert_eq!(run(&w).await.unwrap(), JobOutcome::Waiting { until: morning });
    assert!(w.local.sandbox.messages().is_empty());
    w.clock.set(morning);
    assert!(matches!(run(&w).await.unwrap(), JobOutcome::Sent { .. }));
    assert_eq!(w.local.sandbox.messages().len(), 1);
}

#[tokio::test]
async fn a_second_abandonment_within_a_day_waits_for_the_frequency_cap() {
    let w = world("wk-freq", immediate(), Some(ConsentAction::OptIn)).await;
    assert!(matches!(run(&w).await.unwrap(), JobOutcome::Sent { .. }));
    // Two hours later the same shopper leaves another cart.
    w.clock.advance(Duration::hours(2));
    let second = new_cart(&unique("tok"), t0() + Duration::hours(2));
    let write = IngestWrite {
        deletions_seen: Vec::new(),
        merchant_id: w.merchant.clone(),
        event_key: unique("test"),
        received_at: t0() + Duration::hours(2),
        cart: Some((second.clone(), None)),
        consents: Vec::new(),
    };
    w.local.store().write_ingest(&write).await.unwrap();
    let job = OutreachJob { cart_token: second.token.clone(), ..w.job.clone() };
    let outcome = outreach_worker::process_job(&w.local.functions().worker.outreach, &job).await.unwrap();
    assert_eq!(outcome, JobOutcome::Waiting { until: t0() + Duration::hours(24) });
    assert_eq!(w.local.sandbox.messages().len(), 1);
    w.clock.set(t0() + Duration::hours(24));
    assert!(matches!(
        outreach_worker::process_job(&w.local.functions().worker.outreach, &job).await.unwrap(),
        JobOutcome::Sent { .. }
    ));
}

#[tokio::test]
async fn a_send_twilio_took_without_answering_is_not_sent_again() {
    let w = world("wk-lost", immediate(), Some(ConsentAction::OptIn)).await;
    // Twilio accepts the message, but its answer arrives after the worker gave up waiting.
    w.local.sandbox.inject(Fault::accept_then_hang(5_000));
    let first = run(&w).await;
    assert!(matches!(first, Err(WorkerError::TwilioRetry(TwilioError::Timeout))), "{first:?}");
    let step = w.local.store().get_step(&w.merchant, &w.token, 0).await.unwrap().unwrap();
    assert_eq!((step.state, step.uncertain_since), (StepState::Retry, Some(t0())));
    assert_eq!(w.local.sandbox.messages().len(), 1);

    // The merchant renames themselves in between: the body would differ now, yet the retry
    // still recognises the attempted message and records it instead of sending it again.
    let renamed = merchant(|v| {
        v["flow"] = immediate();
        v["name"] = "Snowdevil Boards".into();
    });
    w.local.store().put_merchant(&renamed, t0()).await.unwrap();
    let sid = w.local.sandbox.messages()[0].sid.clone();
    assert_eq!(run(&w).await.unwrap(), JobOutcome::Sent { message_sid: sid.clone() });
    assert_eq!(w.local.sandbox.messages().len(), 1, "still exactly one SMS");
    let log = w.local.store().sms_log(&w.merchant, &w.phone).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].message_sid, sid);
    assert!(w.local.sandbox.violations().is_empty(), "{:?}", w.local.sandbox.violations());
}

/// Step 0 as an attempt whose answer was lost leaves it: marked for a retry, uncertain.
async fn lost_attempt(w: &World) {
    let claim = w.local.store().claim_step(&w.merchant, &w.token, 0, "lost", "body-hash", t0()).await.unwrap();
    assert_eq!(claim, ClaimOutcome::Claimed { uncertain: None });
    let retry = StepResult::Retry { reason: "timeout".into(), uncertain: true };
    w.local.store().finish_step(&w.merchant, &w.token, 0, "lost", &retry, t0()).await.unwrap();
}

#[tokio::test]
async fn a_timed_out_send_that_never_reached_twilio_is_sent_on_retry() {
    let w = world("wk-lost2", immediate(), Some(ConsentAction::OptIn)).await;
    // Simulate the lost attempt: the step is marked uncertain, but Twilio has nothing.
    lost_attempt(&w).await;
    assert!(matches!(run(&w).await.unwrap(), JobOutcome::Sent { .. }));
    assert_eq!(w.local.sandbox.messages().len(), 1);
}

#[tokio::test]
async fn twilio_may_hold_a_text_only_until_the_sending_window_closes() {
    let w = world("wk-validity", immediate(), Some(ConsentAction::OptIn)).await;
    // 19:59:30 in San Francisco: the merchant's window closes at 20:00.
    w.clock.set("2026-11-29T03:59:30Z".parse().unwrap());
    assert!(matches!(run(&w).await.unwrap(), JobOutcome::Sent { .. }));
    let sent = w.local.sandbox.messages();
    assert_eq!(sent[0].validity_period, Some(30), "{sent:?}");
    assert!(w.local.sandbox.violations().is_empty(), "{:?}", w.local.sandbox.violations());
}

/// Moves 10 s each time it is read, as time passes while a request to Twilio is slow.
struct Stepping(std::sync::Mutex<DateTime<Utc>>);

impl callfy_shared::clock::Clock for Stepping {
    fn now(&self) -> DateTime<Utc> {
        let mut t = self.0.lock().unwrap();
        let now = *t;
        *t = now + Duration::seconds(10);
        now
    }
}

#[tokio::test]
async fn quiet_hours_are_judged_after_the_lookup_of_an_unanswered_attempt_not_before() {
    let w = world("wk-lookup-clock", immediate(), Some(ConsentAction::OptIn)).await;
    lost_attempt(&w).await;
    // The retry starts five seconds before the merchant's sending window closes (20:00 in San
    // Francisco); by the time Twilio has said it holds no such message, the window is closed.
    let start: DateTime<Utc> = "2026-11-29T03:59:55Z".parse().unwrap();
    let worker = &w.local.functions().worker.outreach;
    let late = callfy_shared::app::outreach::Outreach {
        store: w.local.store().clone(),
        twilio: worker.twilio.clone(),
        queue: worker.queue.clone(),
        clock: Arc::new(Stepping(std::sync::Mutex::new(start))),
        public_base_url: worker.public_base_url.clone(),
    };
    let outcome = late.process_job(&w.job).await.unwrap();
    assert!(matches!(outcome, JobOutcome::Waiting { .. }), "{outcome:?}");
    assert!(w.local.sandbox.messages().is_empty(), "{:?}", w.local.sandbox.messages());
}

/// Metrics are EMF log lines from the same formatter as the logs: a retried Twilio error is
/// counted by its code, the send once, and no line carries the phone number.
#[tokio::test]
async fn sends_and_twilio_errors_are_metrics_without_the_number() {
    let w = world("wk-metrics", immediate(), Some(ConsentAction::OptIn)).await;
    let logs = LogCapture::default();
    let _guard = logs.install();
    w.local.sandbox.inject(Fault::error(429, 20429));
    assert!(matches!(run(&w).await, Err(WorkerError::TwilioRetry(_))));
    assert!(matches!(run(&w).await.unwrap(), JobOutcome::Sent { .. }));
    assert_eq!(logs.metric("TwilioRequests"), vec![(1.0, None), (1.0, None)]);
    assert_eq!(logs.metric("TwilioErrors"), vec![(1.0, Some("20429".into()))]);
    assert_eq!(logs.metric("MessagesSent"), vec![(1.0, None)]);
    let text = logs.text();
    assert!(text.contains("recovery SMS sent"), "the send is logged: {text}");
    assert!(!text.contains("4155552671") && !text.contains("415555"), "a number reached the logs: {text}");
}

/// Found by the load-and-fault campaign: after an unanswered attempt (a 504), the retry looks
/// for that attempt's message at Twilio. The previous step's message, a minute old and from
/// the same sender with the same link, must not be taken for it: the step is sent, once.
#[tokio::test]
async fn an_unanswered_step_is_not_taken_for_the_previous_steps_message() {
    let flow = json!([
        { "after_minutes": 0, "channel": "sms" },
        { "after_minutes": 1, "channel": "sms", "discount_code": "SECOND" },
    ]);
    let w = world("wk-lookup", flow, Some(ConsentAction::OptIn)).await;
    assert!(matches!(run(&w).await.unwrap(), JobOutcome::Sent { .. }));
    w.clock.advance(Duration::minutes(1));
    let second = OutreachJob { step: 1, due_at: t0() + Duration::minutes(1), ..w.job.clone() };
    w.local.sandbox.inject(Fault::error(504, 20504));
    let worker = &w.local.functions().worker.outreach;
    assert!(matches!(outreach_worker::process_job(worker, &second).await, Err(WorkerError::TwilioRetry(_))));
    assert_eq!(w.local.sandbox.messages().len(), 1, "nothing reached Twilio");
    assert!(matches!(outreach_worker::process_job(worker, &second).await.unwrap(), JobOutcome::Sent { .. }));
    let sent = w.local.sandbox.messages();
    assert_eq!(sent.len(), 2, "the second step went out");
    assert!(sent[1].body.contains("SECOND"), "{}", sent[1].body);
    let step1 = w.local.store().get_step(&w.merchant, &w.token, 0).await.unwrap().unwrap();
    let step2 = w.local.store().get_step(&w.merchant, &w.token, 1).await.unwrap().unwrap();
    assert_ne!(step1.message_sid, step2.message_sid);
    assert_eq!(step2.message_sid.as_deref(), Some(sent[1].sid.as_str()));
    // And once only: a redelivery finds the step sent.
    assert_eq!(outreach_worker::process_job(worker, &second).await.unwrap(), JobOutcome::Duplicate);
    assert_eq!(w.local.sandbox.messages().len(), 2);
}
