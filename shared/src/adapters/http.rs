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
use std::sync::{Arc, LazyLock, OnceLock};
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

/// An outbound client (Twilio, BigCommerce) built on its first request rather than at init: a
/// process whose first request never comes (a Shopify delivery never reads BigCommerce's API)
/// never pays for it. Clones share the one client.
#[derive(Clone, Debug)]
pub struct LazyClient {
    connect_timeout: Duration,
    timeout: Duration,
    built: Arc<OnceLock<reqwest::Client>>,
}

impl LazyClient {
    /// Every request bounded by `timeout`, its connection by `connect_timeout`.
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Self {
        Self { connect_timeout, timeout, built: Arc::default() }
    }

    pub fn get(&self) -> Result<&reqwest::Client, reqwest::Error> {
        if let Some(client) = self.built.get() {
            return Ok(client);
        }
        let client = client_builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .user_agent("callfy/0.1")
            .build()?;
        Ok(self.built.get_or_init(|| client))
    }
}

/// The AWS SDK's HTTP client: requests go through one reqwest client (its pool, its TLS).
pub fn sdk_http_client() -> Result<SharedHttpClient, reqwest::Error> {
    Ok(SharedHttpClient::new(SdkClient { client: sdk_reqwest_client()? }))
}

/// As the SDK's own client: 3.1 s to connect, no redirects followed (a redirected request would
/// lose its signature or its method), no proxy taken from the environment.
fn sdk_reqwest_client() -> Result<reqwest::Client, reqwest::Error> {
    client_builder()
        .connect_timeout(Duration::from_millis(3100))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
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
            // The read timeout ends at the answer's head, as the SDK's own client has it.
            let response = match read_timeout {
                Some(limit) => tokio::time::timeout(limit, builder.send())
                    .await
                    .map_err(|elapsed| ConnectorError::timeout(Box::new(elapsed)))?,
                None => builder.send().await,
            }
            .map_err(connector_error)?;
            // The body streams to the SDK, whose stalled-stream protection and retry of a body
            // broken mid-way apply to it as they do to its own client's.
            let (head, body) = http::Response::<reqwest::Body>::from(response).into_parts();
            let answer = http::Response::from_parts(head, SdkBody::from_body_1_x(body));
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_roots_are_compiled_in_and_no_alpn_is_offered() {
        let tls = tls_config();
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
        assert!(tls.alpn_protocols.is_empty());
        assert!(client_builder().build().is_ok());
    }

    fn connector(read_timeout: Option<Duration>) -> SdkConnector {
        SdkConnector { client: sdk_reqwest_client().expect("client"), read_timeout }
    }

    fn request(url: &str, body: &'static [u8]) -> HttpRequest {
        let mut request = HttpRequest::new(SdkBody::from(body));
        request.set_uri(url).expect("uri");
        request.set_method("POST").expect("method");
        request.headers_mut().insert("x-amz-target", "DynamoDB_20120810.GetItem");
        request
    }

    /// A server that takes one request (until `until` has arrived) and gives `answer`.
    async fn serve_once(until: &'static str, answer: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains(until) {
                let n = socket.read(&mut buf).await.expect("read");
                assert!(n > 0, "the request never came whole");
                seen.extend_from_slice(&buf[..n]);
            }
            socket.write_all(answer.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&seen).to_string()
        });
        (url, server)
    }

    #[tokio::test]
    async fn a_request_and_its_answer_cross_whole() {
        let answer = "HTTP/1.1 400 Bad Request\r\nx-amzn-requestid: r-1\r\ncontent-length: 11\r\n\r\n{\"e\":\"bad\"}";
        let (url, server) = serve_once("{\"Key\":1}", answer).await;
        let answer = connector(None).call(request(&url, b"{\"Key\":1}")).await.expect("an answer");
        assert_eq!(answer.status().as_u16(), 400);
        assert_eq!(answer.headers().get("x-amzn-requestid"), Some("r-1"));
        let body = aws_smithy_types::byte_stream::ByteStream::new(answer.into_body()).collect().await.expect("body");
        assert_eq!(body.into_bytes().as_ref(), b"{\"e\":\"bad\"}");
        let seen = server.await.expect("server");
        assert!(seen.starts_with("POST / HTTP/1.1"), "{seen}");
        assert!(seen.to_lowercase().contains("x-amz-target: dynamodb_20120810.getitem"), "{seen}");
    }

    #[tokio::test]
    async fn a_redirect_comes_back_to_the_sdk_unfollowed() {
        let answer = "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 0\r\n\r\n";
        let (url, server) = serve_once("\r\n\r\n{}", answer).await;
        let answer = connector(None).call(request(&url, b"{}")).await.expect("the redirect itself");
        assert_eq!(answer.status().as_u16(), 307);
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_refused_connection_and_a_silent_server_are_transient_to_the_sdk() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", closed.local_addr().expect("addr"));
        drop(closed);
        let refused = connector(None).call(request(&url, b"{}")).await.expect_err("refused");
        assert!(refused.is_io(), "{refused:?}");

        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", silent.local_addr().expect("addr"));
        let hold = tokio::spawn(async move {
            let (socket, _) = silent.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(socket);
        });
        let late = connector(Some(Duration::from_millis(200))).call(request(&url, b"{}")).await.expect_err("timeout");
        assert!(late.is_timeout(), "{late:?}");
        hold.abort();
    }
}
