//! The races of the correctness core, made deterministic through the worker's store port: a
//! wrapper acts between the decision and its claim (an order, a STOP, an API opt-out, another
//! cart's send), or crashes the worker after its claim or after Twilio accepted. Everything
//! else is real: moto, signed webhooks into `callfy-local`, the Twilio sandbox.

use callfy_integration_tests::*;
use callfy_local::LocalHandle;
use callfy_local::sandbox::InboundRequest;
use callfy_shared::adapters::store::{
    ClaimGuard, ClaimOutcome, SendCounter, SmsLogEntry, StepAvailability, StepRecord, StepResult, StepState,
};
use callfy_shared::adapters::store::{PortError, Store};
use callfy_shared::api_key::new_api_key;
use callfy_shared::app::outreach::{JobOutcome, Outreach, OutreachError};
use callfy_shared::domain::cart::Cart;
use callfy_shared::domain::consent::{ConsentEvent, ConsentState, ConsentStatus};
use callfy_shared::domain::delivery::Undeliverable;
use callfy_shared::domain::flow::{OutreachJob, SkipReason};
use callfy_shared::domain::merchant::{Channel, Merchant};
use callfy_shared::ports::{ConsentLedger, OutreachReads, OutreachWrites};
use callfy_shared::signature::sha256_hex;
use callfy_shared::{CartToken, ManualClock, MerchantId, Phone};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

const TOKEN: &str = "cd8e6f2f1c0b4a2e9d6c7b8a9f0e1d2c";
const SERVICE: &str = "MG0123456789abcdef0123456789abcdef";
const POOL_NUMBER: &str = "+15005550006";

fn t0() -> DateTime<Utc> {
    "2026-11-28T19:00:00Z".parse().unwrap()
}

fn ids() -> (MerchantId, CartToken, Phone) {
    (MerchantId::parse("snowdevil").unwrap(), CartToken::parse(TOKEN).unwrap(), Phone::parse(PHONE, None).unwrap())
}

type Action = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The real store behind the worker's ports, with a hand on the moments between.
struct Paused {
    inner: Store,
    /// Runs once, after the decision and before its claim.
    before_claim: Mutex<Option<Action>>,
    /// Runs once, right after a step is marked for a retry.
    after_retry: Mutex<Option<Action>>,
    /// The worker dies right after its claim is written.
    crash_after_claim: bool,
    /// The worker dies after Twilio accepted, before recording the send.
    crash_before_record: bool,
    /// The send's record is applied but its answer lost: the SDK's retry of the same write is
    /// what the worker hears.
    lose_record_answer: bool,
}

impl Paused {
    fn new(inner: &Store) -> Self {
        Self {
            inner: inner.clone(),
            before_claim: Mutex::new(None),
            after_retry: Mutex::new(None),
            crash_after_claim: false,
            crash_before_record: false,
            lose_record_answer: false,
        }
    }

    fn before_claim(self, action: impl Future<Output = ()> + Send + 'static) -> Self {
        *self.before_claim.lock().unwrap() = Some(Box::new(move || Box::pin(action)));
        self
    }
}

fn crash() -> PortError {
    PortError::unavailable("test", "Crash", "the worker died here")
}

impl OutreachReads for Paused {
    async fn merchant(
        &self,
        id: &MerchantId,
    ) -> Result<Option<callfy_shared::adapters::store::MerchantRecord>, PortError> {
        self.inner.merchant(id).await
    }
    async fn cart(&self, m: &MerchantId, token: &CartToken) -> Result<Option<Cart>, PortError> {
        self.inner.cart(m, token).await
    }
    async fn step(&self, m: &MerchantId, token: &CartToken, step: u8) -> Result<Option<StepRecord>, PortError> {
        self.inner.step(m, token, step).await
    }
    async fn consent(&self, m: &MerchantId, phone: &Phone, channel: Channel) -> Result<ConsentState, PortError> {
        self.inner.consent(m, phone, channel).await
    }
    async fn counter(&self, m: &MerchantId, phone: &Phone) -> Result<SendCounter, PortError> {
        self.inner.counter(m, phone).await
    }
    async fn undeliverable(&self, m: &MerchantId, phone: &Phone) -> Result<Option<Undeliverable>, PortError> {
        OutreachReads::undeliverable(&self.inner, m, phone).await
    }
    async fn has_outbound(&self, m: &MerchantId, phone: &Phone) -> Result<bool, PortError> {
        self.inner.has_outbound(m, phone).await
    }
    async fn logged_sids(&self, m: &MerchantId, phone: &Phone) -> Result<std::collections::HashSet<String>, PortError> {
        self.inner.logged_sids(m, phone).await
    }
}

