//! `callfy-bench`: cold start (init), first invocation and peak memory of each Lambda binary,
//! next to a hello-world Lambda, each run as a fresh process against a local Runtime API; then
//! the outreach worker's time per job next to its DynamoDB calls made bare (`overhead`), and the
//! voice answer's warm latency (the TwiML a picked-up call waits for).
//! Needs the local AWS API (moto) at `AWS_ENDPOINT_URL`; `scripts/bench` sets everything up.

mod agent;
mod overhead;
mod purge;
mod warm;

use aws_config::SdkConfig;
use callfy_bench::{Measurement, binary, measure_process, median};
use callfy_local::resources::{self, ResourceNames};
use callfy_local::sandbox::{self, Sandbox};
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
    #[arg(long, default_value_t = 21)]
    runs: usize,
    /// Warm invocations of one process per function, for its peak memory (0 = skip).
    #[arg(long, default_value_t = 1000)]
    warm_invocations: usize,
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
    /// Calls (10 prompts each) per model for the voice agent section.
    #[arg(long, default_value_t = 20)]
    agent_calls: usize,
    /// Requests per entry point for the warm-latency section.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Extra environment for the measured functions (KEY=VALUE, repeatable), e.g. to see what
    /// debug logging costs: --env RUST_LOG=debug
    #[arg(long = "env")]
    extra_env: Vec<String>,
    /// The functions as deployed: cargo-lambda's output directory (`<dir>/<function>/bootstrap`,
    /// static musl builds). Without it the functions are the default builds of --target-dir.
    #[arg(long)]
    deployed_dir: Option<PathBuf>,
    /// Run the --deployed-dir binaries under this program, e.g. `qemu-aarch64-static` for the
    /// arm64 build (a check that they start and answer; its times say nothing of Graviton's).
    #[arg(long, requires = "deployed_dir")]
    emulator: Option<PathBuf>,
    /// Write the cold-start figures here as JSON (scripts/bench draws the chart from them).
    #[arg(long)]
    chart_json: Option<PathBuf>,
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
    /// Warm latency of every HTTP entry point against the AWS calls it makes.
    Warm,
    /// The voice agent's own time from a prompt to its first words.
    Agent,
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
    let sdk = callfy_shared::adapters::aws::load_config().await.map_err(|e| format!("HTTP client: {e}"))?;
    let all = args.only.is_none();
    if all || args.only == Some(Section::ColdStart) {
        let report = cold_start(&args, &sdk, &endpoint).await?;
        if let Some(path) = &args.chart_json {
            let rows: Vec<serde_json::Value> = report
                .rows
                .iter()
                .filter(|r| !STEPS.contains(&r.name) && r.name != GLIBC_INGEST)
                .map(|r| {
                    let kind = match r.name {
                        "hello-lambda" => "baseline-rust",
                        "python-boto3" => "baseline-python",
                        _ => "callfy",
                    };
                    serde_json::json!({ "name": r.name, "kind": kind, "init_ms": r.m.init.as_secs_f64() * 1e3 })
                })
                .collect();
            std::fs::write(path, serde_json::to_vec_pretty(&rows).map_err(|e| e.to_string())?)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if all || args.only == Some(Section::Warm) {
        let rows = warm::measure(&sdk, &args.root, args.requests).await?;
        println!();
        print!("{}", warm::table(&rows, args.requests));
    }
    if all || args.only == Some(Section::Agent) {
        let rows = agent::measure(&sdk, &args.root, args.agent_calls).await?;
        println!();
        print!("{}", agent::table(&rows));
    }
    if all || args.only == Some(Section::Worker) {
        let merchant: serde_json::Value =
            serde_json::from_str(&read(&args.root, "events/demo-merchant.json")?).map_err(|e| e.to_string())?;
        let report = overhead::measure(&sdk, &merchant, args.jobs).await?;
        overhead::print(&report);
    }
    // Last: its 50 000-item table weighs on everything measured after it.
    if all || args.only == Some(Section::Purger) {
        let report = purge::measure(&sdk, 50_000, 500, 10_000).await?;
        purge::print(&report);
    }
    Ok(())
}

async fn cold_start(args: &Args, sdk: &SdkConfig, endpoint: &str) -> Result<ColdReport, String> {
    let target = args
        .target_dir
        .clone()
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"));
    let res = resources::ensure(sdk, &ResourceNames::unique("bench")).await.map_err(|e| e.to_string())?;
    let store = callfy_shared::startup::Clients::new(sdk).store(&res.names.table);
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
        // Lambda sets both; boto3 reads only this one.
        ("AWS_DEFAULT_REGION", local_defaults::REGION.into()),
        ("RUST_LOG", "warn".into()),
        // The URL events/voice-agent/connect.json is signed for.
        ("PUBLIC_WS_URL", "wss://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/live".into()),
        ("AGENT_MODEL", "scripted".into()),
        // In Lambda the marker key has no default (§3d): the measured functions get one.
        ("CALLFY_MARKER_KEY", "callfy-bench-marker-key-0123456789".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(args.extra_env.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())))
    .collect();

    let checkout: serde_json::Value =
        serde_json::from_str(&read(&args.root, "events/shopify-checkout-create.json")?).map_err(|e| e.to_string())?;
    let sqs = read(&args.root, "events/sqs-outreach.json")?;
    let consent_get = read(&args.root, "events/consent-api-get.json")?;
    let sms_help = read(&args.root, "events/twilio-sms-help.json")?;
    let voice_answer = read(&args.root, "events/twilio-voice-answer.json")?;
    let agent_connect = read(&args.root, "events/voice-agent/connect.json")?;
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
    let schedule = read(&args.root, "events/eventbridge-purge-schedule.json")?;
    let schedule = {
        let mut v: serde_json::Value = serde_json::from_str(&schedule).map_err(|e| e.to_string())?;
        v["time"] = SystemClock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into();
        v.to_string()
    };
    let python = std::env::var("CALLFY_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = args.root.join("tools/callfy-bench/python/boto3_lambda.py");
    let mut rows: Vec<ColdRow> = Vec::new();
    let mut functions = vec!["hello-lambda", "python-boto3", "hello-sdk", "hello-sdk-log"];
    if args.deployed_dir.is_some() {
        functions.push(GLIBC_INGEST);
    }
    functions.extend(FUNCTIONS);
    let event = |name: &str, i: usize| -> Vec<u8> {
        match name {
            "hello-lambda" | "hello-sdk" | "hello-sdk-log" => b"{\"hello\":\"world\"}".to_vec(),
            "python-boto3" => b"{}".to_vec(),
            // A fresh delivery each time: the same event id would short-cut as a duplicate.
            "webhook-ingest" | GLIBC_INGEST => {
                let mut e = checkout.clone();
                e["headers"]["x-shopify-event-id"] = format!("bench-{i}-{}", uuid::Uuid::new_v4()).into();
                e.to_string().into_bytes()
            }
            "consent-api" => consent_get.clone().into_bytes(),
            "sms-inbound" => sms_help.clone().into_bytes(),
            "voice-callbacks" => voice_answer.clone().into_bytes(),
            // `$connect`, signed for the sample's PUBLIC_WS_URL: a verified upgrade and one write.
            "voice-agent" => agent_connect.clone().into_bytes(),
            "retention-purger" => schedule.clone().into_bytes(),
            _ => sqs.clone().into_bytes(),
        }
    };
    let mut prepared = Vec::with_capacity(functions.len());
    for name in functions {
        let path = match (name, &args.deployed_dir) {
            (GLIBC_INGEST, _) => binary(&target, &args.profile, "webhook-ingest"),
            (_, Some(dir)) if FUNCTIONS.contains(&name) => dir.join(name).join("bootstrap"),
            _ => binary(&target, &args.profile, name),
        };
        let command: Vec<std::ffi::OsString> = match (&args.emulator, &args.deployed_dir) {
            _ if name == "python-boto3" => vec![python.clone().into(), script.clone().into()],
            (Some(emulator), Some(_)) if FUNCTIONS.contains(&name) => vec![emulator.into(), path.clone().into()],
            _ => vec![path.clone().into()],
        };
        let (size, zipped) = if name == "python-boto3" {
            (None, None)
        } else {
            let size = std::fs::metadata(&path)
                .map_err(|e| format!("{}: {e} (build it with cargo build --profile {})", path.display(), args.profile))?
                .len();
            (Some(size), Some(zipped_size(&path)?))
        };
        prepared.push((name, command, size, zipped));
    }
    // Round-robin: start i of every binary before start i + 1 of any, so whatever the machine
    // does meanwhile (a build, moto's garbage collector) falls on the baseline and the functions
    // alike, and their ratio is one of the same conditions.
    let mut runs: Vec<Vec<Measurement>> = prepared.iter().map(|_| Vec::with_capacity(args.runs)).collect();
    for i in 0..args.runs {
        for ((name, command, _, _), runs) in prepared.iter().zip(runs.iter_mut()) {
            runs.push(measure_process(command, &env, vec![event(name, i)]).await.map_err(|e| format!("{name}: {e}"))?);
        }
    }
    for ((name, command, size, zipped), runs) in prepared.into_iter().zip(runs) {
        let m = median(&runs).ok_or("no runs")?;
        // Peak memory after many warm invocations of one process, not after one.
        let warm = if args.warm_invocations > 0 {
            let events = (0..args.warm_invocations).map(|i| event(name, 10_000 + i)).collect();
            let w = measure_process(&command, &env, events).await.map_err(|e| format!("{name}: {e}"))?;
            Some(w.peak_rss_kib)
        } else {
            None
        };
        eprintln!("cold start: {name} done");
        rows.push(ColdRow { name, m, warm_rss_kib: warm, size, zipped });
    }
    let table = cold_table(&rows, args.runs, args.warm_invocations);
    println!("{table}");
    println!("{}", steps_table(&rows, args.runs));
    Ok(ColdReport { rows, table })
}

pub struct ColdRow {
    pub name: &'static str,
    pub m: Measurement,
    pub warm_rss_kib: Option<u64>,
    pub size: Option<u64>,
    pub zipped: Option<u64>,
}

pub struct ColdReport {
    pub rows: Vec<ColdRow>,
    pub table: String,
}

/// The Lambda deployment package's size: the binary as `bootstrap` in a deflated zip.
fn zipped_size(path: &std::path::Path) -> Result<u64, String> {
    let python = std::env::var("CALLFY_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::env::temp_dir().join(format!("callfy-bench-{}.zip", uuid::Uuid::new_v4().simple()));
    let status = std::process::Command::new(python)
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[2], 'w', zipfile.ZIP_DEFLATED, compresslevel=9); \
             z.write(sys.argv[1], 'bootstrap'); z.close()",
        ])
        .arg(path)
        .arg(&out)
        .status()
        .map_err(|e| format!("zip: {e}"))?;
    if !status.success() {
        return Err("zip failed".into());
    }
    let size = std::fs::metadata(&out).map_err(|e| e.to_string())?.len();
    let _ = std::fs::remove_file(&out);
    Ok(size)
}

