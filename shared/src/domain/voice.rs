//! AI voice calls: what the call says and offers, the call log, and where a recording is kept.
//! Pure rules; the voice use case (`app::voice`) reads and writes around them.

use crate::domain::cart::CartItem;
use crate::domain::ids::{CartToken, MerchantId};
use crate::domain::keywords::Lang;
use crate::domain::merchant::Channel;
use crate::domain::message::{Summary, item_summary, usable_first_name};
use crate::domain::phone::Phone;
use crate::domain::twiml::Verb;
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Seconds Twilio lets the phone ring before `no-answer`.
pub const RING_TIMEOUT_SECONDS: u32 = 25;
/// Seconds the menu waits for a key.
pub const GATHER_TIMEOUT_SECONDS: u32 = 6;
/// A menu is offered this many times before the call says goodbye.
pub const MENU_TRIES: u8 = 2;
/// The side step under which the link texted after key 1 is claimed: flow step `s` texts its
/// link as step `LINK_STEP_BASE + s`, once, whatever the number of presses.
pub const LINK_STEP_BASE: u8 = 100;

/// Which outreach a call belongs to. It travels in Twilio's callback URLs, so it carries only
/// our own identifiers, never personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRef {
    pub merchant_id: MerchantId,
    pub cart_token: CartToken,
    pub step: u8,
}

impl CallRef {
    pub fn query(&self) -> String {
        serde_urlencoded::to_string([
            ("m", self.merchant_id.as_str()),
            ("c", self.cart_token.as_str()),
            ("s", &self.step.to_string()),
        ])
        .unwrap_or_default()
    }

    /// From a callback URL's query; `None` when any part is missing or malformed.
    pub fn from_query(query: &str) -> Option<Self> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        Some(Self {
            merchant_id: MerchantId::parse(get("m")?).ok()?,
            cart_token: CartToken::parse(get("c")?).ok()?,
            step: get("s")?.parse().ok()?,
        })
    }
}

/// `AnsweredBy` says a machine (or a fax) took the call.
pub fn is_machine(answered_by: Option<&str>) -> bool {
    answered_by.is_some_and(|a| a.starts_with("machine") || a == "fax")
}

/// Where a call sits in its life, so a late `ringing` never replaces `completed`.
pub fn call_status_rank(status: &str) -> u8 {
    match status {
        "queued" => 1,
        "initiated" => 2,
        "ringing" => 3,
        "in-progress" => 4,
        "completed" | "busy" | "no-answer" | "failed" | "canceled" => 5,
        _ => 0,
    }
}

/// The call never reached the person: it does not count against their daily limit.
pub fn unanswered(status: &str) -> bool {
    matches!(status, "no-answer" | "busy" | "failed" | "canceled")
}

/// A key pressed in the menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// 1: text me the link (offered only with SMS consent).
    TextLink,
    /// 9: no more calls from this merchant.
    StopCalls,
    Other,
}

impl Choice {
    pub fn from_digits(digits: Option<&str>) -> Self {
        match digits.map(str::trim) {
            Some("1") => Self::TextLink,
            Some("9") => Self::StopCalls,
            _ => Self::Other,
        }
    }
}

/// What a call says, in the cart's language where the merchant has that script.
#[derive(Debug, Clone)]
pub struct CallScript<'a> {
    pub merchant_name: &'a str,
    pub first_name: Option<&'a str>,
    pub items: &'a [CartItem],
    pub recorded: bool,
    pub lang: Lang,
    /// Key 1 is offered only to someone we may text.
    pub offer_link: bool,
    pub discount_code: Option<&'a str>,
    /// The merchant's callback number, digit by digit.
    pub callback: Option<String>,
    /// The number that answers with the automated opt-out line (`voice_from`), digit by digit.
    pub opt_out_line: Option<String>,
}

