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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[tokio::test]
async fn merchant_put_get_and_api_key() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(endpoint.starts_with("http://127.0.0.1"), "run through scripts/test (AWS_ENDPOINT_URL={endpoint:?})");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "t"))
        .load()
        .await;
    let res = resources::ensure(&sdk, &ResourceNames::unique("admin")).await.unwrap();
    let table = res.names.table.as_str();
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
    assert!(key.starts_with("cfy_live_") && key.len() == 9 + 64, "{key}");
    let store = Store::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let record = store.get_merchant(&MerchantId::parse("snowdevil").unwrap()).await.unwrap().unwrap();
    assert_eq!(record.api_key_sha256, Some(sha256_hex(key.as_bytes())), "only the hash is stored");
    let again = admin(table, &["merchant", "api-key", "snowdevil"]);
    assert_ne!(text(&again.stdout).trim(), key, "every call issues a new key");

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
