//! Callfy's common crate: pure domain rules (`domain`, `shopify`, `signature`), the use cases
//! (`app`) and the ports they call (`ports`), configuration, and the adapters that translate them
//! to DynamoDB, SQS and Twilio.

pub mod adapters;
pub mod api_key;
pub mod app;
pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod platforms;
pub mod ports;
pub mod signature;
pub mod startup;
pub mod telemetry;
pub mod twilio_signature;

pub use clock::{Clock, ManualClock, OffsetClock, SystemClock};
pub use config::ConfigError;
pub use domain::ids::{CartToken, IdError, MerchantId};
pub use domain::phone::{Phone, PhoneError};
/// Shopify's payloads, where they always were.
pub use platforms::shopify;
