//! `callfy-local`: the whole system on one machine. It creates the template's resources on the
//! local AWS API (moto), serves every HTTP route through the real handlers, polls the outreach
//! queue into the worker with real `SqsEvent` batches, and offers a Twilio sandbox.

pub mod bigcommerce_store;
pub mod contract;
pub mod fixtures;
pub mod relay;
pub mod resources;
pub mod sandbox;
pub mod sandbox_relay;
pub mod sandbox_voice;
pub mod server;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::SqsEvent;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use callfy_shared::adapters::store::Store;
use callfy_shared::config::{
    AgentModel, ConsentApiSettings, InboundSettings, IngestSettings, PurgerSettings, SecretString, TwilioAuth,
    TwilioConfig, VoiceAgentSettings, VoiceCallbackSettings, WorkerSettings, local_defaults,
};
use callfy_shared::http::error;
use callfy_shared::startup::{Assemble, Clients};
use callfy_shared::{Clock, OffsetClock, SystemClock};
use consent_api::ConsentApp;
use outreach_worker::Worker;
use relay::LocalRelay;
use resources::{ResourceNames, Resources};
use sandbox::Sandbox;
use sms_inbound::InboundApp;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use voice_agent::AgentApp;
use voice_callbacks::VoiceApp;
use webhook_ingest::IngestApp;

/// Largest request body the local API accepts (API Gateway's limit is 10 MB).
const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum LocalError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Resource(#[from] resources::ResourceError),
    #[error("could not listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("SQS {0}")]
    Queue(String),
}

pub struct LocalOptions {
    pub addr: SocketAddr,
    pub names: ResourceNames,
    pub shopify_secret: String,
    pub twilio_account_sid: String,
    pub twilio_auth_token: String,
    /// The previous auth token, accepted too during a rotation (`TWILIO_AUTH_TOKEN_PREVIOUS`).
    pub twilio_auth_token_previous: Option<String>,
    /// A Twilio SharedKey secret for webhooks signed with one (`TWILIO_WEBHOOK_SHARED_KEY`).
    pub twilio_webhook_shared_key: Option<String>,
    /// Where Twilio calls go; `None` = the built-in sandbox on this server.
    pub twilio_api_base: Option<String>,
    /// Where BigCommerce store API calls go; `None` = the stand-in on this server.
    pub bigcommerce_api_base: Option<String>,
    /// The base URL callbacks are addressed to; `None` = this server.
    pub public_base_url: Option<String>,
    pub clock: Arc<dyn Clock>,
    /// Poll the outreach queue in the background (tests poll by hand with `poll_once`).
    pub auto_poll: bool,
    /// How long the worker waits for Twilio's answer.
    pub twilio_timeout: std::time::Duration,
    /// The sandbox reports "sent" and "delivered" for each message (tests report by hand).
    pub sandbox_status_callbacks: bool,
    /// Run the retention purge this often, as of the local clock (tests run it by hand).
    pub purge_every: Option<std::time::Duration>,
    /// The voice agent's model (`AGENT_MODEL`, default the scripted agent).
    pub agent_model: AgentModel,
    /// Where Bedrock calls go (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME`).
    pub bedrock_endpoint: Option<String>,
    /// The agent's WebSocket URL as Twilio reaches it; `None` = this server's `/twilio/voice/relay`.
    pub public_ws_url: Option<String>,
    /// Benchmarks: the scripted agent stands in for a model that takes this long to start.
    pub agent_model_latency: Option<std::time::Duration>,
    /// How long a webhook's durable copy waits on the queue (tests that replay it set 0).
    pub webhook_replay_delay_seconds: i32,
}

