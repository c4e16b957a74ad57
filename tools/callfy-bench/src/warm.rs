//! Warm latency of every HTTP entry point, next to the AWS calls it makes: each request goes
//! over real HTTP to `callfy-local` (the same handler functions the Lambda binaries run), and
//! every DynamoDB/SQS/S3 call goes through a timing wrapper around the SDK's HTTP client. The
//! union of the intervals those calls were in flight during a request is what the same calls
//! cost made bare; the rest of the request's wall time is ours (signature checks, parsing,
//! decisions, serialisation, the SDK's own work, the local HTTP hop).

use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use callfy_bench::{Latency, ms};
use callfy_local::{LocalHandle, LocalOptions};
use callfy_shared::config::local_defaults;
use callfy_shared::domain::merchant::Merchant;
use callfy_shared::signature::{hmac_sha256_base64, sha256_hex};
use callfy_shared::{Clock, SystemClock};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) type Intervals = Arc<Mutex<Vec<(Instant, Instant)>>>;

/// The SDK's HTTP client, recording when each AWS request was in flight.
#[derive(Debug, Clone)]
struct Timed {
    inner: SharedHttpClient,
    log: Intervals,
}

#[derive(Debug)]
struct TimedConnector {
    inner: SharedHttpConnector,
    log: Intervals,
}

impl HttpClient for Timed {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(TimedConnector {
            inner: self.inner.http_connector(settings, components),
            log: Arc::clone(&self.log),
        })
    }
}

impl HttpConnector for TimedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let call = self.inner.call(request);
        let log = Arc::clone(&self.log);
        HttpConnectorFuture::new(async move {
            let started = Instant::now();
            let answer = call.await;
            log.lock().unwrap_or_else(|e| e.into_inner()).push((started, Instant::now()));
            answer
        })
    }
}

/// `sdk` with every AWS request's time in flight recorded in `log`.
pub(crate) fn timed_sdk(sdk: &SdkConfig, log: &Intervals) -> Result<SdkConfig, String> {
    let inner = match sdk.http_client() {
        Some(c) => c,
        None => callfy_shared::adapters::http::sdk_http_client().map_err(|e| e.to_string())?,
    };
    Ok(sdk.to_builder().http_client(Timed { inner, log: Arc::clone(log) }).build())
}

/// How long, within `[from, to]`, at least one AWS call was in flight.
pub(crate) fn covered(intervals: &[(Instant, Instant)], from: Instant, to: Instant) -> Duration {
    let mut spans: Vec<(Instant, Instant)> =
        intervals.iter().filter(|(s, e)| *e > from && *s < to).map(|(s, e)| ((*s).max(from), (*e).min(to))).collect();
    spans.sort();
    let mut total = Duration::ZERO;
    let mut current: Option<(Instant, Instant)> = None;
    for (s, e) in spans {
        match current {
            Some((cs, ce)) if s <= ce => current = Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                current = Some((s, e));
            }
            None => current = Some((s, e)),
        }
    }
    if let Some((cs, ce)) = current {
        total += ce - cs;
    }
    total
}

pub struct Row {
    pub name: &'static str,
    pub total: Latency,
    pub aws: Latency,
    /// Our share: (wall − AWS) / AWS, summed over every request.
    pub overhead: f64,
}

type Build = Box<dyn Fn(&LocalHandle, usize) -> reqwest::RequestBuilder>;
/// A sample Twilio webhook: path, query, form fields.
type Form = (String, Option<String>, Vec<(String, String)>);

/// One kind of request: builds the `i`-th (fresh ids, fresh signatures); it must answer 200.
struct Entry {
    name: &'static str,
    build: Build,
}

fn read_json(root: &Path, rel: &str) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(root.join(rel)).map_err(|e| format!("{rel}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{rel}: {e}"))
}

