//! `callfy-admin`'s operator commands as a library, so the integration tests drive exactly what
//! the CLI runs: `dlq` (replaying dead-lettered work) and `report` (the recovery funnel, as a
//! table and as a self-contained HTML page, `html`).

pub mod backfill;
pub mod calltest;
pub mod dlq;
pub mod html;
pub mod purge;
pub mod report;
