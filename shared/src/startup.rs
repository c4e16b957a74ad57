//! One assembly (after zero2prod's `startup.rs`): typed settings → adapters → each entry
//! point's wired use cases. The six Lambda mains call `lambda::<App>()`; the local runner, the
//! tools and the tests call `App::assemble` with settings of their own. There is no second wiring
//! to drift.
//!
//! Architecture Invariant: this is the only module that names both a use case's ports and the
//! adapters behind them.

// The deployed static (musl) builds: musl's malloc would cost the warm path what the static link
// saves at init (docs/performance.md). Other builds keep the platform's allocator.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::adapters::bedrock::BedrockModel;
use crate::adapters::bigcommerce::BigCommerceApi;
use crate::adapters::queue::OutreachQueue;
use crate::adapters::recordings::RecordingBucket;
use crate::adapters::relay::ApiGatewayRelay;
use crate::adapters::scripted::ScriptedModel;
use crate::adapters::store::Store;
use crate::adapters::twilio::TwilioClient;
use crate::adapters::webhook_bodies::WebhookBodyBucket;
use crate::adapters::{aws, secrets};
use crate::app::agent::{Agent, AgentLimits};
use crate::app::outreach::Outreach;
use crate::app::webhook::{REPLAY_DELAY_SECONDS, Webhooks};
use crate::clock::{Clock, SystemClock};
use crate::config::{AgentModel, VoiceAgentSettings};
use crate::config::{
    ConfigError, ConsentApiSettings, ExposeSecret, InboundSettings, IngestSettings, PurgerSettings, SecretString,
    Settings, VoiceCallbackSettings, WorkerSettings,
};
use crate::platforms::Platforms;
use crate::platforms::custom::Custom;
use crate::platforms::shopify::Shopify;
use crate::ports::agent::{ModelEvent, ModelRequest};
use crate::ports::storefront::StoreApiError;
use crate::ports::telephony::TwilioError;
use crate::ports::{ConversationModel, PortError, RelayConnections};
use aws_config::SdkConfig;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc::Sender;

/// BigCommerce waits for our answer: a slow store API gets this much of it, then a 503 retry.
pub const STORE_API_TIMEOUT: Duration = Duration::from_secs(5);
/// Twilio waits 15 s for a call's TwiML: key 1's text gets this much of it.
pub const TWIML_TWILIO_TIMEOUT: Duration = Duration::from_secs(5);
/// The queued copy of an inbound opt-out waits this long: the inline attempt (10 s Lambda
/// timeout) has normally finished, so the copy only finds work when that attempt failed.
pub const INBOUND_REPLAY_DELAY_SECONDS: i32 = 60;

