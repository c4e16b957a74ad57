//! What an inbound text or a spoken prompt asks for. CTIA keywords match the whole message; beyond
//! them the FCC lets people revoke "by any reasonable means", so plain revocation phrases count
//! too. A message that only mentions a keyword in passing ("when does the sale stop?") does not.
//! What an opt-out covers follows its words, whether texted or spoken: "stop calling" → calls,
//! "stop texting" → texts, "stop", "stop all", "don't contact me" → both.
//!
//! The rules are data, one table for texts and speech (a rule says where it is heard): extend
//! the tables, and the table tests at the bottom, together.

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

/// The intent, the rule that matched (kept as evidence of why we acted), the language to answer
/// in and, for an opt-out, what it covers (`Both` for anything else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub intent: Intent,
    pub rule: Option<String>,
    pub lang: Lang,
    pub scope: Scope,
}

/// Where a rule is heard: in texts and speech alike, or in one of them only (a spoken "no more"
/// answers the agent's question; a texted "para" is just "for").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    Any,
    Sms,
    Voice,
}

use Heard::{Any, Sms, Voice};
use Lang::{En, Es};
use Scope::{Both, Calls, Texts};

/// Opt-outs said as the whole message (after dropping filler and repeats: "STOP STOP", "stop
/// it!!", "I said stop"), with what each covers.
const OPT_OUT_KEYWORDS: &[(&str, Scope, Lang, Heard)] = &[
    // CTIA / Twilio opt-out set.
    ("stop", Both, En, Any),
    ("stopall", Both, En, Any),
    ("stop all", Both, En, Any),
    ("unsubscribe", Both, En, Any),
    ("cancel", Both, En, Any),
    ("end", Both, En, Any),
    ("quit", Both, En, Any),
    ("revoke", Both, En, Any),
    ("optout", Both, En, Any),
    ("opt out", Both, En, Any),
    ("no more", Both, En, Sms),
    // Spanish.
    ("parar", Both, Es, Any),
    ("alto", Both, Es, Any),
    ("cancelar", Both, Es, Any),
    ("detener", Both, Es, Any),
    ("baja", Both, Es, Sms),
    ("basta", Both, Es, Any),
    ("para", Both, Es, Voice),
];

/// Whole-message keywords of texts other than opt-outs, with the language to answer in.
const KEYWORDS: &[(&str, Intent, Lang)] = &[
    // Opt-in.
    ("start", Intent::OptIn, En),
    ("yes", Intent::OptIn, En),
    ("unstop", Intent::OptIn, En),
    // Help.
    ("help", Intent::Help, En),
    ("info", Intent::Help, En),
    ("ayuda", Intent::Help, Es),
];

/// Words that do not change a keyword's meaning: "STOP please", "stop it!!", "STOP. Thanks".
const FILLER: &[&str] =
    &["please", "pls", "plz", "now", "thanks", "thank", "you", "thx", "ok", "okay", "it", "por", "favor"];

/// Words that do not change an opt-out keyword's meaning either ("No, stop!", "I said stop",
/// "just stop"), though they would change another keyword's ("yes please" opts in).
const OPT_OUT_FILLER: &[&str] = &["no", "i", "said", "just", "hey", "oh", "well", "um", "uh", "yes", "si", "ya"];