/// The seven Lambda binaries (the rest are baselines and steps).
const FUNCTIONS: [&str; 7] = [
    "webhook-ingest",
    "outreach-worker",
    "consent-api",
    "sms-inbound",
    "voice-callbacks",
    "voice-agent",
    "retention-purger",
];

/// webhook-ingest built as the functions were deployed before 2026-12-07 (glibc, dynamically
/// linked, non-PIE), beside the deployed static build when `--deployed-dir` is given.
const GLIBC_INGEST: &str = "webhook-ingest, glibc dynamic (not deployed)";

/// Binaries between the hello-world baseline and a function, each adding one part of its init.
const STEPS: [&str; 2] = ["hello-sdk", "hello-sdk-log"];

/// What webhook-ingest's init is spent on: each step's init against the one before it.
fn steps_table(rows: &[ColdRow], runs: usize) -> String {
    let init = |name: &str| rows.iter().find(|r| r.name == name).map(|r| r.m.init.as_secs_f64() * 1e3);
    let app = "+ settings, the app, and the rest of a 10× larger binary to load (glibc, dynamically linked, non-PIE)";
    let deployed = rows.iter().any(|r| r.name == GLIBC_INGEST);
    let mut steps = vec![
        ("hello-lambda", "the hello-world baseline (tokio, lambda_runtime; a default build)"),
        (
            "hello-sdk",
            "+ the HTTPS client, the SDK configuration, DynamoDB and SQS clients (glibc, non-PIE, one thread)",
        ),
        ("hello-sdk-log", "+ the JSON log subscriber"),
    ];
    if deployed {
        steps.push((GLIBC_INGEST, app));
        steps.push((
            "webhook-ingest",
            "the same code as deployed: static musl (mimalloc), no `ld.so` or shared libraries to load",
        ));
    } else {
        steps.push(("webhook-ingest", app));
    }
    let mut out = format!(
        "Where webhook-ingest's init goes: binaries that add one part at a time, measured as above (median of {runs}).\n\n| step | init | added |\n|---|---|---|\n"
    );
    let mut before: Option<f64> = None;
    for (name, what) in steps {
        let Some(ms) = init(name) else { continue };
        let added = before.map_or("—".to_string(), |b| format!("{:+.2} ms", ms - b));
        out.push_str(&format!("| `{name}`: {what} | {ms:.2} ms | {added} |\n"));
        before = Some(ms);
    }
    out
}