impl LocalOptions {
    /// Reads the environment, with the defaults `callfy-admin` shares.
    pub fn from_env() -> Result<Self, LocalError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let addr = var("CALLFY_HTTP_ADDR").unwrap_or_else(|| callfy_shared::config::DEFAULT_HTTP_ADDR.into());
        let addr = addr
            .parse()
            .map_err(|_| LocalError::Config(format!("CALLFY_HTTP_ADDR is not a socket address: {addr}")))?;
        let local_now = callfy_shared::config::Env(|k: &str| std::env::var(k).ok())
            .local_now()
            .map_err(|e| LocalError::Config(e.to_string()))?;
        let clock: Arc<dyn Clock> = match local_now {
            None => Arc::new(SystemClock),
            Some(start) => Arc::new(OffsetClock::starting_at(start)),
        };
        Ok(Self {
            addr,
            names: ResourceNames {
                table: local_defaults::table_name(),
                queue: var("CALLFY_LOCAL_QUEUE").unwrap_or_else(|| local_defaults::QUEUE_NAME.into()),
                dlq: var("CALLFY_LOCAL_DLQ").unwrap_or_else(|| local_defaults::DLQ_NAME.into()),
                recordings_queue: var("CALLFY_LOCAL_RECORDINGS_QUEUE")
                    .unwrap_or_else(|| local_defaults::RECORDINGS_QUEUE_NAME.into()),
                recordings_dlq: var("CALLFY_LOCAL_RECORDINGS_DLQ")
                    .unwrap_or_else(|| local_defaults::RECORDINGS_DLQ_NAME.into()),
                bucket: var("RECORDINGS_BUCKET").unwrap_or_else(|| local_defaults::BUCKET_NAME.into()),
            },
            shopify_secret: var("SHOPIFY_API_SECRET").unwrap_or_else(|| local_defaults::SHOPIFY_API_SECRET.into()),
            twilio_account_sid: var("TWILIO_ACCOUNT_SID").unwrap_or_else(|| local_defaults::TWILIO_ACCOUNT_SID.into()),
            twilio_auth_token: var("TWILIO_AUTH_TOKEN").unwrap_or_else(|| local_defaults::TWILIO_AUTH_TOKEN.into()),
            twilio_auth_token_previous: var("TWILIO_AUTH_TOKEN_PREVIOUS"),
            twilio_webhook_shared_key: var("TWILIO_WEBHOOK_SHARED_KEY"),
            twilio_api_base: var("TWILIO_API_BASE"),
            bigcommerce_api_base: var("BIGCOMMERCE_API_BASE"),
            public_base_url: var("PUBLIC_BASE_URL"),
            clock,
            auto_poll: true,
            twilio_timeout: std::time::Duration::from_secs(10),
            sandbox_status_callbacks: true,
            purge_every: Some(std::time::Duration::from_secs(
                var("CALLFY_LOCAL_PURGE_SECONDS").and_then(|s| s.parse().ok()).unwrap_or(3600),
            )),
            agent_model: AgentModel::parse(var("AGENT_MODEL").as_deref())
                .map_err(|e| LocalError::Config(e.to_string()))?,
            bedrock_endpoint: var("AWS_ENDPOINT_URL_BEDROCK_RUNTIME"),
            public_ws_url: var("PUBLIC_WS_URL"),
            agent_model_latency: None,
            webhook_replay_delay_seconds: callfy_shared::app::webhook::REPLAY_DELAY_SECONDS,
        })
    }

    /// Options for a test: its own resources, an ephemeral port, the given clock.
    pub fn for_test(prefix: &str, clock: Arc<dyn Clock>) -> Self {
        Self {
            addr: "127.0.0.1:0".parse().expect("literal address"),
            names: ResourceNames::unique(prefix),
            shopify_secret: local_defaults::SHOPIFY_API_SECRET.into(),
            twilio_account_sid: local_defaults::TWILIO_ACCOUNT_SID.into(),
            twilio_auth_token: local_defaults::TWILIO_AUTH_TOKEN.into(),
            twilio_auth_token_previous: None,
            twilio_webhook_shared_key: None,
            twilio_api_base: None,
            bigcommerce_api_base: None,
            public_base_url: None,
            clock,
            auto_poll: false,
            twilio_timeout: std::time::Duration::from_secs(3),
            sandbox_status_callbacks: false,
            purge_every: None,
            agent_model: AgentModel::Scripted,
            bedrock_endpoint: None,
            public_ws_url: None,
            agent_model_latency: None,
            webhook_replay_delay_seconds: callfy_shared::app::webhook::REPLAY_DELAY_SECONDS,
        }
    }
}

