//! Sends the campaign's traffic as the platforms and shoppers would: each cart's deliveries in
//! order on one connection of a pool, some delivered twice, some out of order, retried after a
//! 5xx as a platform retries; STOPs and orders on timers of their own, racing the worker; after
//! a cart's last delivery, for a share of phones, a STOP/START storm (keywords one after
//! another, some replayed with the same MessageSid) or a data-subject deletion.

use crate::checks::{CartOutcome, DeletionSent, KeywordSent};
use crate::rng::Rng;
use crate::traffic::{self, CartPlan, Delivery, Kind, Platform};
use callfy_local::LocalHandle;
use callfy_local::sandbox::InboundRequest;
use callfy_shared::Clock;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How a platform retries a delivery we answered 5xx (or could not answer).
const MAX_ATTEMPTS: u32 = 10;

#[derive(Debug, Default, Clone, Copy)]
pub struct KindCounts {
    /// Logical deliveries (a redelivery counts once more; a retry after 5xx does not).
    pub deliveries: u64,
    pub attempts: u64,
    pub ok: u64,
    pub duplicate: u64,
    pub client_error: u64,
    pub server_error: u64,
    pub transport_error: u64,
    /// Deliveries still unanswered after every retry.
    pub gave_up: u64,
}

pub struct Driver {
    pub local: Arc<LocalHandle>,
    pub http: reqwest::Client,
    pub clock: Arc<dyn Clock>,
    pub epoch: Instant,
    pub rng: Rng,
    pub redeliver: f64,
    pub bc_api_key: String,
    /// Each merchant's consent API key (deletions, and their status).
    pub api_keys: HashMap<Platform, String>,
    /// The sandbox's account, which signs inbound messages.
    pub account_sid: String,
    /// Off once the faults stop: what is sent then must never be answered 5xx.
    pub faults_on: Arc<AtomicBool>,
    pub outcomes: Mutex<Vec<CartOutcome>>,
    pub counts: Mutex<BTreeMap<Kind, KindCounts>>,
    pub post_fault_5xx: AtomicU64,
    pub refused_4xx: AtomicU64,
    pub webhooks_sent: AtomicU64,
    pub first_refusals: Mutex<Vec<String>>,
}

impl Driver {
    fn outcome(&self, cart: usize, f: impl FnOnce(&mut CartOutcome)) {
        let mut o = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = o.get_mut(cart) {
            f(c);
        }
    }

    fn count(&self, kind: Kind, f: impl FnOnce(&mut KindCounts)) {
        f(self.counts.lock().unwrap_or_else(|e| e.into_inner()).entry(kind).or_default());
    }

    /// Sends until answered (2xx or 4xx) or the platform gives up; the time of the 2xx answer.
    pub async fn send(&self, d: &Delivery) -> Option<Duration> {
        self.send_answer(d).await.map(|(at, _)| at)
    }

    /// `send`, with the 2xx answer's body.
    pub async fn send_answer(&self, d: &Delivery) -> Option<(Duration, String)> {
        self.count(d.kind, |c| c.deliveries += 1);
        if !matches!(d.kind, Kind::Consent | Kind::Delete) {
            self.webhooks_sent.fetch_add(1, Ordering::Relaxed);
        }
        let mut backoff = Duration::from_millis(250);
        for _ in 0..MAX_ATTEMPTS {
            let after_faults = !self.faults_on.load(Ordering::SeqCst);
            let mut req = self.http.post(format!("{}{}", self.local.base_url, d.path)).body(d.body.clone());
            for (k, v) in d.headers_at(self.clock.now()) {
                req = req.header(k, v);
            }
            self.count(d.kind, |c| c.attempts += 1);
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    if (200..300).contains(&status) {
                        let dup = text.contains("\"duplicate\"");
                        self.count(d.kind, |c| {
                            c.ok += 1;
                            if dup {
                                c.duplicate += 1;
                            }
                        });
                        return Some((self.epoch.elapsed(), text));
                    }
                    if status >= 500 {
                        self.count(d.kind, |c| c.server_error += 1);
                        if after_faults {
                            self.post_fault_5xx.fetch_add(1, Ordering::Relaxed);
                            self.note(format!(
                                "{:?} to {} answered {status} after the faults stopped: {text}",
                                d.kind, d.path
                            ));
                        }
                    } else {
                        // A signed, well-formed delivery: a 4xx is a finding, not something to retry.
                        self.count(d.kind, |c| c.client_error += 1);
                        self.refused_4xx.fetch_add(1, Ordering::Relaxed);
                        self.note(format!("{:?} to {} answered {status}: {text}", d.kind, d.path));
                        return None;
                    }
                }
                Err(_) => self.count(d.kind, |c| c.transport_error += 1),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        self.count(d.kind, |c| c.gave_up += 1);
        None
    }

