//! `callfy-bench`: cold start (init), first invocation and peak memory of each Lambda binary,
//! next to a hello-world Lambda, each run as a fresh process against a local Runtime API; then
//! the outreach worker's time per job next to its DynamoDB calls made bare (`overhead`), and the
//! voice answer's warm latency (the TwiML a picked-up call waits for).
//! Needs the local AWS API (moto) at `AWS_ENDPOINT_URL`; `scripts/bench` sets everything up.

mod overhead;
mod purge;

use aws_config::SdkConfig;
use callfy_bench::{Measurement, binary, measure, median};
use callfy_local::resources::{self, ResourceNames};
use callfy_local::sandbox::{self, Sandbox};
use callfy_shared::adapters::store::Store;
use callfy_shared::config::local_defaults;
use callfy_shared::domain::merchant::Merchant;
use callfy_shared::{Clock, SystemClock};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(about = "Measure Lambda init time and memory against a hello-world baseline")]
struct Args {
    /// Fresh processes per function; the median is reported.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Cargo profile the binaries were built with.
    #[arg(long, default_value = "release")]
    profile: String,
    /// Cargo target directory (default: $CARGO_TARGET_DIR, else ./target).
    #[arg(long)]
    target_dir: Option<PathBuf>,
    /// Repository root, for events/.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Outreach jobs for the worker-overhead measurement (at least 50), one at a time.
    #[arg(long, default_value_t = 200)]
    jobs: usize,
    /// Run only this section (default: all of them).
    #[arg(long, value_enum)]
    only: Option<Section>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// Init, first invocation and memory of each Lambda binary.
    ColdStart,
    /// The outreach worker per job against the same DynamoDB calls made bare.
    Worker,
    /// The retention purge on a large table against one holding only what is due.
    Purger,
}