impl callfy_shared::ports::RecoveryLinks for Paused {
    async fn save_link(&self, link: &callfy_shared::domain::link::RecoveryLink) -> Result<(), PortError> {
        self.inner.save_link(link).await
    }
    async fn find_link(
        &self,
        code: &callfy_shared::domain::link::LinkCode,
    ) -> Result<Option<callfy_shared::domain::link::RecoveryLink>, PortError> {
        self.inner.find_link(code).await
    }
    async fn count_click(
        &self,
        link: &callfy_shared::domain::link::RecoveryLink,
        at: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        self.inner.count_click(link, at).await
    }
}

impl OutreachWrites for Paused {
    async fn claim(
        &self,
        guard: &ClaimGuard,
        claim_id: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimOutcome, PortError> {
        let action = self.before_claim.lock().unwrap().take();
        if let Some(action) = action {
            action().await;
        }
        let outcome = OutreachWrites::claim(&self.inner, guard, claim_id, body, now).await?;
        if self.crash_after_claim && matches!(outcome, ClaimOutcome::Claimed { .. }) {
            return Err(crash());
        }
        Ok(outcome)
    }
    async fn finish_sent(
        &self,
        entry: &SmsLogEntry,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        if self.crash_before_record {
            return Err(crash());
        }
        if self.lose_record_answer {
            let applied = OutreachWrites::finish_sent(&self.inner, entry, token, step, claim_id, now).await;
            assert_eq!(applied.ok(), Some(true), "the first write applied");
        }
        OutreachWrites::finish_sent(&self.inner, entry, token, step, claim_id, now).await
    }
    async fn finish_called(
        &self,
        entry: &callfy_shared::domain::voice::CallLogEntry,
        claim_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        if self.crash_before_record {
            return Err(crash());
        }
        OutreachWrites::finish_called(&self.inner, entry, claim_id, now).await
    }
    async fn finish(
        &self,
        m: &MerchantId,
        token: &CartToken,
        step: u8,
        claim_id: &str,
        result: &StepResult,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.inner.finish(m, token, step, claim_id, result, now).await?;
        let action =
            if matches!(result, StepResult::Retry { .. }) { self.after_retry.lock().unwrap().take() } else { None };
        if let Some(action) = action {
            action().await;
        }
        Ok(())
    }
    async fn release_count(&self, m: &MerchantId, phone: &Phone, token: &CartToken, step: u8) -> Result<(), PortError> {
        OutreachWrites::release_count(&self.inner, m, phone, token, step).await
    }
    async fn skip(
        &self,
        target: (&MerchantId, &CartToken, u8),
        seen: &StepAvailability,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        self.inner.skip(target, seen, reason, now).await
    }
    async fn take_over(
        &self,
        target: (&MerchantId, &CartToken, u8),
        seen: &StepAvailability,
        claim_id: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        OutreachWrites::take_over(&self.inner, target, seen, claim_id, body, now).await
    }
}

impl ConsentLedger for Paused {
    async fn record(
        &self,
        m: &MerchantId,
        phone: &Phone,
        event: &ConsentEvent,
        purge_at: DateTime<Utc>,
    ) -> Result<Option<ConsentState>, PortError> {
        self.inner.record(m, phone, event, purge_at).await
    }
    async fn record_opt_in(
        &self,
        m: &MerchantId,
        phone: &Phone,
        event: &ConsentEvent,
        purge_at: DateTime<Utc>,
        deleted_at_seen: Option<DateTime<Utc>>,
    ) -> Result<Option<ConsentState>, PortError> {
        self.inner.record_opt_in(m, phone, event, purge_at, deleted_at_seen).await
    }
    async fn cancel_outreach(
        &self,
        merchant: &Merchant,
        phone: &Phone,
        channel: Channel,
        now: DateTime<Utc>,
    ) -> Result<usize, PortError> {
        ConsentLedger::cancel_outreach(&self.inner, merchant, phone, channel, now).await
    }
}

type PausedWorker =
    Outreach<Paused, callfy_shared::adapters::twilio::TwilioClient, callfy_shared::adapters::queue::OutreachQueue>;

/// The local worker's clients behind the paused store.
fn worker(local: &LocalHandle, store: Paused) -> PausedWorker {
    let w = &local.functions().worker.outreach;
    Outreach {
        store,
        twilio: w.twilio.clone(),
        queue: w.queue.clone(),
        clock: Arc::clone(&w.clock),
        public_base_url: w.public_base_url.clone(),
    }
}

fn job(token: &CartToken, step: u8) -> OutreachJob {
    OutreachJob { merchant_id: ids().0, cart_token: token.clone(), step, due_at: t0() }
}

/// callfy-local with an immediate SMS flow and one opted-in Shopify checkout.
async fn opted_in(prefix: &str, flow: serde_json::Value) -> (LocalHandle, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local(prefix, clock.clone(), &merchant(|v| v["flow"] = flow)).await;
    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(t0())).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    (local, clock)
}

