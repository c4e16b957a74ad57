//! The voice agent's own overhead: from a prompt sent on the WebSocket to the agent's first
//! `text` back, through `callfy-local` (the same `voice_agent` handler as `$default` in Lambda,
//! its DynamoDB calls on moto), with the scripted agent, and with a stand-in model that takes a
//! fixed time to start (that time is subtracted). Each call takes 10 prompts (the limit is 12).
//! Then the opt-out path with the model hung: a question the model never answers, then "stop",
//! timed to the agent's `end` (the opt-out is ours and must not wait for the model).

use callfy_local::{LocalHandle, LocalOptions};
use callfy_shared::domain::merchant::Merchant;
use callfy_shared::{CartToken, Clock, ManualClock, MerchantId};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const PROMPTS_PER_CALL: usize = 10;
const PROMPTS: [&str; 3] = ["what was in my cart?", "how much was it?", "is there a discount?"];

pub struct Series {
    pub name: String,
    /// Of which AWS (moto) calls were in flight.
    pub aws_p50: Duration,
    pub ours_p50: Duration,
    pub ours_p95: Duration,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub samples: usize,
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p).div_ceil(100).clamp(1, sorted.len()) - 1]
}

fn t0() -> chrono::DateTime<chrono::Utc> {
    // Daytime for the shopper (San Francisco) and the merchant (Toronto).
    "2026-11-28T19:00:00Z".parse().expect("literal time")
}

/// (prompt → first text, of which AWS calls were in flight) per prompt.
type Sample = (Duration, Duration);

/// What each call does once connected.
#[derive(Clone, Copy)]
enum Mode {
    /// Ten prompts, each timed to its first `text`.
    Prompts,
    /// A prompt left unanswered (the model is hung), then "stop", timed to `end`.
    StopWhileHung,
}

async fn one(
    sdk: &aws_config::SdkConfig,
    root: &Path,
    calls: usize,
    latency: Option<Duration>,
    mode: Mode,
) -> Result<Vec<Sample>, String> {
    let clock = Arc::new(ManualClock::new(t0()));
    let mut opts = LocalOptions::for_test("bench-agent", clock.clone());
    opts.agent_model_latency = latency;
    let log: crate::warm::Intervals = Arc::default();
    let timed = crate::warm::timed_sdk(sdk, &log)?;
    let local = callfy_local::start(&timed, opts).await.map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(root.join("events/demo-merchant-voice.json")).map_err(|e| e.to_string())?;
    let mut v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    v["flow"] =
        serde_json::json!([{ "after_minutes": 0, "channel": "sms" }, { "after_minutes": 60, "channel": "voice" }]);
    v["send_guard"] = serde_json::json!({ "daily_send_budget": 100000 });
    let merchant = Merchant::from_json(&v.to_string()).map_err(|e| e.to_string())?;
    local.store().put_merchant(&merchant, t0()).await.map_err(|e| e.to_string())?;
    let result = calls_on(&local, root, &clock, &merchant.id, calls, &log, mode).await;
    local.shutdown().await;
    let firsts = result?;
    let model = match mode {
        Mode::Prompts => latency.unwrap_or_default(),
        Mode::StopWhileHung => Duration::ZERO,
    };
    Ok(firsts.into_iter().map(|(total, aws)| (total.saturating_sub(model), aws)).collect())
}

