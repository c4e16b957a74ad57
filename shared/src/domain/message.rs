//! SMS bodies. The first message to a phone names the merchant and how to opt out (CTIA).

use crate::domain::cart::CartItem;
use crate::domain::keywords::Lang;

/// Twilio's hard limit for one message body.
pub const MAX_BODY_CHARS: usize = 1600;

/// A recovery SMS is trimmed to fit this many segments, since each one is billed.
pub const MAX_RECOVERY_SEGMENTS: usize = 2;

/// Mandatory on every recovery SMS (CTIA), so it is never trimmed.
pub const STOP_LINE: &str = " Reply STOP to opt out.";

/// The merchant name is cut no shorter than this, so the sender stays recognisable.
const MIN_MERCHANT_CHARS: usize = 20;

const FIRST_CONTACT_WORDING: &str = "You left something in your cart. Complete your order: ";
const FOLLOW_UP_WORDING: &str = "Your cart is still waiting: ";
/// Longest item summary before it is shortened to the first item.
const MAX_SUMMARY_CHARS: usize = 60;
const SHORT_TITLE_CHARS: usize = 30;

/// The campaign parameters merged into every recovery link, so the merchant's analytics
/// credit the channel.
pub const UTM_SOURCE: &str = "callfy";
pub const UTM_CAMPAIGN: &str = "cart_recovery";

/// The recovery link with `utm_source`, `utm_medium` (the channel) and `utm_campaign` merged
/// into its query: parameters of the same name are replaced, every other one is kept.
pub fn tracked_link(url: &str, medium: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else { return url.to_string() };
    let ours = [("utm_source", UTM_SOURCE), ("utm_medium", medium), ("utm_campaign", UTM_CAMPAIGN)];
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| !ours.iter().any(|(name, _)| k == name))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(kept).extend_pairs(ours);
    parsed.to_string()
}

/// How much of the cart a message names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// Up to three items with their quantities.
    Full,
    /// The first item, shortened, and how many more.
    Short,
    None,
}