/// The functions as Lambda would run them, sharing one set of clients.
pub struct Functions {
    pub ingest: IngestApp,
    pub worker: Worker,
    pub consent: ConsentApp,
    pub inbound: InboundApp,
    pub voice: VoiceApp,
    pub agent: Arc<AgentApp<LocalRelay>>,
    pub purger: retention_purger::PurgerApp,
}

struct Shared {
    functions: Functions,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
    recordings_queue_url: String,
    recordings_queue_arn: String,
}

/// Which of the worker's queues to poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerQueue {
    Outreach,
    Recordings,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollStats {
    pub received: usize,
    pub succeeded: usize,
    pub failed: usize,
}

pub struct LocalHandle {
    pub addr: SocketAddr,
    pub base_url: String,
    pub sandbox: Arc<Sandbox>,
    /// The stand-in BigCommerce store API.
    pub bigcommerce: Arc<bigcommerce_store::StoreStandIn>,
    pub resources: Resources,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl LocalHandle {
    pub fn functions(&self) -> &Functions {
        &self.shared.functions
    }

    pub fn store(&self) -> &Store {
        &self.shared.functions.ingest.store
    }

    /// One receive → `SqsEvent` → worker → delete-successes cycle on the outreach queue.
    pub async fn poll_once(&self, wait_seconds: i32) -> Result<PollStats, LocalError> {
        poll_once(&self.shared, WorkerQueue::Outreach, wait_seconds).await
    }

    /// The same on the recordings queue.
    pub async fn poll_recordings(&self, wait_seconds: i32) -> Result<PollStats, LocalError> {
        poll_once(&self.shared, WorkerQueue::Recordings, wait_seconds).await
    }

    /// Polls the outreach queue until it yields nothing visible.
    pub async fn drain(&self) -> Result<PollStats, LocalError> {
        let mut total = PollStats::default();
        loop {
            let s = self.poll_once(0).await?;
            if s.received == 0 {
                return Ok(total);
            }
            total.received += s.received;
            total.succeeded += s.succeeded;
            total.failed += s.failed;
        }
    }

    /// One retention purge as of `as_of` (what the daily schedule runs).
    pub async fn purge(
        &self,
        as_of: chrono::DateTime<chrono::Utc>,
        dry_run: bool,
        deadline: Option<std::time::Instant>,
    ) -> Result<callfy_shared::domain::retention::PurgeReport, callfy_shared::app::retention::PurgeError> {
        purge(&self.shared, as_of, dry_run, deadline).await
    }

    /// Runs until Ctrl-C.
    pub async fn wait(self) {
        let _ = tokio::signal::ctrl_c().await;
        self.shutdown().await;
    }

    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The six entry points, assembled by the one builder (`callfy_shared::startup`) from the
/// settings Lambda would read, pointed at this machine's resources and stand-ins.
fn assemble(
    sdk: &SdkConfig,
    opts: &LocalOptions,
    resources: &Resources,
    base_url: &str,
    public_base_url: &str,
    public_ws_url: &str,
) -> Result<Functions, LocalError> {
    let clients = Clients::new(sdk);
    let clock = || Arc::clone(&opts.clock);
    let log_key = SecretString::from(callfy_shared::domain::phone::LOCAL_LOG_KEY);
    let auth_token = SecretString::from(opts.twilio_auth_token.as_str());
    let previous_auth_token = opts.twilio_auth_token_previous.as_deref().map(SecretString::from);
    let shared_key = opts.twilio_webhook_shared_key.as_deref().map(SecretString::from);
    let twilio = TwilioConfig {
        api_base: opts.twilio_api_base.clone().unwrap_or_else(|| base_url.to_string()),
        account_sid: opts.twilio_account_sid.clone(),
        auth: TwilioAuth::AuthToken(auth_token.clone()),
        auth_token: Some(auth_token.clone()),
        timeout: opts.twilio_timeout,
    };
    let table_name = resources.names.table.clone();
    let bigcommerce_api_base = opts.bigcommerce_api_base.clone().unwrap_or_else(|| base_url.to_string());
    let config = |e: callfy_shared::startup::StartupError| LocalError::Config(e.to_string());
    Ok(Functions {
        ingest: IngestApp::assemble(
            &clients,
            &IngestSettings {
                table_name: table_name.clone(),
                outreach_queue_url: resources.queue_url.clone(),
                shopify_api_secret: SecretString::from(opts.shopify_secret.as_str()),
                bigcommerce_api_base: bigcommerce_api_base.clone(),
                recordings_bucket: resources.names.bucket.clone(),
                recordings_kms_key_id: None,
                log_key: log_key.clone(),
            },
            clock(),
        )
        .map_err(config)
        .map(|mut ingest| {
            ingest.webhooks.replay_delay_seconds = opts.webhook_replay_delay_seconds;
            ingest
        })?,
        worker: Worker::assemble(
            &clients,
            &WorkerSettings {
                table_name: table_name.clone(),
                outreach_queue_url: resources.queue_url.clone(),
                public_base_url: public_base_url.to_string(),
                twilio: twilio.clone(),
                recordings_bucket: resources.names.bucket.clone(),
                recordings_kms_key_id: None,
                shopify_api_secret: SecretString::from(opts.shopify_secret.as_str()),
                bigcommerce_api_base,
                log_key: log_key.clone(),
            },
            clock(),
        )
        .map_err(config)?,
        consent: ConsentApp::assemble(
            &clients,
            &ConsentApiSettings {
                table_name: table_name.clone(),
                recordings_bucket: resources.names.bucket.clone(),
                outreach_queue_url: resources.queue_url.clone(),
                log_key: log_key.clone(),
            },
            clock(),
        )
        .map_err(config)?,
        inbound: InboundApp::assemble(
            &clients,
            &InboundSettings {
                table_name: table_name.clone(),
                outreach_queue_url: resources.queue_url.clone(),
                public_base_url: public_base_url.to_string(),
                twilio_auth_token: auth_token.clone(),
                twilio_auth_token_previous: previous_auth_token.clone(),
                twilio_webhook_shared_key: shared_key.clone(),
                log_key: log_key.clone(),
            },
            clock(),
        )
        .map_err(config)?,
        voice: VoiceApp::assemble(
            &clients,
            &VoiceCallbackSettings {
                table_name: table_name.clone(),
                recordings_queue_url: resources.recordings_queue_url.clone(),
                outreach_queue_url: resources.queue_url.clone(),
                public_base_url: public_base_url.to_string(),
                twilio: twilio.clone(),
                twilio_auth_token: auth_token.clone(),
                twilio_auth_token_previous: previous_auth_token.clone(),
                twilio_webhook_shared_key: shared_key,
                public_ws_url: public_ws_url.to_string(),
                log_key: log_key.clone(),
            },
            clock(),
        )
        .map_err(config)?,
        agent: Arc::new(
            AgentApp::with_relay(
                &clients,
                &VoiceAgentSettings {
                    table_name: table_name.clone(),
                    outreach_queue_url: resources.queue_url.clone(),
                    public_base_url: public_base_url.to_string(),
                    public_ws_url: public_ws_url.to_string(),
                    twilio,
                    twilio_auth_token: auth_token,
                    twilio_auth_token_previous: previous_auth_token,
                    agent_model: opts.agent_model.clone(),
                    bedrock_endpoint: opts.bedrock_endpoint.clone(),
                    log_key: log_key.clone(),
                },
                clock(),
                LocalRelay::default(),
            )
            .map_err(config)?
            .with_model_latency(opts.agent_model_latency),
        ),
        purger: retention_purger::PurgerApp::assemble(
            &clients,
            &PurgerSettings {
                table_name,
                recordings_bucket: resources.names.bucket.clone(),
                closure_grace_days: callfy_shared::app::retention::DEFAULT_CLOSURE_GRACE_DAYS,
                recordings_kms_key_id: None,
                outreach_queue_url: resources.queue_url.clone(),
                log_key,
            },
            clock(),
        )
        .map_err(config)?,
    })
}

pub async fn start(sdk: &SdkConfig, opts: LocalOptions) -> Result<LocalHandle, LocalError> {
    // The marker key as every binary loads it (the shared local default unless set).
    callfy_shared::adapters::secrets::init_marker_key(sdk).await.map_err(|e| LocalError::Config(e.to_string()))?;
    let resources = resources::ensure(sdk, &opts.names).await?;
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|source| LocalError::Bind { addr: opts.addr.to_string(), source })?;
    let addr = listener.local_addr().map_err(|source| LocalError::Bind { addr: opts.addr.to_string(), source })?;
    let base_url = format!("http://{addr}");

    let public_base_url = opts.public_base_url.clone().unwrap_or_else(|| base_url.clone());
    let public_base_url = public_base_url.trim_end_matches('/').to_string();
    let public_ws_url = opts.public_ws_url.clone().unwrap_or_else(|| format!("ws://{addr}/twilio/voice/relay"));
    let functions = assemble(sdk, &opts, &resources, &base_url, &public_base_url, &public_ws_url)?;
    let agent = Arc::clone(&functions.agent);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let recordings_queue_arn = queue_arn(&sqs, &resources.recordings_queue_url).await?;
    let queue_arn = queue_arn(&sqs, &resources.queue_url).await?;
    let shared = Arc::new(Shared {
        functions,
        sqs,
        queue_url: resources.queue_url.clone(),
        queue_arn,
        recordings_queue_url: resources.recordings_queue_url.clone(),
        recordings_queue_arn,
    });
    let sandbox = Arc::new(Sandbox::new(
        &opts.twilio_account_sid,
        &opts.twilio_auth_token,
        Arc::clone(&opts.clock),
        &public_base_url,
        opts.sandbox_status_callbacks,
    ));

    let bigcommerce = Arc::new(bigcommerce_store::StoreStandIn::with_demo_cart());
    let app = Router::new()
        .route("/twilio/voice/relay", axum::routing::get(relay::upgrade).with_state(agent))
        .fallback(route)
        .with_state(Arc::clone(&shared))
        .merge(sandbox::router(Arc::clone(&sandbox)))
        .merge(bigcommerce_store::router(Arc::clone(&bigcommerce)));
    // The runner's clock, so tools that stamp events (scripts/send-event) agree with it.
    let clock = Arc::clone(&opts.clock);
    let app = app.route(
        "/local/clock",
        axum::routing::get(move || async move { axum::Json(serde_json::json!({ "now": clock.now().to_rfc3339() })) }),
    );
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut server_rx = rx.clone();
    tasks.push(tokio::spawn(async move {
        let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = server_rx.changed().await;
            });
        if let Err(e) = serve.await {
            warn!(error = %e, "local HTTP server stopped");
        }
    }));
    if opts.auto_poll {
        for which in [WorkerQueue::Outreach, WorkerQueue::Recordings] {
            let poller = Arc::clone(&shared);
            let mut rx = rx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = rx.changed() => break,
                        res = poll_once(&poller, which, 1) => if let Err(e) = res {
                            warn!(error = %e, queue = ?which, "polling a worker queue failed");
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        },
                    }
                }
            }));
        }
    }
    if let Some(every) = opts.purge_every {
        // The purger on a timer, as of the local clock (EventBridge's daily schedule in AWS).
        let purger = Arc::clone(&shared);
        let clock = Arc::clone(&opts.clock);
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = rx.changed() => break,
                    _ = tokio::time::sleep(every) => {
                        match purge(&purger, clock.now(), false, None).await {
                            Ok(r) => info!(total = r.total(), "local retention purge"),
                            Err(e) => warn!(error = %e, "local retention purge failed"),
                        }
                    }
                }
            }
        }));
    }
    drop(rx);
    info!(%base_url, table = %resources.names.table, queue = %resources.queue_url, "callfy-local is up");
    Ok(LocalHandle { addr, base_url, sandbox, bigcommerce, resources, shared, shutdown, tasks })
}