    fn note(&self, s: String) {
        let mut n = self.first_refusals.lock().unwrap_or_else(|e| e.into_inner());
        if n.len() < 20 {
            n.push(s);
        }
    }

    fn uid(&self) -> String {
        format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64())
    }

    /// Sends `d`, and with the redelivery share queues it to be delivered again later.
    async fn deliver(&self, d: Delivery, again: &mut Vec<Delivery>) -> Option<Duration> {
        let acked = self.send(&d).await;
        if self.rng.chance(self.redeliver) {
            again.push(d);
        }
        acked
    }

    /// One cart's traffic, in the order its platform would send it. STOP and order go on their
    /// own timers into `racers`.
    pub async fn run_cart(self: &Arc<Self>, plan: &CartPlan, racers: &mut JoinSet<()>) {
        let mut again = Vec::new();
        let start = self.clock.now();
        if plan.platform == Platform::BigCommerce {
            let (cart, checkout) = traffic::bigcommerce_store_docs(plan);
            self.local.bigcommerce.put(traffic::BC_STORE_HASH, cart, Some(checkout));
            if plan.consent {
                let d = traffic::consent_delivery(plan, &self.bc_api_key, start, &self.uid());
                let acked = self.send(&d).await.is_some();
                self.outcome(plan.idx, |o| o.consent_acked = acked);
            }
        }
        let create = traffic::cart_delivery(plan, Kind::Create, 1, (start, start), &self.uid());
        let created = self.deliver(create, &mut again).await.is_some();
        self.outcome(plan.idx, |o| {
            o.created = created;
            if plan.platform != Platform::BigCommerce {
                o.consent_acked = created && plan.consent;
            }
        });
        if let Some(after) = plan.stop_after_ms {
            let me = Arc::clone(self);
            let plan = plan.clone();
            racers.spawn(async move {
                tokio::time::sleep(Duration::from_millis(after)).await;
                me.stop(&plan).await;
            });
        }
        if let Some(after) = plan.order_after_ms {
            let me = Arc::clone(self);
            let plan = plan.clone();
            racers.spawn(async move {
                tokio::time::sleep(Duration::from_millis(after)).await;
                me.outcome(plan.idx, |o| o.order_sent = true);
                let d = traffic::order_delivery(&plan, me.clock.now(), &me.uid());
                let acked = me.send(&d).await;
                me.outcome(plan.idx, |o| o.order_acked = acked);
            });
        }
        for version in 2..=plan.updates + 1 {
            tokio::time::sleep(Duration::from_millis(100 + self.rng.below(400))).await;
            let d = traffic::cart_delivery(plan, Kind::Update, version, (start, self.clock.now()), &self.uid());
            self.deliver(d, &mut again).await;
        }
        if plan.stale_update {
            // The first version again, as an update generated before the newest one.
            let d = traffic::cart_delivery(plan, Kind::Stale, 1, (start, start), &self.uid());
            self.deliver(d, &mut again).await;
        }
        for d in again {
            tokio::time::sleep(Duration::from_millis(self.rng.below(300))).await;
            self.send(&d).await;
        }
        // After the cart's last delivery (nothing of the platform's comes after them).
        if let Some(after) = plan.storm_after_ms {
            let me = Arc::clone(self);
            let plan = plan.clone();
            racers.spawn(async move {
                tokio::time::sleep(Duration::from_millis(after)).await;
                me.storm(&plan).await;
            });
        }
        if let Some(after) = plan.delete_after_ms {
            let me = Arc::clone(self);
            let plan = plan.clone();
            racers.spawn(async move {
                tokio::time::sleep(Duration::from_millis(after)).await;
                me.delete(&plan).await;
            });
        }
    }

    /// The shopper's keywords, one after another (each answered, or given up on, before the
    /// next), some delivered a second time with the same MessageSid right after.
    async fn storm(&self, plan: &CartPlan) {
        for w in &plan.storm {
            let sid = format!("SM{}", self.uid());
            let form = self.inbound_form(plan, w.text, &sid);
            let mut sends = vec![false];
            if w.replayed {
                sends.push(true);
            }
            for replay in sends {
                let sent = self.keyword(&form).await;
                let k = KeywordSent {
                    text: w.text.to_string(),
                    opt_out: w.opt_out,
                    sid: sid.clone(),
                    replay,
                    status: sent.as_ref().map(|s| s.0),
                    acked: sent.as_ref().filter(|s| (200..300).contains(&s.0)).map(|s| s.1),
                    reply: sent.and_then(|s| s.2),
                };
                self.outcome(plan.idx, |o| o.storm.push(k));
            }
            tokio::time::sleep(Duration::from_millis(50 + self.rng.below(250))).await;
        }
    }

    /// An inbound message's form as Twilio posts it, under a MessageSid of our choosing.
    fn inbound_form(&self, plan: &CartPlan, body: &str, sid: &str) -> Vec<(String, String)> {
        vec![
            ("AccountSid".into(), self.account_sid.clone()),
            ("ApiVersion".into(), "2010-04-01".into()),
            ("Body".into(), body.into()),
            ("From".into(), plan.phone.clone()),
            ("MessageSid".into(), sid.into()),
            ("MessagingServiceSid".into(), plan.platform.messaging_service()),
            ("NumMedia".into(), "0".into()),
            ("NumSegments".into(), "1".into()),
            ("SmsMessageSid".into(), sid.into()),
            ("SmsSid".into(), sid.into()),
            ("SmsStatus".into(), "received".into()),
            ("To".into(), traffic::POOL_NUMBER.into()),
        ]
    }

    /// One keyword delivery: our answer's status, when it came and its `<Message>`.
    async fn keyword(&self, form: &[(String, String)]) -> Option<(u16, Duration, Option<String>)> {
        self.count(Kind::Keyword, |c| {
            c.deliveries += 1;
            c.attempts += 1;
        });
        let after_faults = !self.faults_on.load(Ordering::SeqCst);
        match self.local.sandbox.redeliver(form).await {
            Ok((status, _, reply)) => {
                let at = self.epoch.elapsed();
                self.count(Kind::Keyword, |c| match status {
                    200..=299 => c.ok += 1,
                    500.. => c.server_error += 1,
                    _ => c.client_error += 1,
                });
                if status >= 500 && after_faults {
                    self.post_fault_5xx.fetch_add(1, Ordering::Relaxed);
                    self.note(format!("a storm keyword answered {status} after the faults stopped"));
                } else if (400..500).contains(&status) {
                    self.refused_4xx.fetch_add(1, Ordering::Relaxed);
                    self.note(format!("a storm keyword answered {status}"));
                }
                Some((status, at, reply))
            }
            Err(_) => {
                self.count(Kind::Keyword, |c| c.transport_error += 1);
                None
            }
        }
    }

    /// A data-subject deletion of the cart's phone, retried after a 5xx as a merchant's client
    /// would; a Shopify redaction's status is then read until it is done (the worker carries
    /// it out from the queue).
    async fn delete(&self, plan: &CartPlan) {
        let shopify = plan.platform == Platform::Shopify;
        let key = self.api_keys.get(&plan.platform).cloned().unwrap_or_default();
        let uid = self.uid();
        let d = traffic::delete_delivery(plan, &key, &uid);
        self.outcome(plan.idx, |o| o.deletion = Some(DeletionSent { shopify, ..DeletionSent::default() }));
        let Some((acked, body)) = self.send_answer(&d).await else { return };
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let id = if shopify { Some(format!("shopify-{uid}")) } else { answer["id"].as_str().map(str::to_string) };
        let done_now = answer["status"].as_str() == Some("done");
        self.outcome(plan.idx, |o| {
            o.deletion =
                Some(DeletionSent { shopify, id: id.clone(), acked: Some(acked), done: done_now.then_some(acked) })
        });
        let Some(id) = id.filter(|_| !done_now) else { return };
        // Read the status once a second, for up to ten minutes.
        for _ in 0..600 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if self.deletion_status(&key, &id).await.as_deref() == Some("done") {
                let at = self.epoch.elapsed();
                self.outcome(plan.idx, |o| {
                    if let Some(d) = o.deletion.as_mut() {
                        d.done = Some(at);
                    }
                });
                return;
            }
        }
    }

    /// A data-subject request's status through the consent API (None: no answer or no request).
    pub async fn deletion_status(&self, key: &str, id: &str) -> Option<String> {
        let view = self.deletion_view(key, id).await?;
        view["status"].as_str().map(str::to_string)
    }

    /// A data-subject request's status document through the consent API.
    pub async fn deletion_view(&self, key: &str, id: &str) -> Option<serde_json::Value> {
        let url = format!("{}/v1/privacy/requests/{id}", self.local.base_url);
        let resp = self.http.get(url).bearer_auth(key).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    /// The shopper texts STOP to the merchant's Messaging Service; Twilio does not retry it.
    async fn stop(&self, plan: &CartPlan) {
        self.outcome(plan.idx, |o| o.stop_sent = true);
        self.count(Kind::Stop, |c| {
            c.deliveries += 1;
            c.attempts += 1;
        });
        let after_faults = !self.faults_on.load(Ordering::SeqCst);
        let req = InboundRequest {
            from: plan.phone.clone(),
            to: traffic::POOL_NUMBER.into(),
            body: "STOP".into(),
            messaging_service_sid: Some(plan.platform.messaging_service()),
        };
        match self.local.sandbox.receive(&req).await {
            Ok(r) if r.status == 200 => {
                let at = self.epoch.elapsed();
                self.count(Kind::Stop, |c| c.ok += 1);
                self.outcome(plan.idx, |o| o.stop_acked = Some(at));
            }
            Ok(r) => {
                self.count(Kind::Stop, |c| if r.status >= 500 { c.server_error += 1 } else { c.client_error += 1 });
                if r.status >= 500 && after_faults {
                    self.post_fault_5xx.fetch_add(1, Ordering::Relaxed);
                    self.note(format!("STOP answered {} after the faults stopped", r.status));
                } else if r.status < 500 {
                    self.refused_4xx.fetch_add(1, Ordering::Relaxed);
                    self.note(format!("STOP answered {}", r.status));
                }
            }
            Err(_) => self.count(Kind::Stop, |c| c.transport_error += 1),
        }
    }

    /// Runs `plans` on `senders` concurrent connections, until their racing STOPs and orders
    /// are answered too.
    pub async fn run(self: &Arc<Self>, plans: Vec<CartPlan>, senders: usize) {
        let queue = Arc::new(Mutex::new(VecDeque::from(plans)));
        let mut workers = JoinSet::new();
        for _ in 0..senders.max(1) {
            let me = Arc::clone(self);
            let queue = Arc::clone(&queue);
            workers.spawn(async move {
                let mut racers = JoinSet::new();
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some(plan) = next else { break };
                    me.run_cart(&plan, &mut racers).await;
                    while racers.try_join_next().is_some() {}
                }
                racers
            });
        }
        while let Some(done) = workers.join_next().await {
            if let Ok(mut racers) = done {
                while racers.join_next().await.is_some() {}
            }
        }
    }
}
