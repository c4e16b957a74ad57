//! Twilio REST client (Messages, Calls and Recordings), over reqwest with basic auth and form
//! encoding.

use crate::config::{ExposeSecret, SecretString, TwilioAuth, TwilioConfig};
pub use crate::ports::telephony::{
    CallResource, ListedCall, ListedMessage, MessageResource, PlaceCall, SendSms, SmsSender, TwilioError,
};
use crate::ports::{RecordingSource, SmsGateway, VoiceGateway};
use serde::Deserialize;
use std::time::Duration;

/// Counts a request to Twilio, and its error by code, for the error-rate alarm.
fn observe<T>(result: Result<T, TwilioError>) -> Result<T, TwilioError> {
    crate::metrics::count(crate::metrics::TWILIO_REQUESTS, 1);
    if let Err(e) = &result {
        crate::metrics::count_by(crate::metrics::TWILIO_ERRORS, "Code", &e.metric_code(), 1);
    }
    result
}

#[derive(Debug, Deserialize)]
struct CallList {
    #[serde(default)]
    calls: Vec<ListedCall>,
}

#[derive(Debug, Deserialize)]
struct MessageList {
    #[serde(default)]
    messages: Vec<ListedMessage>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    code: Option<i64>,
    message: Option<String>,
}

#[derive(Clone, Debug)]
pub struct TwilioClient {
    http: super::http::LazyClient,
    base: String,
    account_sid: String,
    user: String,
    password: SecretString,
}

impl TwilioClient {
    pub fn new(cfg: &TwilioConfig) -> Result<Self, TwilioError> {
        Self::with_timeout(cfg, cfg.timeout)
    }

    /// `timeout` bounds the whole request; the worker's Lambda timeout leaves room for it.
    pub fn with_timeout(cfg: &TwilioConfig, timeout: Duration) -> Result<Self, TwilioError> {
        let http = super::http::LazyClient::new(Duration::from_secs(3).min(timeout), timeout);
        let (user, password) = match &cfg.auth {
            TwilioAuth::AuthToken(token) => (cfg.account_sid.clone(), token.clone()),
            TwilioAuth::ApiKey { sid, secret } => (sid.clone(), secret.clone()),
        };
        Ok(Self { http, base: cfg.api_base.clone(), account_sid: cfg.account_sid.clone(), user, password })
    }

    fn http(&self) -> Result<&reqwest::Client, TwilioError> {
        self.http.get().map_err(|e| TwilioError::Transport(e.to_string()))
    }

    /// The newest messages to `to` (Twilio lists newest first).
    pub async fn recent_messages_to(&self, to: &str) -> Result<Vec<ListedMessage>, TwilioError> {
        let url = format!("{}/2010-04-01/Accounts/{}/Messages.json", self.base, self.account_sid);
        let resp = self
            .http()?
            .get(url)
            .basic_auth(&self.user, Some(self.password.expose_secret()))
            .query(&[("To", to), ("PageSize", "50")])
            .send()
            .await
            .map_err(classify)?;
        let list: MessageList = Self::decode(resp).await?;
        Ok(list.messages)
    }

    async fn decode<T: for<'de> Deserialize<'de>>(resp: reqwest::Response) -> Result<T, TwilioError> {
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(classify)?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|e| TwilioError::Decode(e.to_string()));
        }
        let err: Option<ApiError> = serde_json::from_slice(&bytes).ok();
        Err(TwilioError::Api {
            status,
            code: err.as_ref().and_then(|e| e.code),
            message: err
                .and_then(|e| e.message)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect()),
        })
    }

    pub async fn send_sms(&self, req: &SendSms) -> Result<MessageResource, TwilioError> {
        observe(self.post_message(req).await)
    }

    async fn post_message(&self, req: &SendSms) -> Result<MessageResource, TwilioError> {
        let url = format!("{}/2010-04-01/Accounts/{}/Messages.json", self.base, self.account_sid);
        let mut form: Vec<(&str, &str)> = vec![("To", &req.to), ("Body", &req.body)];
        match &req.sender {
            SmsSender::MessagingService(sid) => form.push(("MessagingServiceSid", sid)),
            SmsSender::From(from) => form.push(("From", from)),
        }
        if let Some(cb) = &req.status_callback {
            form.push(("StatusCallback", cb));
        }
        let validity = req.validity_seconds.map(|s| s.to_string());
        if let Some(v) = &validity {
            form.push(("ValidityPeriod", v));
        }
        let resp = self
            .http()?
            .post(url)
            .basic_auth(&self.user, Some(self.password.expose_secret()))
            .form(&form)
            .send()
            .await
            .map_err(classify)?;
        Self::decode(resp).await
    }
}

impl TwilioClient {
    fn account_url(&self, tail: &str) -> String {
        format!("{}/2010-04-01/Accounts/{}/{tail}", self.base, self.account_sid)
    }

    pub async fn place_call(&self, req: &PlaceCall) -> Result<CallResource, TwilioError> {
        observe(self.post_call(req).await)
    }

    async fn post_call(&self, req: &PlaceCall) -> Result<CallResource, TwilioError> {
        let (timeout, limit) = (req.timeout_seconds.to_string(), req.time_limit_seconds.to_string());
        let mut form: Vec<(&str, &str)> = vec![
            ("To", &req.to),
            ("From", &req.from),
            ("Url", &req.url),
            ("Method", "POST"),
            ("StatusCallback", &req.status_callback),
            ("StatusCallbackMethod", "POST"),
            ("MachineDetection", req.machine_detection),
            ("Timeout", &timeout),
            ("TimeLimit", &limit),
        ];
        // No `StatusCallbackEvent`: Twilio then reports the final status (completed, busy,
        // no-answer, failed) with duration and `AnsweredBy`, which is what the flow needs; the
        // answer webhook itself tells us the call was picked up. The recording callback
        // likewise defaults to `completed`.
        if let Some(cb) = &req.recording_callback {
            form.extend([
                ("Record", "true"),
                ("RecordingStatusCallback", cb.as_str()),
                ("RecordingStatusCallbackMethod", "POST"),
            ]);
        }
        let resp = self
            .http()?
            .post(self.account_url("Calls.json"))
            .basic_auth(&self.user, Some(self.password.expose_secret()))
            .form(&form)
            .send()
            .await
            .map_err(classify)?;
        Self::decode(resp).await
    }