fn immediate() -> serde_json::Value {
    json!([{ "after_minutes": 0, "channel": "sms" }])
}

#[tokio::test]
async fn an_order_acknowledged_between_decision_and_claim_stops_the_send() {
    let (local, _) = opted_in("race-order", immediate()).await;
    let base = local.base_url.clone();
    let paused = Paused::new(local.store()).before_claim(async move {
        let order = read_json("events/shopify/orders-create.json");
        let (status, answer) = post_shopify(&base, "orders/create", &unique("evt"), &order).await;
        assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "the order was acknowledged");
    });
    let (_, token, _) = ids();
    let outcome = worker(&local, paused).process_job(&job(&token, 0)).await.unwrap();
    assert_eq!(outcome, JobOutcome::Skipped(SkipReason::CartRecovered), "decided again after the claim failed");
    assert!(local.sandbox.messages().is_empty(), "nothing reached Twilio after the order's 200");
    local.shutdown().await;
}

#[tokio::test]
async fn a_duplicate_job_that_sends_after_a_failed_try_keeps_its_count() {
    let (local, _) = opted_in("race-release", immediate()).await;
    let (m, token, phone) = ids();
    // Twilio refuses the first try (certainly not sent): its count is given back.
    local.sandbox.inject(callfy_local::sandbox::Fault { status: 503, code: 20503, count: 1, accept_then_hang_ms: 0 });
    // The moment the step says `Retry`, a duplicate of the job (SQS delivers at least once)
    // claims it and sends.
    let w = &local.functions().worker.outreach;
    let duplicate = Outreach {
        store: local.store().clone(),
        twilio: w.twilio.clone(),
        queue: w.queue.clone(),
        clock: Arc::clone(&w.clock),
        public_base_url: w.public_base_url.clone(),
    };
    let (again, sent_by_duplicate) = (job(&token, 0), Arc::new(Mutex::new(None)));
    let seen = Arc::clone(&sent_by_duplicate);
    let paused = Paused::new(local.store());
    *paused.after_retry.lock().unwrap() = Some(Box::new(move || {
        Box::pin(async move {
            *seen.lock().unwrap() = Some(duplicate.process_job(&again).await.unwrap());
        })
    }));
    let first = worker(&local, paused).process_job(&job(&token, 0)).await;
    assert!(first.is_err(), "the first try is retried: {first:?}");
    let second = sent_by_duplicate.lock().unwrap().clone().expect("the duplicate ran");
    assert!(matches!(second, JobOutcome::Sent { .. }), "{second:?}");
    assert_eq!(local.sandbox.messages().len(), 1);
    // The send that went out is counted (its cart and step), whatever the failed try released.
    let counter = local.store().counter(&m, &phone).await.unwrap();
    assert_eq!(counter.sends.len(), 1, "{counter:?}");
    local.shutdown().await;
}

#[tokio::test]
async fn a_stop_between_decision_and_claim_stops_the_send() {
    let (local, _) = opted_in("race-stop", immediate()).await;
    // Unscheduled, the cart's step is not cancelled by the STOP: only the claim's condition on
    // the consent state can stop this send.
    let (m, token, phone) = ids();
    local.store().set_outreach_scheduled(&m, &token, false).await.unwrap();
    let sandbox = Arc::clone(&local.sandbox);
    let paused = Paused::new(local.store()).before_claim(async move {
        let req = InboundRequest {
            from: PHONE.into(),
            to: POOL_NUMBER.into(),
            body: "STOP".into(),
            messaging_service_sid: Some(SERVICE.into()),
        };
        let answer = sandbox.receive(&req).await.expect("sms-inbound answers");
        assert!(answer.reply.is_some_and(|r| r.contains("unsubscribed")), "the STOP was confirmed");
    });
    let outcome = worker(&local, paused).process_job(&job(&token, 0)).await.unwrap();
    assert_eq!(outcome, JobOutcome::Skipped(SkipReason::OptedOut), "decided again after the claim failed");
    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), 1, "only the STOP confirmation: {sent:?}");
    assert!(sent[0].body.contains("unsubscribed"), "{sent:?}");
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedOut);
    let step = local.store().get_step(&m, &token, 0).await.unwrap().unwrap();
    assert_eq!((step.state, step.reason.as_deref()), (StepState::Skipped, Some("opted_out")));
    local.shutdown().await;
}

