//! Ports: the capabilities the use cases call, owned by the core. Each is a small trait per
//! capability; the types they exchange (and their one error vocabulary, `PortError`) live here
//! too. Adapters implement them and import this module; nothing here imports an adapter.
//!
//! Architecture Invariant: this module depends on `domain` and `platforms` only, never on
//! `adapters` or `app`, and holds no I/O.

pub mod agent;
mod error;
pub mod files;
pub mod history;
pub mod outreach;
pub mod queue;
pub mod records;
pub mod store;
pub mod storefront;
pub mod telephony;
pub mod watch;
pub mod webhooks;

pub use agent::{AgentSessions, ConversationModel, RelayConnections};
pub use error::{BoxError, Classify, ErrorKind, PortError, chain};
pub use files::RecordingFiles;
pub use history::PlatformHistory;
pub use outreach::{ConsentLedger, OutreachReads, OutreachWrites};
pub use queue::{JobQueue, PrivacyWork, WorkQueue};
pub use records::*;
pub use store::*;
pub use storefront::StorefrontCarts;
pub use telephony::{ProviderCopies, RecordingSource, SmsGateway, VoiceGateway};
pub use watch::{DeliveryStamps, WatchedMerchants};
pub use webhooks::{QueuedWebhook, WebhookBodies, WebhookBody, WebhookMerchants, WebhookQueue};
