use super::http;
use aws_config::{BehaviorVersion, SdkConfig};

/// Loads region, credentials and `AWS_ENDPOINT_URL` from the environment, once per process,
/// with the process's one HTTPS client (`adapters::http`) shared by every SDK client built from it.
///
/// Lambda puts the region and the role's credentials in the environment; taking them from there
/// directly skips building the default provider chains (IMDS, ECS, SSO, web identity), a
/// measurable part of a cold start. Elsewhere (a developer's profile) the chains still apply.
pub async fn load_config() -> Result<SdkConfig, reqwest::Error> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http::sdk_http_client()?);
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(region) = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")) {
        loader = loader.region(aws_config::Region::new(region));
    }
    if env("AWS_ACCESS_KEY_ID").is_some() && env("AWS_SECRET_ACCESS_KEY").is_some() {
        loader = loader
            .credentials_provider(aws_config::environment::credentials::EnvironmentVariableCredentialsProvider::new());
    }
    Ok(loader.load().await)
}

/// The local AWS API at `endpoint` (moto) with its placeholder credentials, through the same HTTP
/// client as `load_config`: for tests and local tools, whose calls then take the functions' path.
pub async fn local_config(endpoint: &str) -> Result<SdkConfig, reqwest::Error> {
    Ok(aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(crate::config::local_defaults::REGION))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "local"))
        .endpoint_url(endpoint)
        .http_client(http::sdk_http_client()?)
        .load()
        .await)
}

pub fn dynamodb(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

pub fn sqs(config: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

/// Path-style addressing works with AWS and with a local endpoint (moto) alike.
pub fn s3(config: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(config).force_path_style(true).build())
}

/// An SDK failure in the ports' vocabulary: a request the service calls malformed or forbidden
/// is permanent; throttling, 5xx, timeouts, dropped connections and the rest are transient.
/// The SDK error stays as the cause.
pub fn sdk_error<E, R>(
    service: &'static str,
    op: &'static str,
    e: aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> crate::ports::PortError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use crate::ports::{ErrorKind, PortError};
    use aws_smithy_runtime_api::client::result::SdkError;
    use aws_smithy_types::error::metadata::ProvideErrorMetadata;
    let code = e.code().unwrap_or("unknown").to_string();
    let kind = match &e {
        SdkError::ConstructionFailure(_) => ErrorKind::Permanent,
        SdkError::ServiceError(_) => code_kind(&code),
        _ => ErrorKind::Transient,
    };
    PortError::service(service, op, code, kind, e)
}

/// AWS error codes that say the request itself is wrong: retrying it unchanged cannot succeed.
/// A queue that does not exist stays transient: it is what a queue outage or a redeploy in
/// progress looks like, and the platform's retry then schedules the step.
/// Any other failure counts as transient: a retry is bounded (the queue's redrive policy, the
/// platform's schedule) and every write is conditional, so retrying the unknown is the safe side.
/// What an AWS error code (or a transaction's cancellation reason) says about retrying: the one
/// place the adapters classify AWS failures.
pub fn code_kind(code: &str) -> crate::ports::ErrorKind {
    if aws_code_is_permanent(code) { crate::ports::ErrorKind::Permanent } else { crate::ports::ErrorKind::Transient }
}

pub fn aws_code_is_permanent(code: &str) -> bool {
    matches!(
        code,
        "ValidationException"
            | "SerializationException"
            | "AccessDeniedException"
            | "AccessDenied"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "MissingAuthenticationTokenException"
            | "IncompleteSignature"
            | "InvalidClientTokenId"
            | "InvalidParameterValue"
            | "InvalidParameterCombination"
            | "MissingParameter"
            | "InvalidAction"
            | "MalformedQueryString"
            | "InvalidMessageContents"
            | "UnsupportedOperation"
            | "ItemCollectionSizeLimitExceededException"
            | "NoSuchBucket"
            | "InvalidArgument"
            | "KMS.DisabledException"
            | "KMS.NotFoundException"
            | "ResourceNotFoundException"
            | "KmsAccessDenied"
            | "KmsDisabled"
            | "KmsNotFound"
            | "KmsInvalidState"
            // TransactWriteItems cancellation reasons: a malformed or oversized transaction.
            | "ValidationError"
            | "ItemCollectionSizeLimitExceeded"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_request_is_permanent_and_throttling_is_not() {
        assert!(aws_code_is_permanent("ValidationException"));
        assert!(aws_code_is_permanent("ResourceNotFoundException"));
        assert!(!aws_code_is_permanent("ProvisionedThroughputExceededException"));
        assert!(!aws_code_is_permanent("ThrottlingException"));
    }
}
