//! Pure domain rules: no AWS types, no I/O, time passed in.

pub mod agent;
pub mod cart;
pub mod consent;
pub mod delivery;
pub mod flow;
pub mod guard;
pub mod ids;
pub mod inbound;
pub mod keywords;
pub mod link;
pub mod merchant;
pub mod message;
pub mod outreach;
pub mod phone;
pub mod quiet;
pub mod ratelimit;
pub mod retention;
pub mod secret;
pub mod silence;
pub mod subject;
pub mod time;
pub mod twiml;
pub mod voice;