async fn purge(
    shared: &Shared,
    as_of: chrono::DateTime<chrono::Utc>,
    dry_run: bool,
    deadline: Option<std::time::Instant>,
) -> Result<callfy_shared::domain::retention::PurgeReport, callfy_shared::app::retention::PurgeError> {
    let p = &shared.functions.purger;
    let purger = callfy_shared::app::retention::Purger { store: &p.store, recordings: &p.recordings, queue: &p.queue };
    let opts = callfy_shared::app::retention::RunOptions {
        as_of,
        dry_run,
        deadline,
        started_at: chrono::Utc::now(),
        closure_grace_days: p.closure_grace_days,
        erasure_page: callfy_shared::app::retention::ERASURE_PAGE,
    };
    purger.run(opts).await
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, LocalError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| LocalError::Queue(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
    Ok(out
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default())
}

async fn route(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return server::to_http(error(413, "payload_too_large", "request body is too large"));
        }
    };
    let event = server::apigw_v2_event(&parts, &bytes, &peer.ip().to_string());
    let request = match lambda_http::request::from_str(&event.to_string()) {
        Ok(r) => r,
        Err(e) => return server::to_http(error(400, "bad_request", e.to_string())),
    };
    let path = parts.uri.path();
    let f = &shared.functions;
    let response = if path.starts_with("/webhooks/") || path.starts_with("/r/") {
        webhook_ingest::handle(&f.ingest, request).await
    } else if path == "/v1/consents" || path.starts_with("/v1/consents/") || path.starts_with("/v1/privacy/") {
        consent_api::handle(&f.consent, request).await
    } else if path.starts_with("/twilio/sms") {
        sms_inbound::handle(&f.inbound, request).await
    } else if path.starts_with("/twilio/voice") {
        voice_callbacks::handle(&f.voice, request).await
    } else {
        error(404, "not_found", format!("no route for {path}"))
    };
    server::to_http(response)
}

