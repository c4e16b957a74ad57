//! One HTTPS stack per process: a rustls configuration whose roots are compiled in
//! (`webpki-roots`, Mozilla's program), shared by reqwest (Twilio, BigCommerce) and every AWS SDK
//! client. Building it reads no file and parses no certificate: loading the system bundle cost
//! about 1.1 ms of init per client stack, and the worker had two (`scripts/bench`).
//! The trade: roots follow this crate's releases rather than the OS image's patches.

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

static TLS: LazyLock<rustls::ClientConfig> = LazyLock::new(|| {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
});

/// The process's TLS client configuration (roots compiled in, TLS 1.2+, HTTP/1.1).
pub fn tls_config() -> rustls::ClientConfig {
    TLS.clone()
}

/// A reqwest builder on the process's TLS configuration; every outbound client starts here.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(tls_config())
}

/// The AWS SDK's HTTP client: requests go through one reqwest client (its pool, its TLS).
pub fn sdk_http_client() -> Result<SharedHttpClient, reqwest::Error> {
    // The SDK's own default: 3.1 s to connect; each operation's read timeout is applied per request.
    let client = client_builder().connect_timeout(Duration::from_millis(3100)).build()?;
    Ok(SharedHttpClient::new(SdkClient { client }))
}

#[derive(Debug, Clone)]
struct SdkClient {
    client: reqwest::Client,
}

impl HttpClient for SdkClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(SdkConnector { client: self.client.clone(), read_timeout: settings.read_timeout() })
    }
}

#[derive(Debug)]
struct SdkConnector {
    client: reqwest::Client,
    read_timeout: Option<Duration>,
}

impl HttpConnector for SdkConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let request = request.try_into_http1x().map_err(|e| ConnectorError::user(e.into()))?;
            let (parts, body) = request.into_parts();
            let mut builder = client.request(parts.method, parts.uri.to_string()).headers(parts.headers);
            builder = match body.bytes() {
                Some(bytes) => builder.body(bytes.to_vec()),
                // Streaming uploads (a recording copied from a file) are passed through as they come.
                None => builder.body(reqwest::Body::wrap(body)),
            };
            if let Some(timeout) = read_timeout {
                builder = builder.timeout(timeout);
            }
            let response = builder.send().await.map_err(connector_error)?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.map_err(connector_error)?;
            let mut answer = http::Response::new(SdkBody::from(bytes));
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            HttpResponse::try_from(answer).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// Timeouts and broken connections are transient to the SDK's retry strategy; the rest is not.
fn connector_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_connect() || e.is_request() || e.is_body() {
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roots_are_compiled_in_and_no_alpn_is_offered() {
        let tls = tls_config();
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
        assert!(tls.alpn_protocols.is_empty());
        assert!(client_builder().build().is_ok());
    }
}