#[tokio::test]
async fn an_api_opt_out_between_decision_and_claim_stops_the_send() {
    let (local, _) = opted_in("race-api", immediate()).await;
    let (m, token, phone) = ids();
    let key = new_api_key(&m);
    local.store().set_api_key_hash(&m, &sha256_hex(key.as_bytes())).await.unwrap();
    // A cart whose flow was not scheduled is not cancelled by the opt-out: only the claim's
    // consent condition can stop it.
    local.store().set_outreach_scheduled(&m, &token, false).await.unwrap();
    let base = local.base_url.clone();
    let paused = Paused::new(local.store()).before_claim(async move {
        let resp = reqwest::Client::new()
            .post(format!("{base}/v1/consents"))
            .bearer_auth(&key)
            .json(&json!({ "phone": PHONE, "channel": "sms", "action": "opt_out", "occurred_at": "2026-11-28T18:59:00Z" }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "the opt-out was acknowledged");
    });
    let outcome = worker(&local, paused).process_job(&job(&token, 0)).await.unwrap();
    assert_eq!(outcome, JobOutcome::Skipped(SkipReason::OptedOut));
    assert!(local.sandbox.messages().is_empty());
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedOut);
    local.shutdown().await;
}

#[tokio::test]
async fn a_closure_between_decision_and_claim_stops_the_send() {
    let (local, _) = opted_in("race-close", immediate()).await;
    let (m, token, _) = ids();
    let store = local.store().clone();
    let paused = Paused::new(local.store()).before_claim(async move {
        store.set_merchant_status(&m, callfy_shared::adapters::store::MerchantStatus::Closed).await.unwrap();
    });
    let outcome = worker(&local, paused).process_job(&job(&token, 0)).await.unwrap();
    assert_eq!(outcome, JobOutcome::Skipped(SkipReason::MerchantClosed));
    assert!(local.sandbox.messages().is_empty());
    local.shutdown().await;
}

/// Another cart of the same shopper, stored directly (already opted in through the first).
async fn second_cart(local: &LocalHandle, token: &str) -> CartToken {
    let mut cart = new_cart(token, t0());
    cart.checkout_id = None;
    let write = callfy_shared::adapters::store::IngestWrite {
        deletions_seen: Vec::new(),
        merchant_id: ids().0,
        event_key: unique("test"),
        received_at: t0(),
        cart: Some((cart.clone(), None)),
        consents: Vec::new(),
    };
    local.store().write_ingest(&write).await.unwrap();
    cart.token
}

#[tokio::test]
async fn a_second_carts_send_between_decision_and_claim_holds_this_one() {
    let (local, _) = opted_in("race-freq", immediate()).await;
    let other = second_cart(&local, &unique("tok")).await;
    let plain = local.functions().worker.outreach.clone();
    let other_job = job(&other, 0);
    let paused = Paused::new(local.store()).before_claim(async move {
        let outcome = plain.process_job(&other_job).await.unwrap();
        assert!(matches!(outcome, JobOutcome::Sent { .. }), "{outcome:?}");
    });
    let (_, token, _) = ids();
    let outcome = worker(&local, paused).process_job(&job(&token, 0)).await.unwrap();
    assert_eq!(outcome, JobOutcome::Waiting { until: t0() + Duration::hours(24) }, "held by the frequency rule");
    assert_eq!(local.sandbox.messages().len(), 1);
    local.shutdown().await;
}

#[tokio::test]
async fn five_carts_of_one_phone_at_once_get_one_sms() {
    let (local, _) = opted_in("race-five", immediate()).await;
    let mut tokens = vec![ids().1];
    for _ in 0..4 {
        tokens.push(second_cart(&local, &unique("tok")).await);
    }
    let w = &local.functions().worker.outreach;
    let results =
        futures::future::join_all(tokens.iter().map(|t| async move { w.process_job(&job(t, 0)).await })).await;
    let sent = results.iter().filter(|r| matches!(r, Ok(JobOutcome::Sent { .. }))).count();
    assert_eq!(sent, 1, "{results:?}");
    assert_eq!(local.sandbox.messages().len(), 1);
    for r in &results {
        assert!(
            matches!(r, Ok(JobOutcome::Sent { .. }) | Ok(JobOutcome::Waiting { .. }) | Err(OutreachError::Contention)),
            "{r:?}"
        );
    }
    local.shutdown().await;
}

