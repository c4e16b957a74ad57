//! `callfy-admin` as an operator runs it, against the local AWS API.

use callfy_local::resources::{self, ResourceNames};
use callfy_shared::MerchantId;
use callfy_shared::adapters::store::Store;
use callfy_shared::signature::sha256_hex;
use std::process::{Command, Output};

fn admin(table: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callfy-admin"))
        .arg("--table")
        .arg(table)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("callfy-admin runs")
}

/// The local AWS API the test command started, and a fresh table on it.
async fn local_table(prefix: &str) -> (aws_config::SdkConfig, String) {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(endpoint.starts_with("http://127.0.0.1"), "run through scripts/test (AWS_ENDPOINT_URL={endpoint:?})");
    let sdk = callfy_shared::adapters::aws::local_config(&endpoint).await.expect("HTTP client");
    let res = resources::ensure(&sdk, &ResourceNames::unique(prefix)).await.unwrap();
    (sdk, res.names.table)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[tokio::test]
async fn merchant_put_get_and_api_key() {
    let (sdk, table) = local_table("admin").await;
    let table = table.as_str();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

    let out = admin(table, &["merchant", "put", "--file", &format!("{root}/events/demo-merchant.json")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("merchant snowdevil saved"));

    let out = admin(table, &["merchant", "get", "snowdevil"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["merchant"]["shop_domain"], "snowdevil.myshopify.com");
    assert_eq!((shown["status"].as_str(), shown["api_key"].as_str()), (Some("active"), Some("none")));

    let out = admin(table, &["merchant", "api-key", "snowdevil"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout).trim().to_string();
    assert!(key.starts_with("cfy_live_snowdevil_") && key.len() == "cfy_live_snowdevil_".len() + 64, "{key}");
    let store = Store::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let record = store.get_merchant(&MerchantId::parse("snowdevil").unwrap()).await.unwrap().unwrap();
    assert_eq!(record.api_key_sha256, Some(sha256_hex(key.as_bytes())), "only the hash is stored");
    let again = admin(table, &["merchant", "api-key", "snowdevil"]);
    assert_ne!(text(&again.stdout).trim(), key, "every call issues a new key");

    // A BigCommerce merchant's secrets are stored, but never shown.
    let out = admin(table, &["merchant", "put", "--file", &format!("{root}/events/demo-merchant-bigcommerce.json")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = admin(table, &["merchant", "get", "snowdevil-bc"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("b4rs7x"), "{shown}");
    assert!(!shown.contains("callfy-local-bc-secret") && !shown.contains("callfy-local-bigcommerce-token"), "{shown}");
    let bc = MerchantId::parse("snowdevil-bc").unwrap();
    let full = store.get_merchant_with_secrets(&bc).await.unwrap().unwrap().merchant;
    assert_eq!(full.webhook_secret.as_deref(), Some("callfy-local-bc-secret-00001"));
    assert_eq!(full.bigcommerce.and_then(|b| b.api_token).as_deref(), Some("callfy-local-bigcommerce-token"));
    assert!(
        store.get_merchant(&bc).await.unwrap().unwrap().merchant.webhook_secret.is_none(),
        "the profile holds none"
    );

    // Errors name what is wrong and change nothing.
    let bad = std::env::temp_dir().join(format!("bad-merchant-{}.json", uuid::Uuid::new_v4()));
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/events/demo-merchant.json")).unwrap()).unwrap();
    v["timezone"] = "Mars/Olympus".into();
    std::fs::write(&bad, v.to_string()).unwrap();
    let out = admin(table, &["merchant", "put", "--file", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("timezone"), "{}", text(&out.stderr));
    let out = admin(table, &["merchant", "get", "nobody"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no merchant nobody"));
    let out = admin(table, &["merchant", "api-key", "Not An Id"]);
    assert!(!out.status.success());
    let _ = std::fs::remove_file(bad);
}

#[tokio::test]
async fn consent_verify_passes_on_a_clean_ledger_and_names_the_altered_entry() {
    use callfy_shared::Phone;
    use callfy_shared::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, Evidence};
    use callfy_shared::domain::merchant::{Channel, Merchant};

    let (sdk, table) = local_table("verify").await;
    let table = table.as_str();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let merchant =
        Merchant::from_json(&std::fs::read_to_string(format!("{root}/events/demo-merchant.json")).unwrap()).unwrap();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let store = Store::new(ddb.clone(), table);
    let now = chrono::Utc::now();
    store.put_merchant(&merchant, now).await.unwrap();
    let phone = Phone::parse("+14155552671", None).unwrap();
    for (i, action) in [ConsentAction::OptIn, ConsentAction::OptOut, ConsentAction::OptIn].into_iter().enumerate() {
        let at = now + chrono::Duration::seconds(i as i64);
        let event = ConsentEvent {
            channel: Channel::Sms,
            action,
            source: ConsentSource::Api,
            occurred_at: at,
            recorded_at: at,
            evidence: Evidence { consent_text: Some("Text me reminders".into()), ..Default::default() },
        };
        assert!(
            store
                .record_consent(&merchant.id, &phone, &event, at + chrono::Duration::days(730))
                .await
                .unwrap()
                .is_some()
        );
    }

    let out = admin(table, &["consent", "verify", "snowdevil", "(415) 555-2671"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("sms: ok, 3 entries"), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("5552671"), "the phone is masked: {}", text(&out.stdout));

    // Someone with table access rewrites when entry 2 happened.
    ddb.update_item()
        .table_name(table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("C#snowdevil#+14155552671".into()))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("CONSENT#sms#000000000002".into()))
        .update_expression("SET #e.occurred_at = :t")
        .expression_attribute_names("#e", "event")
        .expression_attribute_values(":t", aws_sdk_dynamodb::types::AttributeValue::S("2020-01-01T00:00:00Z".into()))
        .send()
        .await
        .unwrap();
    let out = admin(table, &["consent", "verify", "snowdevil", "+14155552671"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("sms: BROKEN: entry 2"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("entry 2"), "{}", text(&out.stderr));

    let out = admin(table, &["consent", "verify", "snowdevil", "not a phone"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A purge dry run shows its progress (shard by shard) on stderr and its report on stdout.
#[tokio::test]
async fn purge_dry_run_shows_progress() {
    let (_sdk, table) = local_table("admin-purge").await;
    let out = admin(&table, &["purge", "--dry-run", "--as-of", "2026-03-15T03:15:00Z"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    // One line per purge-index shard read, the last with the total.
    assert!(
        stderr.contains("purge: 1/16 index shards read") && stderr.contains("16/16 index shards read, 0 items due"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["dry_run"], true);
}