fn cold_table(rows: &[ColdRow], runs: usize, warm: usize) -> String {
    let hello = rows.iter().find(|r| r.name == "hello-lambda").map(|r| r.m.init.as_secs_f64()).unwrap_or(1.0);
    let python = rows.iter().find(|r| r.name == "python-boto3").map(|r| r.m.init.as_secs_f64()).unwrap_or(0.0);
    let mut out = format!(
        "| function | init (median of {runs}, starts interleaved) | × hello (budget ≤ 1.5) | Python/boto3 ÷ this (budget ≥ 20) | first invocation | peak RSS, 1 invocation | peak RSS after {warm} (budget ≤ 48 MiB) | binary, stripped | zipped (budget ≤ 6 MB) |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows.iter().filter(|r| !STEPS.contains(&r.name)) {
        let init = r.m.init.as_secs_f64();
        let mb = |b: Option<u64>| b.map_or("—".to_string(), |b| format!("{:.1} MB", b as f64 / 1e6));
        out.push_str(&format!(
            "| {} | {:.2} ms | {:.2}× | {} | {:.1} ms | {:.1} MiB | {} | {} | {} |\n",
            r.name,
            init * 1e3,
            init / hello,
            if r.name == "python-boto3" { "—".to_string() } else { format!("{:.1}×", python / init) },
            r.m.first_invoke.as_secs_f64() * 1e3,
            r.m.peak_rss_kib as f64 / 1024.0,
            r.warm_rss_kib.map_or("—".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            mb(r.size),
            mb(r.zipped),
        ));
    }
    out
}
