use callfy_local::{LocalOptions, start};
use callfy_shared::adapters::aws;
use callfy_shared::telemetry;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    // Creating resources against real AWS by accident would be costly: insist on a local endpoint.
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    if !(endpoint.starts_with("http://127.0.0.1") || endpoint.starts_with("http://localhost")) {
        eprintln!(
            "callfy-local: AWS_ENDPOINT_URL must point at the local AWS API (e.g. http://127.0.0.1:5000); got {endpoint:?}"
        );
        return ExitCode::from(2);
    }
    let opts = match LocalOptions::from_env() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("callfy-local: {e}");
            return ExitCode::from(2);
        }
    };
    let sdk = match aws::load_config().await {
        Ok(sdk) => sdk,
        Err(e) => {
            eprintln!("callfy-local: HTTP client: {e}");
            return ExitCode::from(2);
        }
    };
    match start(&sdk, opts).await {
        Ok(handle) => {
            println!(
                "callfy-local listening on {} (Twilio sandbox: {}/sandbox/messages)",
                handle.base_url, handle.base_url
            );
            handle.wait().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("callfy-local: {e}");
            ExitCode::FAILURE
        }
    }
}