async fn poll_once(shared: &Shared, which: WorkerQueue, wait_seconds: i32) -> Result<PollStats, LocalError> {
    let (queue_url, queue_arn) = match which {
        WorkerQueue::Outreach => (&shared.queue_url, &shared.queue_arn),
        WorkerQueue::Recordings => (&shared.recordings_queue_url, &shared.recordings_queue_arn),
    };
    let out = shared
        .sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait_seconds)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .map_err(|e| LocalError::Queue(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
    let messages = out.messages.unwrap_or_default();
    if messages.is_empty() {
        return Ok(PollStats::default());
    }
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let attrs: serde_json::Map<String, serde_json::Value> = m
                .attributes()
                .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), v.clone().into())).collect())
                .unwrap_or_default();
            serde_json::json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "md5OfBody": m.md5_of_body(),
                "attributes": attrs,
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": local_defaults::REGION,
            })
        })
        .collect();
    let event: SqsEvent = serde_json::from_value(serde_json::json!({ "Records": records }))
        .map_err(|e| LocalError::Queue(format!("could not build an SqsEvent: {e}")))?;
    let response = outreach_worker::handle_batch(&shared.functions.worker, event).await;
    let failed: HashSet<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    let mut stats = PollStats { received: messages.len(), ..Default::default() };
    for m in &messages {
        if failed.contains(m.message_id().unwrap_or_default()) {
            stats.failed += 1;
            continue;
        }
        shared
            .sqs
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(m.receipt_handle().unwrap_or_default())
            .send()
            .await
            .map_err(|e| LocalError::Queue(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        stats.succeeded += 1;
    }
    Ok(stats)
}
