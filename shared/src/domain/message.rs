//! SMS bodies. The first message to a phone names the merchant and how to opt out (CTIA).

use crate::domain::keywords::Lang;

/// Twilio's hard limit for one message body.
pub const MAX_BODY_CHARS: usize = 1600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySms<'a> {
    pub merchant_name: &'a str,
    pub first_name: Option<&'a str>,
    pub recovery_url: &'a str,
    pub discount_code: Option<&'a str>,
    /// True when this merchant has never texted this phone before.
    pub first_contact: bool,
}

impl RecoverySms<'_> {
    pub fn render(&self) -> String {
        let greeting = match self.first_name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(name) => format!("Hi {}! ", truncate(name, 30)),
            None => String::new(),
        };
        let mut body = if self.first_contact {
            format!(
                "{}: {greeting}You left something in your cart. Complete your order: {}",
                self.merchant_name, self.recovery_url
            )
        } else {
            format!("{}: {greeting}Your cart is still waiting: {}", self.merchant_name, self.recovery_url)
        };
        if let Some(code) = self.discount_code {
            body.push_str(&format!(" Use code {code} at checkout."));
        }
        body.push_str(" Reply STOP to opt out.");
        truncate(&body, MAX_BODY_CHARS).to_string()
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
            recovery_url: "https://snowdevil.ca/r/abc",
            discount_code: Some("COMEBACK10"),
            first_contact: false,
        }
        .render();
        assert!(body.contains("COMEBACK10") && body.starts_with("Snowdevil: Your cart"));
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
        assert!(start_confirmation(&["Snowdevil"], 3).starts_with("Snowdevil:"));
    }
}
