//! What an inbound SMS asks for. CTIA keywords match the whole message; beyond them the FCC
//! lets people revoke "by any reasonable means", so plain revocation phrases count too. A
//! message that only mentions a keyword in passing ("when does the sale stop?") does not.
//!
//! The rules are data: extend the tables, and the table test at the bottom, together.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    OptOut,
    OptIn,
    Help,
    Other,
}

/// The language to answer in: a Spanish keyword gets a Spanish reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
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

/// Keywords and phrases of the tables below that are Spanish.
const SPANISH: &[&str] = &[
    "parar",
    "alto",
    "cancelar",
    "detener",
    "baja",
    "ayuda",
    "no mas mensajes",
    "no me envies",
    "no me manden",
    "dejen de enviar",
    "deja de enviar",
    "dejen de escribir",
];

fn lang_of(term: &str) -> Lang {
    if SPANISH.contains(&term) { Lang::Es } else { Lang::En }
}

/// Whole-message keywords (after normalising), with their intent.
const KEYWORDS: &[(&str, Intent)] = &[
    // CTIA / Twilio opt-out set.
    ("stop", Intent::OptOut),
    ("stopall", Intent::OptOut),
    ("unsubscribe", Intent::OptOut),
    ("cancel", Intent::OptOut),
    ("end", Intent::OptOut),
    ("quit", Intent::OptOut),
    ("revoke", Intent::OptOut),
    ("optout", Intent::OptOut),
    ("opt out", Intent::OptOut),
    // Spanish.
    ("parar", Intent::OptOut),
    ("alto", Intent::OptOut),
    ("cancelar", Intent::OptOut),
    ("detener", Intent::OptOut),
    ("baja", Intent::OptOut),
    // Opt-in.
    ("start", Intent::OptIn),
    ("yes", Intent::OptIn),
    ("unstop", Intent::OptIn),
    // Help.
    ("help", Intent::Help),
    ("info", Intent::Help),
    ("ayuda", Intent::Help),
];

/// Words that do not change a keyword's meaning: "STOP please", "stop it!!", "STOP. Thanks".
const FILLER: &[&str] =
    &["please", "pls", "plz", "now", "thanks", "thank", "you", "thx", "ok", "okay", "it", "por", "favor"];

/// Phrases that revoke consent wherever they appear in the message. Single words here have no
/// other meaning in a reply to us ("how do I unsubscribe?" asks to be unsubscribed).
const REVOCATION_PHRASES: &[&str] = &[
    "unsubscribe",
    "stopall",
    "optout",
    "opt out",
    "revoke",
    "wrong number",
    "not my number",
    "stop texting",
    "stop messaging",
    "stop sending",
    "stop contacting",
    "stop calling",
    "stop the texts",
    "stop the messages",
    "stop these texts",
    "stop these messages",
    "stop all texts",
    "stop all messages",
    "stop txting",
    "take me off",
    "remove me from",
    "remove my number",
    "delete my number",
    "unsubscribe me",
    "opt me out",
    "dont text",
    "dont message",
    "dont contact",
    "dont send",
    "do not text",
    "do not message",
    "do not contact",
    "do not send",
    "no more texts",
    "no more messages",
    "no more text",
    "no more msgs",
    "leave me alone",
    "lose my number",
    "never text me",
    "never message me",
    "not interested stop",
    // Spanish.
    "no mas mensajes",
    "no me envies",
    "no me manden",
    "dejen de enviar",
    "deja de enviar",
    "dejen de escribir",
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
    if let Some((kw, intent)) = KEYWORDS.iter().find(|(kw, _)| *kw == norm || *kw == core) {
        return Classified { intent: *intent, rule: Some(format!("keyword:{kw}")), lang: lang_of(kw) };
    }
    let padded = format!(" {norm} ");
    if let Some(p) = REVOCATION_PHRASES.iter().find(|p| padded.contains(&format!(" {p} "))) {
        return Classified { intent: Intent::OptOut, rule: Some(format!("phrase:{p}")), lang: lang_of(p) };
    }
    other
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
        // Every Spanish term is in a table, so the list cannot drift from the rules.
        for term in SPANISH {
            let in_tables = KEYWORDS.iter().any(|(k, _)| k == term) || REVOCATION_PHRASES.contains(term);
            assert!(in_tables, "{term}");
        }
    }

    #[test]
    fn normalises_case_accents_and_punctuation() {
        assert_eq!(normalise("  Don't   STOP—Más! "), "dont stop mas");
    }
}
