//! HTTP responses in the shape DESIGN.md §3 fixes: `{"error", "message"}` for every rejection.

use lambda_http::{Body, Response};
use serde::Serialize;

pub fn json<T: Serialize>(status: u16, value: &T) -> Response<Body> {
    let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::Text(body))
        .unwrap_or_else(|_| Response::new(Body::Empty))
}

pub fn error(status: u16, code: &str, message: impl Into<String>) -> Response<Body> {
    json(status, &serde_json::json!({ "error": code, "message": message.into() }))
}

/// A header's value as text, if present and valid UTF-8.
pub fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_have_code_and_message() {
        let resp = error(401, "invalid_signature", "X-Shopify-Hmac-Sha256 does not match");
        assert_eq!(resp.status(), 401);
        let Body::Text(text) = resp.body() else { panic!("text body") };
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["error"], "invalid_signature");
        assert!(v["message"].as_str().unwrap().contains("Hmac"));
    }
}