#[tokio::test]
async fn a_stale_opt_in_does_not_outrun_a_newer_opt_out() {
    let clock = Arc::new(ManualClock::new(t0()));
    let local = start_local("race-stale", clock.clone(), &merchant(|v| v["flow"] = immediate())).await;
    let (m, token, phone) = ids();
    // 18:50: Shopify reports the customer unsubscribed.
    let mut update = read_json("events/shopify/customers-marketing-consent-update.json");
    update["sms_marketing_consent"]["state"] = "unsubscribed".into();
    update["sms_marketing_consent"]["consent_updated_at"] = "2026-11-28T18:50:00Z".into();
    let (status, answer) =
        post_shopify(&local.base_url, "customers_marketing_consent/update", &unique("evt"), &update).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    // Then the checkout captured at 18:44, box ticked then, arrives.
    let at: DateTime<Utc> = "2026-11-28T18:44:00Z".parse().unwrap();
    let (status, answer) = post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &checkout(at)).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    let state = local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(state.status, ConsentStatus::OptedOut, "the older opt-in was not applied");
    let cart = local.store().get_cart(&m, &token).await.unwrap().unwrap();
    assert_eq!(cart.consent_note.as_deref(), Some("opted_out_later"), "the cart records why");
    assert!(!cart.outreach_scheduled);
    // Even a job that arrives anyway sends nothing.
    let outcome = local.functions().worker.outreach.process_job(&job(&token, 0)).await.unwrap();
    assert_eq!(outcome, JobOutcome::Skipped(SkipReason::OptedOut));
    assert!(local.sandbox.messages().is_empty());
    local.shutdown().await;
}

#[tokio::test]
async fn a_crash_after_the_claim_finishes_the_flow_with_no_duplicate() {
    let flow = json!([{ "after_minutes": 0, "channel": "sms" }, { "after_minutes": 60, "channel": "sms" }]);
    let (local, clock) = opted_in("race-crash", flow).await;
    let (m, token, _) = ids();
    let mut paused = Paused::new(local.store());
    paused.crash_after_claim = true;
    let crashed = worker(&local, paused).process_job(&job(&token, 0)).await;
    assert!(matches!(crashed, Err(OutreachError::Port(_))), "{crashed:?}");
    assert!(local.sandbox.messages().is_empty());
    let step = local.store().get_step(&m, &token, 0).await.unwrap().unwrap();
    assert_eq!(step.state, StepState::Claimed);

    // A redelivery while the lease holds waits for it instead of calling it a duplicate.
    let early = local.functions().worker.outreach.process_job(&job(&token, 0)).await.unwrap();
    assert_eq!(early, JobOutcome::Waiting { until: t0() + Duration::seconds(120) }, "looks again when the lease ends");
    assert!(local.sandbox.messages().is_empty());

    // After the lease, the redelivery looks at Twilio, finds nothing, and sends once.
    clock.advance(Duration::seconds(121));
    let outcome = local.functions().worker.outreach.process_job(&job(&token, 0)).await.unwrap();
    assert!(matches!(outcome, JobOutcome::Sent { .. }), "{outcome:?}");
    assert_eq!(local.functions().worker.outreach.process_job(&job(&token, 0)).await.unwrap(), JobOutcome::Duplicate);
    // The flow goes on to its next step.
    clock.advance(Duration::minutes(60));
    let next = local.functions().worker.outreach.process_job(&job(&token, 1)).await.unwrap();
    assert!(matches!(next, JobOutcome::Sent { .. }), "{next:?}");
    assert_eq!(local.sandbox.messages().len(), 2, "one message per step");
    local.shutdown().await;
}

#[tokio::test]
async fn a_crash_after_twilio_accepted_records_the_message_once_it_is_found() {
    let (local, clock) = opted_in("race-crash2", immediate()).await;
    let (m, token, phone) = ids();
    let mut paused = Paused::new(local.store());
    paused.crash_before_record = true;
    let crashed = worker(&local, paused).process_job(&job(&token, 0)).await;
    assert!(matches!(crashed, Err(OutreachError::Port(_))), "{crashed:?}");
    assert_eq!(local.sandbox.messages().len(), 1, "Twilio took it");
    assert!(local.store().sms_log(&m, &phone).await.unwrap().is_empty(), "but nothing recorded it");

    clock.advance(Duration::seconds(121));
    let sid = local.sandbox.messages()[0].sid.clone();
    let outcome = local.functions().worker.outreach.process_job(&job(&token, 0)).await.unwrap();
    assert_eq!(outcome, JobOutcome::Sent { message_sid: sid.clone() });
    assert_eq!(local.sandbox.messages().len(), 1, "found at Twilio, not sent again");
    let log = local.store().sms_log(&m, &phone).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].message_sid, sid);
    let step = local.store().get_step(&m, &token, 0).await.unwrap().unwrap();
    assert_eq!((step.state, step.message_sid.as_deref()), (StepState::Sent, Some(sid.as_str())));
    local.shutdown().await;
}