impl CallScript<'_> {
    /// The language for a cart's locale: Spanish only where the merchant approved the script.
    pub fn lang_for(locale: Option<&str>, merchant_has_spanish: bool) -> Lang {
        let spanish = locale.is_some_and(|l| l.to_ascii_lowercase().starts_with("es"));
        if spanish && merchant_has_spanish { Lang::Es } else { Lang::En }
    }

    pub fn language(&self) -> &'static str {
        match self.lang {
            Lang::En => "en-US",
            Lang::Es => "es-US",
        }
    }

    fn say(&self, text: String) -> Verb {
        Verb::Say { text, language: self.language() }
    }

    /// First words of every answered call (TCPA, FCC 24-17): who calls, on whose behalf, that
    /// the voice is automated, and that the call is recorded when it is.
    pub fn disclosure(&self) -> String {
        let m = self.merchant_name;
        let name = self.first_name.and_then(usable_first_name);
        match self.lang {
            Lang::En => {
                let hello = name.map_or("Hello".to_string(), |n| format!("Hello {n}"));
                let rec = if self.recorded { " This call is recorded." } else { "" };
                format!(
                    "{hello}, this is an automated assistant calling on behalf of {m} about the cart you left on their store.{rec}"
                )
            }
            Lang::Es => {
                let hello = name.map_or("Hola".to_string(), |n| format!("Hola {n}"));
                let rec = if self.recorded { " Esta llamada se graba." } else { "" };
                format!(
                    "{hello}, le habla un asistente automatizado en nombre de {m} sobre el carrito que dejó en su tienda.{rec}"
                )
            }
        }
    }

    fn menu(&self) -> String {
        let m = self.merchant_name;
        let items = item_summary(self.items, Summary::Full);
        let mut text = String::new();
        match self.lang {
            Lang::En => {
                if let Some(items) = items {
                    text.push_str(&format!("You left {items} in your cart. "));
                }
                if let Some(code) = self.discount_code {
                    text.push_str(&format!("Use code {} at checkout for a discount. ", spell(code)));
                }
                if self.offer_link {
                    text.push_str("To get a link to your cart by text message, press 1. ");
                }
                text.push_str(&format!("To stop calls from {m}, press 9."));
            }
            Lang::Es => {
                if let Some(items) = items {
                    text.push_str(&format!("Dejó {items} en su carrito. "));
                }
                if let Some(code) = self.discount_code {
                    text.push_str(&format!("Use el código {} al pagar para un descuento. ", spell(code)));
                }
                if self.offer_link {
                    text.push_str("Para recibir el enlace a su carrito por mensaje de texto, marque 1. ");
                }
                text.push_str(&format!("Para no recibir más llamadas de {m}, marque 9."));
            }
        }
        text
    }

    /// The keypad answer of a call a person picked up: the disclosure, then the key menu.
    pub fn answer(&self, gather_url: &str) -> Vec<Verb> {
        let mut verbs = vec![self.say(self.disclosure())];
        verbs.extend(self.menu_verbs(gather_url, 1));
        verbs
    }

    /// The menu, then (no key pressed) back to the gather handler for the next try.
    pub fn menu_verbs(&self, gather_url: &str, attempt: u8) -> Vec<Verb> {
        let action = format!("{gather_url}&try={attempt}");
        vec![
            Verb::Gather {
                action: action.clone(),
                timeout_seconds: GATHER_TIMEOUT_SECONDS,
                prompts: vec![self.say(self.menu())],
            },
            Verb::Redirect { url: action },
        ]
    }

    /// A machine answered and the merchant leaves voicemail: who called, the callback number,
    /// and a number whose automated line takes an opt-out (47 CFR 64.1200(b)(2)).
    pub fn voicemail(&self) -> Vec<Verb> {
        let m = self.merchant_name;
        let mut text = match self.lang {
            Lang::En => format!(
                "Hello, this is an automated assistant calling on behalf of {m} about the cart you left on their store. Your cart is saved for you."
            ),
            Lang::Es => format!(
                "Hola, le habla un asistente automatizado en nombre de {m} sobre el carrito que dejó en su tienda. Su carrito está guardado."
            ),
        };
        if let Some(cb) = &self.callback {
            text.push_str(&match self.lang {
                Lang::En => format!(" You can reach {m} at {cb}."),
                Lang::Es => format!(" Puede comunicarse con {m} al {cb}."),
            });
        }
        text.push_str(&match (self.lang, &self.opt_out_line) {
            (Lang::En, Some(line)) => format!(
                " To stop these calls, call {line} and say stop or press 9, or reply STOP to any text from {m}. Goodbye."
            ),
            (Lang::En, None) => format!(" To stop these calls, reply STOP to any text from {m}. Goodbye."),
            (Lang::Es, Some(line)) => format!(
                " Para no recibir más llamadas, llame al {line} y diga alto o marque 9, o responda PARAR a cualquier mensaje de {m}. Adiós."
            ),
            (Lang::Es, None) => format!(" Para no recibir más llamadas, responda PARAR a cualquier mensaje de {m}. Adiós."),
        });
        vec![self.say(text), Verb::Hangup]
    }

    /// The automated opt-out line (a call to `voice_from`): say stop or press 9.
    pub fn opt_out_line_menu(merchant_name: &str, action: &str) -> Vec<Verb> {
        let text = format!(
            "You have reached the automated line of {merchant_name}. To stop calls from {merchant_name} to this number, say stop or press 9."
        );
        vec![
            Verb::GatherSpeech { action: action.to_string(), prompt: text },
            Verb::Say { text: "Goodbye.".into(), language: "en-US" },
            Verb::Hangup,
        ]
    }

    pub fn stopped(&self) -> Vec<Verb> {
        let m = self.merchant_name;
        let text = match self.lang {
            Lang::En => format!("You will not receive more calls from {m}. Goodbye."),
            Lang::Es => format!("No recibirá más llamadas de {m}. Adiós."),
        };
        vec![self.say(text), Verb::Hangup]
    }

    /// Key 9 whose write failed and waits in its queued copy: received, not yet in force.
    pub fn stop_received(&self) -> Vec<Verb> {
        vec![self.say(crate::domain::agent::opt_out_received(self.merchant_name, self.lang, true)), Verb::Hangup]
    }

    pub fn link_texted(&self, sent_now: bool) -> Vec<Verb> {
        let text = match (self.lang, sent_now) {
            (Lang::En, true) => "We have texted you the link to your cart. Thank you, goodbye.",
            (Lang::En, false) => "We have already texted you the link to your cart. Thank you, goodbye.",
            (Lang::Es, true) => "Le enviamos el enlace a su carrito por mensaje de texto. Gracias, adiós.",
            (Lang::Es, false) => "Ya le enviamos el enlace a su carrito por mensaje de texto. Gracias, adiós.",
        };
        vec![self.say(text.to_string()), Verb::Hangup]
    }

    pub fn link_unavailable(&self) -> Vec<Verb> {
        let text = match self.lang {
            Lang::En => "Sorry, we cannot text you the link right now. Your cart is saved for you. Goodbye.",
            Lang::Es => "Lo sentimos, no podemos enviarle el enlace ahora. Su carrito está guardado. Adiós.",
        };
        vec![self.say(text.to_string()), Verb::Hangup]
    }

    pub fn goodbye(&self) -> Vec<Verb> {
        let text = match self.lang {
            Lang::En => "Thank you. Goodbye.",
            Lang::Es => "Gracias. Adiós.",
        };
        vec![self.say(text.to_string()), Verb::Hangup]
    }
}

