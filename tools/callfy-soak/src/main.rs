//! `callfy-soak`: the load-and-fault campaign run before a release (`scripts/soak`).
//!
//! Against moto and the Twilio sandbox, in one process: webhook deliveries across the four
//! platforms (a share delivered twice, some out of order), STOPs and orders racing the worker,
//! STOP/START storms (keywords one after another from a share of phones, some replayed with the
//! same MessageSid), data-subject deletions (the consent API's route; Shopify's
//! `customers/redact`), agent calls (the voice agent on the Shopify merchant's second step, picked
//! up by shoppers who ask for the link twice, say "stop calling me" or "stop", or decline, its
//! relay posts refused or delivered-but-failed) and retention runs on a timer, with faults at the
//! network edge: a proxy in
//! front of moto throttles a share of DynamoDB calls and answers a share of SQS calls 5xx, and a
//! proxy in front of the sandbox answers a share of Twilio calls 429, 5xx, a timeout or
//! accept-then-hang. Then the faults stop, the rest is delivered and the queue drained, and the
//! verdict is drawn from the data: every due step sent once or dead-lettered, no duplicate,
//! nothing claimed after an acknowledged STOP or order (or a storm's STOP, until a confirmed
//! START), each storm phone's consent what its last acknowledged keyword says, every
//! acknowledged STOP's suppression records kept, every deletion done with no item left holding
//! the phone, every retention run audited, no 5xx once the faults stopped. Exits 1 when a check
//! fails.

mod aws_proxy;
mod calls;
mod checks;
mod driver;
mod logscan;
mod report;
mod rng;
mod traffic;
mod twilio_proxy;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use callfy_local::{LocalHandle, LocalOptions};
use callfy_shared::domain::cart::CartStatus;
use callfy_shared::domain::consent::ConsentStatus;
use callfy_shared::domain::merchant::{Channel, Merchant};
use callfy_shared::{CartToken, Clock, MerchantId, OffsetClock, Phone};
use checks::{CartOutcome, DeletionSeen, Inputs, PhoneSeen, PurgeAudit, PurgeOutcome, PurgeRun, Sent, StepSeen};
use clap::Parser;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;
use traffic::{CartPlan, Mix, Platform};

#[derive(Debug, Parser)]
#[command(about = "The load-and-fault campaign: webhooks, STOPs and orders racing the worker, with faults at the edge")]
pub struct Args {
    /// Webhook deliveries to send in all (redeliveries included; consent API calls and STOPs besides).
    #[arg(long, default_value_t = 10_000)]
    pub deliveries: u64,
    /// Share of deliveries delivered a second time.
    #[arg(long, default_value_t = 0.2)]
    pub redeliver: f64,
    /// Share of DynamoDB calls answered with a throttling error while faults are on.
    #[arg(long, default_value_t = 0.05)]
    pub dynamodb_faults: f64,
    /// Share of SQS calls answered 5xx while faults are on.
    #[arg(long, default_value_t = 0.05)]
    pub sqs_faults: f64,
    /// Share of DynamoDB writes that apply once (`TransactWriteItems`, conditional `UpdateItem` /
    /// `PutItem`) applied by moto and then answered 500 or a timeout while faults are on.
    #[arg(long, default_value_t = 0.02)]
    pub dynamodb_lost_answers: f64,
    /// Share of SQS `DeleteMessage` calls applied by moto and then answered 500 or a timeout.
    #[arg(long, default_value_t = 0.02)]
    pub sqs_lost_answers: f64,
    /// Share of DynamoDB and SQS writes (while faults are on) after which the calling function is
    /// killed: the write is applied, its answer never comes, and the function's timeout ends it.
    #[arg(long, default_value_t = 0.005)]
    pub kills: f64,
    /// The worker function's timeout (infra: 30 s): a killed worker invocation is dropped then,
    /// its jobs coming back after the queue's visibility timeout.
    #[arg(long, default_value_t = 30)]
    pub worker_timeout_seconds: u64,
    /// How long a platform waits for a webhook's answer before retrying it (the webhook
    /// functions' timeout is 10 s; API Gateway answers after it).
    #[arg(long, default_value_t = 12)]
    pub platform_timeout_seconds: u64,
    /// Share of Twilio calls answered 429, 5xx, a timeout or accept-then-hang while faults are on.
    #[arg(long, default_value_t = 0.2)]
    pub twilio_faults: f64,
    /// Share of carts sent once the faults stopped (their answers must hold no 5xx).
    #[arg(long, default_value_t = 0.05)]
    pub clean_share: f64,
    /// Concurrent webhook senders (platform connections).
    #[arg(long, default_value_t = 6)]
    pub senders: usize,
    /// Concurrent worker pollers (Lambda concurrency on the queue).
    #[arg(long, default_value_t = 3)]
    pub pollers: usize,
    /// Steps in the soak merchants' flow: 1 (at once) or 2 (and one a minute later).
    #[arg(long, default_value_t = 2)]
    pub flow_steps: u8,
    /// How long the worker waits for Twilio, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub twilio_timeout_ms: u64,
    /// The latest a racing STOP or order comes after its cart's first delivery, in seconds.
    #[arg(long, default_value_t = 90)]
    pub race_window_seconds: u64,
    /// Share of phones with a STOP/START storm after their cart's last delivery.
    #[arg(long, default_value_t = 0.05)]
    pub storms: f64,
    /// Share of phones with a data-subject deletion after their cart's last delivery.
    #[arg(long, default_value_t = 0.03)]
    pub deletions: f64,
    /// Run the retention purge in-process this often, faults on or off, in seconds (0: never).
    /// Every two minutes gives a 10 000-delivery run dozens of runs over a growing table without
    /// spending most of moto's one core on them.
    #[arg(long, default_value_t = 120)]
    pub purge_every_seconds: u64,
    /// The purger function's timeout: a run still going then (a killed write) is dropped.
    #[arg(long, default_value_t = 120)]
    pub purger_timeout_seconds: u64,
    /// The Shopify merchant's second step is a call by the voice agent (scripted model), picked up
    /// by a shopper who asks for the link twice, says "stop calling me" or "stop", or declines.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub agent_calls: bool,
    /// Share of the agent's `PostToConnection` calls refused or delivered with their answer lost
    /// (half each) while faults are on.
    #[arg(long, default_value_t = 0.1)]
    pub relay_faults: f64,
    /// Keep the faults on this long after the last faulty-phase delivery, in seconds.
    #[arg(long, default_value_t = 30)]
    pub fault_tail_seconds: u64,
    /// Give up draining the queue after this long, in minutes.
    #[arg(long, default_value_t = 60)]
    pub max_drain_minutes: u64,
    #[arg(long, default_value_t = 20_261_124)]
    pub seed: u64,
    /// The local AWS API (moto); default: AWS_ENDPOINT_URL.
    #[arg(long)]
    pub moto_url: Option<String>,
    /// Write the figures into this file's "Load and fault campaign" section.
    #[arg(long)]
    pub benchmarks: Option<PathBuf>,
    /// Where the in-process functions' log lines go (scanned for raw phone numbers at the end).
    #[arg(long)]
    pub function_log: Option<PathBuf>,
    /// The command line to quote in the report.
    #[arg(long, default_value = "scripts/soak")]
    pub command: String,
}