#[tokio::test]
async fn a_sends_record_applied_with_its_answer_lost_still_queues_the_next_step() {
    let flow = json!([{ "after_minutes": 0, "channel": "sms" }, { "after_minutes": 60, "channel": "sms" }]);
    let (local, _) = opted_in("race-lost-answer", flow).await;
    let (m, token, _) = ids();
    // Only what this worker queues from here on.
    let sqs = aws_sdk_sqs::Client::new(&sdk().await);
    let queue = local.resources.queue_url.clone();
    sqs.purge_queue().queue_url(&queue).send().await.unwrap();
    let mut paused = Paused::new(local.store());
    paused.lose_record_answer = true;
    let outcome = worker(&local, paused).process_job(&job(&token, 0)).await.unwrap();
    assert!(matches!(outcome, JobOutcome::Sent { .. }), "{outcome:?}");
    assert_eq!(local.sandbox.messages().len(), 1);
    let step = local.store().get_step(&m, &token, 0).await.unwrap().unwrap();
    assert_eq!(step.state, StepState::Sent);
    // Step 1, held back until it is due: the one message on the queue.
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    let count = |name| attrs.get(&name).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    let queued = count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        + count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed);
    assert_eq!(queued, 1, "the next step is queued: {attrs:?}");
    local.shutdown().await;
}

#[tokio::test]
async fn a_storage_failure_during_stop_loses_nothing() {
    // Steps due in 30 minutes: the queue holds only what this test puts there now.
    let (local, _) = opted_in("race-lost-stop", json!([{ "after_minutes": 30, "channel": "sms" }])).await;
    let (m, token, phone) = ids();
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let inbound = sms_inbound_with(&local, FailWrites(down.clone())).await;
    let resp = sms_inbound::handle(&inbound, event("twilio-sms-stop.json")).await;
    assert_eq!(resp.status(), 200, "Twilio does not retry: the person is answered");
    let lambda_http::Body::Text(reply) = resp.into_body() else { panic!("TwiML") };
    // Not confirmed: until the copy is applied a step could still go out, and a sender told
    // "unsubscribed" must get nothing more.
    assert!(reply.ends_with("<Response/>"), "{reply}");
    assert_eq!(
        local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status,
        ConsentStatus::OptedIn,
        "nothing was written while storage was down"
    );

    // Storage recovers; the queued copy is applied by the worker.
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    let stats = local.drain().await.unwrap();
    assert_eq!((stats.received, stats.failed), (1, 0));
    let state = local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(state.status, ConsentStatus::OptedOut);
    let ledger = local.store().consent_ledger(&m, &phone, Channel::Sms).await.unwrap();
    let last = &ledger.last().unwrap().event;
    assert_eq!(last.evidence.message_sid.as_deref(), Some("SM0000000000000000000000000000a001"));
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::OptedOut);
    let step = local.store().get_step(&m, &token, 0).await.unwrap().expect("queued step cancelled");
    assert_eq!((step.state, step.reason.as_deref()), (StepState::Skipped, Some("opted_out")));
    // Applied now, and within five minutes of the STOP: the one confirmation the inline attempt
    // could not give, from the Messaging Service the STOP reached. No outreach.
    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, phone.as_str());
    assert_eq!(sent[0].messaging_service_sid.as_deref(), Some("MG0123456789abcdef0123456789abcdef"));
    assert!(sent[0].body.contains("unsubscribed from Snowdevil"), "{}", sent[0].body);
    assert!(sent[0].validity_period.is_some_and(|v| v <= 300), "not sent after its five minutes: {sent:?}");

    // A redelivery of the same message (or a second copy) changes nothing and says nothing.
    let healthy = sms_inbound::InboundApp { replay_delay_seconds: 0, ..sms_inbound_app(&local) };
    let again = sms_inbound::handle(&healthy, event("twilio-sms-stop.json")).await;
    let lambda_http::Body::Text(again) = again.into_body() else { panic!("TwiML") };
    assert!(again.ends_with("<Response/>"), "{again}");
    assert_eq!(local.store().consent_ledger(&m, &phone, Channel::Sms).await.unwrap().len(), ledger.len());
    let stats = local.drain().await.unwrap();
    assert_eq!((stats.received, stats.failed), (1, 0), "the second copy");
    assert_eq!(local.sandbox.messages().len(), 1, "one confirmation only");
    local.shutdown().await;
}