/// A code read letter by letter ("C O M E B A C K 1 0"), so text-to-speech does not guess.
fn spell(code: &str) -> String {
    code.chars().map(String::from).collect::<Vec<_>>().join(" ")
}

/// The recording of a call, from Twilio's callback until our copy is in S3 and Twilio's gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecording {
    pub recording_sid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u32>,
    /// The S3 key, once the copy is stored (absent, never null, until then: conditions test it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_key: Option<String>,
    /// Twilio's copy was deleted (after ours was stored).
    #[serde(default)]
    pub twilio_deleted: bool,
    /// When retention purges it (merchant's `retention_days.recordings`).
    pub purge_at: DateTime<Utc>,
}

/// One outbound call in the customer's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLogEntry {
    pub merchant_id: MerchantId,
    pub phone: Phone,
    pub call_sid: String,
    pub cart_token: CartToken,
    pub step: u8,
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// When retention purges it (merchant's `retention_days.sms_logs`, which covers call logs).
    pub purge_at: DateTime<Utc>,
    /// Every status Twilio reported, with when we first heard it.
    #[serde(default)]
    pub status_history: BTreeMap<String, DateTime<Utc>>,
    #[serde(default)]
    pub duration_seconds: Option<u32>,
    #[serde(default)]
    pub answered_by: Option<String>,
    #[serde(default)]
    pub error_code: Option<i64>,
    /// Absent (not null) until a recording exists: its first note is conditioned on that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<CallRecording>,
    /// How an agent call ended (from ConversationRelay's `action` callback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<crate::domain::agent::Outcome>,
    /// One line on what happened (turns, tools, outcome), never what was said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// A queued copy of a recording to S3. Only identifiers travel: the copy finds the call by SID
