//! Adapters translate the domain to AWS and Twilio. Clients are created once per process.

pub mod aws;
pub mod bedrock;
pub mod bigcommerce;
pub mod dynamo;
pub mod http;
pub mod platform_api;
pub mod queue;
pub mod recordings;
pub mod relay;
pub mod scripted;
pub mod secrets;
pub mod store;
pub mod twilio;
pub mod webhook_bodies;