fn form_of(root: &Path, rel: &str) -> Result<Form, String> {
    let e = read_json(root, rel)?;
    let body = e["body"].as_str().ok_or(format!("{rel}: no body"))?;
    let form: Vec<(String, String)> = serde_urlencoded::from_str(body).map_err(|e| format!("{rel}: {e}"))?;
    let path = e["rawPath"].as_str().unwrap_or_default().to_string();
    let query = e["rawQueryString"].as_str().filter(|q| !q.is_empty()).map(str::to_string);
    Ok((path, query, form))
}

fn twilio_post(
    local: &LocalHandle,
    path: &str,
    query: Option<&str>,
    form: &[(String, String)],
) -> reqwest::RequestBuilder {
    let url = match query {
        Some(q) => format!("{}{path}?{q}", local.base_url),
        None => format!("{}{path}", local.base_url),
    };
    let sig = callfy_shared::twilio_signature::compute(local_defaults::TWILIO_AUTH_TOKEN, &url, form);
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", sig)
        .body(serde_urlencoded::to_string(form).unwrap_or_default())
}

fn entries(root: &Path, merchants: &[Merchant]) -> Result<Vec<Entry>, String> {
    let secret = |id: &str| {
        merchants
            .iter()
            .find(|m| m.id.as_str() == id)
            .and_then(|m| m.webhook_secret.as_deref().map(str::to_string))
            .unwrap_or_default()
    };
    let shopify = read_json(root, "events/shopify/checkouts-create.json")?;
    let woo = read_json(root, "events/woocommerce/order-pending.json")?;
    let bc = read_json(root, "events/bigcommerce/cart-abandoned.json")?;
    let custom = read_json(root, "events/custom/cart-updated.json")?;
    let (woo_secret, bc_secret, custom_secret) =
        (secret("snowdevil-woo"), secret("snowdevil-bc"), secret("snowdevil-api"));
    let help = form_of(root, "events/twilio-sms-help.json")?;
    let answer = form_of(root, "events/twilio-voice-answer.json")?;
    let client = reqwest::Client::new();
    let c = client.clone();
    let mut list: Vec<Entry> = vec![Entry {
        name: "webhook-ingest: Shopify checkouts/create (new cart)",
        build: Box::new(move |l, i| {
            let mut body = shopify.clone();
            body["token"] = format!("bench{i:027}").into();
            body["id"] = (9_000_000 + i as u64).into();
            let now = SystemClock.now().to_rfc3339();
            body["created_at"] = now.clone().into();
            body["updated_at"] = now.clone().into();
            body["customer"]["sms_marketing_consent"]["consent_updated_at"] = now.into();
            let raw = serde_json::to_vec(&body).unwrap_or_default();
            c.post(format!("{}/webhooks/shopify", l.base_url))
                .header("content-type", "application/json")
                .header("x-shopify-topic", "checkouts/create")
                .header("x-shopify-shop-domain", "snowdevil.myshopify.com")
                .header("x-shopify-event-id", uuid::Uuid::new_v4().to_string())
                .header(
                    "x-shopify-hmac-sha256",
                    hmac_sha256_base64(local_defaults::SHOPIFY_API_SECRET.as_bytes(), &raw),
                )
                .body(raw)
        }),
    }];
    let c = client.clone();
    list.push(Entry {
        name: "webhook-ingest: WooCommerce order.created",
        build: Box::new(move |l, i| {
            let mut body = woo.clone();
            body["id"] = (100_000 + i as u64).into();
            let gmt = SystemClock.now().format("%Y-%m-%dT%H:%M:%S").to_string();
            body["date_created_gmt"] = gmt.clone().into();
            body["date_modified_gmt"] = gmt.into();
            let raw = serde_json::to_vec(&body).unwrap_or_default();
            c.post(format!("{}/webhooks/woocommerce/snowdevil-woo", l.base_url))
                .header("content-type", "application/json")
                .header("x-wc-webhook-source", "https://snowdevil-woo.example/")
                .header("x-wc-webhook-topic", "order.created")
                .header("x-wc-webhook-resource", "order")
                .header("x-wc-webhook-event", "created")
                .header("x-wc-webhook-id", "12")
                .header("x-wc-webhook-delivery-id", uuid::Uuid::new_v4().to_string())
                .header("x-wc-webhook-signature", hmac_sha256_base64(woo_secret.as_bytes(), &raw))
                .body(raw)
        }),
    });
    let c = client.clone();
    list.push(Entry {
        name: "webhook-ingest: BigCommerce cart/abandoned (+ store API read)",
        build: Box::new(move |l, i| {
            let mut body = bc.clone();
            body["hash"] = sha256_hex(format!("bench-{i}").as_bytes()).into();
            let raw = serde_json::to_vec(&body).unwrap_or_default();
            c.post(format!("{}/webhooks/bigcommerce/snowdevil-bc", l.base_url))
                .header("content-type", "application/json")
                .header("x-callfy-secret", bc_secret.clone())
                .body(raw)
        }),
    });
    let c = client.clone();
    list.push(Entry {
        name: "webhook-ingest: custom cart.updated (Standard Webhooks)",
        build: Box::new(move |l, i| {
            let mut body = custom.clone();
            body["data"]["cart_id"] = format!("bench-{i}").into();
            let now = SystemClock.now();
            body["timestamp"] = now.to_rfc3339().into();
            body["data"]["updated_at"] = now.to_rfc3339().into();
            let raw = serde_json::to_vec(&body).unwrap_or_default();
            let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            let ts = now.timestamp();
            let sig = callfy_shared::platforms::custom::sign(&custom_secret, &id, ts, &raw).unwrap_or_default();
            c.post(format!("{}/webhooks/custom/snowdevil-api", l.base_url))
                .header("content-type", "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sig)
                .body(raw)
        }),
    });
    list.push(Entry {
        name: "sms-inbound: a signed HELP",
        build: Box::new(move |l, i| {
            let (path, query, form) = &help;
            let sid = format!("SM{i:032x}");
            let form: Vec<(String, String)> = form
                .iter()
                .map(|(k, v)| {
                    if k.ends_with("Sid") && v.starts_with("SM") {
                        (k.clone(), sid.clone())
                    } else {
                        (k.clone(), v.clone())
                    }
                })
                .collect();
            twilio_post(l, path, query.as_deref(), &form)
        }),
    });
    let c = client.clone();
    let key = format!("{}snowdevil_{}", callfy_shared::api_key::PREFIX, "0".repeat(64));
    list.push(Entry {
        name: "consent-api: GET /v1/consents/{phone}",
        build: Box::new(move |l, _| {
            c.get(format!("{}/v1/consents/%2B14155552671", l.base_url)).header("authorization", format!("Bearer {key}"))
        }),
    });
    list.push(Entry {
        name: "voice-callbacks: POST /twilio/voice/answer",
        build: Box::new(move |l, _| {
            let (path, query, form) = &answer;
            twilio_post(l, path, query.as_deref(), form)
        }),
    });
    Ok(list)
}

/// A fresh `callfy-local` on its own resources, with the four demo merchants: each entry point
/// is measured on a table of its own, so moto (whose GSI queries filter the whole table) is not
/// slowed by what the entry points before it wrote.
async fn fresh_local(timed: &SdkConfig, root: &Path) -> Result<(LocalHandle, Vec<Merchant>), String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let local = callfy_local::start(timed, LocalOptions::for_test("warm", Arc::clone(&clock)))
        .await
        .map_err(|e| e.to_string())?;
    let mut merchants = Vec::new();
    for file in [
        "events/demo-merchant.json",
        "events/demo-merchant-woocommerce.json",
        "events/demo-merchant-bigcommerce.json",
        "events/demo-merchant-custom.json",
    ] {
        let mut json = read_json(root, file)?;
        // The bench sends thousands of carts from one IP: the pumping guard must not refuse them.
        json["send_guard"] = serde_json::json!({ "carts_per_ip": 1_000_000, "carts_per_prefix": 1_000_000 });
        // Nor may the consent API's per-merchant bucket: 2 000 requests as fast as they go.
        json["api_limit"] = serde_json::json!({ "rate_per_second": 1000, "burst": 10_000 });
        let m = Merchant::from_json(&json.to_string()).map_err(|e| format!("{file}: {e}"))?;
        local.store().put_merchant(&m, clock.now()).await.map_err(|e| e.to_string())?;
        merchants.push(m);
    }
    let demo_key = format!("{}snowdevil_{}", callfy_shared::api_key::PREFIX, "0".repeat(64));
    local
        .store()
        .set_api_key_hash(&merchants[0].id, &sha256_hex(demo_key.as_bytes()))
        .await
        .map_err(|e| e.to_string())?;
    Ok((local, merchants))
}

