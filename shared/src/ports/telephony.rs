//! The telephony ports: sending texts, placing calls, finding what an unanswered request did,
//! fetching recordings. Twilio's resources are the vocabulary (the one provider we use); the
//! REST client in `adapters::twilio` implements the traits.

use serde::Deserialize;
use std::future::Future;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TwilioError {
    /// Twilio answered with an error document. Its message can quote the recipient's number,
    /// so it is kept out of `Display` (which reaches logs).
    #[error("Twilio returned HTTP {status}, error {code:?}")]
    Api { status: u16, code: Option<i64>, message: String },
    /// The request may have reached Twilio; only the answer is missing.
    #[error("Twilio did not answer in time")]
    Timeout,
    /// No connection was made, so nothing was sent.
    #[error("could not connect to Twilio: {0}")]
    Connect(String),
    /// The connection broke after the request may have been sent.
    #[error("the connection to Twilio failed: {0}")]
    Transport(String),
    #[error("unexpected answer from Twilio: {0}")]
    Decode(String),
}

impl TwilioError {
    /// 429, 5xx, timeouts and connection errors may succeed later; other 4xx never will.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { status, code, .. } => *status == 429 || *status >= 500 || *code == Some(20429),
            // An answer we could not read still came from Twilio: look, then retry.
            Self::Timeout | Self::Connect(_) | Self::Transport(_) | Self::Decode(_) => true,
        }
    }

    /// Whether Twilio may have accepted the message although we got no usable answer: a retry
    /// must first look for it, or the shopper could get it twice. A 502 or 504 comes from a
    /// gateway in front of Twilio's API and says nothing about what the API did; an unreadable
    /// answer may have been a 201.
    pub fn may_have_sent(&self) -> bool {
        match self {
            Self::Api { status, .. } => matches!(status, 502 | 504),
            Self::Timeout | Self::Transport(_) | Self::Decode(_) => true,
            Self::Connect(_) => false,
        }
    }

    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Api { code, .. } => *code,
            _ => None,
        }
    }

    /// The `Code` breakdown of the `TwilioErrors` metric: Twilio's error code, else what failed.
    pub fn metric_code(&self) -> String {
        match self {
            Self::Api { code: Some(code), .. } => code.to_string(),
            Self::Api { status, .. } => format!("http_{status}"),
            Self::Timeout => "timeout".into(),
            Self::Connect(_) => "connect".into(),
            Self::Transport(_) => "transport".into(),
            Self::Decode(_) => "decode".into(),
        }
    }
}

/// Who the message is from: a Messaging Service (preferred) or one number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsSender {
    MessagingService(String),
    From(String),
}

impl SmsSender {
    /// The Messaging Service SID or the number, as an inbound reply names it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::MessagingService(s) | Self::From(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendSms {
    pub to: String,
    pub sender: SmsSender,
    pub body: String,
    pub status_callback: Option<String>,
    /// How long Twilio may hold it in its queue before sending (`ValidityPeriod`, seconds);
    /// one that waits longer is not sent. `None`: Twilio's default (10 hours).
    pub validity_seconds: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct MessageResource {
    pub sid: String,
    pub status: Option<String>,
    pub num_segments: Option<String>,
    pub error_code: Option<i64>,
}

/// One entry of `GET …/Messages.json`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ListedMessage {
    pub sid: String,
    pub to: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    pub body: Option<String>,
    /// RFC 2822, as Twilio writes it.
    pub date_created: Option<String>,
}

impl ListedMessage {
    pub fn created_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.date_created
            .as_deref()
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
            .map(|d| d.with_timezone(&chrono::Utc))
    }
}

/// `POST …/Calls.json`: an outbound call whose TwiML comes from `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceCall {
    pub to: String,
    pub from: String,
    pub url: String,
    pub status_callback: String,
    pub machine_detection: &'static str,
    pub timeout_seconds: u32,
    pub time_limit_seconds: u32,
    /// `Some(callback)` records the call and reports the recording there.
    pub recording_callback: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CallResource {
    pub sid: String,
    pub status: Option<String>,
}

/// One entry of `GET …/Calls.json`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ListedCall {
    pub sid: String,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    /// RFC 2822, as Twilio writes it.
    #[serde(default)]
    pub date_created: Option<String>,
}

impl ListedCall {
    pub fn created_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.date_created
            .as_deref()
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
            .map(|d| d.with_timezone(&chrono::Utc))
    }
}

impl super::Classify for TwilioError {
    fn kind(&self) -> super::ErrorKind {
        if self.is_retryable() { super::ErrorKind::Transient } else { super::ErrorKind::Permanent }
    }
}

/// Where the SMS goes out, and where a lost answer is looked for.
pub trait SmsGateway: Send + Sync {
    fn send_sms(&self, req: &SendSms) -> impl Future<Output = Result<MessageResource, TwilioError>> + Send;
    fn recent_messages_to(&self, to: &str) -> impl Future<Output = Result<Vec<ListedMessage>, TwilioError>> + Send;
}

/// Where calls are placed, and where a lost answer is looked for.
pub trait VoiceGateway: Send + Sync {
    fn place_call(&self, req: &PlaceCall) -> impl Future<Output = Result<CallResource, TwilioError>> + Send;
    fn recent_calls_to(&self, to: &str) -> impl Future<Output = Result<Vec<ListedCall>, TwilioError>> + Send;
}

/// A call recording at the provider: fetched to a file, then deleted there.
pub trait RecordingSource: Send + Sync {
    /// Writes the recording to `path`; its size in bytes.
    fn download_recording(
        &self,
        recording_sid: &str,
        path: &Path,
    ) -> impl Future<Output = Result<u64, TwilioError>> + Send;
    /// `false` when it was already gone.
    fn delete_recording(&self, recording_sid: &str) -> impl Future<Output = Result<bool, TwilioError>> + Send;
}

/// The provider's copies of a deleted person's data: message bodies redacted, recordings deleted.
pub trait ProviderCopies: RecordingSource {
    /// Empties a message's body at the provider; `false` when the message is gone.
    fn redact_message(&self, message_sid: &str) -> impl Future<Output = Result<bool, TwilioError>> + Send;
}