async fn calls_on(
    local: &LocalHandle,
    root: &Path,
    clock: &ManualClock,
    m: &MerchantId,
    calls: usize,
    log: &crate::warm::Intervals,
    mode: Mode,
) -> Result<Vec<Sample>, String> {
    let text = std::fs::read_to_string(root.join("events/shopify/checkouts-create.json")).map_err(|e| e.to_string())?;
    let base: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let secret = callfy_shared::config::local_defaults::SHOPIFY_API_SECRET;
    let mut tokens = Vec::new();
    for i in 0..calls {
        let mut c = base.clone();
        let phone = format!("+1415555{:04}", 3000 + i);
        let token = format!("benchagent{i:06}{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        c["token"] = token.clone().into();
        c["id"] = (9_000_000 + i as u64).into();
        c["phone"] = phone.clone().into();
        c["sms_marketing_phone"] = phone.clone().into();
        c["customer"]["phone"] = phone.clone().into();
        c["shipping_address"]["phone"] = phone.clone().into();
        c["billing_address"]["phone"] = phone.clone().into();
        for k in ["created_at", "updated_at"] {
            c[k] = t0().to_rfc3339().into();
        }
        c["customer"]["sms_marketing_consent"]["consent_updated_at"] = t0().to_rfc3339().into();
        c["note_attributes"] = serde_json::json!([{ "name": "callfy_voice_consent", "value": "yes" }]);
        let raw = serde_json::to_vec(&c).map_err(|e| e.to_string())?;
        let sig = callfy_shared::signature::hmac_sha256_base64(secret.as_bytes(), &raw);
        let resp = reqwest::Client::new()
            .post(format!("{}/webhooks/shopify", local.base_url))
            .header("content-type", "application/json")
            .header("x-shopify-topic", "checkouts/create")
            .header("x-shopify-shop-domain", "snowdevil.myshopify.com")
            .header("x-shopify-event-id", format!("bench-agent-{i}-{token}"))
            .header("x-shopify-hmac-sha256", sig)
            .body(raw)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().as_u16() != 200 {
            return Err(format!("checkout {i}: {}", resp.status()));
        }
        tokens.push(token);
    }
    local.drain().await.map_err(|e| e.to_string())?;
    clock.set(t0() + chrono::Duration::minutes(60));
    let mut firsts = Vec::new();
    for token in tokens {
        let job = callfy_shared::domain::flow::OutreachJob {
            merchant_id: m.clone(),
            cart_token: CartToken::parse(&token).map_err(|e| e.to_string())?,
            step: 1,
            due_at: clock.now(),
        };
        let outcome =
            outreach_worker::process_job(&local.functions().worker.outreach, &job).await.map_err(|e| e.to_string())?;
        let outreach_worker::JobOutcome::Called { call_sid } = outcome else {
            return Err(format!("no call placed: {outcome:?}"));
        };
        local.sandbox.answer_call(&call_sid, "human").await?;
        let relay = local.sandbox.relay(&call_sid).await?;
        match mode {
            Mode::Prompts => {
                for p in 0..PROMPTS_PER_CALL {
                    let sent = std::time::Instant::now();
                    let reply = relay.say(PROMPTS[p % PROMPTS.len()]).await?;
                    let first = reply.first.ok_or_else(|| format!("no reply to prompt {p}: {reply:?}"))?;
                    let spans = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    firsts.push((first, crate::warm::covered(&spans, sent, sent + first)));
                }
            }
            Mode::StopWhileHung => {
                relay.send(&serde_json::json!({
                    "type": "prompt", "voicePrompt": PROMPTS[0], "lang": "en-US", "last": true
                }))?;
                // The question's turn is taken and waiting on the model when "stop" comes.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let sent = std::time::Instant::now();
                let reply = relay.say("stop").await?;
                if reply.ended.is_none() {
                    return Err(format!("\"stop\" with the model hung did not end the call: {reply:?}"));
                }
                let took = Duration::from_millis(reply.elapsed_ms);
                let spans = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
                firsts.push((took, crate::warm::covered(&spans, sent, sent + took)));
            }
        }
        relay.close();
    }
    Ok(firsts)
}

pub async fn measure(sdk: &aws_config::SdkConfig, root: &Path, calls: usize) -> Result<Vec<Series>, String> {
    let mut out = Vec::new();
    for (name, latency, mode) in [
        ("scripted agent: prompt → first text", None, Mode::Prompts),
        (
            "stand-in model, 200 ms to first token (subtracted): prompt → first text",
            Some(Duration::from_millis(200)),
            Mode::Prompts,
        ),
        // "Hung": the model would take an hour to say anything.
        ("model hung: \"stop\" → `end` (budget p99 ≤ 2 s)", Some(Duration::from_secs(3600)), Mode::StopWhileHung),
    ] {
        let pairs = one(sdk, root, calls, latency, mode).await?;
        if pairs.is_empty() {
            return Err("no samples".into());
        }
        let sorted = |mut v: Vec<Duration>| {
            v.sort_unstable();
            v
        };
        let samples = sorted(pairs.iter().map(|p| p.0).collect());
        let aws = sorted(pairs.iter().map(|p| p.1).collect());
        let ours = sorted(pairs.iter().map(|p| p.0.saturating_sub(p.1)).collect());
        out.push(Series {
            name: name.to_string(),
            aws_p50: pct(&aws, 50),
            ours_p50: pct(&ours, 50),
            ours_p95: pct(&ours, 95),
            p50: pct(&samples, 50),
            p95: pct(&samples, 95),
            p99: pct(&samples, 99),
            max: *samples.last().unwrap_or(&Duration::ZERO),
            samples: samples.len(),
        });
    }
    Ok(out)
}

pub fn table(rows: &[Series]) -> String {
    let mut o = String::from(
        "Voice agent, through `callfy-local` (the `voice_agent` handler, DynamoDB on moto): the model's own time subtracted; \"AWS\" is the time DynamoDB calls were in flight, \"ours\" the rest (budget: ours p95 ≤ 50 ms)\n\n| series | p50 | p95 | p99 | max | AWS p50 | ours p50 | ours p95 | samples |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            callfy_bench::ms(r.p50),
            callfy_bench::ms(r.p95),
            callfy_bench::ms(r.p99),
            callfy_bench::ms(r.max),
            callfy_bench::ms(r.aws_p50),
            callfy_bench::ms(r.ours_p50),
            callfy_bench::ms(r.ours_p95),
            r.samples
        ));
    }
    o
}