#[derive(Debug, Error)]
pub enum StartupError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("the HTTPS client could not be built")]
    Http(#[from] reqwest::Error),
    #[error("the Twilio client could not be built")]
    Twilio(#[from] TwilioError),
    #[error("the BigCommerce client could not be built")]
    StoreApi(#[from] StoreApiError),
}

/// The AWS clients, each built on first use and then shared: one of each per process, and none
/// built that an entry point does not use (client construction is part of a cold start).
#[derive(Debug)]
pub struct Clients {
    sdk: SdkConfig,
    dynamodb: OnceLock<aws_sdk_dynamodb::Client>,
    sqs: OnceLock<aws_sdk_sqs::Client>,
    s3: OnceLock<aws_sdk_s3::Client>,
}

impl Clients {
    pub fn new(sdk: &SdkConfig) -> Self {
        Self { sdk: sdk.clone(), dynamodb: OnceLock::new(), sqs: OnceLock::new(), s3: OnceLock::new() }
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        self.dynamodb.get_or_init(|| aws::dynamodb(&self.sdk)).clone()
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        self.sqs.get_or_init(|| aws::sqs(&self.sdk)).clone()
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        self.s3.get_or_init(|| aws::s3(&self.sdk)).clone()
    }

    pub fn store(&self, table: &str) -> Store {
        Store::new(self.dynamodb(), table)
    }

    pub fn queue(&self, url: &str) -> OutreachQueue {
        OutreachQueue::new(self.sqs(), url)
    }

    pub fn bucket(&self, name: &str, kms_key_id: Option<String>) -> RecordingBucket {
        RecordingBucket::new(self.s3(), name, kms_key_id)
    }
}

/// An entry point's dependencies, assembled from its typed settings.
pub trait Assemble: Sized {
    type Settings: Settings;

    fn assemble(clients: &Clients, settings: &Self::Settings, clock: Arc<dyn Clock>) -> Result<Self, StartupError>;
}

/// What a Lambda's `main` calls: the SDK configuration and settings (secrets from Secrets
/// Manager, once per process), logging keyed before the first line that could carry a
/// pseudonym, then the entry point assembled on the system clock.
pub async fn lambda<A: Assemble>() -> Result<A, StartupError> {
    let sdk = aws::load_config().await?;
    let settings = secrets::init_settings::<A::Settings>(&sdk).await?;
    crate::telemetry::init_with_log_key(settings.log_key().expose_secret());
    A::assemble(&Clients::new(&sdk), &settings, Arc::new(SystemClock))
}

/// What verifying and applying a platform webhook needs besides the store and the queue:
/// webhook-ingest applies a delivery inline, the worker its durable copy (`app::webhook`).
#[derive(Clone)]
pub struct WebhookParts {
    /// Every platform, with the app-wide Shopify secret.
    pub platforms: Platforms,
    /// The BigCommerce store API abandoned carts are read from.
    pub bigcommerce_api: BigCommerceApi,
    /// Where a body too large for a queue message waits (`deliveries/` in the recordings bucket).
    pub bodies: WebhookBodyBucket,
    /// How long a delivery's copy waits before the worker takes it.
    pub replay_delay_seconds: i32,
}

impl WebhookParts {
    pub fn new(
        c: &Clients,
        shopify_api_secret: &SecretString,
        bigcommerce_api_base: &str,
        bucket: &str,
        kms_key_id: Option<String>,
        clock: &Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        Ok(Self {
            platforms: Platforms {
                shopify: Shopify { app_secret: shopify_api_secret.clone() },
                custom: Custom { clock: Arc::clone(clock) },
            },
            bigcommerce_api: BigCommerceApi::new(bigcommerce_api_base, STORE_API_TIMEOUT)?,
            bodies: WebhookBodyBucket::new(c.s3(), bucket, kms_key_id),
            replay_delay_seconds: REPLAY_DELAY_SECONDS,
        })
    }

    /// The use case over these parts and the given store and queue.
    pub fn over<'a>(&'a self, store: &'a Store, queue: &'a OutreachQueue) -> WebhookCase<'a> {
        Webhooks {
            store,
            queue,
            bodies: &self.bodies,
            storefront: &self.bigcommerce_api,
            platforms: &self.platforms,
            replay_delay_seconds: self.replay_delay_seconds,
        }
    }
}

/// The webhook use case over the adapters Lambda runs it on.
pub type WebhookCase<'a> = Webhooks<'a, Store, OutreachQueue, WebhookBodyBucket, BigCommerceApi>;

/// webhook-ingest.
pub struct IngestApp {
    pub store: Store,
    /// Where first steps and deliveries' durable copies go.
    pub queue: OutreachQueue,
    pub webhooks: WebhookParts,
    pub clock: Arc<dyn Clock>,
}

impl IngestApp {
    /// The use case, borrowing this app's adapters.
    pub fn webhooks(&self) -> WebhookCase<'_> {
        self.webhooks.over(&self.store, &self.queue)
    }
}

impl Assemble for IngestApp {
    type Settings = IngestSettings;

    fn assemble(c: &Clients, s: &IngestSettings, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        let webhooks = WebhookParts::new(
            c,
            &s.shopify_api_secret,
            &s.bigcommerce_api_base,
            &s.recordings_bucket,
            s.recordings_kms_key_id.clone(),
            &clock,
        )?;
        Ok(Self { store: c.store(&s.table_name), queue: c.queue(&s.outreach_queue_url), webhooks, clock })
    }
}

/// The outreach use case as Lambda runs it: DynamoDB, Twilio and SQS behind its ports.
pub type WorkerApp = Outreach<Store, TwilioClient, OutreachQueue>;

/// outreach-worker: outreach, the bucket recordings are copied to, and what replaying a
/// webhook's durable copy needs.
pub struct Worker {
    pub outreach: WorkerApp,
    pub recordings: RecordingBucket,
    /// Where a recording is staged between Twilio and S3 (Lambda's `/tmp`).
    pub scratch: PathBuf,
    pub webhooks: WebhookParts,
}

impl Worker {
    /// The webhook use case, over the outreach use case's store and queue.
    pub fn webhooks(&self) -> WebhookCase<'_> {
        self.webhooks.over(&self.outreach.store, &self.outreach.queue)
    }
}

impl Assemble for Worker {
    type Settings = WorkerSettings;

    fn assemble(c: &Clients, s: &WorkerSettings, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        let webhooks = WebhookParts::new(
            c,
            &s.shopify_api_secret,
            &s.bigcommerce_api_base,
            &s.recordings_bucket,
            s.recordings_kms_key_id.clone(),
            &clock,
        )?;
        Ok(Self {
            outreach: Outreach {
                store: c.store(&s.table_name),
                queue: c.queue(&s.outreach_queue_url),
                twilio: TwilioClient::new(&s.twilio)?,
                clock,
                public_base_url: s.public_base_url.clone(),
            },
            recordings: c.bucket(&s.recordings_bucket, s.recordings_kms_key_id.clone()),
            scratch: std::env::temp_dir(),
            webhooks,
        })
    }
}

