//! What an inbound SMS asks for. CTIA keywords match the whole message; beyond them the FCC
//! lets people revoke "by any reasonable means", so plain revocation phrases count too. A
//! message that only mentions a keyword in passing ("when does the sale stop?") does not.
//!
//! The rules are data: extend the tables, and the table test at the bottom, together.

use crate::domain::agent::Scope;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    OptOut,
    OptIn,
    Help,
    Other,
}

/// The language to answer in: a Spanish keyword gets a Spanish reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Lang {
    #[default]
    En,
    Es,
}

/// The intent and the rule that matched (kept as evidence of why we acted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub intent: Intent,
    pub rule: Option<String>,
    pub lang: Lang,
}

/// Whole-message keywords (after normalising), with their intent and the language to answer in.
const KEYWORDS: &[(&str, Intent, Lang)] = &[
    // CTIA / Twilio opt-out set.
    ("stop", Intent::OptOut, Lang::En),
    ("stopall", Intent::OptOut, Lang::En),
    ("unsubscribe", Intent::OptOut, Lang::En),
    ("cancel", Intent::OptOut, Lang::En),
    ("end", Intent::OptOut, Lang::En),
    ("quit", Intent::OptOut, Lang::En),
    ("revoke", Intent::OptOut, Lang::En),
    ("optout", Intent::OptOut, Lang::En),
    ("opt out", Intent::OptOut, Lang::En),
    // Spanish.
    ("parar", Intent::OptOut, Lang::Es),
    ("alto", Intent::OptOut, Lang::Es),
    ("cancelar", Intent::OptOut, Lang::Es),
    ("detener", Intent::OptOut, Lang::Es),
    ("baja", Intent::OptOut, Lang::Es),
    // Opt-in.
    ("start", Intent::OptIn, Lang::En),
    ("yes", Intent::OptIn, Lang::En),
    ("unstop", Intent::OptIn, Lang::En),
    // Help.
    ("help", Intent::Help, Lang::En),
    ("info", Intent::Help, Lang::En),
    ("ayuda", Intent::Help, Lang::Es),
];

/// Words that do not change a keyword's meaning: "STOP please", "stop it!!", "STOP. Thanks".
const FILLER: &[&str] =
    &["please", "pls", "plz", "now", "thanks", "thank", "you", "thx", "ok", "okay", "it", "por", "favor"];

/// Phrases that revoke consent wherever they appear in the message. Single words here have no
/// other meaning in a reply to us ("how do I unsubscribe?" asks to be unsubscribed).
const REVOCATION_PHRASES: &[(&str, Lang)] = &[
    ("unsubscribe", Lang::En),
    ("stopall", Lang::En),
    ("optout", Lang::En),
    ("opt out", Lang::En),
    ("revoke", Lang::En),
    ("wrong number", Lang::En),
    ("not my number", Lang::En),
    ("stop texting", Lang::En),
    ("stop messaging", Lang::En),
    ("stop sending", Lang::En),
    ("stop contacting", Lang::En),
    ("stop calling", Lang::En),
    ("stop the texts", Lang::En),
    ("stop the messages", Lang::En),
    ("stop these texts", Lang::En),
    ("stop these messages", Lang::En),
    ("stop all texts", Lang::En),
    ("stop all messages", Lang::En),
    ("stop txting", Lang::En),
    ("take me off", Lang::En),
    ("remove me from", Lang::En),
    ("remove my number", Lang::En),
    ("delete my number", Lang::En),
    ("unsubscribe me", Lang::En),
    ("opt me out", Lang::En),
    ("dont text", Lang::En),
    ("dont message", Lang::En),
    ("dont contact", Lang::En),
    ("dont send", Lang::En),
    ("do not text", Lang::En),
    ("do not message", Lang::En),
    ("do not contact", Lang::En),
    ("do not send", Lang::En),
    ("no more texts", Lang::En),
    ("no more messages", Lang::En),
    ("no more text", Lang::En),
    ("no more msgs", Lang::En),
    ("leave me alone", Lang::En),
    ("lose my number", Lang::En),
    ("never text me", Lang::En),
    ("never message me", Lang::En),
    ("not interested stop", Lang::En),
    // Spanish.
    ("no mas mensajes", Lang::Es),
    ("no me envies", Lang::Es),
    ("no me manden", Lang::Es),
    ("dejen de enviar", Lang::Es),
    ("deja de enviar", Lang::Es),
    ("dejen de escribir", Lang::Es),
];