/// "Wax Puck (2), Edge Tuner and 1 more item": what the cart holds, in a few words.
pub fn item_summary(items: &[CartItem], level: Summary) -> Option<String> {
    let first = items.first()?;
    let line = |i: &CartItem| if i.quantity > 1 { format!("{} ({})", i.title, i.quantity) } else { i.title.clone() };
    let more = |n: usize| match n {
        0 => String::new(),
        1 => " and 1 more item".to_string(),
        n => format!(" and {n} more items"),
    };
    match level {
        Summary::None => None,
        Summary::Full => {
            let shown: Vec<String> = items.iter().take(3).map(line).collect();
            let rest = items.len().saturating_sub(3);
            let text = match (shown.as_slice(), rest) {
                ([one], _) => one.clone(),
                ([init @ .., last], 0) => format!("{} and {last}", init.join(", ")),
                (all, rest) => format!("{}{}", all.join(", "), more(rest)),
            };
            if text.chars().count() <= MAX_SUMMARY_CHARS { Some(text) } else { item_summary(items, Summary::Short) }
        }
        Summary::Short => {
            let title = truncate(&first.title, SHORT_TITLE_CHARS).trim_end();
            Some(format!("{title}{}", more(items.len() - 1)))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySms<'a> {
    pub merchant_name: &'a str,
    pub first_name: Option<&'a str>,
    pub items: &'a [CartItem],
    /// The link as it goes out (see `tracked_link`).
    pub recovery_url: &'a str,
    pub discount_code: Option<&'a str>,
    /// True when this merchant has never texted this phone before.
    pub first_contact: bool,
}

/// The name to greet with, if it looks like a name: the field is free text a shopper types, so
/// anything else (a link, markup, digits) could be abuse and is left out entirely.
pub fn usable_first_name(raw: &str) -> Option<&str> {
    let name = raw.trim();
    let len = name.chars().count();
    let allowed = |c: char| c.is_alphabetic() || matches!(c, ' ' | '\'' | '’' | '-');
    ((1..=30).contains(&len) && name.chars().all(allowed) && name.chars().any(char::is_alphabetic)).then_some(name)
}

impl RecoverySms<'_> {
    /// The body, within `MAX_RECOVERY_SEGMENTS` where possible. Optional parts go first: the
    /// item summary (shortened, then dropped), the greeting, the discount, the longer wording,
    /// then the end of the merchant name. The URL and the STOP line are never cut.
    pub fn render(&self) -> String {
        let name = self.first_name.and_then(usable_first_name);
        let discount = self.discount_code.map(str::trim).filter(|c| !c.is_empty());
        let long = self.first_contact;
        let merchant = self.merchant_name;
        let full = item_summary(self.items, Summary::Full);
        let short = item_summary(self.items, Summary::Short);
        let tiers = [
            (full.as_deref(), name, discount, long),
            (short.as_deref(), name, discount, long),
            (None, name, discount, long),
            (None, None, discount, long),
            (None, None, None, long),
            (None, None, None, false),
        ];
        for (summary, name, discount, long) in tiers {
            let body = self.compose(merchant, summary, name, discount, long);
            if segments(&body) <= MAX_RECOVERY_SEGMENTS {
                return body;
            }
        }
        for keep in (MIN_MERCHANT_CHARS..merchant.chars().count()).rev() {
            let body = self.compose(truncate(merchant, keep).trim_end(), None, None, None, false);
            if segments(&body) <= MAX_RECOVERY_SEGMENTS {
                return body;
            }
        }
        // Only a huge URL gets here: it goes whole, over budget, since a cut link is useless.
        // Past MAX_BODY_CHARS Twilio refuses the send, which beats sending a broken link.
        self.compose(truncate(merchant, MIN_MERCHANT_CHARS).trim_end(), None, None, None, false)
    }

    fn compose(
        &self,
        merchant: &str,
        summary: Option<&str>,
        name: Option<&str>,
        discount: Option<&str>,
        long_wording: bool,
    ) -> String {
        let mut body = format!("{merchant}: ");
        if let Some(name) = name {
            // A typographic apostrophe alone would switch the whole body to UCS-2 (half the room).
            body.push_str(&format!("Hi {}! ", name.replace('’', "'")));
        }
        match (summary, long_wording) {
            (Some(items), true) => body.push_str(&format!("You left {items} in your cart. Complete your order: ")),
            (Some(items), false) => body.push_str(&format!("Still thinking about {items}? Your cart is waiting: ")),
            (None, true) => body.push_str(FIRST_CONTACT_WORDING),
            (None, false) => body.push_str(FOLLOW_UP_WORDING),
        }
        body.push_str(self.recovery_url);
        if let Some(code) = discount {
            body.push_str(&format!(" Use code {code} at checkout."));
        }
        body.push_str(STOP_LINE);
        body
    }
}

/// "A", "A and B", "A, B and C" ("y" in Spanish): merchants sharing a sender are named together.
fn names(merchants: &[&str], lang: Lang) -> String {
    let and = match lang {
        Lang::En => "and",
        Lang::Es => "y",
    };
    match merchants {
        [] => "us".to_string(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} {and} {last}", init.join(", ")),
    }
}

/// The one confirmation after an opt-out (CTIA, FCC): names the business, no marketing.
pub fn stop_confirmation(merchants: &[&str], lang: Lang) -> String {
    let who = names(merchants, lang);
    match lang {
        Lang::En => format!(
            "You have been unsubscribed from {who} text messages. No more messages will be sent. Reply START to resubscribe."
        ),
        Lang::Es => format!(
            "Se ha dado de baja de los mensajes de texto de {who}. No recibirá más mensajes. Responda START para volver a suscribirse."
        ),
    }
}

/// The confirmation of a texted opt-out, for what it covers: one that stops only calls says so
/// and leaves the texts (and their STOP) as they were.
pub fn opt_out_reply(merchants: &[&str], lang: Lang, scope: crate::domain::agent::Scope) -> String {
    let who = names(merchants, lang);
    match (scope, lang) {
        (crate::domain::agent::Scope::Calls, Lang::En) => {
            format!("OK, {who} will not call you again. Reply STOP to stop text messages too.")
        }
        (crate::domain::agent::Scope::Calls, Lang::Es) => {
            format!(
                "De acuerdo, {who} no volverá a llamarle. Responda PARAR para dejar de recibir también mensajes de texto."
            )
        }
        _ => stop_confirmation(merchants, lang),
    }
}

/// Confirms a keyword re-subscription.
pub fn start_confirmation(merchants: &[&str], max_per_cart: usize) -> String {
    format!(
        "{}: you are subscribed again to cart reminders, up to {max_per_cart} msgs per abandoned cart. Msg & data rates may apply. Reply HELP for help, STOP to opt out.",
        names(merchants, Lang::En)
    )
}

/// What a HELP reply names for one merchant (CTIA: program, support, frequency, rates, STOP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelpInfo<'a> {
    pub merchant_name: &'a str,
    pub support_url: Option<&'a str>,
    pub support_phone: Option<&'a str>,
    pub max_per_cart: usize,
}

