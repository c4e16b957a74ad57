//! Checks requests to, and answers from, the Twilio sandbox against Twilio's published
//! OpenAPI spec (2010-04-01), so the stand-in cannot drift from the real API.

use serde_json::Value;
use std::sync::OnceLock;

const SPEC_JSON: &str = include_str!("../twilio/twilio_api_v2010.json");

pub struct TwilioContract {
    spec: Value,
}

/// The spec, parsed once per process.
pub fn contract() -> &'static TwilioContract {
    static CONTRACT: OnceLock<TwilioContract> = OnceLock::new();
    CONTRACT.get_or_init(|| TwilioContract { spec: serde_json::from_str(SPEC_JSON).unwrap_or(Value::Null) })
}

impl TwilioContract {
    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => r
                .strip_prefix("#/")
                .map(|p| p.split('/').fold(&self.spec, |node, part| &node[part]))
                .unwrap_or(&Value::Null),
            None => v,
        }
    }

    fn operation(&self, path: &str, method: &str) -> Option<&Value> {
        self.spec.get("paths")?.get(path)?.get(method)
    }

    /// Validates a form-encoded request body; returns every violation found.
    pub fn check_form(&self, path: &str, method: &str, params: &[(String, String)]) -> Vec<String> {
        let Some(op) = self.operation(path, method) else {
            return vec![format!("{method} {path} is not in Twilio's API")];
        };
        let schema = self.resolve(&op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]);
        let props = &schema["properties"];
        let mut problems = Vec::new();
        for required in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !params.iter().any(|(k, _)| k == required) {
                problems.push(format!("missing required parameter {required}"));
            }
        }
        for (name, value) in params {
            let Some(prop) = props.get(name) else {
                problems.push(format!("unknown parameter {name}"));
                continue;
            };
            let prop = self.resolve(prop);
            let prop = if prop["type"] == "array" { self.resolve(&prop["items"]) } else { prop };
            if let Some(problem) = check_value(name, value, prop) {
                problems.push(problem);
            }
        }
        problems
    }

    /// Validates query parameters against the operation's declared ones.
    pub fn check_query(&self, path: &str, method: &str, params: &[(String, String)]) -> Vec<String> {
        let Some(op) = self.operation(path, method) else {
            return vec![format!("{method} {path} is not in Twilio's API")];
        };
        let declared: Vec<&Value> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| self.resolve(p))
            .filter(|p| p["in"] == "query")
            .collect();
        params
            .iter()
            .filter_map(|(name, value)| match declared.iter().find(|p| p["name"] == name.as_str()) {
                None => Some(format!("unknown query parameter {name}")),
                Some(p) => check_value(name, value, self.resolve(&p["schema"])),
            })
            .collect()
    }

    /// Validates the answer of `GET …/Messages.json` (an inline page schema of messages).
    pub fn check_message_list(&self, body: &Value) -> Vec<String> {
        let Some(op) = self.operation("/2010-04-01/Accounts/{AccountSid}/Messages.json", "get") else {
            return vec!["list operation missing from the spec".into()];
        };
        let schema = self.resolve(&op["responses"]["200"]["content"]["application/json"]["schema"]);
        let mut problems = Vec::new();
        if let (Some(props), Some(obj)) = (schema["properties"].as_object(), body.as_object()) {
            for key in props.keys().filter(|k| !obj.contains_key(*k)) {
                problems.push(format!("field {key} is missing"));
            }
            for key in obj.keys().filter(|k| !props.contains_key(*k)) {
                problems.push(format!("field {key} is not in ListMessageResponse"));
            }
        } else {
            problems.push("answer is not a JSON object".into());
        }
        for message in body["messages"].as_array().into_iter().flatten() {
            problems.extend(self.check_response("api.v2010.account.message", message));
        }
        problems
    }

    /// Validates a JSON answer against the named component schema.
    pub fn check_response(&self, schema_name: &str, body: &Value) -> Vec<String> {
        let schema = &self.spec["components"]["schemas"][schema_name];
        let Some(props) = schema["properties"].as_object() else {
            return vec![format!("schema {schema_name} is not in Twilio's spec")];
        };
        let Some(obj) = body.as_object() else {
            return vec!["answer is not a JSON object".into()];
        };
        let mut problems = Vec::new();
        for key in obj.keys() {
            if !props.contains_key(key) {
                problems.push(format!("field {key} is not in {schema_name}"));
            }
        }
        for (key, prop) in props {
            let prop = self.resolve(prop);
            match obj.get(key) {
                None => problems.push(format!("field {key} is missing")),
                Some(Value::Null) if prop["nullable"] == true => {}
                Some(v) => {
                    let ok = match prop["type"].as_str() {
                        Some("string") => v.is_string(),
                        Some("integer") => v.is_i64() || v.is_u64(),
                        Some("number") => v.is_number(),
                        Some("boolean") => v.is_boolean(),
                        Some("object") => v.is_object(),
                        Some("array") => v.is_array(),
                        _ => true,
                    };
                    if !ok {
                        problems.push(format!("field {key} has the wrong type"));
                    }
                    if let (Some(allowed), Some(s)) = (prop["enum"].as_array(), v.as_str())
                        && !allowed.iter().any(|a| a == s)
                    {
                        problems.push(format!("field {key} has value {s:?} outside its enum"));
                    }
                }
            }
        }
        problems
    }
}

fn check_value(name: &str, value: &str, prop: &Value) -> Option<String> {
    if let Some(allowed) = prop["enum"].as_array()
        && !allowed.iter().any(|a| a == value)
    {
        return Some(format!("{name}={value:?} is not one of {allowed:?}"));
    }
    match (prop["type"].as_str(), prop["format"].as_str()) {
        (Some("integer"), _) if value.parse::<i64>().is_err() => Some(format!("{name} must be an integer")),
        (_, Some("date-time")) if chrono::DateTime::parse_from_rfc3339(value).is_err() => {
            Some(format!("{name} must be an RFC 3339 date-time"))
        }
        (Some("boolean"), _) if value != "true" && value != "false" => Some(format!("{name} must be true or false")),
        (_, Some("uri")) if !(value.starts_with("http://") || value.starts_with("https://")) => {
            Some(format!("{name} must be an absolute URL"))
        }
        (_, Some("phone-number")) if !is_address(value) => Some(format!("{name} must be E.164 or a channel address")),
        _ => None,
    }
}

fn is_address(v: &str) -> bool {
    let e164 = |s: &str| {
        s.strip_prefix('+').is_some_and(|d| {
            (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
        })
    };
    e164(v) || v.split_once(':').is_some_and(|(chan, addr)| !chan.is_empty() && !addr.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGES: &str = "/2010-04-01/Accounts/{AccountSid}/Messages.json";

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn accepts_a_valid_message_request() {
        let problems = contract().check_form(
            MESSAGES,
            "post",
            &p(&[
                ("To", "+14155552671"),
                ("Body", "hi"),
                ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"),
                ("StatusCallback", "https://x.test/twilio/sms/status"),
            ]),
        );
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn rejects_unknown_missing_and_malformed_parameters() {
        let problems = contract().check_form(
            MESSAGES,
            "post",
            &p(&[("Bogus", "1"), ("StatusCallback", "not-a-url"), ("ValidityPeriod", "soon")]),
        );
        let text = problems.join("; ");
        assert!(text.contains("missing required parameter To"), "{text}");
        assert!(text.contains("unknown parameter Bogus"), "{text}");
        assert!(text.contains("StatusCallback"), "{text}");
        assert!(text.contains("ValidityPeriod"), "{text}");
    }
}