/// Lower-case, accents folded, apostrophes dropped ("don't" → "dont"), other punctuation as
/// spaces, whitespace collapsed.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        let c = match c {
            'á' | 'à' | 'â' | 'ä' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'ó' | 'ò' | 'ô' | 'ö' => 'o',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'ñ' => 'n',
            '\'' | '’' | '‘' | '`' => continue,
            c if c.is_alphanumeric() => c,
            _ => ' ',
        };
        out.push(c);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn classify(text: &str) -> Classified {
    let norm = normalise(text);
    let other = Classified { intent: Intent::Other, rule: None, lang: Lang::En };
    if norm.is_empty() {
        return other;
    }
    let core: Vec<&str> = norm.split(' ').filter(|w| !FILLER.contains(w)).collect();
    let core = core.join(" ");
    if let Some((kw, intent, lang)) = KEYWORDS.iter().find(|(kw, _, _)| *kw == norm || *kw == core) {
        return Classified { intent: *intent, rule: Some(format!("keyword:{kw}")), lang: *lang };
    }
    let padded = format!(" {norm} ");
    if let Some((p, lang)) = REVOCATION_PHRASES.iter().find(|(p, _)| padded.contains(&format!(" {p} "))) {
        return Classified { intent: Intent::OptOut, rule: Some(format!("phrase:{p}")), lang: *lang };
    }
    other
}

/// Spoken revocations heard by the voice agent, with what each covers: "stop calling" → calls,
/// "stop texting" → texts, "stop", "stop all", "don't contact me" → both. Matched as phrases
/// anywhere in a prompt; whole-prompt keywords (below) only when the prompt is nothing else.
const SPOKEN_PHRASES: &[(&str, Scope, Lang)] = &[
    ("stop calling", Scope::Calls, Lang::En),
    ("quit calling", Scope::Calls, Lang::En),
    ("stop phoning", Scope::Calls, Lang::En),
    ("stop the calls", Scope::Calls, Lang::En),
    ("stop these calls", Scope::Calls, Lang::En),
    ("no more calls", Scope::Calls, Lang::En),
    ("dont call", Scope::Calls, Lang::En),
    ("do not call", Scope::Calls, Lang::En),
    ("never call", Scope::Calls, Lang::En),
    ("take me off your call list", Scope::Calls, Lang::En),
    ("stop texting", Scope::Texts, Lang::En),
    ("stop the texts", Scope::Texts, Lang::En),
    ("no more texts", Scope::Texts, Lang::En),
    ("dont text", Scope::Texts, Lang::En),
    ("do not text", Scope::Texts, Lang::En),
    ("stop messaging", Scope::Texts, Lang::En),
    ("stop contacting", Scope::Both, Lang::En),
    ("dont contact", Scope::Both, Lang::En),
    ("do not contact", Scope::Both, Lang::En),
    ("take me off", Scope::Both, Lang::En),
    ("remove my number", Scope::Both, Lang::En),
    ("remove me from", Scope::Both, Lang::En),
    ("delete my number", Scope::Both, Lang::En),
    ("lose my number", Scope::Both, Lang::En),
    ("leave me alone", Scope::Both, Lang::En),
    ("opt me out", Scope::Both, Lang::En),
    ("opt out", Scope::Both, Lang::En),
    ("unsubscribe", Scope::Both, Lang::En),
    ("wrong number", Scope::Both, Lang::En),
    ("stop all", Scope::Both, Lang::En),
    // Spanish.
    ("no me llame", Scope::Calls, Lang::Es),
    ("no me llamen", Scope::Calls, Lang::Es),
    ("deje de llamarme", Scope::Calls, Lang::Es),
    ("dejen de llamarme", Scope::Calls, Lang::Es),
    ("no mas llamadas", Scope::Calls, Lang::Es),
    ("no me escriba", Scope::Texts, Lang::Es),
    ("no mas mensajes", Scope::Texts, Lang::Es),
    ("no me contacte", Scope::Both, Lang::Es),
    ("no me contacten", Scope::Both, Lang::Es),
    ("numero equivocado", Scope::Both, Lang::Es),
];

/// Whole-prompt spoken keywords (after dropping filler such as "please", "no", "I said").
const SPOKEN_KEYWORDS: &[(&str, Scope, Lang)] = &[
    ("stop", Scope::Both, Lang::En),
    ("stop stop", Scope::Both, Lang::En),
    ("stop it", Scope::Both, Lang::En),
    ("stop all", Scope::Both, Lang::En),
    ("quit", Scope::Both, Lang::En),
    ("end", Scope::Both, Lang::En),
    ("cancel", Scope::Both, Lang::En),
    ("unsubscribe", Scope::Both, Lang::En),
    ("alto", Scope::Both, Lang::Es),
    ("parar", Scope::Both, Lang::Es),
    ("para", Scope::Both, Lang::Es),
    ("basta", Scope::Both, Lang::Es),
];

const SPOKEN_FILLER: &[&str] = &["no", "i", "said", "just", "hey", "oh", "well", "um", "uh", "yes", "si", "ya"];