fn read(root: &std::path::Path, rel: &str) -> Result<String, String> {
    std::fs::read_to_string(root.join(rel)).map_err(|e| format!("{rel}: {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("callfy-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    if !endpoint.starts_with("http://127.0.0.1") {
        return Err("AWS_ENDPOINT_URL must point at the local AWS API (run scripts/bench)".into());
    }
    if matches!(args.only, None | Some(Section::Worker)) && args.jobs < overhead::MIN_JOBS {
        return Err(format!("--jobs must be at least {}", overhead::MIN_JOBS));
    }
    let sdk = callfy_shared::adapters::aws::load_config().await;
    let all = args.only.is_none();
    if all || args.only == Some(Section::ColdStart) {
        cold_start(&args, &sdk, &endpoint).await?;
    }
    if all || args.only == Some(Section::Purger) {
        let report = purge::measure(&sdk, 50_000, 500, 2_000).await?;
        purge::print(&report);
    }
    if all || args.only == Some(Section::Worker) {
        let merchant: serde_json::Value =
            serde_json::from_str(&read(&args.root, "events/demo-merchant.json")?).map_err(|e| e.to_string())?;
        let report = overhead::measure(&sdk, &merchant, args.jobs).await?;
        overhead::print(&report);
    }
    Ok(())
}

async fn cold_start(args: &Args, sdk: &SdkConfig, endpoint: &str) -> Result<(), String> {
    let target = args
        .target_dir
        .clone()
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"));
    let res = resources::ensure(sdk, &ResourceNames::unique("bench")).await.map_err(|e| e.to_string())?;
    let store = Store::new(aws_sdk_dynamodb::Client::new(sdk), &res.names.table);
    let mut merchant_json: serde_json::Value =
        serde_json::from_str(&read(&args.root, "events/demo-merchant.json")?).map_err(|e| e.to_string())?;
    merchant_json["flow"] = serde_json::json!([{ "after_minutes": 0, "channel": "sms" },
                                               { "after_minutes": 1, "channel": "voice" }]);
    merchant_json["recording"] = serde_json::json!({ "enabled": true });
    let merchant = Merchant::from_json(&merchant_json.to_string()).map_err(|e| e.to_string())?;
    store.put_merchant(&merchant, SystemClock.now()).await.map_err(|e| e.to_string())?;
    // The consent API sample carries this placeholder key; make it valid in the bench table.
    let demo_key = format!("{}snowdevil_{}", callfy_shared::api_key::PREFIX, "0".repeat(64));
    store
        .set_api_key_hash(&merchant.id, &callfy_shared::signature::sha256_hex(demo_key.as_bytes()))
        .await
        .map_err(|e| e.to_string())?;

    // Twilio's stand-in, so the worker's first invocation makes its real API call.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let sandbox_url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    let sb = Arc::new(Sandbox::new(
        local_defaults::TWILIO_ACCOUNT_SID,
        local_defaults::TWILIO_AUTH_TOKEN,
        clock,
        &sandbox_url,
        false,
    ));
    let app = sandbox::router(sb);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let env: Vec<(String, String)> = [
        ("TABLE_NAME", res.names.table.clone()),
        ("OUTREACH_QUEUE_URL", res.queue_url.clone()),
        ("RECORDINGS_QUEUE_URL", res.recordings_queue_url.clone()),
        ("RECORDINGS_BUCKET", res.names.bucket.clone()),
        // The URL the Twilio sample events are signed for.
        ("PUBLIC_BASE_URL", "http://127.0.0.1:3000".into()),
        ("SHOPIFY_API_SECRET", local_defaults::SHOPIFY_API_SECRET.into()),
        ("TWILIO_ACCOUNT_SID", local_defaults::TWILIO_ACCOUNT_SID.into()),
        ("TWILIO_AUTH_TOKEN", local_defaults::TWILIO_AUTH_TOKEN.into()),
        ("TWILIO_API_BASE", sandbox_url),
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", var("AWS_ACCESS_KEY_ID")),
        ("AWS_SECRET_ACCESS_KEY", var("AWS_SECRET_ACCESS_KEY")),
        ("AWS_REGION", local_defaults::REGION.into()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let checkout: serde_json::Value =
        serde_json::from_str(&read(&args.root, "events/shopify-checkout-create.json")?).map_err(|e| e.to_string())?;
    let sqs = read(&args.root, "events/sqs-outreach.json")?;
    let mut rows: Vec<(&str, Measurement, u64)> = Vec::new();
    let consent_get = read(&args.root, "events/consent-api-get.json")?;
    let sms_help = read(&args.root, "events/twilio-sms-help.json")?;
    let voice_answer = read(&args.root, "events/twilio-voice-answer.json")?;
    // The sample call's shopper consented to calls, so the answer runs its whole path.
    let phone = callfy_shared::Phone::parse("+14155552671", None).map_err(|e| e.to_string())?;
    let call_consent = callfy_shared::domain::consent::ConsentEvent {
        channel: callfy_shared::domain::merchant::Channel::Voice,
        action: callfy_shared::domain::consent::ConsentAction::OptIn,
        source: callfy_shared::domain::consent::ConsentSource::Api,
        occurred_at: SystemClock.now(),
        recorded_at: SystemClock.now(),
        evidence: callfy_shared::domain::consent::Evidence {
            consent_text: Some("Call me about my cart with an automated assistant.".into()),
            ..Default::default()
        },
    };
    let far = SystemClock.now() + chrono::Duration::days(730);
    store.record_consent(&merchant.id, &phone, &call_consent, far).await.map_err(|e| e.to_string())?;
    for name in ["hello-lambda", "webhook-ingest", "outreach-worker", "consent-api", "sms-inbound", "voice-callbacks"] {
        let path = binary(&target, &args.profile, name);
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("{}: {e} (build it with cargo build --profile {})", path.display(), args.profile))?
            .len();
        let mut runs = Vec::with_capacity(args.runs);
        for _ in 0..args.runs {
            let event = match name {
                "hello-lambda" => b"{\"hello\":\"world\"}".to_vec(),
                // A fresh delivery each time: the same event id would short-cut as a duplicate.
                "webhook-ingest" => {
                    let mut e = checkout.clone();
                    e["headers"]["x-shopify-event-id"] = uuid::Uuid::new_v4().to_string().into();
                    e.to_string().into_bytes()
                }
                "consent-api" => consent_get.clone().into_bytes(),
                "sms-inbound" => sms_help.clone().into_bytes(),
                "voice-callbacks" => voice_answer.clone().into_bytes(),
                _ => sqs.clone().into_bytes(),
            };
            runs.push(measure(&path, &env, &event).await.map_err(|e| e.to_string())?);
        }
        let m = median(&runs).ok_or("no runs")?;
        rows.push((name, m, size));
    }

    let base = rows[0].1;
    println!("| function | init (median of {}) | first invocation | peak RSS | binary |", args.runs);
    println!("|---|---|---|---|---|");
    for (name, m, size) in &rows {
        let delta = |a: f64, b: f64| if *name == "hello-lambda" { String::new() } else { format!(" (+{:.1})", a - b) };
        let init = m.init.as_secs_f64() * 1e3;
        let rss = m.peak_rss_kib as f64 / 1024.0;
        println!(
            "| {name} | {init:.1} ms{} | {:.1} ms | {rss:.1} MiB{} | {:.1} MB |",
            delta(init, base.init.as_secs_f64() * 1e3),
            m.first_invoke.as_secs_f64() * 1e3,
            delta(rss, base.peak_rss_kib as f64 / 1024.0),
            *size as f64 / 1e6,
        );
    }
    answer_latency(&store, &res, &voice_answer, args.runs.max(1) * 30).await
}

fn aws_sqs_client(sdk: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(sdk)
}

/// Warm latency of `POST /twilio/voice/answer` in-process (the same handler the binary runs),
/// against the bench table: what a picked-up call waits for before it hears anything.
async fn answer_latency(store: &Store, res: &resources::Resources, event: &str, requests: usize) -> Result<(), String> {
    let sdk = callfy_shared::adapters::aws::load_config().await;
    let twilio_cfg = callfy_shared::config::TwilioConfig {
        api_base: "http://127.0.0.1:9".into(),
        account_sid: local_defaults::TWILIO_ACCOUNT_SID.into(),
        auth: callfy_shared::config::TwilioAuth::AuthToken(local_defaults::TWILIO_AUTH_TOKEN.into()),
        auth_token: Some(local_defaults::TWILIO_AUTH_TOKEN.into()),
    };
    let app = voice_callbacks::VoiceApp {
        store: store.clone(),
        recordings_queue: callfy_shared::adapters::queue::OutreachQueue::new(
            aws_sdk_sqs::Client::new(&sdk),
            &res.recordings_queue_url,
        ),
        outreach_queue: callfy_shared::adapters::queue::OutreachQueue::new(aws_sqs_client(&sdk), &res.queue_url),
        replay_delay_seconds: 60,
        twilio: callfy_shared::adapters::twilio::TwilioClient::new(&twilio_cfg).map_err(|e| e.to_string())?,
        auth_token: local_defaults::TWILIO_AUTH_TOKEN.into(),
        shared_key: None,
        public_base_url: "http://127.0.0.1:3000".into(),
        clock: Arc::new(SystemClock),
    };
    let mut samples = Vec::with_capacity(requests);
    for i in 0..=requests {
        let req = lambda_http::request::from_str(event).map_err(|e| e.to_string())?;
        let started = std::time::Instant::now();
        let resp = voice_callbacks::handle(&app, req).await;
        if resp.status() != 200 {
            return Err(format!("the answer returned HTTP {}", resp.status()));
        }
        // The first request warms the clients, as a Lambda's first invocation does.
        if i > 0 {
            samples.push(started.elapsed());
        }
    }
    let l = callfy_bench::Latency::of(&samples).ok_or("no samples")?;
    println!();
    println!("| voice answer (warm, in-process, {} requests) | p50 | p99 | mean |", l.samples);
    println!("|---|---|---|---|");
    println!(
        "| `POST /twilio/voice/answer` → TwiML | {} | {} | {} |",
        callfy_bench::ms(l.p50),
        callfy_bench::ms(l.p99),
        callfy_bench::ms(l.mean)
    );
    Ok(())
}
