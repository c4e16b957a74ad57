//! The store's historical path: the DynamoDB adapter lives in `adapters::dynamo`, the types it
//! stores in `domain::outreach`.

pub use crate::adapters::dynamo::*;
pub use crate::domain::outreach::{
    ClaimGuard, ClaimOutcome, CountedSend, Direction, MerchantRecord, MerchantStatus, SendCounter, SmsLogEntry,
    StepAvailability, StepRecord, StepResult, StepState, Uncertain,
};
