//! TwiML, the XML Twilio follows on a call or after an inbound message: built here, escaped once.

/// One TwiML verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// `<Say language=…>` text read by Twilio's text-to-speech.
    Say {
        text: String,
        language: &'static str,
    },
    /// `<Gather numDigits="1">` around prompts; the digit is posted to `action`.
    Gather {
        action: String,
        timeout_seconds: u32,
        prompts: Vec<Verb>,
    },
    /// `<Connect action><ConversationRelay>` to our voice agent's WebSocket: Twilio speaks
    /// `welcome_greeting` first, then relays speech and keys; `action` hears how it ended.
    Relay {
        action: String,
        url: String,
        welcome_greeting: String,
        language: &'static str,
        parameters: Vec<(String, String)>,
    },
    /// `<Gather input="dtmf speech">` around one prompt: a key or words are posted to `action`.
    GatherSpeech {
        action: String,
        prompt: String,
    },
    /// `<Dial>` a number (a transfer to the merchant's support line).
    Dial {
        number: String,
    },
    Redirect {
        url: String,
    },
    Hangup,
    /// `<Message>`: the reply to an inbound SMS.
    Message(String),
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if c.is_control() && !matches!(c, '\n' | '\t') => {}
            c => out.push(c),
        }
    }
    out
}

fn write(verb: &Verb, out: &mut String) {
    match verb {
        Verb::Say { text, language } => {
            out.push_str(&format!("<Say language=\"{language}\">{}</Say>", escape(text)));
        }
        Verb::Gather { action, timeout_seconds, prompts } => {
            out.push_str(&format!(
                "<Gather input=\"dtmf\" numDigits=\"1\" timeout=\"{timeout_seconds}\" method=\"POST\" action=\"{}\">",
                escape(action)
            ));
            for p in prompts {
                write(p, out);
            }
            out.push_str("</Gather>");
        }
        Verb::Relay { action, url, welcome_greeting, language, parameters } => {
            out.push_str(&format!(
                "<Connect action=\"{}\"><ConversationRelay url=\"{}\" welcomeGreeting=\"{}\" language=\"{language}\" interruptible=\"any\" welcomeGreetingInterruptible=\"dtmf\" dtmfDetection=\"true\">",
                escape(action),
                escape(url),
                escape(welcome_greeting)
            ));
            for (name, value) in parameters {
                out.push_str(&format!("<Parameter name=\"{}\" value=\"{}\"/>", escape(name), escape(value)));
            }
            out.push_str("</ConversationRelay></Connect>");
        }
        Verb::Redirect { url } => out.push_str(&format!("<Redirect method=\"POST\">{}</Redirect>", escape(url))),
        Verb::GatherSpeech { action, prompt } => {
            out.push_str(&format!(
                "<Gather input=\"dtmf speech\" numDigits=\"1\" timeout=\"6\" speechTimeout=\"auto\" method=\"POST\" action=\"{}\"><Say language=\"en-US\">{}</Say></Gather>",
                escape(action),
                escape(prompt)
            ));
        }
        Verb::Dial { number } => out.push_str(&format!("<Dial>{}</Dial>", escape(number))),
        Verb::Hangup => out.push_str("<Hangup/>"),
        Verb::Message(text) => out.push_str(&format!("<Message>{}</Message>", escape(text))),
    }
}

/// A whole `<Response>` document; no verbs is an empty response (do nothing, send nothing).
pub fn response(verbs: &[Verb]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    if verbs.is_empty() {
        out.push_str("<Response/>");
        return out;
    }
    out.push_str("<Response>");
    for v in verbs {
        write(v, &mut out);
    }
    out.push_str("</Response>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_text_and_attributes() {
        let doc = response(&[
            Verb::Say { text: "A & B <shop>".into(), language: "en-US" },
            Verb::Gather {
                action: "https://x.test/g?a=1&b=2".into(),
                timeout_seconds: 6,
                prompts: vec![Verb::Say { text: "Press 1".into(), language: "en-US" }],
            },
            Verb::Hangup,
        ]);
        assert!(doc.contains("<Say language=\"en-US\">A &amp; B &lt;shop&gt;</Say>"), "{doc}");
        assert!(doc.contains("action=\"https://x.test/g?a=1&amp;b=2\""), "{doc}");
        assert!(doc.ends_with("<Hangup/></Response>"), "{doc}");
        assert!(response(&[]).ends_with("<Response/>"));
        let relay = response(&[Verb::Relay {
            action: "https://x.test/twilio/voice/relay-ended?m=a".into(),
            welcome_greeting: "Hello & welcome".into(),
            url: "wss://agent.test/ws".into(),
            language: "es-US",
            parameters: vec![("first_name".into(), "Zoë \"Z\"".into())],
        }]);
        assert!(relay.contains("<Parameter name=\"first_name\" value=\"Zoë &quot;Z&quot;\"/>"), "{relay}");
        assert!(relay.contains("<Connect action=\"https://x.test/twilio/voice/relay-ended?m=a\">"), "{relay}");
        assert!(
            relay.contains("welcomeGreeting=\"Hello &amp; welcome\"") && relay.contains("dtmfDetection=\"true\""),
            "{relay}"
        );
    }
}