/// (and notes the recording on it, should the callback not have managed to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingCopy {
    pub merchant_id: MerchantId,
    pub call_sid: String,
    pub recording_sid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u32>,
}

/// An opt-out heard on a call (key 9, or words the voice agent heard): made durable on the queue
/// before it is applied, since Twilio resends neither a `<Gather>` action nor a WebSocket
/// message. `phone` is the number that was called (Twilio's signed `To`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyOptOut {
    pub merchant_id: MerchantId,
    pub phone: Phone,
    pub call_sid: String,
    pub at: DateTime<Utc>,
    /// What it covers: calls for key 9 and "stop calling", texts too for a spoken "stop".
    #[serde(default = "calls_only")]
    pub channels: Vec<Channel>,
    /// Words the agent heard (absent: key 9), with the rule that matched them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spoken: Option<SpokenOptOut>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpokenOptOut {
    pub rule: String,
    pub words: Option<String>,
}

fn calls_only() -> Vec<Channel> {
    vec![Channel::Voice]
}

impl KeyOptOut {
    /// Key 9: no more calls.
    pub fn key_9(merchant_id: MerchantId, phone: Phone, call_sid: String, at: DateTime<Utc>) -> Self {
        Self { merchant_id, phone, call_sid, at, channels: calls_only(), spoken: None }
    }

    /// The consent event it records on `channel`, one per channel it covers.
    pub fn event(&self, channel: Channel) -> crate::domain::consent::ConsentEvent {
        use crate::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, Evidence};
        let (source, keyword, words, collected_from) = match &self.spoken {
            Some(s) => (ConsentSource::Spoken, s.rule.clone(), s.words.clone(), Some("voice_agent".to_string())),
            None => (ConsentSource::KeyPress, "key:9".to_string(), None, None),
        };
        ConsentEvent {
            channel,
            action: ConsentAction::OptOut,
            source,
            occurred_at: self.at,
            recorded_at: self.at,
            evidence: Evidence {
                message_sid: Some(self.call_sid.clone()),
                keyword: Some(keyword),
                words,
                collected_from,
                ..Default::default()
            },
        }
    }
}

/// `recordings/{merchant}/{yyyy}/{mm}/{call_sid}.wav`, dated by the call.
pub fn recording_key(merchant: &MerchantId, call_at: DateTime<Utc>, call_sid: &str) -> String {
    format!("recordings/{merchant}/{:04}/{:02}/{call_sid}.wav", call_at.year(), call_at.month())
}

