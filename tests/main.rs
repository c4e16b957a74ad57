//! The integration tests: one binary over the shared `support` helpers, one module per area.
//! They need the local AWS API (moto) and, for the Twilio contract, Prism: `scripts/test` starts
//! both once for the run.

mod adapters;
mod admin;
mod agent;
mod bedrock;
mod consent;
mod contracts;
mod e2e;
mod guard;
mod ingest;
mod links;
mod platforms;
mod privacy;
mod races;
mod retention;
mod rotation;
mod silence;
mod suppression;
mod twilio_signature;
mod voice;
mod worker;
