//! The sandbox's calls: `POST/GET …/Calls.json` checked against Twilio's spec, then the call
//! played as Twilio would: the signed answer webhook, key presses to the `<Gather>` action, the
//! status callbacks, and with recording on a short WAV, its callback, and the DELETE.

use crate::contract::contract;
use crate::sandbox::{Answer, Sandbox};
use callfy_shared::Phone;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub const CALLS_PATH: &str = "/2010-04-01/Accounts/{AccountSid}/Calls.json";
pub const RECORDING_PATH: &str = "/2010-04-01/Accounts/{AccountSid}/Recordings/{Sid}.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxCall {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub url: String,
    pub status_callback: Option<String>,
    pub machine_detection: Option<String>,
    pub record: bool,
    pub recording_callback: Option<String>,
    pub time_limit: Option<u32>,
    pub date_created: String,
    pub status: String,
    /// Everything the call said, in order.
    pub said: Vec<String>,
    /// The `<Gather>` action of the last answer, while a key may be pressed.
    pub gather_action: Option<String>,
    /// The `<Redirect>` Twilio follows when no key is pressed.
    pub redirect: Option<String>,
    pub recording_sid: Option<String>,
    /// The agent's WebSocket, when the answer connected the call to it.
    #[serde(default)]
    pub relay_url: Option<String>,
    /// The `<Connect action>` posted when the agent's session ends.
    #[serde(default)]
    pub relay_action: Option<String>,
    /// Order of events on the recording, for tests: "fetched", "deleted".
    pub recording_events: Vec<String>,
}

/// What one webhook answered, as the call would play it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallTurn {
    pub status: u16,
    pub said: Vec<String>,
    pub gather_action: Option<String>,
    pub redirect: Option<String>,
    pub hangup: bool,
    pub relay_url: Option<String>,
    pub relay_action: Option<String>,
    pub relay_parameters: Vec<(String, String)>,
    /// A `<Dial>`ed number (a transfer).
    pub dial: Option<String>,
    pub twiml: String,
}