/// consent-api.
pub struct ConsentApp {
    pub store: Store,
    /// Exports link recordings; deletions remove them.
    pub recordings: RecordingBucket,
    /// A deletion's Twilio copies are removed by the worker.
    pub queue: OutreachQueue,
    pub clock: Arc<dyn Clock>,
}

impl Assemble for ConsentApp {
    type Settings = ConsentApiSettings;

    fn assemble(c: &Clients, s: &ConsentApiSettings, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        Ok(Self {
            store: c.store(&s.table_name),
            recordings: c.bucket(&s.recordings_bucket, None),
            queue: c.queue(&s.outreach_queue_url),
            clock,
        })
    }
}

/// sms-inbound.
pub struct InboundApp {
    pub store: Store,
    /// Where an opt-out is made durable before it is applied.
    pub queue: OutreachQueue,
    /// How long the queued copy waits, so the inline attempt normally finishes first.
    pub replay_delay_seconds: i32,
    /// The auth token Twilio signs webhooks with.
    pub auth_token: SecretString,
    /// The previous auth token, accepted too while a rotation is under way.
    pub previous_auth_token: Option<SecretString>,
    /// The SharedKey secret, where a Twilio Webhook Rule signs with one instead.
    pub shared_key: Option<SecretString>,
    /// The https base URL Twilio calls; signatures cover the URL Twilio used.
    pub public_base_url: String,
    pub clock: Arc<dyn Clock>,
}

impl Assemble for InboundApp {
    type Settings = InboundSettings;

    fn assemble(c: &Clients, s: &InboundSettings, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        Ok(Self {
            store: c.store(&s.table_name),
            queue: c.queue(&s.outreach_queue_url),
            replay_delay_seconds: INBOUND_REPLAY_DELAY_SECONDS,
            auth_token: s.twilio_auth_token.clone(),
            previous_auth_token: s.twilio_auth_token_previous.clone(),
            shared_key: s.twilio_webhook_shared_key.clone(),
            public_base_url: s.public_base_url.clone(),
            clock,
        })
    }
}

/// voice-callbacks.
pub struct VoiceApp {
    pub store: Store,
    /// Where recording copies are queued for the worker.
    pub recordings_queue: OutreachQueue,
    /// Where a key-9 opt-out is made durable (the worker replays it).
    pub outreach_queue: OutreachQueue,
    /// How long that copy waits before the worker applies it.
    pub replay_delay_seconds: i32,
    /// Key 1 texts the link through Twilio.
    pub twilio: TwilioClient,
    /// The auth token Twilio signs webhooks with.
    pub auth_token: SecretString,
    /// The previous auth token, accepted too while a rotation is under way.
    pub previous_auth_token: Option<SecretString>,
    /// The SharedKey secret, where a Twilio Webhook Rule signs with one instead.
    pub shared_key: Option<SecretString>,
    /// The https base URL Twilio calls; signatures cover the URL Twilio used.
    pub public_base_url: String,
    /// The voice agent's WebSocket URL, for the answer TwiML.
    pub public_ws_url: String,
    pub clock: Arc<dyn Clock>,
}

impl Assemble for VoiceApp {
    type Settings = VoiceCallbackSettings;

    fn assemble(c: &Clients, s: &VoiceCallbackSettings, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        Ok(Self {
            store: c.store(&s.table_name),
            recordings_queue: c.queue(&s.recordings_queue_url),
            outreach_queue: c.queue(&s.outreach_queue_url),
            replay_delay_seconds: crate::app::voice::KEY_OPT_OUT_REPLAY_DELAY_SECONDS,
            twilio: TwilioClient::with_timeout(&s.twilio, TWIML_TWILIO_TIMEOUT.min(s.twilio.timeout))?,
            auth_token: s.twilio_auth_token.clone(),
            previous_auth_token: s.twilio_auth_token_previous.clone(),
            shared_key: s.twilio_webhook_shared_key.clone(),
            public_base_url: s.public_base_url.clone(),
            public_ws_url: s.public_ws_url.clone(),
            clock,
        })
    }
}

/// The voice use case over the adapters `VoiceApp` holds (borrowed per request).
pub type VoiceCase<'a> = crate::app::voice::Voice<'a, Store, TwilioClient, OutreachQueue>;

/// The model the agent talks through: Bedrock, or the scripted agent.
pub enum AgentModelAdapter {
    Scripted(ScriptedModel),
    Bedrock(BedrockModel),
}