#[derive(Debug, Error)]
pub enum SoakError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Local(#[from] callfy_local::LocalError),
    #[error("store: {0}")]
    Store(#[from] callfy_shared::adapters::store::PortError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("AWS: {0}")]
    Aws(String),
}

/// How long the harness waits, after the drain, for each of its tasks to finish: the longest an
/// agent call or retention run can take (a 35 s upgrade, 15 s per turn and callback, a 120 s run).
const AFTER_DRAIN_WAIT: Duration = Duration::from_secs(300);

/// The campaign's clock: a Tuesday afternoon (not a holiday), daytime for every recipient.
const CLOCK_START: &str = "2026-11-24T19:30:00Z";

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // The functions' own JSON log lines, as CloudWatch would keep them, into a file of their own.
    let log_path = function_log_path(&args);
    match std::fs::File::create(&log_path) {
        Ok(file) => {
            let subscriber = callfy_shared::telemetry::subscriber(std::sync::Mutex::new(file));
            if tracing::subscriber::set_global_default(subscriber).is_err() {
                eprintln!("callfy-soak: a log subscriber was already installed");
            }
        }
        Err(e) => {
            eprintln!("callfy-soak: cannot write {}: {e}", log_path.display());
            std::process::exit(2);
        }
    }
    match run(&args).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("callfy-soak: {e}");
            std::process::exit(2);
        }
    }
}

fn function_log_path(args: &Args) -> PathBuf {
    args.function_log.clone().unwrap_or_else(|| std::env::temp_dir().join("callfy-soak-functions.log"))
}

/// Through the functions' own HTTP stack: the faults at the proxy meet the code that runs in Lambda.
/// Stalled-stream protection is off: with it, the SDK gives up on a held answer after ~5 s and
/// the function lives on to handle the error; a killed function never hears anything, and the
/// worker's timeout (or the platform's) ends the invocation, as in Lambda.
async fn sdk(endpoint: &str) -> Result<SdkConfig, SoakError> {
    let config = callfy_shared::adapters::aws::local_config(endpoint)
        .await
        .map_err(|e| SoakError::Setup(format!("HTTP client: {e}")))?;
    Ok(config
        .to_builder()
        .stalled_stream_protection(aws_config::stalled_stream_protection::StalledStreamProtectionConfig::disabled())
        .build())
}

fn say(epoch: Instant, msg: impl std::fmt::Display) {
    eprintln!("[soak {:>6.1}s] {msg}", epoch.elapsed().as_secs_f64());
}

/// Our own clients for reading the queue and the table (through the proxy, faults off).
struct Clients {
    sqs: aws_sdk_sqs::Client,
    ddb: aws_sdk_dynamodb::Client,
}

/// Jobs the worker took from the queue (the pollers' view).
#[derive(Default)]
struct PollCounts {
    received: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    poll_errors: AtomicU64,
    /// Worker invocations ended by the function's timeout (killed).
    timed_out: AtomicU64,
}