impl CallTurn {
    /// Reads the TwiML an answer returned (only the verbs our calls use).
    pub fn parse(status: u16, xml: &str) -> Self {
        let mut turn = Self { status, twiml: xml.to_string(), ..Default::default() };
        let mut rest = xml;
        while let Some(start) = rest.find('<') {
            rest = &rest[start + 1..];
            let end = rest.find('>').unwrap_or(rest.len());
            let tag = &rest[..end];
            let name = tag.split([' ', '/']).next().unwrap_or_default();
            match name {
                "Say" => {
                    let body_end = rest.find("</Say>").unwrap_or(end);
                    turn.said.push(unescape(&rest[end + 1..body_end]));
                }
                "Gather" => turn.gather_action = attr(tag, "action"),
                "Redirect" => {
                    let body_end = rest.find("</Redirect>").unwrap_or(end);
                    turn.redirect = Some(unescape(&rest[end + 1..body_end]));
                }
                "Hangup" => turn.hangup = true,
                "Connect" => turn.relay_action = attr(tag, "action"),
                "ConversationRelay" => {
                    turn.relay_url = attr(tag, "url");
                    // Twilio speaks the welcome greeting before anything the agent sends.
                    turn.said.extend(attr(tag, "welcomeGreeting"));
                }
                "Dial" => {
                    let body_end = rest.find("</Dial>").unwrap_or(end);
                    turn.dial = Some(unescape(&rest[end + 1..body_end]));
                }
                "Parameter" => {
                    if let (Some(n), Some(v)) = (attr(tag, "name"), attr(tag, "value")) {
                        turn.relay_parameters.push((n, v));
                    }
                }
                _ => {}
            }
        }
        turn
    }
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!("{name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// A short WAV (8 kHz, 16-bit mono, half a second of a 440 Hz tone): what Twilio serves.
pub fn wav_bytes() -> Vec<u8> {
    let rate = 8000u32;
    let samples: Vec<i16> = (0..rate / 2)
        .map(|i| ((i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 8000.0) as i16)
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

fn sid(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn masked(number: &str) -> String {
    Phone::parse(number, None).map(|p| p.masked()).unwrap_or_else(|_| "(invalid)".into())
}

impl Sandbox {
    /// Places a call as `POST …/Calls.json` would, or answers Twilio's error document.
    pub fn create_call(&self, account: &str, headers: &axum::http::HeaderMap, form: &[(String, String)]) -> Answer {
        if !self.authorised(account, headers) {
            return Answer::error(401, 20003, "Authenticate");
        }
        let problems = contract().check_form(CALLS_PATH, "post", form);
        if self.violated(&problems) {
            return Answer::error(400, 21601, &problems.join("; "));
        }
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let Some(url) = get("Url") else {
            return Answer::error(400, 21205, "Url parameter is required.");
        };
        let mut delay_ms = 0;
        if let Some(fault) = self.take_fault() {
            if fault.accept_then_hang_ms == 0 {
                return Answer::error(fault.status, fault.code, "Injected by the sandbox");
            }
            delay_ms = fault.accept_then_hang_ms;
        }
        let call = SandboxCall {
            sid: sid("CA"),
            to: get("To").unwrap_or_default(),
            from: get("From").unwrap_or_default(),
            url,
            status_callback: get("StatusCallback"),
            machine_detection: get("MachineDetection"),
            record: get("Record").as_deref() == Some("true"),
            recording_callback: get("RecordingStatusCallback"),
            time_limit: get("TimeLimit").and_then(|t| t.parse().ok()),
            date_created: self.now().to_rfc2822(),
            status: "queued".into(),
            said: Vec::new(),
            gather_action: None,
            redirect: None,
            recording_sid: None,
            recording_events: Vec::new(),
            relay_url: None,
            relay_action: None,
        };
        println!("[twilio-sandbox] call {} to {} from {}", call.sid, masked(&call.to), call.from);
        let resource = self.call_resource(&call);
        self.calls_mut(|calls| calls.push(call));
        Answer { status: 201, body: resource, delay_ms }
    }

    /// Lists calls as `GET …/Calls.json` would: newest first, optionally filtered by `To`.
    pub fn list_calls(&self, account: &str, headers: &axum::http::HeaderMap, query: &[(String, String)]) -> Answer {
        if !self.authorised(account, headers) {
            return Answer::error(401, 20003, "Authenticate");
        }
        let problems = contract().check_query(CALLS_PATH, "get", query);
        if self.violated(&problems) {
            return Answer::error(400, 20001, &problems.join("; "));
        }
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let page_size: usize = get("PageSize").and_then(|v| v.parse().ok()).unwrap_or(50).clamp(1, 1000);
        let to = get("To");
        let calls: Vec<Value> = self
            .calls()
            .iter()
            .rev()
            .filter(|c| to.as_ref().is_none_or(|t| *t == c.to))
            .take(page_size)
            .map(|c| self.call_resource(c))
            .collect();
        let uri = format!("/2010-04-01/Accounts/{}/Calls.json?PageSize={page_size}&Page=0", self.account_sid());
        Answer::now(
            200,
            json!({
                "end": calls.len().saturating_sub(1), "first_page_uri": uri, "next_page_uri": null, "page": 0,
                "page_size": page_size, "previous_page_uri": null, "start": 0, "uri": uri, "calls": calls,
            }),
        )
    }

    /// A call as Twilio's API represents it.
    pub fn call_resource(&self, c: &SandboxCall) -> Value {
        let account = self.account_sid();
        json!({
            "sid": c.sid, "date_created": c.date_created, "date_updated": c.date_created, "parent_call_sid": null,
            "account_sid": account, "to": c.to, "to_formatted": c.to, "from": c.from, "from_formatted": c.from,
            "phone_number_sid": null, "status": c.status, "start_time": null, "end_time": null, "duration": null,
            "price": null, "price_unit": "USD", "direction": "outbound-api", "answered_by": null,
            "api_version": "2010-04-01", "forwarded_from": null, "group_sid": null, "caller_name": null,
            "queue_time": "0", "trunk_sid": null,
            "uri": format!("/2010-04-01/Accounts/{account}/Calls/{}.json", c.sid),
            "subresource_uris": {},
        })
    }

    pub fn call(&self, sid: &str) -> Option<SandboxCall> {
        self.calls().into_iter().find(|c| c.sid == sid)
    }

    fn base_form(&self, c: &SandboxCall, status: &str) -> Vec<(String, String)> {
        vec![
            ("AccountSid".into(), self.account_sid()),
            ("ApiVersion".into(), "2010-04-01".into()),
            ("CallSid".into(), c.sid.clone()),
            ("CallStatus".into(), status.into()),
            ("Direction".into(), "outbound-api".into()),
            ("From".into(), c.from.clone()),
            ("To".into(), c.to.clone()),
        ]
    }

    async fn play(&self, sid: &str, url: &str, form: Vec<(String, String)>) -> Result<CallTurn, String> {
        let (status, body) = self.post_signed(url, &form).await?;
        let turn = CallTurn::parse(status, &body);
        for line in &turn.said {
            println!("[twilio-sandbox] call {sid} says: {line}");
        }
        if let Some(relay) = &turn.relay_url {
            println!("[twilio-sandbox] call {sid} connects to the AI agent at {relay}");
        }
        self.calls_mut(|calls| {
            if let Some(c) = calls.iter_mut().find(|c| c.sid == sid) {
                c.said.extend(turn.said.iter().cloned());
                c.gather_action = turn.gather_action.clone();
                c.redirect = turn.redirect.clone();
                if turn.relay_url.is_some() {
                    c.relay_url = turn.relay_url.clone();
                    c.relay_action = turn.relay_action.clone();
                }
                c.status = "in-progress".into();
            }
        });
        Ok(turn)
    }

    /// The call is picked up (`human`, or a `machine_*` value with machine detection on): the
    /// signed answer webhook, as Twilio posts it.
    pub async fn answer_call(&self, sid: &str, answered_by: &str) -> Result<CallTurn, String> {
        let c = self.call(sid).ok_or_else(|| format!("no call {sid}"))?;
        let mut form = self.base_form(&c, "in-progress");
        if c.machine_detection.is_some() {
            form.push(("AnsweredBy".into(), answered_by.into()));
        }
        self.play(sid, &c.url, form).await
    }

    /// A key pressed in the menu, posted to its `<Gather>` action.
    pub async fn press(&self, sid: &str, digits: &str) -> Result<CallTurn, String> {
        let c = self.call(sid).ok_or_else(|| format!("no call {sid}"))?;
        let action = c.gather_action.clone().ok_or_else(|| format!("call {sid} is not waiting for a key"))?;
        println!("[twilio-sandbox] call {sid}: the person presses {digits}");
        let mut form = self.base_form(&c, "in-progress");
        form.push(("Digits".into(), digits.into()));
        form.push(("FinishedOnKey".into(), String::new()));
        self.play(sid, &action, form).await
    }

    /// No key pressed before the menu timed out: Twilio follows the `<Redirect>`.
    pub async fn no_input(&self, sid: &str) -> Result<CallTurn, String> {
        let c = self.call(sid).ok_or_else(|| format!("no call {sid}"))?;
        let redirect = c.redirect.clone().ok_or_else(|| format!("call {sid} has nothing to follow"))?;
        self.play(sid, &redirect, self.base_form(&c, "in-progress")).await
    }

    /// The call ends with `status` (`completed`, `no-answer`, `busy`, `failed`): its status
    /// callback, then, for a recorded call that was answered, the recording callback.
    /// Returns the status callback's and (if any) the recording callback's HTTP status.
    pub async fn end_call(&self, sid: &str, status: &str, duration: u32) -> Result<(u16, Option<u16>), String> {
        let c = self.call(sid).ok_or_else(|| format!("no call {sid}"))?;
        self.calls_mut(|calls| {
            if let Some(c) = calls.iter_mut().find(|c| c.sid == sid) {
                c.status = status.into();
                c.gather_action = None;
            }
        });
        println!("[twilio-sandbox] call {sid} ended: {status} after {duration}s");
        let mut code = 0;
        if let Some(url) = &c.status_callback {
            let mut form = self.base_form(&c, status);
            form.push(("CallDuration".into(), duration.to_string()));
            code = self.post_signed(url, &form).await?.0;
        }
        let mut recording = None;
        if let (true, Some(url), "completed") = (c.record, &c.recording_callback, status) {
            let rec = sid_for_recording(&self.calls(), sid);
            self.calls_mut(|calls| {
                if let Some(c) = calls.iter_mut().find(|c| c.sid == sid) {
                    c.recording_sid = Some(rec.clone());
                }
            });
            let form = vec![
                ("AccountSid".into(), self.account_sid()),
                ("CallSid".into(), sid.to_string()),
                ("RecordingChannels".into(), "1".into()),
                ("RecordingDuration".into(), duration.to_string()),
                ("RecordingSid".into(), rec.clone()),
                ("RecordingSource".into(), "OutboundAPI".into()),
                ("RecordingStatus".into(), "completed".into()),
                (
                    "RecordingUrl".into(),
                    format!("{}/2010-04-01/Accounts/{}/Recordings/{rec}", self.webhook_base(), self.account_sid()),
                ),
            ];
            println!("[twilio-sandbox] call {sid} recorded as {rec}");
            recording = Some(self.post_signed(url, &form).await?.0);
        }
        Ok((code, recording))
    }

    /// `GET …/Recordings/{RE}.wav`: the media, for an authorised caller.
    pub fn recording_media(
        &self,
        account: &str,
        headers: &axum::http::HeaderMap,
        rec: &str,
    ) -> Result<Vec<u8>, Answer> {
        if !self.authorised(account, headers) {
            return Err(Answer::error(401, 20003, "Authenticate"));
        }
        let mut found = false;
        self.calls_mut(|calls| {
            if let Some(c) = calls.iter_mut().find(|c| c.recording_sid.as_deref() == Some(rec)) {
                found = !c.recording_events.iter().any(|e| e == "deleted");
                if found {
                    c.recording_events.push("fetched".into());
                }
            }
        });
        if !found {
            return Err(Answer::error(404, 20404, "The requested resource was not found"));
        }
        Ok(wav_bytes())
    }

    /// `DELETE …/Recordings/{RE}.json`: 204, then 404 once gone.
    pub fn delete_recording(&self, account: &str, headers: &axum::http::HeaderMap, rec: &str) -> Answer {
        if !self.authorised(account, headers) {
            return Answer::error(401, 20003, "Authenticate");
        }
        if contract().check_form(RECORDING_PATH, "delete", &[]).iter().any(|p| p.contains("not in Twilio's API")) {
            return Answer::error(404, 20404, "not in the spec");
        }
        let mut deleted = false;
        self.calls_mut(|calls| {
            if let Some(c) = calls.iter_mut().find(|c| c.recording_sid.as_deref() == Some(rec))
                && !c.recording_events.iter().any(|e| e == "deleted")
            {
                c.recording_events.push("deleted".into());
                deleted = true;
            }
        });
        if deleted {
            println!("[twilio-sandbox] recording {rec} deleted at Twilio");
            Answer::now(204, Value::Null)
        } else {
            Answer::error(404, 20404, "The requested resource was not found")
        }
    }

    /// What `run-local` does with a placed call: ring, answer (a person), wait for a key from
    /// `scripts/call-in` for a while, then hang up; recorded calls post their recording.
    pub async fn auto_play(&self, sid: &str) {
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        match self.answer_call(sid, "human").await {
            Ok(turn) if turn.relay_url.is_some() => {
                self.converse(sid).await;
                return;
            }
            Ok(turn) if turn.gather_action.is_some() => {
                println!(
                    "[twilio-sandbox] call {sid} is waiting for a key: scripts/call-in 1 (text me the link) or scripts/call-in 9 (no more calls)"
                );
                for _ in 0..60 {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    if self.call(sid).is_none_or(|c| c.status != "in-progress") {
                        return;
                    }
                }
                let _ = self.no_input(sid).await;
            }
            Ok(_) => {}
            Err(e) => eprintln!("[twilio-sandbox] answering call {sid} failed: {e}"),
        }
        if self.call(sid).is_some_and(|c| c.status == "in-progress") {
            let _ = self.end_call(sid, "completed", 42).await;
        }
    }

    /// A key from `scripts/call-in`: for the newest call waiting for one; the call ends when
    /// the answer hangs up.
    pub async fn press_latest(&self, digits: &str) -> Result<CallTurn, String> {
        let sid = self
            .calls()
            .iter()
            .rev()
            .find(|c| c.gather_action.is_some())
            .map(|c| c.sid.clone())
            .ok_or("no call is waiting for a key")?;
        let turn = self.press(&sid, digits).await?;
        if turn.hangup {
            self.end_call(&sid, "completed", 30).await?;
        }
        Ok(turn)
    }
}

/// Recording SIDs derive from nothing personal; one per call.
fn sid_for_recording(calls: &[SandboxCall], call: &str) -> String {
    calls.iter().find(|c| c.sid == call).and_then(|c| c.recording_sid.clone()).unwrap_or_else(|| sid("RE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_twiml_our_calls_use() {
        let xml = "<?xml version=\"1.0\"?><Response><Say language=\"en-US\">Hi &amp; bye</Say><Gather input=\"dtmf\" numDigits=\"1\" action=\"https://x/g?m=a&amp;try=1\"><Say language=\"en-US\">Press 1</Say></Gather><Redirect method=\"POST\">https://x/g?m=a&amp;try=1</Redirect></Response>";
        let t = CallTurn::parse(200, xml);
        assert_eq!(t.said, vec!["Hi & bye", "Press 1"]);
        assert_eq!(t.gather_action.as_deref(), Some("https://x/g?m=a&try=1"));
        assert_eq!(t.redirect.as_deref(), Some("https://x/g?m=a&try=1"));
        assert!(!t.hangup);
        let relay = CallTurn::parse(
            200,
            "<Response><Connect><ConversationRelay url=\"wss://a\" language=\"en-US\"><Parameter name=\"merchant\" value=\"Snow\"/></ConversationRelay></Connect><Hangup/></Response>",
        );
        assert_eq!(relay.relay_url.as_deref(), Some("wss://a"));
        assert_eq!(relay.relay_parameters, vec![("merchant".to_string(), "Snow".to_string())]);
        assert!(relay.hangup);
        assert_eq!(&wav_bytes()[..4], b"RIFF");
    }
}