pub async fn measure(sdk: &SdkConfig, root: &Path, requests: usize) -> Result<Vec<Row>, String> {
    let log: Intervals = Arc::default();
    // The functions' own HTTP client (adapters::http), wrapped.
    let inner = match sdk.http_client() {
        Some(c) => c,
        None => callfy_shared::adapters::http::sdk_http_client().map_err(|e| e.to_string())?,
    };
    let timed = sdk.to_builder().http_client(Timed { inner, log: Arc::clone(&log) }).build();
    let names: Vec<&'static str> = entries(root, &[])?.iter().map(|e| e.name).collect();
    let mut rows = Vec::new();
    for (index, name) in names.into_iter().enumerate() {
        let (local, merchants) = fresh_local(&timed, root).await?;
        let entry = entries(root, &merchants)?.into_iter().nth(index).ok_or("no such entry")?;
        let (mut totals, mut aws) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
        let (mut sum_total, mut sum_aws) = (Duration::ZERO, Duration::ZERO);
        // Ten unmeasured first: connections, moto's first requests.
        for i in 0..requests + 10 {
            let req = (entry.build)(&local, i);
            log.lock().unwrap_or_else(|e| e.into_inner()).clear();
            let started = Instant::now();
            let resp = req.send().await.map_err(|e| format!("{name}: {e}"))?;
            let status = resp.status().as_u16();
            let _ = resp.bytes().await;
            let ended = Instant::now();
            if status != 200 {
                return Err(format!("{name}: HTTP {status}"));
            }
            if i < 10 {
                continue;
            }
            let in_aws = covered(&log.lock().unwrap_or_else(|e| e.into_inner()), started, ended);
            totals.push(ended - started);
            aws.push(in_aws);
            sum_total += ended - started;
            sum_aws += in_aws;
        }
        local.shutdown().await;
        let overhead = (sum_total.as_secs_f64() - sum_aws.as_secs_f64()) / sum_aws.as_secs_f64().max(1e-9);
        rows.push(Row {
            name,
            total: Latency::of(&totals).ok_or("no samples")?,
            aws: Latency::of(&aws).ok_or("no samples")?,
            overhead,
        });
        eprintln!("warm: {name} done ({requests} requests)");
    }
    Ok(rows)
}

pub fn table(rows: &[Row], requests: usize) -> String {
    let mut out = format!(
        "| warm, {requests} requests each | p50 | p99 | AWS calls p50 | AWS calls p99 | our overhead (budget ≤ 20 %) |\n|---|---|---|---|---|---|\n"
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1} % |\n",
            r.name,
            ms(r.total.p50),
            ms(r.total.p99),
            ms(r.aws.p50),
            ms(r.aws.p99),
            r.overhead * 100.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_calls_count_once() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        // Two concurrent reads (0-10, 5-12), then a write (20-25), one call before the request.
        let calls = [(at(0), at(10)), (at(5), at(12)), (at(20), at(25)), (at(0), at(1))];
        assert_eq!(covered(&calls, at(2), at(30)), Duration::from_millis(10 + 5));
        assert_eq!(covered(&[], at(0), at(30)), Duration::ZERO);
    }
}