async fn run(args: &Args) -> Result<bool, SoakError> {
    let epoch = Instant::now();
    let moto = args
        .moto_url
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .filter(|u| u.starts_with("http://127.0.0.1") || u.starts_with("http://localhost"))
        .ok_or_else(|| {
            SoakError::Setup("the local AWS API is needed: --moto-url or AWS_ENDPOINT_URL (http://127.0.0.1:…)".into())
        })?;

    // The network edge: a fault proxy in front of moto, another in front of the sandbox.
    let rates = aws_proxy::Rates {
        dynamodb_rate: args.dynamodb_faults,
        sqs_rate: args.sqs_faults,
        dynamodb_lost_rate: args.dynamodb_lost_answers,
        sqs_lost_rate: args.sqs_lost_answers,
        kill_rate: args.kills,
    };
    let aws = Arc::new(aws_proxy::AwsProxy::new(&moto, rates, args.seed ^ 1, epoch));
    let aws_url = aws_proxy::serve(Arc::clone(&aws)).await?;
    let hang = Duration::from_millis(args.twilio_timeout_ms + 1_000);
    let twilio = Arc::new(twilio_proxy::TwilioProxy::new(args.twilio_faults, hang, args.seed ^ 2, epoch));
    let twilio_url = twilio_proxy::serve(Arc::clone(&twilio)).await?;
    let sdk = sdk(&aws_url).await?;

    let start: chrono::DateTime<chrono::Utc> = CLOCK_START.parse().map_err(|_| SoakError::Setup("clock".into()))?;
    let clock: Arc<dyn Clock> = Arc::new(OffsetClock::starting_at(start));
    let mut opts = LocalOptions::for_test("soak", Arc::clone(&clock));
    let account_sid = opts.twilio_account_sid.clone();
    opts.twilio_api_base = Some(twilio_url);
    opts.twilio_timeout = Duration::from_millis(args.twilio_timeout_ms);
    let local = Arc::new(callfy_local::start(&sdk, opts).await?);
    twilio.set_upstream(&local.base_url);
    say(
        epoch,
        format!("callfy-local on {} (table {}), moto behind {aws_url}", local.base_url, local.resources.names.table),
    );

    let agent_calls = args.agent_calls && args.flow_steps > 1;
    let api_keys = register_merchants(&local, &*clock, args.flow_steps, agent_calls).await?;
    let bc_api_key = api_keys.get(&Platform::BigCommerce).cloned().unwrap_or_default();

    // The plan: carts until the deliveries add up.
    let rng = rng::Rng::new(args.seed);
    let mix = Mix {
        consent: 0.9,
        update: 0.3,
        stale: 0.1,
        order: 0.12,
        stop: 0.1,
        storm: args.storms.clamp(0.0, 1.0),
        delete: args.deletions.clamp(0.0, 1.0),
        race_window_ms: args.race_window_seconds * 1_000,
    };
    let mut plans = Vec::new();
    // Redeliveries are drawn as the run goes (orders are not redelivered), so plan past the target
    // by three standard deviations of their count: at least --deliveries in 999 runs of 1 000.
    let (mut planned, mut redeliverable) = (0.0, 0.0);
    let r = args.redeliver.clamp(0.0, 1.0);
    while planned - 3.0 * (redeliverable * r * (1.0 - r)).sqrt() < args.deliveries as f64 {
        let p = traffic::plan_cart(plans.len(), &rng, &mix);
        let webhooks = f64::from(1 + p.updates + u32::from(p.stale_update));
        redeliverable += webhooks;
        planned += webhooks * (1.0 + r) + f64::from(u32::from(p.order_after_ms.is_some()));
        plans.push(p);
    }
    let clean_from = plans.len() - ((plans.len() as f64 * args.clean_share).round() as usize).min(plans.len());
    let clean = plans.split_off(clean_from);
    let all: Vec<CartPlan> = plans.iter().chain(clean.iter()).cloned().collect();
    say(
        epoch,
        format!(
            "{} carts ({} after the faults stop), about {} webhook deliveries; faults: DynamoDB {:.0}%, SQS {:.0}%, Twilio {:.0}%",
            all.len(),
            clean.len(),
            planned.round(),
            args.dynamodb_faults * 100.0,
            args.sqs_faults * 100.0,
            args.twilio_faults * 100.0
        ),
    );

    let faults_on = Arc::new(AtomicBool::new(false));
    // The agent's calls: answered by the campaign's shoppers, its relay posts under faults.
    let relay_counts = Arc::new(calls::RelayFaultCounts::default());
    local.functions().agent.relay.set_faults(Some(calls::relay_faults(
        args.relay_faults,
        args.seed ^ 5,
        Arc::clone(&faults_on),
        Arc::clone(&relay_counts),
    )));
    let lived = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop_answering = Arc::new(AtomicBool::new(false));
    let answering = calls::spawn_answering(
        Arc::clone(&local),
        args.seed ^ 6,
        Arc::clone(&stop_answering),
        Arc::clone(&lived),
        epoch,
    );
    let driver = Arc::new(driver::Driver {
        local: Arc::clone(&local),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(args.platform_timeout_seconds))
            .build()
            .map_err(|e| SoakError::Setup(e.to_string()))?,
        clock: Arc::clone(&clock),
        epoch,
        rng: rng::Rng::new(args.seed ^ 3),
        redeliver: args.redeliver,
        bc_api_key,
        api_keys,
        account_sid,
        faults_on: Arc::clone(&faults_on),
        outcomes: std::sync::Mutex::new(vec![CartOutcome::default(); all.len()]),
        counts: std::sync::Mutex::default(),
        post_fault_5xx: AtomicU64::new(0),
        refused_4xx: AtomicU64::new(0),
        webhooks_sent: AtomicU64::new(0),
        first_refusals: std::sync::Mutex::default(),
    });

    // The worker: pollers as Lambda's event source mapping would run it.
    let polls = Arc::new(PollCounts::default());
    let stop_polling = Arc::new(AtomicBool::new(false));
    let mut pollers = tokio::task::JoinSet::new();
    let worker_timeout = Duration::from_secs(args.worker_timeout_seconds);
    for _ in 0..args.pollers.max(1) {
        let (local, polls, stop) = (Arc::clone(&local), Arc::clone(&polls), Arc::clone(&stop_polling));
        pollers.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                // Lambda ends an invocation at its timeout: the future is dropped where it waits.
                let Ok(polled) = tokio::time::timeout(worker_timeout, local.poll_once(1)).await else {
                    polls.timed_out.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match polled {
                    Ok(s) => {
                        polls.received.fetch_add(s.received as u64, Ordering::Relaxed);
                        polls.succeeded.fetch_add(s.succeeded as u64, Ordering::Relaxed);
                        polls.failed.fetch_add(s.failed as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        polls.poll_errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }
    // Retention runs on a timer, as the daily schedule would run them, faults on or off.
    let purges = Arc::new(std::sync::Mutex::new(Vec::<PurgeRun>::new()));
    let stop_purging = Arc::new(AtomicBool::new(false));
    let purger = (args.purge_every_seconds > 0).then(|| {
        spawn_purges(
            Arc::clone(&local),
            Arc::clone(&clock),
            Arc::clone(&faults_on),
            Arc::clone(&purges),
            Arc::clone(&stop_purging),
            (Duration::from_secs(args.purge_every_seconds), Duration::from_secs(args.purger_timeout_seconds)),
        )
    });
    let progress = spawn_progress(
        epoch,
        Arc::clone(&driver),
        Arc::clone(&polls),
        Arc::clone(&twilio),
        Arc::clone(&aws),
        planned.round() as u64,
    );

    // Phase 1: everything under faults.
    aws.set_faults(true);
    twilio.set_faults(true);
    faults_on.store(true, Ordering::SeqCst);
    let fault_start = Instant::now();
    let sent_before = twilio.accepted().len();
    let polled_before = polls.received.load(Ordering::Relaxed);
    say(epoch, "faults on; sending");
    driver.run(plans, args.senders).await;
    say(epoch, format!("faulty-phase deliveries done; faults stay on {} s more", args.fault_tail_seconds));
    tokio::time::sleep(Duration::from_secs(args.fault_tail_seconds)).await;
    aws.set_faults(false);
    twilio.set_faults(false);
    faults_on.store(false, Ordering::SeqCst);
    let fault_secs = fault_start.elapsed().as_secs_f64();
    let under_faults = Throughput {
        seconds: fault_secs,
        jobs: polls.received.load(Ordering::Relaxed) - polled_before,
        sends: (twilio.accepted().len() - sent_before) as u64,
        webhooks: driver.webhooks_sent.load(Ordering::Relaxed),
    };
    say(epoch, format!("faults off after {fault_secs:.0} s: {}", under_faults.line()));

    // Phase 2: the rest with no faults, then drain.
    driver.run(clean, args.senders).await;
    say(epoch, "clean-phase deliveries done; draining the queue");
    let clients = Clients { sqs: aws_sdk_sqs::Client::new(&sdk), ddb: aws_sdk_dynamodb::Client::new(&sdk) };
    let mut drained = drain(&clients, &local, epoch, Duration::from_secs(args.max_drain_minutes * 60)).await?;
    // The last calls' conversations end, then what they queued (an opt-out's copy) drains.
    // Each wait is bounded and said, so a stuck task shows which it is instead of hanging the run.
    let mut abandoned = Vec::new();
    say(epoch, "waiting for the last agent calls to end");
    stop_answering.store(true, Ordering::SeqCst);
    let mut answering = answering;
    if tokio::time::timeout(AFTER_DRAIN_WAIT, &mut answering).await.is_err() {
        answering.abort();
        abandoned.push("agent calls".to_string());
        say(epoch, format!("agent calls still open after {} s: abandoned", AFTER_DRAIN_WAIT.as_secs()));
    }
    drained &= drain(&clients, &local, epoch, Duration::from_secs(args.max_drain_minutes * 60)).await?;
    say(epoch, "stopping the pollers");
    stop_polling.store(true, Ordering::SeqCst);
    if tokio::time::timeout(AFTER_DRAIN_WAIT, async { while pollers.join_next().await.is_some() {} }).await.is_err() {
        pollers.abort_all();
        abandoned.push("pollers".to_string());
        say(epoch, format!("pollers still busy after {} s: abandoned", AFTER_DRAIN_WAIT.as_secs()));
    }
    say(epoch, "waiting for the last retention run");
    stop_purging.store(true, Ordering::SeqCst);
    if let Some(mut p) = purger
        && tokio::time::timeout(AFTER_DRAIN_WAIT, &mut p).await.is_err()
    {
        p.abort();
        abandoned.push("a retention run".to_string());
        say(epoch, format!("the retention run still going after {} s: abandoned", AFTER_DRAIN_WAIT.as_secs()));
    }
    let purge_runs = purges.lock().unwrap_or_else(|e| e.into_inner()).clone();
    say(epoch, format!("{} retention runs", purge_runs.len()));
    progress.abort();
    let total_secs = epoch.elapsed().as_secs_f64();
    say(epoch, if drained { "queue empty".to_string() } else { "the queue did not drain in time".to_string() });

    // The evidence.
    let mut inputs = gather(&clients, &local, &all, &driver, &aws, &twilio, args.flow_steps).await?;
    inputs.purge_audits = local
        .store()
        .purge_reports()
        .await?
        .into_iter()
        .map(|r| PurgeAudit {
            as_of_ms: r.as_of.map(|t| t.timestamp_millis()).unwrap_or_default(),
            complete: r.complete,
            errors: r.errors.len(),
        })
        .collect();
    inputs.purge_runs = purge_runs;
    let lived = lived.lock().unwrap_or_else(|e| e.into_inner()).clone();
    inputs.calls = calls_seen(&local, &all, &inputs, &lived).await?;
    let mut verdict = checks::judge(&inputs);
    verdict.abandoned = abandoned;
    let phones: Vec<String> = all.iter().map(|c| c.phone.clone()).collect();
    let log_path = function_log_path(args);
    let scan = logscan::scan(&log_path, &phones)?;
    say(
        epoch,
        format!(
            "{} function log lines scanned ({}): {} with a raw phone",
            scan.lines,
            log_path.display(),
            scan.violations
        ),
    );
    verdict.log_lines = scan.lines;
    verdict.log_phone_lines = scan.violations;
    verdict.log_examples = scan.examples;
    let figures = report::Figures {
        args,
        carts: all.len(),
        platforms: Platform::ALL.iter().map(|p| (p.name(), all.iter().filter(|c| c.platform == *p).count())).collect(),
        counts: driver.counts.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        aws: report::AwsFaults {
            dynamodb_calls: aws.counts.dynamodb_calls_faulty.load(Ordering::Relaxed),
            dynamodb_throttled: aws.counts.dynamodb_throttled.load(Ordering::Relaxed),
            sqs_calls: aws.counts.sqs_calls_faulty.load(Ordering::Relaxed),
            sqs_5xx: aws.counts.sqs_5xx.load(Ordering::Relaxed),
            dynamodb_once_calls: aws.counts.dynamodb_once_calls.load(Ordering::Relaxed),
            lost_transact: aws.counts.lost_transact.load(Ordering::Relaxed),
            lost_conditional: aws.counts.lost_conditional.load(Ordering::Relaxed),
            sqs_delete_calls: aws.counts.sqs_delete_calls.load(Ordering::Relaxed),
            lost_sqs_delete: aws.counts.lost_sqs_delete.load(Ordering::Relaxed),
            lost_as_timeout: aws.counts.lost_as_timeout.load(Ordering::Relaxed),
            token_replays: aws.counts.token_replays.load(Ordering::Relaxed),
            write_calls: aws.counts.write_calls.load(Ordering::Relaxed),
            kills: aws.counts.kills.load(Ordering::Relaxed),
            kills_released: aws.counts.kills_released.load(Ordering::Relaxed),
            kills_held_ms: aws.counts.kills_held_ms.load(Ordering::Relaxed),
            kills_by_op: aws.kills_by_op(),
        },
        twilio: report::TwilioFaults {
            calls: twilio.counts.calls_faulty.load(Ordering::Relaxed),
            too_many: twilio.counts.too_many.load(Ordering::Relaxed),
            server_errors: twilio.counts.server_errors.load(Ordering::Relaxed),
            timeouts: twilio.counts.timeouts.load(Ordering::Relaxed),
            accept_then_hang: twilio.counts.accept_then_hang.load(Ordering::Relaxed),
            accepted: twilio.accepted().len() as u64,
        },
        polls: report::Polls {
            received: polls.received.load(Ordering::Relaxed),
            succeeded: polls.succeeded.load(Ordering::Relaxed),
            failed: polls.failed.load(Ordering::Relaxed),
            errors: polls.poll_errors.load(Ordering::Relaxed),
            timed_out: polls.timed_out.load(Ordering::Relaxed),
        },
        relay: report::RelayFaults {
            posts: relay_counts.posts.load(Ordering::Relaxed),
            delivered_but_failed: relay_counts.delivered_but_failed.load(Ordering::Relaxed),
            refused: relay_counts.refused.load(Ordering::Relaxed),
        },
        under_faults,
        total_seconds: total_secs,
        drained,
        dead_letters: inputs.dead_letters.len(),
        messages: inputs.sent.iter().filter(|s| s.cart.is_some()).count(),
        verdict: verdict.clone(),
        ops: aws.ops(),
        notes: driver.first_refusals.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    };
    let text = figures.render();
    eprintln!("\n{text}");
    if let Some(path) = &args.benchmarks {
        report::write_section(path, &text)?;
        say(epoch, format!("wrote the \"Load and fault campaign\" section of {}", path.display()));
    }
    let failures = verdict.failures();
    let pass = failures.is_empty() && drained;
    if pass {
        eprintln!("callfy-soak: every check passed");
    } else {
        for f in &failures {
            eprintln!("callfy-soak: FAILED: {f}");
        }
        if !drained {
            eprintln!("callfy-soak: FAILED: the queue did not drain");
        }
    }
    local_shutdown(local).await;
    Ok(pass)
}

async fn local_shutdown(local: Arc<LocalHandle>) {
    if let Ok(local) = Arc::try_unwrap(local) {
        local.shutdown().await;
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Throughput {
    pub seconds: f64,
    pub jobs: u64,
    pub sends: u64,
    pub webhooks: u64,
}

impl Throughput {
    pub fn per_second(n: u64, seconds: f64) -> f64 {
        if seconds > 0.0 { n as f64 / seconds } else { 0.0 }
    }

    fn line(&self) -> String {
        format!(
            "{} worker jobs ({:.2}/s), {} messages accepted by Twilio ({:.2}/s), {} webhook deliveries ({:.2}/s)",
            self.jobs,
            Self::per_second(self.jobs, self.seconds),
            self.sends,
            Self::per_second(self.sends, self.seconds),
            self.webhooks,
            Self::per_second(self.webhooks, self.seconds)
        )
    }
}

/// The four merchants, each with a consent API key (BigCommerce's opt-ins; deletions and their status).
async fn register_merchants(
    local: &LocalHandle,
    clock: &dyn Clock,
    flow_steps: u8,
    agent_calls: bool,
) -> Result<HashMap<Platform, String>, SoakError> {
    let mut keys = HashMap::new();
    for p in Platform::ALL {
        let m = Merchant::from_json(&p.merchant(flow_steps, agent_calls).to_string())
            .map_err(|e| SoakError::Setup(format!("{p:?}: {e}")))?;
        local.store().put_merchant(&m, clock.now()).await?;
        let key = callfy_shared::api_key::new_api_key(&m.id);
        local.store().set_api_key_hash(&m.id, &callfy_shared::signature::sha256_hex(key.as_bytes())).await?;
        keys.insert(p, key);
    }
    Ok(keys)
}

/// The retention purge every `every`, as of the campaign's clock, each run ended at the
/// purger's timeout if it has not returned (a killed write), until `stop`.
fn spawn_purges(
    local: Arc<LocalHandle>,
    clock: Arc<dyn Clock>,
    faults_on: Arc<AtomicBool>,
    runs: Arc<std::sync::Mutex<Vec<PurgeRun>>>,
    stop: Arc<AtomicBool>,
    (every, timeout): (Duration, Duration),
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let started = Instant::now();
            while started.elapsed() < every {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let as_of = clock.now();
            let under_faults = faults_on.load(Ordering::SeqCst);
            // Stops taking pages as the function does, its margin before the timeout.
            let deadline = callfy_shared::app::retention::run_deadline(timeout);
            let outcome = match tokio::time::timeout(timeout, local.purge(as_of, false, Some(deadline))).await {
                Ok(Ok(r)) => PurgeOutcome::Finished { complete: r.complete, items: r.total() },
                Ok(Err(e)) => PurgeOutcome::Failed(callfy_shared::telemetry::redact(&e.to_string())),
                Err(_) => PurgeOutcome::TimedOut,
            };
            runs.lock().unwrap_or_else(|e| e.into_inner()).push(PurgeRun {
                as_of_ms: as_of.timestamp_millis(),
                under_faults,
                outcome,
            });
        }
    })
}

/// moto's resident memory in MiB, when scripts/soak told us its process (`CALLFY_SOAK_MOTO_PID`).
fn moto_rss_mib() -> Option<u64> {
    let pid = std::env::var("CALLFY_SOAK_MOTO_PID").ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

fn spawn_progress(
    epoch: Instant,
    driver: Arc<driver::Driver>,
    polls: Arc<PollCounts>,
    twilio: Arc<twilio_proxy::TwilioProxy>,
    aws: Arc<aws_proxy::AwsProxy>,
    planned: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(15)).await;
            let c = &aws.counts;
            say(
                epoch,
                format!(
                    "webhooks {}/{planned} · worker jobs {} ({} failed) · messages {} · faults: ddb {} sqs {} twilio {} lost answers {} kills {}{}",
                    driver.webhooks_sent.load(Ordering::Relaxed),
                    polls.received.load(Ordering::Relaxed),
                    polls.failed.load(Ordering::Relaxed),
                    twilio.accepted().len(),
                    c.dynamodb_throttled.load(Ordering::Relaxed),
                    c.sqs_5xx.load(Ordering::Relaxed),
                    twilio.counts.too_many.load(Ordering::Relaxed)
                        + twilio.counts.server_errors.load(Ordering::Relaxed)
                        + twilio.counts.timeouts.load(Ordering::Relaxed)
                        + twilio.counts.accept_then_hang.load(Ordering::Relaxed),
                    c.lost_transact.load(Ordering::Relaxed)
                        + c.lost_conditional.load(Ordering::Relaxed)
                        + c.lost_sqs_delete.load(Ordering::Relaxed),
                    c.kills.load(Ordering::Relaxed),
                    moto_rss_mib().map(|m| format!(" · moto {m} MiB")).unwrap_or_default(),
                ),
            );
        }
    })
}

