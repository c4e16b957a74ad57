//! SMS bodies. The first message to a phone names the merchant and how to opt out (CTIA).

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
}
