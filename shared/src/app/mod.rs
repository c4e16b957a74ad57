//! Use cases, one file each. Each takes its ports and a `now`; functions only verify, parse,
//! call one of these and map the outcome to HTTP or SQS.

pub mod agent;
pub mod backfill;
pub mod consent;
pub mod delivery;
pub mod inbound;
pub mod ingest;
pub mod limits;
pub mod links;
pub mod outreach;
pub mod privacy;
pub mod retention;
pub mod retry;
pub mod silence;
pub mod voice;
pub mod webhook;
