//! `callfy-admin`: the operator's CLI for merchants (docs/operations.md), dead-letter queues and
//! recovery reports. With only `AWS_ENDPOINT_URL` set it finds the resources `callfy-local`
//! created.

use callfy_admin::dlq::{self, DeadLetterQueue};
use callfy_admin::{html, report};
use callfy_shared::MerchantId;
use callfy_shared::Phone;
use callfy_shared::adapters::aws;
use callfy_shared::adapters::store::{MerchantRecord, MerchantStatus, Store};
use callfy_shared::config::local_defaults;
use callfy_shared::domain::consent::verify_chain;
use callfy_shared::domain::merchant::{Channel, Merchant};
use callfy_shared::signature::sha256_hex;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "callfy-admin",
    about = "Operate Callfy: merchants, API keys, consent ledgers, purges, dead-letter queues, recovery reports"
)]
struct Cli {
    /// DynamoDB table (default: $TABLE_NAME, else the local default).
    #[arg(long, global = true)]
    table: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Merchant profiles.
    Merchant {
        #[command(subcommand)]
        action: MerchantAction,
    },
    /// Consent ledgers.
    Consent {
        #[command(subcommand)]
        action: ConsentCommand,
    },
    /// Run the retention purge now (as the daily schedule does), or show what it would delete.
    Purge {
        /// Count what is due; delete nothing, record nothing.
        #[arg(long)]
        dry_run: bool,
        /// Purge as of this instant (RFC 3339); default now.
        #[arg(long)]
        as_of: Option<String>,
        /// The recordings bucket (default: $RECORDINGS_BUCKET, else the local default).
        #[arg(long)]
        bucket: Option<String>,
        /// Days a closed account's data is kept before it is erased.
        #[arg(long, default_value_t = callfy_shared::app::retention::DEFAULT_CLOSURE_GRACE_DAYS)]
        grace_days: u32,
        /// Allow an --as-of in the future (it deletes data before its retention ends).
        #[arg(long)]
        force: bool,
    },
    /// Dead-letter queues: replay what failed back to its queue.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Place a test call from the merchant's voice agent to the merchant's own PHONE (its own
    /// cart and consent evidence; the worker places it under every rule, quiet hours included).
    CallTest { merchant: String, phone: String },
    /// The voice agent's transcript of one call (both sides, with turns and times).
    Transcript { merchant: String, call_sid: String },
    /// A merchant's recovery funnel: carts, consent, messages and calls, recoveries and revenue,
    /// by step and channel, opt-outs and delivery failures (a table; --html writes a page).
    Report {
        merchant: String,
        /// Only carts created on or after this day (2026-11-01) or instant (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Also write the report as a self-contained HTML page with charts to this file.
        #[arg(long)]
        html: Option<std::path::PathBuf>,
    },
    /// Read a silent period back from the merchant's platform API (Shopify: abandoned checkouts
    /// and orders; WooCommerce: orders) and apply each through the normal ingest path. Running
    /// it again changes nothing. Shopify's API: $SHOPIFY_API_BASE replaces https://{shop}.
    Backfill {
        #[arg(long)]
        merchant: String,
        /// RFC 3339 instant: items changed since then (2026-12-01T00:00:00Z).
        #[arg(long)]
        since: String,
    },
    /// Run the daily silence check now: merchants whose platform stopped delivering.
    Silence {
        /// Check as of this instant (RFC 3339); default now.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Once, on a table written by an earlier version: tags each merchant's items for the
    /// `tenant` index and moves purge-index entries to their shard (a scan). Safe to run again.
    MigrateIndexes,
}

#[derive(Subcommand)]
enum DlqAction {
    /// Move dead-lettered jobs back to their source queue, one at a time (sent, then deleted).
    /// Queue URLs: $OUTREACH_DLQ_URL/$OUTREACH_QUEUE_URL and $RECORDINGS_DLQ_URL/$RECORDINGS_QUEUE_URL,
    /// else the local defaults.
    Replay {
        /// Only this dead-letter queue (default: both).
        #[arg(long, value_enum)]
        queue: Option<DeadLetterQueue>,
        /// List what is there; move nothing (every message stays in the dead-letter queue).
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
enum ConsentCommand {
    /// Re-walk a phone's consent hash chains (SMS and voice); exit 1 at the first broken link.
    Verify {
        merchant: String,
        /// The phone, E.164 or in the merchant's national format.
        phone: String,
    },
}

#[derive(Subcommand)]
enum MerchantAction {
    /// Create or replace a merchant from a JSON file (every field validated).
    Put {
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Print a merchant's profile and status.
    Get { id: String },
    /// Issue a new API key; it is printed once and only its SHA-256 is stored.
    ApiKey { id: String },
    /// Close a merchant: no more outreach, API keys refused, its data erased after the grace period.
    Close { id: String },
    /// Reopen a closed merchant within its grace period (its data, opt-outs included, intact).
    Reopen { id: String },
    /// Suspend (on) or resume (off) every purge and deletion of a merchant's data.
    LegalHold {
        id: String,
        #[arg(value_enum)]
        state: OnOff,
    },
}

#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Broken(String),
    #[error(transparent)]
    Store(#[from] callfy_shared::ports::PortError),
    #[error(transparent)]
    Dlq(#[from] dlq::DlqError),
    #[error(transparent)]
    Report(#[from] report::ReportError),
    #[error(transparent)]
    Backfill(#[from] callfy_admin::backfill::RunError),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ AdminError::Broken(_)) => {
            eprintln!("callfy-admin: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("callfy-admin: {e}");
            ExitCode::from(2)
        }
    }
}

fn merchant_id(id: &str) -> Result<MerchantId, AdminError> {
    MerchantId::parse(id).map_err(|e| AdminError::Usage(format!("{id:?}: {e}")))
}

fn describe(record: &MerchantRecord) -> serde_json::Value {
    serde_json::json!({
        "merchant": record.merchant,
        "status": match record.status { MerchantStatus::Active => "active", MerchantStatus::Closed => "closed" },
        "api_key": if record.api_key_sha256.is_some() { "set" } else { "none" },
        "legal_hold": record.legal_hold,
    })
}

/// Against AWS itself (any endpoint but a loopback one), the shared local default would key
/// markers the stack's functions never match: the stack's key must be named.
fn marker_key_unset_against_aws(endpoint: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
    let local = endpoint
        .and_then(|e| e.split("://").nth(1))
        .map(|rest| rest.split(['/', '?']).next().unwrap_or_default())
        .is_some_and(|host| {
            let host = match host.rsplit_once(':') {
                Some((h, port))
                    if port.chars().all(|c| c.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) =>
                {
                    h
                }
                _ => host,
            };
            matches!(host, "127.0.0.1" | "localhost" | "[::1]")
        });
    (!local && !set("MARKER_KEY_SECRET_ID") && !set("CALLFY_MARKER_KEY")).then(|| {
        "against AWS, set MARKER_KEY_SECRET_ID to the stack's MarkerKeySecretId output (or CALLFY_MARKER_KEY): \
         markers keyed with the local default match nothing the functions wrote"
            .to_string()
    })
}

async fn run(cli: Cli) -> Result<(), AdminError> {
    let table = cli.table.unwrap_or_else(local_defaults::table_name);
    let sdk = aws::load_config().await.map_err(|e| AdminError::Broken(format!("HTTP client: {e}")))?;
    if let Some(missing) = marker_key_unset_against_aws(sdk.endpoint_url(), |k| std::env::var(k).ok()) {
        return Err(AdminError::Usage(missing));
    }
    // The functions' marker key, loaded as they load it: what this tool writes, they find.
    callfy_shared::adapters::secrets::init_marker_key(&sdk)
        .await
        .map_err(|e| AdminError::Usage(format!("marker key: {e}")))?;
    // The functions' own assembly of clients and adapters.
    let clients = callfy_shared::startup::Clients::new(&sdk);
    let store = clients.store(&table);
    match cli.command {
        Command::Merchant { action } => match action {
            MerchantAction::Put { file } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| AdminError::Usage(format!("cannot read {}: {e}", file.display())))?;
                let merchant =
                    Merchant::from_json(&text).map_err(|e| AdminError::Usage(format!("invalid merchant: {e}")))?;
                // A shortened retention applies to what is already stored, too.
                let moved = callfy_shared::app::retention::save_merchant(&store, &merchant, chrono::Utc::now())
                    .await
                    .map_err(|e| AdminError::Usage(e.to_string()))?;
                println!("merchant {} saved", merchant.id);
                if moved > 0 {
                    println!(
                        "retention shortened: {moved} stored items re-dated; the next purge run deletes what is past due"
                    );
                }
            }
            MerchantAction::Get { id } => {
                let id = merchant_id(&id)?;
                let record =
                    store.get_merchant(&id).await?.ok_or_else(|| AdminError::Usage(format!("no merchant {id}")))?;
                println!("{}", serde_json::to_string_pretty(&describe(&record)).unwrap_or_default());
            }
            MerchantAction::ApiKey { id } => {
                let id = merchant_id(&id)?;
                let key = callfy_shared::api_key::new_api_key(&id);
                store.set_api_key_hash(&id, &sha256_hex(key.as_bytes())).await?;
                println!("{key}");
                eprintln!("Store this key now: it is shown only once.");
            }
            MerchantAction::Reopen { id } => {
                let id = merchant_id(&id)?;
                let record = store
                    .get_merchant(&id)
                    .await?
                    .ok_or_else(|| AdminError::Usage(format!("no merchant {id} (erased after its grace period?)")))?;
                if record.status == MerchantStatus::Active {
                    println!("{id} is open");
                } else {
                    // The pending erasure finds the account open and drops itself.
                    store.set_merchant_status(&id, MerchantStatus::Active).await?;
                    println!("{id} reopened; its pending erasure is dropped at the next run");
                }
            }
            MerchantAction::Close { id } => {
                let id = merchant_id(&id)?;
                let now = chrono::Utc::now();
                store.close_merchant(&id, now).await?;
                let cancelled = match store.get_merchant(&id).await? {
                    Some(r) => store.cancel_merchant_outreach(&r.merchant, now).await?,
                    None => 0,
                };
                println!(
                    "merchant {id} closed; {cancelled} queued steps cancelled; its data is erased after the grace period"
                );
            }
            MerchantAction::LegalHold { id, state } => {
                let id = merchant_id(&id)?;
                let bucket = std::env::var("RECORDINGS_BUCKET").unwrap_or_else(|_| local_defaults::BUCKET_NAME.into());
                let files = clients.bucket(&bucket, std::env::var("RECORDINGS_KMS_KEY_ID").ok());
                // S3 keeps the recordings too: they move under held/, out of the lifecycle rule.
                let moved = callfy_shared::app::retention::set_legal_hold(&store, &files, &id, state == OnOff::On)
                    .await
                    .map_err(|e| AdminError::Usage(e.to_string()))?;
                println!(
                    "legal hold for {id}: {} ({moved} recordings moved)",
                    if state == OnOff::On { "on" } else { "off" }
                );
            }
        },
        Command::Purge { dry_run, as_of, bucket, grace_days, force } => {
            let as_of = match as_of {
                Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|e| AdminError::Usage(format!("--as-of {t:?}: {e}")))?,
                None => chrono::Utc::now(),
            };
            callfy_admin::purge::check_as_of(as_of, chrono::Utc::now(), force, dry_run).map_err(AdminError::Usage)?;
            let bucket = bucket
                .or_else(|| std::env::var("RECORDINGS_BUCKET").ok())
                .unwrap_or_else(|| local_defaults::BUCKET_NAME.into());
            let recordings = clients.bucket(&bucket, None);
            // Unconfirmed Twilio copies of deletions go back to the outreach queue.
            // (A dry run queues nothing: it runs without a queue.)
            let queue_url =
                match callfy_admin::dlq::source_url(&clients.sqs(), callfy_admin::dlq::DeadLetterQueue::Outreach).await
                {
                    Ok(url) => url,
                    Err(_) if dry_run => String::new(),
                    Err(e) => return Err(AdminError::Usage(e.to_string())),
                };
            let queue = clients.queue(&queue_url);
            let purger =
                callfy_shared::app::retention::Purger { store: &store, recordings: &recordings, queue: &queue };
            let opts = callfy_shared::app::retention::RunOptions {
                as_of,
                dry_run,
                deadline: None,
                started_at: chrono::Utc::now(),
                closure_grace_days: grace_days,
                erasure_page: callfy_shared::app::retention::ERASURE_PAGE,
            };
            // Progress on stderr (the report on stdout stays machine-readable), after each shard.
            let progress = |p: callfy_shared::app::retention::Progress| {
                let verb = if dry_run { "due" } else { "deleted" };
                eprintln!("purge: {}/{} index shards read, {} items {verb}", p.shards_done, p.shards_total, p.items);
            };
            let report =
                purger.run_with_progress(opts, progress).await.map_err(|e| AdminError::Usage(e.to_string()))?;
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        }
        Command::Consent { action: ConsentCommand::Verify { merchant, phone } } => {
            verify(&store, &merchant_id(&merchant)?, &phone).await?;
        }
        Command::Dlq { action: DlqAction::Replay { queue, dry_run } } => {
            let sqs = aws::sqs(&sdk);
            let queues = queue.map_or_else(|| DeadLetterQueue::ALL.to_vec(), |q| vec![q]);
            for which in queues {
                let pair = dlq::resolve(&sqs, which).await?;
                dlq::replay(&sqs, Some(&store), &pair, dry_run, &mut std::io::stdout().lock()).await?;
            }
        }
        Command::MigrateIndexes => {
            let changed = store.migrate_indexes().await?;
            println!("{changed} items brought up to this version's indexes");
        }
        Command::CallTest { merchant, phone } => {
            let id = merchant_id(&merchant)?;
            let record =
                store.get_merchant(&id).await?.ok_or_else(|| AdminError::Usage(format!("no merchant {id}")))?;
            let phone = Phone::parse(&phone, Some(&record.merchant.default_country))
                .map_err(|e| AdminError::Usage(format!("{phone:?}: {e}")))?;
            let queue_url = match std::env::var("OUTREACH_QUEUE_URL").ok().filter(|v| !v.is_empty()) {
                Some(url) => url,
                None => clients
                    .sqs()
                    .get_queue_url()
                    .queue_name(local_defaults::QUEUE_NAME)
                    .send()
                    .await
                    .map_err(|e| AdminError::Usage(format!("set OUTREACH_QUEUE_URL: {e}")))?
                    .queue_url()
                    .unwrap_or_default()
                    .to_string(),
            };
            let queue = clients.queue(&queue_url);
            let done = callfy_admin::calltest::call_test(&store, &queue, &record.merchant, &phone, chrono::Utc::now())
                .await
                .map_err(|e| AdminError::Usage(e.to_string()))?;
            println!(
                "test call queued: {} cart {} step {} to {} (the worker places it now, or after quiet hours)",
                id,
                done.cart,
                done.step + 1,
                phone.masked()
            );
        }
        Command::Transcript { merchant, call_sid } => {
            let id = merchant_id(&merchant)?;
            let call = store
                .call_by_sid(&call_sid)
                .await?
                .filter(|c| c.merchant_id == id)
                .ok_or_else(|| AdminError::Usage(format!("no call {call_sid} for {id}")))?;
            let key = callfy_shared::ports::agent::SessionKey {
                merchant_id: id.clone(),
                phone: call.phone.clone(),
                call_sid: call_sid.clone(),
            };
            let session = store.session(&key).await?.ok_or_else(|| {
                AdminError::Usage(format!("call {call_sid} has no agent transcript (purged or deleted?)"))
            })?;
            println!(
                "call {call_sid} to {} ({}), outcome {}",
                call.phone.masked(),
                id,
                session.outcome.map_or("-", |o| o.as_str())
            );
            for l in &session.transcript {
                let who = match l.speaker {
                    callfy_shared::domain::agent::Speaker::Caller => "shopper",
                    callfy_shared::domain::agent::Speaker::Agent => "agent",
                };
                println!(
                    "{} [turn {}] {who}: {}",
                    l.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    l.turn,
                    l.text
                );
            }
        }
        Command::Backfill { merchant, since } => {
            let id = merchant_id(&merchant)?;
            let since = callfy_admin::backfill::parse_since(&since)?;
            let queue_url = callfy_admin::dlq::source_url(&clients.sqs(), callfy_admin::dlq::DeadLetterQueue::Outreach)
                .await
                .map_err(|e| AdminError::Usage(e.to_string()))?;
            let queue = clients.queue(&queue_url);
            let base = std::env::var("SHOPIFY_API_BASE").ok();
            let api = callfy_shared::adapters::platform_api::PlatformApi::new(
                base.as_deref(),
                std::time::Duration::from_secs(30),
            )
            .map_err(|e| AdminError::Usage(e.to_string()))?;
            let r = callfy_admin::backfill::run(&store, &queue, &api, &id, since, chrono::Utc::now()).await?;
            print!("{}", callfy_admin::backfill::render(&id, &r));
        }
        Command::Silence { as_of } => {
            let as_of = match as_of {
                Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|e| AdminError::Usage(format!("--as-of {t:?}: {e}")))?,
                None => chrono::Utc::now(),
            };
            let r = callfy_shared::app::silence::check(&store, as_of).await?;
            println!("{} merchant(s) checked, {} silent", r.checked, r.silent.len());
            for id in &r.silent {
                println!("silent: {id}");
            }
            if !r.silent.is_empty() {
                return Err(AdminError::Broken(format!("{} silent merchant(s)", r.silent.len())));
            }
        }
        Command::Report { merchant, since, html: html_file } => {
            let id = merchant_id(&merchant)?;
            let since = since.as_deref().map(report::parse_since).transpose()?;
            let mut progress = |line: &str| eprintln!("{line}");
            let figures = report::gather(&store, &id, since, chrono::Utc::now(), &mut progress).await?;
            print!("{}", report::render_table(&figures));
            if let Some(path) = html_file {
                std::fs::write(&path, html::render_html(&figures))
                    .map_err(|e| AdminError::Usage(format!("cannot write {}: {e}", path.display())))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

async fn verify(store: &Store, id: &MerchantId, raw_phone: &str) -> Result<(), AdminError> {
    let record = store.get_merchant(id).await?.ok_or_else(|| AdminError::Usage(format!("no merchant {id}")))?;
    let phone = Phone::parse(raw_phone, Some(&record.merchant.default_country))
        .map_err(|e| AdminError::Usage(format!("{raw_phone:?}: {e}")))?;
    let mut broken = Vec::new();
    for channel in [Channel::Sms, Channel::Voice] {
        let entries = store.consent_ledger(id, &phone, channel).await?;
        let state = store.consent_state(id, &phone, channel).await?;
        match verify_chain(&entries, &state) {
            Ok(n) => println!(
                "{} {}: ok, {n} entries, status {}, head {}",
                phone.masked(),
                channel.as_str(),
                serde_json::to_value(state.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                state.head_hash.as_deref().unwrap_or("-")
            ),
            Err(e) => {
                println!("{} {}: BROKEN: {e}", phone.masked(), channel.as_str());
                broken.push(format!("{}: {e}", channel.as_str()));
            }
        }
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(AdminError::Broken(format!("consent ledger broken: {}", broken.join("; "))))
    }
}

#[cfg(test)]
mod tests {
    use super::marker_key_unset_against_aws;

    #[test]
    fn against_aws_the_marker_key_must_be_named() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let unset = marker_key_unset_against_aws;
        assert!(unset(None, env(&[])).is_some(), "AWS itself, no key named");
        assert!(unset(None, env(&[("MARKER_KEY_SECRET_ID", " ")])).is_some(), "blank is unset");
        assert!(unset(Some("https://dynamodb.us-east-1.amazonaws.com"), env(&[])).is_some(), "an AWS endpoint");
        assert!(unset(None, env(&[("MARKER_KEY_SECRET_ID", "arn:aws:secretsmanager:x")])).is_none());
        assert!(unset(None, env(&[("CALLFY_MARKER_KEY", "k")])).is_none());
        assert!(unset(Some("http://127.0.0.1:5000"), env(&[])).is_none(), "moto");
        assert!(unset(Some("http://localhost:5000/"), env(&[])).is_none(), "moto by name");
        assert!(unset(Some("http://[::1]:5000"), env(&[])).is_none(), "moto over IPv6");
    }
}
