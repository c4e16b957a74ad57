//! The Bedrock adapter against a stand-in that speaks ConverseStream's wire format: what is
//! sent, what streams back, and how failures and hangs end. No moto needed.

use callfy_integration_tests::bedrock::{BedrockStandIn, Behaviour, INPUT_TOKENS};
use callfy_shared::adapters::bedrock::{BedrockModel, client};
use callfy_shared::domain::agent::{Brief, Speaker, system_prompt, tool_specs};
use callfy_shared::domain::cart::CartItem;
use callfy_shared::domain::keywords::Lang;
use callfy_shared::ports::agent::{ModelEvent, ModelRequest};
use callfy_shared::ports::{Classify, ConversationModel, ErrorKind, PortError};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A real model id: its `:` must reach the path percent-encoded and come back whole.
const MODEL: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

async fn model() -> (Arc<BedrockStandIn>, BedrockModel) {
    let (stand_in, base_url) = BedrockStandIn::start(Behaviour::text(&["Hi."])).await;
    // Placeholder credentials and the stand-in as endpoint, through the functions' HTTP stack;
    // the client is the production one (its retries and timeouts).
    let sdk = callfy_shared::adapters::aws::local_config(&base_url).await.expect("HTTP client");
    (stand_in, BedrockModel::from_client(client(&sdk), MODEL))
}

fn request() -> ModelRequest {
    let brief = Brief {
        merchant_name: "Snowdevil".into(),
        first_name: Some("Ann".into()),
        items: vec![CartItem::new("Wax Puck", 2).expect("item")],
        total: Some("24.00".into()),
        currency: Some("USD".into()),
        discount_code: None,
        can_text: true,
        support_phone: None,
        can_transfer: false,
        lang: Lang::En,
    };
    ModelRequest {
        system: system_prompt(&brief),
        brief,
        turns: vec![
            (Speaker::Agent, "Hello Ann, this is an automated AI assistant.".into()),
            (Speaker::Caller, "Hi.".into()),
            (Speaker::Agent, "How can I help?".into()),
            (Speaker::Caller, "What was in my cart?".into()),
            (Speaker::Caller, "And can you text me the link?".into()),
        ],
        tools: tool_specs(),
        max_tokens: 300,
    }
}

/// Runs one turn to its end; returns the outcome and every event, in order.
async fn converse(model: &BedrockModel) -> (Result<(), PortError>, Vec<ModelEvent>) {
    let (tx, mut rx) = mpsc::channel(64);
    let result = model.converse(&request(), tx).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (result, events)
}

fn reply(chunks: &[&str], tool: Option<(&str, serde_json::Value)>, per_chunk_ms: u64) -> Behaviour {
    Behaviour::Reply {
        chunks: chunks.iter().map(|c| c.to_string()).collect(),
        tool: tool.map(|(n, i)| (n.to_string(), i)),
        delay_per_chunk: Duration::from_millis(per_chunk_ms),
        first_delay: Duration::ZERO,
    }
}

#[tokio::test]
async fn text_streams_in_order_and_a_tool_call_arrives_parsed() {
    let (stand_in, model) = model().await;
    stand_in.set(reply(
        &["You left ", "a Wax Puck ", "in your cart."],
        Some(("opt_out", json!({"scope": "calls"}))),
        0,
    ));
    let (result, events) = converse(&model).await;
    result.expect("the reply streams");
    assert_eq!(
        events,
        vec![
            ModelEvent::Text("You left ".into()),
            ModelEvent::Text("a Wax Puck ".into()),
            ModelEvent::Text("in your cart.".into()),
            ModelEvent::Tool { name: "opt_out".into(), input: json!({"scope": "calls"}) },
            ModelEvent::Usage { input_tokens: INPUT_TOKENS, output_tokens: 3 + 5 },
        ]
    );

    // A tool without parameters streams `{}` (or nothing) and arrives as `{}`.
    stand_in.set(reply(&[], Some(("send_recovery_link", json!({}))), 0));
    let (result, events) = converse(&model).await;
    result.expect("the tool call streams");
    assert_eq!(events[0], ModelEvent::Tool { name: "send_recovery_link".into(), input: json!({}) });
}

#[tokio::test]
async fn the_request_carries_the_prompt_the_tools_and_alternating_turns() {
    let (stand_in, model) = model().await;
    converse(&model).await.0.expect("a reply");
    assert_eq!(stand_in.model_ids(), vec![MODEL.to_string()]);
    let body = &stand_in.requests()[0];
    assert_eq!(body["system"], json!([{ "text": request().system }]), "{body:#}");
    assert_eq!(body["inferenceConfig"]["maxTokens"], json!(300), "{body:#}");
    let names: Vec<_> = body["toolConfig"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["toolSpec"]["name"].as_str().expect("name").to_string())
        .collect();
    let want: Vec<_> = tool_specs().iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, want, "{body:#}");
    assert_eq!(body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"], tool_specs()[0].schema);
    // The greeting (the agent's) is dropped, the caller's two last lines are one message.
    assert_eq!(
        body["messages"],
        json!([
            { "role": "user", "content": [{ "text": "Hi." }] },
            { "role": "assistant", "content": [{ "text": "How can I help?" }] },
            { "role": "user", "content": [{ "text": "What was in my cart?\nAnd can you text me the link?" }] },
        ]),
        "{body:#}"
    );
}