pub fn help_reply(merchants: &[HelpInfo<'_>], lang: Lang) -> String {
    let programs: Vec<&str> = merchants.iter().map(|m| m.merchant_name).collect();
    let or = match lang {
        Lang::En => "or",
        Lang::Es => "o",
    };
    let mut support: Vec<String> = Vec::new();
    for m in merchants {
        let line = match (m.support_url, m.support_phone) {
            (Some(url), Some(phone)) => format!("{url} {or} {phone}"),
            (Some(one), None) | (None, Some(one)) => one.to_string(),
            (None, None) => continue,
        };
        // Merchants sharing a sender often share a support desk too.
        if !support.contains(&line) {
            support.push(line);
        }
    }
    let max = merchants.iter().map(|m| m.max_per_cart).max().unwrap_or(1);
    let who = names(&programs, lang);
    let body = match lang {
        Lang::En => {
            let help = if support.is_empty() { String::new() } else { format!(" Help: {}.", support.join("; ")) };
            format!(
                "{who} cart reminders: up to {max} msgs per abandoned cart.{help} Msg & data rates may apply. Reply STOP to opt out."
            )
        }
        Lang::Es => {
            let help = if support.is_empty() { String::new() } else { format!(" Ayuda: {}.", support.join("; ")) };
            format!(
                "Recordatorios de carrito de {who}: hasta {max} mensajes por carrito abandonado.{help} Pueden aplicarse tarifas de mensajes y datos. Responda PARAR para cancelar."
            )
        }
    };
    truncate(&body, MAX_BODY_CHARS).to_string()
}

fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENDED: &str = "^{}\\[~]|€\x0c";

/// How many SMS segments a body costs (GSM-7: 160/153 per segment, else UCS-2: 70/67).
pub fn segments(body: &str) -> usize {
    let gsm_units: Option<usize> = body
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENDED.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    let (units, single, multi) = match gsm_units {
        Some(u) => (u, 160, 153),
        None => (body.encode_utf16().count(), 70, 67),
    };
    if units <= single { 1 } else { units.div_ceil(multi) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_message_names_merchant_link_and_stop() {
        let body = RecoverySms {
            merchant_name: "Snowdevil",
            first_name: Some("Ann"),
            items: &[],
            recovery_url: "https://snowdevil.ca/r/abc",
            discount_code: None,
            first_contact: true,
        }
        .render();
        assert!(body.starts_with("Snowdevil: Hi Ann! "), "{body}");
        assert!(body.contains("https://snowdevil.ca/r/abc"));
        assert!(body.ends_with("Reply STOP to opt out."));
        assert_eq!(segments(&body), 1);
    }

    #[test]
    fn follow_up_carries_the_discount() {
        let body = RecoverySms {
            merchant_name: "Snowdevil",
            first_name: None,
            items: &[],
            recovery_url: "https://snowdevil.ca/r/abc",
            discount_code: Some("COMEBACK10"),
            first_contact: false,
        }
        .render();
        assert!(body.contains("COMEBACK10") && body.starts_with("Snowdevil: Your cart"));
    }

    fn sms<'a>(merchant: &'a str, name: Option<&'a str>, url: &'a str, code: Option<&'a str>) -> RecoverySms<'a> {
        RecoverySms {
            merchant_name: merchant,
            first_name: name,
            items: &[],
            recovery_url: url,
            discount_code: code,
            first_contact: true,
        }
    }

    fn url(len: usize) -> String {
        let head = "https://snowdevil.ca/r/";
        format!("{head}{}", "a".repeat(len - head.len()))
    }

    #[test]
    fn greets_only_names_that_look_like_names() {
        for ok in ["Ann", " Ann ", "Mary-Jane", "O'Brien", "D’Arcy", "Zoë", "José María", "Łucja"] {
            assert_eq!(usable_first_name(ok), Some(ok.trim()), "{ok}");
        }
        for bad in ["", "  ", "http://evil.example", "Ann123", "<b>", "--", "a.b", &"a".repeat(31)] {
            assert_eq!(usable_first_name(bad), None, "{bad}");
        }
        let body = sms("Snowdevil", Some("http://evil.example"), "https://snowdevil.ca/r/abc", None).render();
        assert!(body.starts_with("Snowdevil: You left") && !body.contains("evil.example"), "{body}");
        let body = sms("Snowdevil", Some("D’Arcy"), "https://snowdevil.ca/r/abc", None).render();
        assert!(body.contains("Hi D'Arcy! "), "{body}");
        assert_eq!(segments(&body), 1, "the apostrophe does not force UCS-2");
    }

    #[test]
    fn a_140_char_url_with_name_and_discount_fits_two_segments() {
        let url = url(140);
        let body = sms("Snowdevil Outdoor Supply", Some("Annabelle"), &url, Some("COMEBACK10")).render();
        assert!(segments(&body) <= MAX_RECOVERY_SEGMENTS, "{body}");
        assert!(body.contains(&url) && body.ends_with(STOP_LINE), "{body}");
    }

    #[test]
    fn trims_greeting_then_discount_then_wording_then_merchant() {
        let u = url(200);
        let body = sms("Snowdevil", Some("Ann"), &u, Some("COMEBACK10")).render();
        assert!(!body.contains("Hi Ann") && !body.contains("COMEBACK10"), "{body}");
        assert!(body.contains(FIRST_CONTACT_WORDING) && body.contains(&u), "{body}");

        let u = url(180);
        let body = sms("Snowdevil", Some("Ann"), &u, Some("COMEBACK10")).render();
        assert!(!body.contains("Hi Ann") && body.contains("COMEBACK10"), "the greeting goes first: {body}");

        let u = url(240);
        let body = sms("Snowdevil", None, &u, None).render();
        assert!(body.starts_with("Snowdevil: Your cart is still waiting: "), "{body}");

        let merchant = "Snowdevil_Outdoor_Supply_Company";
        let u = url(230);
        let body = sms(merchant, Some("Ann"), &u, Some("COMEBACK10")).render();
        assert!(body.starts_with("Snowdevil_Outdoor_Suppl: Your cart"), "{body}");
        assert!(body.contains(&u) && body.ends_with(STOP_LINE), "{body}");
        assert!(segments(&body) <= MAX_RECOVERY_SEGMENTS, "{body}");
    }

    #[test]
    fn a_huge_url_is_kept_whole_with_the_stop_line() {
        let u = url(250);
        let body = sms("Snowdevil Outdoor Supply Company", Some("Ann"), &u, Some("COMEBACK10")).render();
        assert!(body.contains(&u) && body.ends_with(STOP_LINE), "{body}");
        assert!(body.starts_with("Snowdevil Outdoor Su: Your cart"), "merchant cut to 20 chars: {body}");
        assert_eq!(segments(&body), 3, "over budget rather than a cut link");
    }

    #[test]
    fn ucs2_merchant_names_get_the_ucs2_budget() {
        let u = url(60);
        let body = sms("Łódź Outdoor Supply", Some("Ann"), &u, Some("COMEBACK10")).render();
        assert!(segments(&body) <= MAX_RECOVERY_SEGMENTS, "{body}");
        assert!(body.starts_with("Łódź Outdoor Supply: ") && body.contains(&u) && body.ends_with(STOP_LINE), "{body}");
        assert!(!body.contains("Hi Ann"), "a GSM-7 body would have room for it, UCS-2 has not: {body}");
    }

    fn items(list: &[(&str, u32)]) -> Vec<CartItem> {
        list.iter().filter_map(|(t, q)| CartItem::new(t, *q)).collect()
    }

    #[test]
    fn links_carry_the_campaign_and_keep_their_own_query() {
        assert_eq!(
            tracked_link("https://shop.test/r/abc?key=k1&utm_source=old#top", "sms"),
            "https://shop.test/r/abc?key=k1&utm_source=callfy&utm_medium=sms&utm_campaign=cart_recovery#top"
        );
        assert_eq!(
            tracked_link("https://shop.test/r/abc", "voice"),
            "https://shop.test/r/abc?utm_source=callfy&utm_medium=voice&utm_campaign=cart_recovery"
        );
    }

    #[test]
    fn summarises_the_cart_and_trims_the_summary_before_anything_else() {
        let cart = items(&[("Wax Puck", 2), ("Edge Tuner", 1), ("Scraper", 1), ("Gloves", 1)]);
        assert_eq!(item_summary(&cart, Summary::Full).unwrap(), "Wax Puck (2), Edge Tuner, Scraper and 1 more item");
        assert_eq!(item_summary(&cart[..2], Summary::Full).unwrap(), "Wax Puck (2) and Edge Tuner");
        assert_eq!(item_summary(&cart, Summary::Short).unwrap(), "Wax Puck and 3 more items");
        let link = tracked_link("https://snowdevil.ca/r/abc", "sms");
        let body = RecoverySms {
            merchant_name: "Snowdevil",
            first_name: Some("Ann"),
            items: &cart,
            recovery_url: &link,
            discount_code: Some("COMEBACK10"),
            first_contact: true,
        }
        .render();
        assert!(body.contains("You left Wax Puck (2), Edge Tuner, Scraper and 1 more item in your cart."), "{body}");
        assert!(body.contains("Hi Ann") && body.contains("COMEBACK10") && body.contains(&link), "{body}");
        assert!(segments(&body) <= MAX_RECOVERY_SEGMENTS);
        // With a long link, the summary shrinks and goes before the greeting or the code.
        let long = url(150);
        let body = RecoverySms {
            merchant_name: "Snowdevil",
            first_name: Some("Ann"),
            items: &cart,
            recovery_url: &long,
            discount_code: Some("COMEBACK10"),
            first_contact: true,
        }
        .render();
        assert!(!body.contains("Edge Tuner") && body.contains("Hi Ann") && body.contains("COMEBACK10"), "{body}");
        assert!(segments(&body) <= MAX_RECOVERY_SEGMENTS, "{body}");
    }

    #[test]
    fn counts_segments_by_encoding() {
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        assert_eq!(segments(&"😀".repeat(35)), 1);
        assert_eq!(segments(&"ş".repeat(71)), 2);
    }

    #[test]
    fn keyword_replies_carry_what_ctia_asks() {
        let info = [HelpInfo {
            merchant_name: "Snowdevil",
            support_url: Some("https://snowdevil.ca/help"),
            support_phone: Some("+18005550100"),
            max_per_cart: 2,
        }];
        let help = help_reply(&info, Lang::En);
        for part in [
            "Snowdevil",
            "https://snowdevil.ca/help",
            "+18005550100",
            "up to 2 msgs",
            "Msg & data rates may apply",
            "STOP",
        ] {
            assert!(help.contains(part), "{help} lacks {part}");
        }
        let stop = stop_confirmation(&["Snowdevil", "Acme"], Lang::En);
        assert!(stop.contains("Snowdevil and Acme") && !stop.contains("http"));
        let ayuda = help_reply(&info, Lang::Es);
        for part in [
            "Snowdevil",
            "https://snowdevil.ca/help o +18005550100",
            "hasta 2 mensajes",
            "tarifas de mensajes y datos",
            "PARAR",
        ] {
            assert!(ayuda.contains(part), "{ayuda} lacks {part}");
        }
        assert!(stop_confirmation(&["Snowdevil", "Acme"], Lang::Es).contains("Snowdevil y Acme"));
        use crate::domain::agent::Scope;
        let calls = opt_out_reply(&["Snowdevil"], Lang::En, Scope::Calls);
        assert!(calls.contains("Snowdevil will not call") && !calls.contains("unsubscribed"), "{calls}");
        assert_eq!(opt_out_reply(&["Snowdevil"], Lang::En, Scope::Texts), stop_confirmation(&["Snowdevil"], Lang::En));
        assert_eq!(opt_out_reply(&["Snowdevil"], Lang::Es, Scope::Both), stop_confirmation(&["Snowdevil"], Lang::Es));
        assert!(start_confirmation(&["Snowdevil"], 3).starts_with("Snowdevil:"));
    }
}