    /// The newest calls to `to` (Twilio lists newest first).
    pub async fn recent_calls_to(&self, to: &str) -> Result<Vec<ListedCall>, TwilioError> {
        let resp = self
            .http()?
            .get(self.account_url("Calls.json"))
            .basic_auth(&self.user, Some(self.password.expose_secret()))
            .query(&[("To", to), ("PageSize", "50")])
            .send()
            .await
            .map_err(classify)?;
        let list: CallList = Self::decode(resp).await?;
        Ok(list.calls)
    }

    /// Streams a recording's WAV media into `path`, chunk by chunk; returns its size. The URL
    /// is built from our API base and the SID, never taken from a callback.
    pub async fn download_recording(&self, recording_sid: &str, path: &std::path::Path) -> Result<u64, TwilioError> {
        use tokio::io::AsyncWriteExt;
        let mut resp = self
            .http()?
            .get(self.account_url(&format!("Recordings/{recording_sid}.wav")))
            .basic_auth(&self.user, Some(self.password.expose_secret()))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(classify)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(TwilioError::Api { status, code: None, message: "recording download refused".into() });
        }
        let io = |e: std::io::Error| TwilioError::Transport(format!("writing the recording: {e}"));
        let mut file = tokio::fs::File::create(path).await.map_err(io)?;
        let mut size = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok(size)
    }

    /// Redacts a message at Twilio (`POST …/Messages/{sid}.json` with an empty `Body`); `false`
    /// when Twilio no longer has it.
    pub async fn redact_message(&self, message_sid: &str) -> Result<bool, TwilioError> {
        let resp = self
            .http()?
            .post(self.account_url(&format!("Messages/{message_sid}.json")))
            .basic_auth(&self.user, Some(self.password.expose_secret()))
            .form(&[("Body", "")])
            .send()
            .await
            .map_err(classify)?;
        done_or_gone(resp).await
    }

    /// Deletes Twilio's copy of a recording; `false` when it was already gone.
    pub async fn delete_recording(&self, recording_sid: &str) -> Result<bool, TwilioError> {
        let resp = self
            .http()?
            .delete(self.account_url(&format!("Recordings/{recording_sid}.json")))
            .basic_auth(&self.user, Some(self.password.expose_secret()))
            .send()
            .await
            .map_err(classify)?;
        done_or_gone(resp).await
    }
}

/// An update or delete's answer: done (`true`), the resource already gone (`false`), or
/// Twilio's error document.
async fn done_or_gone(resp: reqwest::Response) -> Result<bool, TwilioError> {
    match resp.status().as_u16() {
        200 | 204 => Ok(true),
        404 => Ok(false),
        status => {
            let body = resp.text().await.unwrap_or_default();
            let err: Option<ApiError> = serde_json::from_str(&body).ok();
            Err(TwilioError::Api {
                status,
                code: err.as_ref().and_then(|e| e.code),
                message: err.and_then(|e| e.message).unwrap_or_default(),
            })
        }
    }
}

impl crate::ports::ProviderCopies for TwilioClient {
    async fn redact_message(&self, message_sid: &str) -> Result<bool, TwilioError> {
        TwilioClient::redact_message(self, message_sid).await
    }
}

impl SmsGateway for TwilioClient {
    async fn send_sms(&self, req: &SendSms) -> Result<MessageResource, TwilioError> {
        TwilioClient::send_sms(self, req).await
    }
    async fn recent_messages_to(&self, to: &str) -> Result<Vec<ListedMessage>, TwilioError> {
        TwilioClient::recent_messages_to(self, to).await
    }
}

impl VoiceGateway for TwilioClient {
    async fn place_call(&self, req: &PlaceCall) -> Result<CallResource, TwilioError> {
        TwilioClient::place_call(self, req).await
    }
    async fn recent_calls_to(&self, to: &str) -> Result<Vec<ListedCall>, TwilioError> {
        TwilioClient::recent_calls_to(self, to).await
    }
}

impl RecordingSource for TwilioClient {
    async fn download_recording(&self, recording_sid: &str, path: &std::path::Path) -> Result<u64, TwilioError> {
        TwilioClient::download_recording(self, recording_sid, path).await
    }
    async fn delete_recording(&self, recording_sid: &str) -> Result<bool, TwilioError> {
        TwilioClient::delete_recording(self, recording_sid).await
    }
}

fn classify(e: reqwest::Error) -> TwilioError {
    if e.is_connect() {
        TwilioError::Connect(e.to_string())
    } else if e.is_timeout() {
        TwilioError::Timeout
    } else {
        TwilioError::Transport(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryability_follows_twilio_guidance() {
        let api = |status, code| TwilioError::Api { status, code, message: String::new() };
        assert!(api(429, Some(20429)).is_retryable());
        assert!(api(503, None).is_retryable());
        assert!(TwilioError::Timeout.is_retryable());
        assert!(!api(400, Some(21211)).is_retryable());
        assert!(!api(400, Some(21610)).is_retryable());
        assert_eq!(api(400, Some(21610)).code(), Some(21610));
    }
}
