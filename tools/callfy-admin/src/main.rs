//! `callfy-admin`: the operator's CLI for merchants (DESIGN.md §5).
//! With only `AWS_ENDPOINT_URL` set it finds the resources `callfy-local` created.

use callfy_shared::MerchantId;
use callfy_shared::adapters::aws;
use callfy_shared::adapters::store::{MerchantRecord, MerchantStatus, Store};
use callfy_shared::config::local_defaults;
use callfy_shared::domain::merchant::Merchant;
use callfy_shared::signature::sha256_hex;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "callfy-admin", about = "Operate Callfy: merchants and their API keys")]
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
}

#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] callfy_shared::adapters::store::StoreError),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("callfy-admin: {e}");
            ExitCode::FAILURE
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

async fn run(cli: Cli) -> Result<(), AdminError> {
    let table = cli.table.unwrap_or_else(local_defaults::table_name);
    let sdk = aws::load_config().await;
    let store = Store::new(aws::dynamodb(&sdk), table);
    match cli.command {
        Command::Merchant { action } => match action {
            MerchantAction::Put { file } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| AdminError::Usage(format!("cannot read {}: {e}", file.display())))?;
                let merchant =
                    Merchant::from_json(&text).map_err(|e| AdminError::Usage(format!("invalid merchant: {e}")))?;
                store.put_merchant(&merchant, chrono::Utc::now()).await?;
                println!("merchant {} saved", merchant.id);
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
        },
    }
    Ok(())
}