#[tokio::test]
async fn a_stop_applied_from_its_copy_more_than_five_minutes_later_is_not_confirmed() {
    let (local, clock) = opted_in("race-late-stop", json!([{ "after_minutes": 30, "channel": "sms" }])).await;
    let (m, _, phone) = ids();
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let inbound = sms_inbound_with(&local, FailWrites(down.clone())).await;
    assert_eq!(sms_inbound::handle(&inbound, event("twilio-sms-stop.json")).await.status(), 200);
    // Storage recovers six minutes on: applied, but a confirmation now would come unexplained.
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    clock.advance(chrono::Duration::minutes(6));
    let stats = local.drain().await.unwrap();
    assert_eq!((stats.received, stats.failed), (1, 0));
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedOut);
    assert!(local.sandbox.messages().is_empty(), "{:?}", local.sandbox.messages());
    local.shutdown().await;
}

#[tokio::test]
async fn a_stop_whose_storage_fails_once_is_applied_and_confirmed_inline() {
    let (local, _) = opted_in("race-retry-stop", json!([{ "after_minutes": 30, "channel": "sms" }])).await;
    let (m, _, phone) = ids();
    // The first write fails (its attempt gives up), the next attempt's go through.
    let once = FailNextWrites(Arc::new(std::sync::atomic::AtomicUsize::new(1)));
    let inbound = sms_inbound_with(&local, once.clone()).await;
    let resp = sms_inbound::handle(&inbound, event("twilio-sms-stop.json")).await;
    let lambda_http::Body::Text(reply) = resp.into_body() else { panic!("TwiML") };
    assert!(reply.contains("unsubscribed from Snowdevil"), "confirmed once applied: {reply}");
    let state = local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap();
    assert_eq!(state.status, ConsentStatus::OptedOut, "applied inline, before any queued step");
    assert_eq!(once.0.load(std::sync::atomic::Ordering::SeqCst), 0, "a write did fail first");
    local.shutdown().await;
}

/// A sample event from `events/` (Twilio's signed as Twilio signs them), as a request.
fn event(name: &str) -> lambda_http::Request {
    lambda_http::request::from_str(&read_json(&format!("events/{name}")).to_string()).expect("sample event")
}

/// sms-inbound whose DynamoDB client carries `fault`, its copies applied with no delay.
async fn sms_inbound_with(
    local: &LocalHandle,
    fault: impl aws_sdk_dynamodb::config::Intercept + 'static,
) -> sms_inbound::InboundApp {
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk().await).interceptor(fault).build();
    sms_inbound::InboundApp {
        store: Store::new(aws_sdk_dynamodb::Client::from_conf(conf), local.store().table()),
        queue: local.functions().worker.outreach.queue.clone(),
        replay_delay_seconds: 0,
        ..sms_inbound_app(local)
    }
}

/// sms-inbound as the sample events were signed for (scripts/local-env's PUBLIC_BASE_URL).
fn sms_inbound_app(local: &LocalHandle) -> sms_inbound::InboundApp {
    let i = &local.functions().inbound;
    sms_inbound::InboundApp {
        store: i.store.clone(),
        queue: i.queue.clone(),
        replay_delay_seconds: i.replay_delay_seconds,
        auth_token: i.auth_token.clone(),
        previous_auth_token: None,
        shared_key: None,
        public_base_url: "http://127.0.0.1:3000".into(),
        clock: Arc::clone(&i.clock),
    }
}

#[tokio::test]
async fn a_queued_stop_replayed_after_a_later_start_changes_nothing() {
    let (local, clock) = opted_in("race-replay", json!([{ "after_minutes": 30, "channel": "sms" }])).await;
    let (m, _, phone) = ids();
    let inbound = sms_inbound::InboundApp { replay_delay_seconds: 0, ..sms_inbound_app(&local) };
    assert_eq!(sms_inbound::handle(&inbound, event("twilio-sms-stop.json")).await.status(), 200);
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedOut);
    clock.advance(Duration::minutes(1));
    assert_eq!(sms_inbound::handle(&inbound, event("twilio-sms-start.json")).await.status(), 200);
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedIn);
    let entries = local.store().consent_ledger(&m, &phone, Channel::Sms).await.unwrap().len();

    // The STOP's durable copy arrives after the START: its inline attempt finished, so it is done
    // (and so is the START's own copy).
    let stats = local.drain().await.unwrap();
    assert_eq!((stats.received, stats.failed), (2, 0));
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedIn);
    assert_eq!(local.store().consent_ledger(&m, &phone, Channel::Sms).await.unwrap().len(), entries);
    local.shutdown().await;
}