/// Polls until the queue holds nothing visible, in flight or delayed, twice in a row.
async fn drain(clients: &Clients, local: &LocalHandle, epoch: Instant, limit: Duration) -> Result<bool, SoakError> {
    let started = Instant::now();
    let mut empty_in_a_row = 0;
    let mut last_report = Instant::now();
    while started.elapsed() < limit {
        let (visible, in_flight, delayed) = queue_depth(clients, local).await?;
        if visible + in_flight + delayed == 0 {
            empty_in_a_row += 1;
            if empty_in_a_row >= 2 {
                return Ok(true);
            }
        } else {
            empty_in_a_row = 0;
        }
        if last_report.elapsed() >= Duration::from_secs(30) {
            say(epoch, format!("draining: {visible} visible, {in_flight} in flight, {delayed} delayed"));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Ok(false)
}

async fn queue_depth(clients: &Clients, local: &LocalHandle) -> Result<(u64, u64, u64), SoakError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&local.resources.queue_url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| SoakError::Aws(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
    let get = |a: A| out.attributes().and_then(|m| m.get(&a)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok((
        get(A::ApproximateNumberOfMessages),
        get(A::ApproximateNumberOfMessagesNotVisible),
        get(A::ApproximateNumberOfMessagesDelayed),
    ))
}

/// Which cart and step a message body is about, from the link's marker and the step's code.
fn attribute(body: &str, flow_steps: u8) -> Option<(usize, u8)> {
    let at = body.find("/r/sc")? + "/r/sc".len();
    let idx: usize = body.get(at..at + 6)?.parse().ok()?;
    Some((idx, step_of(body, flow_steps)))
}

/// A text's step from its discount code: the call step's code marks the link asked for on the
/// call (recorded as the call's link step).
fn step_of(body: &str, flow_steps: u8) -> u8 {
    if body.contains(traffic::CALL_CODE) {
        callfy_shared::domain::voice::LINK_STEP_BASE + 1
    } else {
        u8::from(flow_steps > 1 && body.contains(traffic::STEP2_CODE))
    }
}

/// The cart plan and step of a text carrying our redirect link, from the stored link.
async fn our_link(
    local: &LocalHandle,
    body: &str,
    by_token: &HashMap<(String, String), usize>,
) -> Result<Option<(usize, u8)>, SoakError> {
    use callfy_shared::domain::link::{CODE_LEN, LinkCode};
    let prefix = format!("{}/r/", local.base_url);
    let Some(at) = body.find(&prefix).map(|i| i + prefix.len()) else { return Ok(None) };
    let Some(code) = body.get(at..at + CODE_LEN).and_then(LinkCode::parse) else { return Ok(None) };
    let Some(link) = local.store().find_link(&code).await.map_err(|e| SoakError::Aws(e.to_string()))? else {
        return Ok(None);
    };
    let key = (link.merchant_id.to_string(), link.cart_token.to_string());
    Ok(by_token.get(&key).map(|idx| (*idx, link.step)))
}

async fn gather(
    clients: &Clients,
    local: &LocalHandle,
    carts: &[CartPlan],
    driver: &driver::Driver,
    aws: &aws_proxy::AwsProxy,
    twilio: &twilio_proxy::TwilioProxy,
    flow_steps: u8,
) -> Result<Inputs, SoakError> {
    let by_token: HashMap<(String, String), usize> =
        carts.iter().map(|c| ((c.platform.merchant_id().to_string(), c.token.clone()), c.idx)).collect();
    let by_phone: HashMap<&str, usize> = carts.iter().map(|c| (c.phone.as_str(), c.idx)).collect();
    let accepted: HashMap<String, twilio_proxy::Accepted> =
        twilio.accepted().into_iter().map(|a| (a.sid.clone(), a)).collect();
    let mut sent: Vec<Sent> = Vec::new();
    for mut m in local.sandbox.messages() {
        // A deletion redacts Twilio's copy: the body as it was posted says what it was.
        if m.body.is_empty()
            && let Some(a) = accepted.get(&m.sid)
        {
            m.body = a.body.clone();
        }
        // A BigCommerce text carries our redirect (`/r/{code}`), not the store's marked URL:
        // its link, stored with merchant, cart and step, says which cart it is about.
        // A deletion took the link with the cart: the number (one cart each) and the step's
        // code still say it.
        let at = match attribute(&m.body, flow_steps) {
            Some(at) => Some(at),
            None => match our_link(local, &m.body, &by_token).await? {
                Some(at) => Some(at),
                None if m.body.contains(&format!("{}/r/", local.base_url)) => {
                    by_phone.get(m.to.as_str()).map(|idx| (*idx, step_of(&m.body, flow_steps)))
                }
                None => None,
            },
        };
        sent.push(Sent {
            posted: accepted.get(&m.sid).map(|a| a.posted),
            sid: m.sid,
            cart: at.map(|a| a.0),
            step: at.map(|a| a.1).unwrap_or_default(),
            to: m.to,
            body: m.body,
        });
    }
    // The agent's calls, by the cart and step their answer URL names: one per step, as texts.
    for c in local.sandbox.calls() {
        let query = c.url.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let at = callfy_shared::domain::voice::CallRef::from_query(query)
            .and_then(|r| by_token.get(&(r.merchant_id.to_string(), r.cart_token.to_string())).map(|i| (*i, r.step)));
        sent.push(Sent {
            posted: accepted.get(&c.sid).map(|a| a.posted),
            body: format!("call {}", c.sid),
            sid: c.sid,
            cart: at.map(|a| a.0),
            step: at.map(|a| a.1).unwrap_or_default(),
            to: c.to,
        });
    }
    let mut claims: HashMap<(usize, u8), Vec<Duration>> = HashMap::new();
    for c in aws.claims() {
        let Some(rest) = c.pk.strip_prefix("K#") else { continue };
        let Some((m, token)) = rest.split_once('#') else { continue };
        let Some(step) = c.sk.strip_prefix("STEP#").and_then(|s| s.parse::<u8>().ok()) else { continue };
        if let Some(idx) = by_token.get(&(m.to_string(), token.to_string())) {
            claims.entry((*idx, step)).or_default().push(c.forwarded);
        }
    }
    let steps = step_records(clients, local, &by_token).await?;
    let dead_letters = dead_letters(clients, local, &by_token).await?;
    let outcomes = driver.outcomes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut orders_not_applied = Vec::new();
    let mut stops_not_applied = Vec::new();
    for (plan, o) in carts.iter().zip(&outcomes) {
        let m = MerchantId::parse(plan.platform.merchant_id()).map_err(|e| SoakError::Setup(e.to_string()))?;
        if o.order_acked.is_some() {
            let token = CartToken::parse(&plan.token).map_err(|e| SoakError::Setup(e.to_string()))?;
            let cart = local.store().get_cart(&m, &token).await?;
            if !cart.is_some_and(|c| matches!(c.status, CartStatus::Recovered | CartStatus::Completed)) {
                orders_not_applied.push(plan.idx);
            }
        }
        if o.stop_acked.is_some() {
            let phone = Phone::parse(&plan.phone, None).map_err(|e| SoakError::Setup(e.to_string()))?;
            let state = local.store().consent_state(&m, &phone, Channel::Sms).await?;
            if state.status != ConsentStatus::OptedOut {
                stops_not_applied.push(plan.idx);
            }
        }
    }
    // Every phone with an acknowledged STOP or a storm: its consent and suppression records (a
    // storm whose STOPs went unanswered is judged on its STARTs, read like the rest).
    let mut phones = HashMap::new();
    for (plan, o) in carts.iter().zip(&outcomes) {
        if o.stop_acked.is_none() && o.storm.is_empty() {
            continue;
        }
        let m = MerchantId::parse(plan.platform.merchant_id()).map_err(|e| SoakError::Setup(e.to_string()))?;
        let phone = Phone::parse(&plan.phone, None).map_err(|e| SoakError::Setup(e.to_string()))?;
        let store = local.store();
        let sms = store.consent_state(&m, &phone, Channel::Sms).await?;
        phones.insert(
            plan.idx,
            PhoneSeen {
                sms_out: match sms.status {
                    ConsentStatus::OptedOut => Some(true),
                    ConsentStatus::OptedIn => Some(false),
                    ConsentStatus::Unknown => None,
                },
                sms_suppressed: store.suppression(&m, &phone, Channel::Sms).await?.is_some(),
                voice_suppressed: store.suppression(&m, &phone, Channel::Voice).await?.is_some(),
            },
        );
    }
    // Every acknowledged deletion: its status, and the table scanned for the phone.
    let mut deletions: HashMap<usize, DeletionSeen> = HashMap::new();
    let mut deleted: HashMap<String, usize> = HashMap::new();
    for (plan, o) in carts.iter().zip(&outcomes) {
        let Some(d) = o.deletion.as_ref().filter(|d| d.acked.is_some()) else { continue };
        let mut seen = DeletionSeen::default();
        if let (Some(id), Some(key)) = (&d.id, driver.api_keys.get(&plan.platform))
            && let Some(view) = driver.deletion_view(key, id).await
        {
            seen.status = view["status"].as_str().map(str::to_string);
            if let Some(p) = view["provider_copies_pending"].as_object() {
                seen.provider_pending =
                    p.iter().filter_map(|(k, n)| n.as_u64().filter(|n| *n > 0).map(|n| (k.clone(), n))).collect();
            }
        }
        deletions.insert(plan.idx, seen);
        deleted.insert(plan.phone.clone(), plan.idx);
    }
    if !deleted.is_empty() {
        for (idx, key) in raw_phone_items(clients, local, &deleted).await? {
            if let Some(seen) = deletions.get_mut(&idx) {
                seen.raw_phone_items += 1;
                if seen.examples.len() < 3 {
                    seen.examples.push(key);
                }
            }
        }
    }
    Ok(Inputs {
        flow_steps,
        carts: outcomes,
        sent,
        claims,
        steps,
        dead_letters,
        post_fault_5xx: driver.post_fault_5xx.load(Ordering::Relaxed),
        refused_4xx: driver.refused_4xx.load(Ordering::Relaxed),
        orders_not_applied,
        stops_not_applied,
        contract_violations: local.sandbox.violations().len(),
        phones,
        deletions,
        purge_runs: Vec::new(),
        purge_audits: Vec::new(),
        calls: calls::CallsSeen::default(),
    })
}

/// What the agent's calls show at the end: every opt-out said is recorded (calls opted out and
/// suppressed; texts too for "stop"), whatever the relay answered, and a link asked for twice
/// was texted once. Phones with a storm or a deletion are left out (their later keywords or the
/// deletion decide their consent).
async fn calls_seen(
    local: &LocalHandle,
    carts: &[CartPlan],
    inputs: &Inputs,
    lived: &[calls::CallLived],
) -> Result<calls::CallsSeen, SoakError> {
    let by_phone: HashMap<&str, &CartPlan> = carts.iter().map(|c| (c.phone.as_str(), c)).collect();
    let mut seen = calls::CallsSeen { placed: local.sandbox.calls().len() as u64, ..Default::default() };
    let link_step = callfy_shared::domain::voice::LINK_STEP_BASE + 1;
    let mut link_texts: HashMap<usize, u64> = HashMap::new();
    for s in inputs.sent.iter().filter(|s| s.step == link_step) {
        if let Some(cart) = s.cart {
            *link_texts.entry(cart).or_default() += 1;
        }
    }
    for call in lived {
        *seen.by_script.entry(call.script).or_default() += 1;
        seen.connected += u64::from(call.connected);
        seen.errors += u64::from(call.error.is_some());
        seen.ended_early += u64::from(call.ended_early);
        let Some(plan) = by_phone.get(call.to.as_str()) else { continue };
        if call.connected && call.script == calls::Script::LinkTwice {
            seen.link_calls += 1;
            let n = link_texts.get(&plan.idx).copied().unwrap_or_default();
            seen.link_texts += n;
            if n > 1 {
                seen.link_texted_twice.push(call.sid.clone());
            }
        }
        let Some((_, texts)) = call.script.opts_out().filter(|_| call.opt_out_said.is_some()) else { continue };
        seen.opt_outs_said += 1;
        seen.opt_outs_confirmed += u64::from(call.opt_out_confirmed);
        let outcome = inputs.carts.get(plan.idx);
        if outcome.is_some_and(|o| !o.storm.is_empty() || o.deletion.is_some()) {
            continue;
        }
        let m = MerchantId::parse(plan.platform.merchant_id()).map_err(|e| SoakError::Setup(e.to_string()))?;
        let phone = Phone::parse(&plan.phone, None).map_err(|e| SoakError::Setup(e.to_string()))?;
        let store = local.store();
        let mut wrong = Vec::new();
        if store.consent_state(&m, &phone, Channel::Voice).await?.status != ConsentStatus::OptedOut {
            wrong.push("calls not opted out");
        }
        if store.suppression(&m, &phone, Channel::Voice).await?.is_none() {
            wrong.push("no suppression record for calls");
        }
        if texts && store.consent_state(&m, &phone, Channel::Sms).await?.status != ConsentStatus::OptedOut {
            wrong.push("texts not opted out");
        }
        if !wrong.is_empty() {
            seen.opt_outs_not_recorded.push((call.sid.clone(), wrong.join(", ")));
        }
    }
    Ok(seen)
}

/// Every string an item holds, keys included, one after another.
fn item_text(item: &HashMap<String, AttributeValue>, out: &mut String) {
    fn value(v: &AttributeValue, out: &mut String) {
        match v {
            AttributeValue::S(s) | AttributeValue::N(s) => {
                out.push_str(s);
                out.push(' ');
            }
            AttributeValue::Ss(l) | AttributeValue::Ns(l) => {
                for s in l {
                    out.push_str(s);
                    out.push(' ');
                }
            }
            AttributeValue::L(l) => l.iter().for_each(|v| value(v, out)),
            AttributeValue::M(m) => item_text(m, out),
            _ => {}
        }
    }
    for (k, v) in item {
        out.push_str(k);
        out.push(' ');
        value(v, out);
    }
}

/// The E.164 numbers (`+` and digits) a text holds.
fn e164s(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices('+') {
        let digits = text[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
        if (8..=15).contains(&digits) {
            out.push(&text[at..at + 1 + digits]);
        }
    }
    out
}

/// The items of the whole table (one scan) holding one of `phones` (E.164) anywhere: the cart
/// of the phone, and the item's keys.
async fn raw_phone_items(
    clients: &Clients,
    local: &LocalHandle,
    phones: &HashMap<String, usize>,
) -> Result<Vec<(usize, String)>, SoakError> {
    let mut out = Vec::new();
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    let mut text = String::new();
    loop {
        let page = clients
            .ddb
            .scan()
            .table_name(local.store().table())
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| SoakError::Aws(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()))?;
        for item in page.items() {
            text.clear();
            item_text(item, &mut text);
            let hit = e164s(&text).into_iter().find_map(|p| phones.get(p).copied());
            if let Some(idx) = hit {
                let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                let mask = |k: String| k.replace(|c: char| c.is_ascii_digit(), "#");
                out.push((idx, format!("{} / {}", mask(s("pk")), mask(s("sk")))));
            }
        }
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    Ok(out)
}

/// Every step record in the table (one scan).
async fn step_records(
    clients: &Clients,
    local: &LocalHandle,
    by_token: &HashMap<(String, String), usize>,
) -> Result<HashMap<(usize, u8), StepSeen>, SoakError> {
    let client = &clients.ddb;
    let mut out = HashMap::new();
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    loop {
        let page = client
            .scan()
            .table_name(local.store().table())
            .filter_expression("begins_with(sk, :step)")
            .expression_attribute_values(":step", AttributeValue::S("STEP#".into()))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| SoakError::Aws(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()))?;
        for item in page.items() {
            let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
            let (Some(pk), Some(sk)) = (s("pk"), s("sk")) else { continue };
            let Some((m, token)) = pk.strip_prefix("K#").and_then(|r| r.split_once('#')) else { continue };
            let Some(step) = sk.strip_prefix("STEP#").and_then(|n| n.parse::<u8>().ok()) else { continue };
            let Some(idx) = by_token.get(&(m.to_string(), token.to_string())) else { continue };
            let error_code = item.get("error_code").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok());
            out.insert(
                (*idx, step),
                StepSeen {
                    state: s("state").unwrap_or_default(),
                    reason: s("reason"),
                    error_code,
                    message_sid: s("message_sid"),
                },
            );
        }
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    Ok(out)
}

/// The jobs in the outreach dead-letter queue, read without deleting them.
async fn dead_letters(
    clients: &Clients,
    local: &LocalHandle,
    by_token: &HashMap<(String, String), usize>,
) -> Result<Vec<(usize, u8)>, SoakError> {
    let sqs = &clients.sqs;
    let mut out = Vec::new();
    loop {
        let got = sqs
            .receive_message()
            .queue_url(&local.resources.dlq_url)
            .max_number_of_messages(10)
            .visibility_timeout(600)
            .send()
            .await
            .map_err(|e| SoakError::Aws(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(out);
        }
        for m in messages {
            let v: serde_json::Value = serde_json::from_str(m.body().unwrap_or_default()).unwrap_or_default();
            let merchant = v["merchant_id"].as_str().unwrap_or_default().to_string();
            let token = v["cart_token"].as_str().unwrap_or_default().to_string();
            if let (Some(idx), Some(step)) = (by_token.get(&(merchant, token)), v["step"].as_u64()) {
                out.push((*idx, step as u8));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_their_cart_and_step() {
        let body = "Soak: You left Wax Puck in your cart: https://soak-soak-api.example/r/sc000042/recover?k=9 Code SOAK2. Reply STOP to opt out.";
        assert_eq!(attribute(body, 2), Some((42, 1)));
        assert_eq!(attribute("Snowdevil: You will not receive more messages.", 2), None);
        assert_eq!(attribute("https://x.example/r/sc000007/recover", 2), Some((7, 0)));
    }

    #[test]
    fn phones_are_found_in_any_attribute() {
        assert_eq!(
            e164s("C#soak-shop#+12015550100 SMS#OUT# +1 +123 x+442071838750y"),
            vec!["+12015550100", "+442071838750"]
        );
        let mut item = HashMap::new();
        item.insert("pk".to_string(), AttributeValue::S("K#m#t".into()));
        let inner = HashMap::from([("phone".to_string(), AttributeValue::S("+12015550100".into()))]);
        item.insert("data".to_string(), AttributeValue::L(vec![AttributeValue::M(inner)]));
        let mut text = String::new();
        item_text(&item, &mut text);
        assert_eq!(e164s(&text), vec!["+12015550100"]);
    }
}