/// Revocations wherever they appear in a message or prompt, with what each covers. A phrase
/// inside a longer matching one counts as that one ("take me off your call list" is about
/// calls); several phrases cover what they cover together ("stop texting, don't call" → both).
/// Single words here have no other meaning in a reply to us ("how do I unsubscribe?").
const OPT_OUT_PHRASES: &[(&str, Scope, Lang, Heard)] = &[
    // Calls.
    ("stop calling", Calls, En, Any),
    ("quit calling", Calls, En, Any),
    ("stop phoning", Calls, En, Any),
    ("stop the calls", Calls, En, Any),
    ("stop these calls", Calls, En, Any),
    ("stop all calls", Calls, En, Any),
    ("no more calls", Calls, En, Any),
    ("no more phone calls", Calls, En, Any),
    ("dont call", Calls, En, Any),
    ("do not call", Calls, En, Any),
    ("never call", Calls, En, Any),
    ("take me off your call list", Calls, En, Any),
    // Texts.
    ("stop texting", Texts, En, Any),
    ("quit texting", Texts, En, Any),
    ("stop txting", Texts, En, Any),
    ("stop messaging", Texts, En, Any),
    ("quit messaging", Texts, En, Any),
    ("stop texts", Texts, En, Any),
    ("stop the texts", Texts, En, Any),
    ("stop the messages", Texts, En, Any),
    ("stop these texts", Texts, En, Any),
    ("stop these messages", Texts, En, Any),
    ("stop all texts", Texts, En, Any),
    ("stop all messages", Texts, En, Any),
    ("stop sending", Texts, En, Sms),
    ("no more texts", Texts, En, Any),
    ("no more text", Texts, En, Any),
    ("no more messages", Texts, En, Any),
    ("no more msgs", Texts, En, Any),
    ("dont text", Texts, En, Any),
    ("do not text", Texts, En, Any),
    ("dont message", Texts, En, Any),
    ("do not message", Texts, En, Any),
    ("dont send", Texts, En, Sms),
    ("do not send", Texts, En, Sms),
    ("never text me", Texts, En, Any),
    ("never message me", Texts, En, Any),
    // Both, or no channel named.
    ("calling and texting", Both, En, Any),
    ("texting and calling", Both, En, Any),
    ("calling or texting", Both, En, Any),
    ("texting or calling", Both, En, Any),
    ("calls and texts", Both, En, Any),
    ("texts and calls", Both, En, Any),
    ("calls or texts", Both, En, Any),
    ("texts or calls", Both, En, Any),
    ("call or text", Both, En, Any),
    ("text or call", Both, En, Any),
    ("call and text", Both, En, Any),
    ("text and call", Both, En, Any),
    ("stop contacting", Both, En, Any),
    ("dont contact", Both, En, Any),
    ("do not contact", Both, En, Any),
    ("take me off", Both, En, Any),
    ("remove me", Both, En, Any),
    ("remove my number", Both, En, Any),
    ("delete my number", Both, En, Any),
    ("lose my number", Both, En, Any),
    ("leave me alone", Both, En, Any),
    ("opt me out", Both, En, Any),
    ("opt out", Both, En, Any),
    ("optout", Both, En, Any),
    ("unsubscribe", Both, En, Any),
    ("stopall", Both, En, Any),
    ("revoke", Both, En, Any),
    ("wrong number", Both, En, Any),
    ("not my number", Both, En, Any),
    ("not interested stop", Both, En, Sms),
    ("stop all", Both, En, Voice),
    // Spanish.
    ("no me llame", Calls, Es, Any),
    ("no me llamen", Calls, Es, Any),
    ("deje de llamarme", Calls, Es, Any),
    ("dejen de llamarme", Calls, Es, Any),
    ("no mas llamadas", Calls, Es, Any),
    ("no me escriba", Texts, Es, Any),
    ("no mas mensajes", Texts, Es, Any),
    ("no me envies", Texts, Es, Sms),
    ("no me manden", Texts, Es, Sms),
    ("dejen de enviar", Texts, Es, Any),
    ("deja de enviar", Texts, Es, Any),
    ("dejen de escribir", Texts, Es, Any),
    ("no me contacte", Both, Es, Any),
    ("no me contacten", Both, Es, Any),
    ("numero equivocado", Both, Es, Any),
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

/// The message without `filler` and without a word repeated right after itself ("stop stop").
fn without(norm: &str, filler: &[&[&str]]) -> String {
    let mut words: Vec<&str> = norm.split(' ').filter(|w| !filler.iter().any(|f| f.contains(w))).collect();
    words.dedup();
    words.join(" ")
}

/// The forms a whole-message keyword is compared with.
struct Forms {
    norm: String,
    core: String,
    opt_out_core: String,
}

impl Forms {
    fn of(norm: String) -> Self {
        let core = without(&norm, &[FILLER]);
        let opt_out_core = without(&norm, &[FILLER, OPT_OUT_FILLER]);
        Self { norm, core, opt_out_core }
    }

    fn is(&self, keyword: &str) -> bool {
        keyword == self.norm || keyword == self.core
    }

    fn is_opt_out(&self, keyword: &str) -> bool {
        self.is(keyword) || keyword == self.opt_out_core
    }
}

/// What an opt-out found in a text or a prompt covers, and the rules that found it.
struct OptOut {
    scope: Scope,
    lang: Lang,
    keyword: bool,
    rules: Vec<&'static str>,
}

/// Both channels when the words name both, or neither.
fn widen(a: Scope, b: Scope) -> Scope {
    if a == b { a } else { Both }
}

/// The opt-out in `forms` among the rules heard here: a whole-message keyword first, else every
/// phrase in it, longest first (a phrase inside a longer match is part of that match).
fn find_opt_out(forms: &Forms, heard: impl Fn(Heard, Lang) -> bool) -> Option<OptOut> {
    if let Some((kw, scope, lang, _)) =
        OPT_OUT_KEYWORDS.iter().find(|(kw, _, lang, h)| heard(*h, *lang) && forms.is_opt_out(kw))
    {
        return Some(OptOut { scope: *scope, lang: *lang, keyword: true, rules: vec![kw] });
    }
    let mut phrases: Vec<&(&str, Scope, Lang, Heard)> =
        OPT_OUT_PHRASES.iter().filter(|(_, _, lang, h)| heard(*h, *lang)).collect();
    phrases.sort_by_key(|(p, ..)| std::cmp::Reverse(p.len()));
    let mut rest = format!(" {} ", forms.norm);
    let mut found: Option<OptOut> = None;
    for (p, scope, lang, _) in phrases {
        let needle = format!(" {p} ");
        if !rest.contains(&needle) {
            continue;
        }
        rest = rest.replace(&needle, " | ");
        match &mut found {
            None => found = Some(OptOut { scope: *scope, lang: *lang, keyword: false, rules: vec![p] }),
            Some(o) => {
                o.scope = widen(o.scope, *scope);
                o.rules.push(p);
            }
        }
    }
    found
}

/// What an inbound text asks for. Every rule for texts is heard, in either language.
pub fn classify(text: &str) -> Classified {
    let norm = normalise(text);
    let other = Classified { intent: Intent::Other, rule: None, lang: Lang::En, scope: Both };
    if norm.is_empty() {
        return other;
    }
    let forms = Forms::of(norm);
    if let Some(o) = find_opt_out(&forms, |h, _| h != Voice) {
        let kind = if o.keyword { "keyword" } else { "phrase" };
        let rule = format!("{kind}:{}", o.rules.join("+"));
        return Classified { intent: Intent::OptOut, rule: Some(rule), lang: o.lang, scope: o.scope };
    }
    if let Some((kw, intent, lang)) = KEYWORDS.iter().find(|(kw, _, _)| forms.is(kw)) {
        return Classified { intent: *intent, rule: Some(format!("keyword:{kw}")), lang: *lang, scope: Both };
    }
    other
}

/// What the voice agent hears as a revocation, and what it covers; `None` for anything else.
/// English forms are always heard; Spanish ones too when the call is in Spanish.
pub fn classify_spoken(text: &str, call_lang: Lang) -> Option<(Scope, String)> {
    let norm = normalise(text);
    if norm.is_empty() {
        return None;
    }
    let o = find_opt_out(&Forms::of(norm), |h, lang| h != Sms && (lang == En || call_lang == Es))?;
    let kind = if o.keyword { "spoken_keyword" } else { "spoken_phrase" };
    Some((o.scope, format!("{kind}:{}", o.rules.join("+"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_table() {
        use Intent::*;
        // What a text asks for and, for an opt-out, what it covers (`Both` for anything else).
        let cases: &[(&str, Intent, Scope)] = &[
            ("STOP", OptOut, Both),
            ("stop", OptOut, Both),
            ("  Stop.  ", OptOut, Both),
            ("STOP!!!", OptOut, Both),
            ("STOP STOP", OptOut, Both),
            ("stop stop stop", OptOut, Both),
            ("Stop please", OptOut, Both),
            ("please STOP", OptOut, Both),
            ("stop it", OptOut, Both),
            ("No, stop!", OptOut, Both),
            ("I said STOP", OptOut, Both),
            ("STOPALL", OptOut, Both),
            ("Stop all", OptOut, Both),
            ("Unsubscribe", OptOut, Both),
            ("unsubscribe me", OptOut, Both),
            ("cancel", OptOut, Both),
            ("END", OptOut, Both),
            ("quit", OptOut, Both),
            ("Revoke", OptOut, Both),
            ("OPTOUT", OptOut, Both),
            ("opt-out", OptOut, Both),
            ("Opt out", OptOut, Both),
            ("no more", OptOut, Both),
            ("No more!", OptOut, Both),
            ("remove me", OptOut, Both),
            ("Please remove me", OptOut, Both),
            ("remove me from this list", OptOut, Both),
            ("Take me off your list", OptOut, Both),
            ("do not contact me", OptOut, Both),
            ("don't contact me", OptOut, Both),
            ("leave me alone", OptOut, Both),
            ("how do I unsubscribe?", OptOut, Both),
            ("Wrong number", OptOut, Both),
            ("who is this? wrong number!", OptOut, Both),
            ("I want to opt out of these", OptOut, Both),
            ("stop calling and texting me", OptOut, Both),
            ("don't call or text me", OptOut, Both),
            ("stop texting me, and don't call either", OptOut, Both),
            ("please stop texting me", OptOut, Texts),
            ("stop texting me please", OptOut, Texts),
            ("Quit texting me", OptOut, Texts),
            ("stop sending me texts", OptOut, Texts),
            ("don't message me again", OptOut, Texts),
            ("Don’t text me", OptOut, Texts),
            ("no more texts", OptOut, Texts),
            ("No more messages please", OptOut, Texts),
            ("stop calling", OptOut, Calls),
            ("Please stop calling me", OptOut, Calls),
            ("don't call me again", OptOut, Calls),
            ("no more calls", OptOut, Calls),
            ("take me off your call list", OptOut, Calls),
            ("PARAR", OptOut, Both),
            ("alto", OptOut, Both),
            ("Cancelar", OptOut, Both),
            ("No más mensajes", OptOut, Texts),
            ("no me llame más", OptOut, Calls),
            ("START", OptIn, Both),
            ("yes", OptIn, Both),
            ("Yes!", OptIn, Both),
            ("yes please", OptIn, Both),
            ("UNSTOP", OptIn, Both),
            ("HELP", Help, Both),
            ("help?", Help, Both),
            ("Info", Help, Both),
            ("AYUDA", Help, Both),
            ("when does the sale stop?", Other, Both),
            ("I can't stop thinking about those boots", Other, Both),
            ("will the discount end soon?", Other, Both),
            ("cancel my order", Other, Both),
            ("how do I start a return", Other, Both),
            ("yes I still want it, is the code valid?", Other, Both),
            ("what info do you need", Other, Both),
            ("no more boots in my size?", Other, Both),
            ("para mi hermana", Other, Both),
            ("can you remove the hat from my cart", Other, Both),
            ("stopwatch", Other, Both),
            ("", Other, Both),
            ("   ", Other, Both),
            ("👍", Other, Both),
        ];
        for (text, intent, scope) in cases {
            let c = classify(text);
            assert_eq!((c.intent, c.scope), (*intent, *scope), "{text:?}");
        }
    }

    #[test]
    fn records_the_rule_that_matched() {
        assert_eq!(classify("Stop please").rule.as_deref(), Some("keyword:stop"));
        assert_eq!(classify("please stop texting me").rule.as_deref(), Some("phrase:stop texting"));
        assert_eq!(classify("stop texting me, don't call").rule.as_deref(), Some("phrase:stop texting+dont call"));
        assert_eq!(classify("hello").rule, None);
        assert_eq!(
            classify_spoken("stop calling me", Lang::En).map(|(_, r)| r).as_deref(),
            Some("spoken_phrase:stop calling")
        );
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
        let cases: &[(&str, Lang, Option<Scope>)] = &[
            ("Please stop calling me.", Lang::En, Some(Calls)),
            ("Don't call me again", Lang::En, Some(Calls)),
            ("no more calls", Lang::En, Some(Calls)),
            ("take me off your call list", Lang::En, Some(Calls)),
            ("Take me off your list", Lang::En, Some(Both)),
            ("remove my number", Lang::En, Some(Both)),
            ("Stop.", Lang::En, Some(Both)),
            ("No, stop!", Lang::En, Some(Both)),
            ("I said stop", Lang::En, Some(Both)),
            ("stop stop", Lang::En, Some(Both)),
            ("stop all", Lang::En, Some(Both)),
            ("please stop all of this", Lang::En, Some(Both)),
            ("don't contact me", Lang::En, Some(Both)),
            ("stop calling and texting me", Lang::En, Some(Both)),
            ("stop texting me", Lang::En, Some(Texts)),
            ("when does the sale stop?", Lang::En, None),
            ("what was in my cart", Lang::En, None),
            ("can you stop by the store", Lang::En, None),
            ("no more", Lang::En, None),
            ("don't send me the link", Lang::En, None),
            ("no me llame más", Lang::Es, Some(Calls)),
            ("Deje de llamarme por favor", Lang::Es, Some(Calls)),
            ("alto", Lang::Es, Some(Both)),
            ("para", Lang::Es, Some(Both)),
            ("no me llame", Lang::En, None),
            ("Stop calling", Lang::Es, Some(Calls)),
        ];
        for (text, lang, want) in cases {
            assert_eq!(classify_spoken(text, *lang).map(|(s, _)| s), *want, "{text:?}");
        }
    }

    /// One table: a rule heard in both texts and speech covers the same channels in each, and
    /// every rule is written as `normalise` leaves text (or it could never match).
    #[test]
    fn texts_and_speech_share_the_rules() {
        for (words, scope, lang, heard) in OPT_OUT_KEYWORDS.iter().chain(OPT_OUT_PHRASES) {
            assert_eq!(normalise(words), *words, "{words:?} is not normalised");
            let texted = classify(words);
            let spoken = classify_spoken(words, *lang).map(|(s, _)| s);
            match heard {
                Heard::Any => {
                    assert_eq!((texted.intent, texted.scope), (Intent::OptOut, *scope), "texted {words:?}");
                    assert_eq!(spoken, Some(*scope), "spoken {words:?}");
                }
                Heard::Sms => assert_eq!((texted.intent, texted.scope), (Intent::OptOut, *scope), "{words:?}"),
                Heard::Voice => assert_eq!(spoken, Some(*scope), "{words:?}"),
            }
        }
    }
}