impl ConversationModel for AgentModelAdapter {
    fn name(&self) -> &'static str {
        match self {
            Self::Scripted(m) => m.name(),
            Self::Bedrock(m) => m.name(),
        }
    }

    async fn converse(&self, req: &ModelRequest, out: Sender<ModelEvent>) -> Result<(), PortError> {
        match self {
            Self::Scripted(m) => m.converse(req, out).await,
            Self::Bedrock(m) => m.converse(req, out).await,
        }
    }
}

/// voice-agent, over the connection its replies go out on (API Gateway's `@connections` in
/// Lambda, the local runner's sockets locally).
pub struct AgentApp<R> {
    pub store: Store,
    pub model: AgentModelAdapter,
    pub fallback: ScriptedModel,
    pub relay: R,
    pub twilio: TwilioClient,
    pub outreach_queue: OutreachQueue,
    /// The token Twilio signs the WebSocket upgrade with.
    pub auth_token: SecretString,
    /// The previous auth token, accepted too while a rotation is under way.
    pub previous_auth_token: Option<SecretString>,
    pub public_base_url: String,
    pub public_ws_url: String,
    pub limits: AgentLimits,
    pub clock: Arc<dyn Clock>,
}

impl<R> AgentApp<R> {
    /// The agent over a given connection adapter (the local runner passes its own).
    pub fn with_relay(
        c: &Clients,
        s: &VoiceAgentSettings,
        clock: Arc<dyn Clock>,
        relay: R,
    ) -> Result<Self, StartupError> {
        let model = match &s.agent_model {
            AgentModel::Scripted => AgentModelAdapter::Scripted(ScriptedModel::default()),
            AgentModel::Bedrock(id) => {
                let sdk = match &s.bedrock_endpoint {
                    Some(url) => c.sdk.to_builder().endpoint_url(url).build(),
                    None => c.sdk.clone(),
                };
                AgentModelAdapter::Bedrock(BedrockModel::new(&sdk, id))
            }
        };
        Ok(Self {
            store: c.store(&s.table_name),
            model,
            fallback: ScriptedModel::default(),
            relay,
            twilio: TwilioClient::with_timeout(&s.twilio, TWIML_TWILIO_TIMEOUT.min(s.twilio.timeout))?,
            outreach_queue: c.queue(&s.outreach_queue_url),
            auth_token: s.twilio_auth_token.clone(),
            previous_auth_token: s.twilio_auth_token_previous.clone(),
            public_base_url: s.public_base_url.clone(),
            public_ws_url: s.public_ws_url.clone(),
            limits: AgentLimits::default(),
            clock,
        })
    }

    /// With `Some(latency)`, the scripted agent stands in for a model that takes that long to
    /// start answering (benchmarks of the agent's own overhead).
    pub fn with_model_latency(mut self, latency: Option<Duration>) -> Self {
        if let Some(first_token_delay) = latency {
            self.model = AgentModelAdapter::Scripted(ScriptedModel { first_token_delay });
        }
        self
    }

    /// The use case, borrowing this app's adapters.
    pub fn agent(&self) -> Agent<'_, Store, AgentModelAdapter, ScriptedModel, R, TwilioClient, OutreachQueue>
    where
        R: RelayConnections,
    {
        Agent {
            store: &self.store,
            model: &self.model,
            fallback: &self.fallback,
            relay: &self.relay,
            sms: &self.twilio,
            outreach_queue: &self.outreach_queue,
            public_base_url: &self.public_base_url,
            limits: self.limits,
        }
    }
}

impl Assemble for AgentApp<ApiGatewayRelay> {
    type Settings = VoiceAgentSettings;

    fn assemble(c: &Clients, s: &VoiceAgentSettings, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        let relay = ApiGatewayRelay::new(&c.sdk, &ApiGatewayRelay::endpoint_for(&s.public_ws_url));
        Self::with_relay(c, s, clock, relay)
    }
}

/// retention-purger.
pub struct PurgerApp {
    pub store: Store,
    pub recordings: RecordingBucket,
    /// A deletion's unconfirmed Twilio copies are queued again for the worker.
    pub queue: OutreachQueue,
    /// Days a closed account's data is kept before erasure (`CLOSURE_GRACE_DAYS`).
    pub closure_grace_days: u32,
}

impl Assemble for PurgerApp {
    type Settings = PurgerSettings;

    fn assemble(c: &Clients, s: &PurgerSettings, _clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        Ok(Self {
            store: c.store(&s.table_name),
            recordings: c.bucket(&s.recordings_bucket, s.recordings_kms_key_id.clone()),
            queue: c.queue(&s.outreach_queue_url),
            closure_grace_days: s.closure_grace_days,
        })
    }
}