/// What the voice agent hears as a revocation, and what it covers; `None` for anything else.
/// English forms are always heard; Spanish ones too when the call is in Spanish.
pub fn classify_spoken(text: &str, call_lang: Lang) -> Option<(Scope, String)> {
    let norm = normalise(text);
    if norm.is_empty() {
        return None;
    }
    let heard = |lang: Lang| lang == Lang::En || call_lang == Lang::Es;
    let core: Vec<&str> = norm.split(' ').filter(|w| !FILLER.contains(w) && !SPOKEN_FILLER.contains(w)).collect();
    let core = core.join(" ");
    if let Some((kw, scope, _)) =
        SPOKEN_KEYWORDS.iter().find(|(kw, _, lang)| heard(*lang) && (*kw == norm || *kw == core))
    {
        return Some((*scope, format!("spoken_keyword:{kw}")));
    }
    let padded = format!(" {norm} ");
    SPOKEN_PHRASES
        .iter()
        .find(|(p, _, lang)| heard(*lang) && padded.contains(&format!(" {p} ")))
        .map(|(p, scope, _)| (*scope, format!("spoken_phrase:{p}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_table() {
        use Intent::*;
        let cases: &[(&str, Intent)] = &[
            ("STOP", OptOut),
            ("stop", OptOut),
            ("  Stop.  ", OptOut),
            ("STOP!!!", OptOut),
            ("Stop please", OptOut),
            ("please STOP", OptOut),
            ("stop it", OptOut),
            ("STOPALL", OptOut),
            ("Unsubscribe", OptOut),
            ("cancel", OptOut),
            ("END", OptOut),
            ("quit", OptOut),
            ("Revoke", OptOut),
            ("OPTOUT", OptOut),
            ("opt-out", OptOut),
            ("Opt out", OptOut),
            ("please stop texting me", OptOut),
            ("Take me off your list", OptOut),
            ("don't message me again", OptOut),
            ("Don’t text me", OptOut),
            ("do not contact me", OptOut),
            ("no more texts", OptOut),
            ("No more messages please", OptOut),
            ("remove me from this list", OptOut),
            ("leave me alone", OptOut),
            ("how do I unsubscribe?", OptOut),
            ("Wrong number", OptOut),
            ("who is this? wrong number!", OptOut),
            ("I want to opt out of these", OptOut),
            ("PARAR", OptOut),
            ("alto", OptOut),
            ("Cancelar", OptOut),
            ("No más mensajes", OptOut),
            ("START", OptIn),
            ("yes", OptIn),
            ("Yes!", OptIn),
            ("UNSTOP", OptIn),
            ("HELP", Help),
            ("help?", Help),
            ("Info", Help),
            ("AYUDA", Help),
            ("when does the sale stop?", Other),
            ("I can't stop thinking about those boots", Other),
            ("will the discount end soon?", Other),
            ("cancel my order", Other),
            ("how do I start a return", Other),
            ("yes I still want it, is the code valid?", Other),
            ("what info do you need", Other),
            ("stopwatch", Other),
            ("", Other),
            ("   ", Other),
            ("👍", Other),
        ];
        for (text, want) in cases {
            assert_eq!(classify(text).intent, *want, "{text:?}");
        }
    }

    #[test]
    fn records_the_rule_that_matched() {
        assert_eq!(classify("Stop please").rule.as_deref(), Some("keyword:stop"));
        assert_eq!(classify("please stop texting me").rule.as_deref(), Some("phrase:stop texting"));
        assert_eq!(classify("hello").rule, None);
    }

    #[test]
    fn spanish_keywords_are_answered_in_spanish() {
        assert_eq!(classify("PARAR").lang, Lang::Es);
        assert_eq!(classify("Ayuda").lang, Lang::Es);
        assert_eq!(classify("no más mensajes por favor").lang, Lang::Es);
        assert_eq!(classify("STOP").lang, Lang::En);
        assert_eq!(classify("please stop texting me").lang, Lang::En);
    }

    #[test]
    fn normalises_case_accents_and_punctuation() {
        assert_eq!(normalise("  Don't   STOP—Más! "), "dont stop mas");
    }

    #[test]
    fn hears_spoken_opt_outs_and_what_they_cover() {
        use Scope::*;
        let cases: &[(&str, Lang, Option<Scope>)] = &[
            ("Please stop calling me.", Lang::En, Some(Calls)),
            ("Don't call me again", Lang::En, Some(Calls)),
            ("no more calls", Lang::En, Some(Calls)),
            ("Take me off your list", Lang::En, Some(Both)),
            ("remove my number", Lang::En, Some(Both)),
            ("Stop.", Lang::En, Some(Both)),
            ("No, stop!", Lang::En, Some(Both)),
            ("I said stop", Lang::En, Some(Both)),
            ("stop all", Lang::En, Some(Both)),
            ("don't contact me", Lang::En, Some(Both)),
            ("stop texting me", Lang::En, Some(Texts)),
            ("when does the sale stop?", Lang::En, None),
            ("what was in my cart", Lang::En, None),
            ("can you stop by the store", Lang::En, None),
            ("no me llame más", Lang::Es, Some(Calls)),
            ("Deje de llamarme por favor", Lang::Es, Some(Calls)),
            ("alto", Lang::Es, Some(Both)),
            ("no me llame", Lang::En, None),
            ("Stop calling", Lang::Es, Some(Calls)),
        ];
        for (text, lang, want) in cases {
            assert_eq!(classify_spoken(text, *lang).map(|(s, _)| s), *want, "{text:?}");
        }
    }
}