/// Twilio SIDs are two letters and 32 hex digits; anything else never reaches a URL we build.
pub fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::twiml::response;

    fn script(lang: Lang, recorded: bool, offer_link: bool) -> CallScript<'static> {
        static ITEMS: std::sync::OnceLock<Vec<CartItem>> = std::sync::OnceLock::new();
        let items = ITEMS.get_or_init(|| vec![CartItem::new("Wax Puck", 2).unwrap()]);
        CallScript {
            merchant_name: "Snowdevil",
            first_name: Some("Ann"),
            items,
            recorded,
            lang,
            offer_link,
            discount_code: Some("COMEBACK10"),
            callback: Some("1 8 0 0 5 5 5 0 1 0 0".into()),
            opt_out_line: Some("1 5 0 0 5 5 5 0 0 0 6".into()),
        }
    }

    #[test]
    fn the_call_names_the_merchant_says_it_is_automated_and_recorded() {
        let doc = response(&script(Lang::En, true, true).answer("https://x.test/twilio/voice/gather?m=a"));
        assert!(doc.contains("automated assistant calling on behalf of Snowdevil"), "{doc}");
        assert!(doc.contains("This call is recorded."), "{doc}");
        assert!(doc.contains("press 1") && doc.contains("press 9") && doc.contains("Wax Puck (2)"), "{doc}");
        assert!(doc.contains("action=\"https://x.test/twilio/voice/gather?m=a&amp;try=1\""), "{doc}");
        let unrecorded = response(&script(Lang::En, false, false).answer("https://x.test/g?m=a"));
        assert!(!unrecorded.contains("recorded") && !unrecorded.contains("press 1"), "{unrecorded}");
        let es = response(&script(Lang::Es, true, true).answer("https://x.test/g?m=a"));
        assert!(es.contains("es-US") && es.contains("en nombre de Snowdevil") && es.contains("se graba"), "{es}");
    }

    #[test]
    fn voicemail_gives_the_callback_number_and_the_opt_out_line() {
        let doc = response(&script(Lang::En, false, true).voicemail());
        assert!(doc.contains("on behalf of Snowdevil") && doc.contains("reach Snowdevil at 1 8 0 0"), "{doc}");
        assert!(doc.contains("call 1 5 0 0 5 5 5 0 0 0 6 and say stop or press 9"), "{doc}");
    }

    #[test]
    fn keys_refs_and_statuses() {
        assert_eq!(Choice::from_digits(Some("9")), Choice::StopCalls);
        assert_eq!(Choice::from_digits(Some("1")), Choice::TextLink);
        assert_eq!(Choice::from_digits(Some("5")), Choice::Other);
        assert_eq!(Choice::from_digits(None), Choice::Other);
        let r = CallRef {
            merchant_id: MerchantId::parse("snowdevil").unwrap(),
            cart_token: CartToken::parse("tok1").unwrap(),
            step: 1,
        };
        assert_eq!(CallRef::from_query(&r.query()), Some(r.clone()));
        assert_eq!(CallRef::from_query("m=snowdevil&c=tok1"), None);
        assert!(call_status_rank("completed") > call_status_rank("ringing"));
        assert!(unanswered("busy") && !unanswered("completed"));
        assert!(is_machine(Some("machine_end_beep")) && !is_machine(Some("human")) && !is_machine(None));
        let at = "2026-06-03T10:00:00Z".parse().unwrap();
        assert_eq!(recording_key(&r.merchant_id, at, "CA0123"), "recordings/snowdevil/2026/06/CA0123.wav");
        assert_eq!(CallScript::lang_for(Some("es-MX"), true), Lang::Es);
        assert_eq!(CallScript::lang_for(Some("es-MX"), false), Lang::En);
    }
}