#[tokio::test]
async fn a_start_applied_late_never_undoes_a_stop_texted_after_it() {
    let (local, _) = opted_in("race-late-start", json!([{ "after_minutes": 30, "channel": "sms" }])).await;
    let (m, _, phone) = ids();
    let text = |sid: &str, body: &str, minutes: i64| callfy_shared::domain::inbound::InboundMessage {
        message_sid: sid.into(),
        from: phone.clone(),
        to: POOL_NUMBER.into(),
        messaging_service_sid: SERVICE.into(),
        body: body.into(),
        segments: 1,
        received_at: t0() + Duration::minutes(minutes),
    };
    let store = local.store();
    let state = || async { store.consent_state(&m, &phone, Channel::Sms).await.unwrap().status };
    callfy_shared::app::inbound::replay(store, &text("SMstop1", "STOP", 1)).await.unwrap();
    assert_eq!(state().await, ConsentStatus::OptedOut);
    // START at :02, whose handling died before it applied; STOP again at :03, answered.
    let late_start = text("SMstart", "START", 2);
    callfy_shared::app::inbound::replay(store, &text("SMstop2", "Stop all", 3)).await.unwrap();
    // The START's copy, applied now, is older than the last STOP: the number stays out.
    callfy_shared::app::inbound::replay(store, &late_start).await.unwrap();
    assert_eq!(state().await, ConsentStatus::OptedOut, "a STOP texted after the START holds");
    // And the other way round: a STOP's copy applied after a later START does not undo it.
    callfy_shared::app::inbound::replay(store, &text("SMstart2", "START", 5)).await.unwrap();
    assert_eq!(state().await, ConsentStatus::OptedIn);
    callfy_shared::app::inbound::replay(store, &text("SMstop3", "STOP", 4)).await.unwrap();
    assert_eq!(state().await, ConsentStatus::OptedIn, "the person's own later START stands");
    local.shutdown().await;
}

#[tokio::test]
async fn an_undeliverable_report_between_decision_and_claim_stops_the_send() {
    let (local, _) = opted_in("race-reach", immediate()).await;
    let (m, token, phone) = ids();
    let store = local.store().clone();
    let paused = Paused::new(local.store()).before_claim(async move {
        let mark = Undeliverable { error_code: 30006, message_sid: "SMlandline".into(), at: t0() };
        store.mark_undeliverable(&m, &phone, &mark, t0() + Duration::days(730)).await.unwrap();
    });
    let outcome = worker(&local, paused).process_job(&job(&token, 0)).await.unwrap();
    assert_eq!(outcome, JobOutcome::Skipped(SkipReason::Undeliverable));
    assert!(local.sandbox.messages().is_empty());
    local.shutdown().await;
}

#[tokio::test]
async fn a_call_opt_out_between_decision_and_claim_stops_the_call() {
    let clock = Arc::new(ManualClock::new(t0()));
    let voice = merchant(|v| {
        v["flow"] = json!([{ "after_minutes": 0, "channel": "voice" }]);
        v["voice"] = json!({ "consent_attribute": "callfy_voice_consent", "consent_text": "Call me about my cart with an automated assistant.", "consent_attribute_rendered": true });
    });
    let local = start_local("race-call", clock.clone(), &voice).await;
    let mut body = checkout(t0());
    body["note_attributes"] = json!([{ "name": "callfy_voice_consent", "value": "yes" }]);
    assert_eq!(post_shopify(&local.base_url, "checkouts/create", &unique("evt"), &body).await.0, 200);
    let (m, token, phone) = ids();
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Voice).await.unwrap().status, ConsentStatus::OptedIn);
    // Unscheduled, the call step is not cancelled by the opt-out: only the claim's condition on
    // the voice consent state can stop this call.
    local.store().set_outreach_scheduled(&m, &token, false).await.unwrap();
    let key = new_api_key(&m);
    local.store().set_api_key_hash(&m, &sha256_hex(key.as_bytes())).await.unwrap();
    let base = local.base_url.clone();
    let paused = Paused::new(local.store()).before_claim(async move {
        let resp = reqwest::Client::new()
            .post(format!("{base}/v1/consents"))
            .bearer_auth(&key)
            .json(&json!({ "phone": PHONE, "channel": "voice", "action": "opt_out", "occurred_at": "2026-11-28T18:59:30Z" }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "the opt-out from calls was acknowledged");
    });
    let outcome = worker(&local, paused).process_job(&job(&token, 0)).await.unwrap();
    assert_eq!(outcome, JobOutcome::Skipped(SkipReason::VoiceOptedOut), "decided again after the claim failed");
    assert!(local.sandbox.calls().is_empty(), "no call reached Twilio after the opt-out's 201");
    assert_eq!(local.store().consent_state(&m, &phone, Channel::Sms).await.unwrap().status, ConsentStatus::OptedIn);
    local.shutdown().await;
}
