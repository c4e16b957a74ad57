//! Serves the API Gateway routes on one port: each request becomes a real API Gateway HTTP API
//! (v2) event, parsed by lambda_http exactly as in Lambda, and goes to the function's handler.

use axum::body::Bytes;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::Utc;
use lambda_http::Body;
use serde_json::{Map, Value, json};

/// The API Gateway HTTP API event for one request (payload format 2.0).
pub fn apigw_v2_event(parts: &Parts, body: &Bytes, source_ip: &str) -> Value {
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).to_string();
        let joined = match headers.get(name.as_str()).and_then(Value::as_str) {
            Some(prev) => format!("{prev},{value}"),
            None => value,
        };
        headers.insert(name.as_str().to_string(), Value::String(joined));
    }
    let query = parts.uri.query().unwrap_or_default().to_string();
    let params: Vec<(String, String)> = serde_urlencoded::from_str(&query).unwrap_or_default();
    let mut qs = Map::new();
    for (k, v) in params {
        qs.insert(k, Value::String(v));
    }
    let (body_text, is_b64) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_string(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let now = Utc::now();
    let host = headers.get("host").and_then(Value::as_str).unwrap_or("127.0.0.1").to_string();
    let user_agent = headers.get("user-agent").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.uri.path(),
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "callfy-local",
            "domainName": host,
            "domainPrefix": "callfy-local",
            "http": {
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": user_agent,
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": is_b64,
    });
    if !qs.is_empty() {
        event["queryStringParameters"] = Value::Object(qs);
    }
    if !body.is_empty() {
        event["body"] = Value::String(body_text);
    }
    event
}

/// Turns a handler's lambda_http response into the HTTP answer API Gateway would give.
pub fn to_http(resp: lambda_http::Response<Body>) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes: Vec<u8> = match body {
        Body::Empty => Vec::new(),
        Body::Text(t) => t.into_bytes(),
        Body::Binary(b) => b,
        _ => Vec::new(),
    };
    let mut out = (parts.status, bytes).into_response();
    for (k, v) in &parts.headers {
        out.headers_mut().insert(k, v.clone());
    }
    out
}