#[tokio::test]
async fn text_is_forwarded_as_it_streams_not_at_the_end() {
    let (stand_in, model) = model().await;
    stand_in.set(reply(&["One. ", "Two. ", "Three. ", "Four."], None, 400));
    let (tx, mut rx) = mpsc::channel(64);
    let started = Instant::now();
    let turn = tokio::spawn(async move { model.converse(&request(), tx).await });
    let mut texts = Vec::new();
    while let Some(e) = rx.recv().await {
        if let ModelEvent::Text(t) = e {
            texts.push((t, started.elapsed()));
        }
    }
    turn.await.expect("turn").expect("the reply streams");
    assert_eq!(texts.len(), 4, "{texts:?}");
    // Each chunk waits 400 ms at the stand-in: received one by one, they are spread out.
    let spread = texts[3].1 - texts[0].1;
    assert!(spread >= Duration::from_millis(1000), "chunks arrived together: {texts:?}");
}

#[tokio::test]
async fn a_receiver_that_went_away_ends_the_turn_early_and_quietly() {
    let (stand_in, model) = model().await;
    let chunks: Vec<String> = (0..20).map(|i| format!("word{i} ")).collect();
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    stand_in.set(reply(&chunks, None, 200));
    let (tx, mut rx) = mpsc::channel(1);
    let started = Instant::now();
    let turn = tokio::spawn(async move { model.converse(&request(), tx).await });
    assert!(matches!(rx.recv().await, Some(ModelEvent::Text(_))));
    drop(rx);
    let result = tokio::time::timeout(Duration::from_secs(3), turn).await.expect("the turn ends early");
    result.expect("turn").expect("a closed receiver is not an error");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn throttling_is_transient_with_its_code_and_a_bad_request_is_permanent() {
    let (stand_in, model) = model().await;
    stand_in.set(Behaviour::Fail(429));
    let e = converse(&model).await.0.expect_err("throttled");
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(matches!(&e, PortError::Service { code, .. } if code == "ThrottlingException"), "{e:?}");
    assert!(e.to_string().contains("ThrottlingException"), "{e}");
    assert_eq!(stand_in.requests().len(), 2, "one retry, no more");

    stand_in.set(Behaviour::Fail(400));
    let e = converse(&model).await.0.expect_err("invalid");
    assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
    assert_eq!(stand_in.requests().len(), 3, "a bad request is not retried");
}

#[tokio::test]
async fn a_server_error_fails_within_seconds() {
    let (stand_in, model) = model().await;
    stand_in.set(Behaviour::Fail(500));
    let started = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(5), converse(&model))
        .await
        .expect("an error, not a hang")
        .0
        .expect_err("a 500 fails");
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("InternalServerException"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_hung_model_is_given_up_on_after_about_eight_seconds() {
    let (stand_in, model) = model().await;
    stand_in.set(Behaviour::Hang);
    let started = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(12), converse(&model))
        .await
        .expect("the client gives up by itself")
        .0
        .expect_err("a hang fails");
    let waited = started.elapsed();
    assert!(e.is_transient(), "{e}");
    assert!(waited >= Duration::from_secs(7) && waited < Duration::from_secs(10), "{waited:?}: {e}");
}

#[tokio::test]
async fn a_stream_that_goes_silent_after_its_head_fails_too() {
    let (stand_in, model) = model().await;
    // The head and `messageStart` arrive at once; the first token would come 20 s later.
    stand_in.set(reply(&["late"], None, 20_000));
    let started = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(14), converse(&model))
        .await
        .expect("the client gives up by itself")
        .0
        .expect_err("a silent stream fails");
    let waited = started.elapsed();
    assert!(e.is_transient(), "{e}");
    assert!(waited >= Duration::from_secs(7) && waited < Duration::from_secs(12), "{waited:?}: {e}");
}

#[tokio::test]
async fn a_steady_reply_longer_than_the_timeouts_is_not_cut() {
    let (stand_in, model) = model().await;
    // 12 chunks 900 ms apart: ~11 s in all, past the 8 s operation timeout, never 8 s silent.
    let chunks: Vec<String> = (0..12).map(|i| format!("word{i} ")).collect();
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    stand_in.set(reply(&chunks, None, 900));
    let started = Instant::now();
    let (result, events) = converse(&model).await;
    result.expect("a long steady reply completes");
    assert!(started.elapsed() >= Duration::from_secs(10), "{:?}", started.elapsed());
    let texts = events.iter().filter(|e| matches!(e, ModelEvent::Text(_))).count();
    assert_eq!(texts, 12, "{events:?}");
}
