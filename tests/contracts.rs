//! Contracts that keep parts from drifting: infra/template.yaml ↔ the local resources, the
//! sample events ↔ their payloads and the handlers, the Twilio sandbox ↔ Twilio's OpenAPI spec.

use aws_lambda_events::event::sqs::SqsEvent;
use callfy_integration_tests::*;
use callfy_local::contract::contract;
use callfy_local::resources::{BUCKET, QUEUE, RECORDINGS_QUEUE, TABLE};
use callfy_local::sandbox::{MESSAGES_PATH, Sandbox};
use callfy_shared::config::local_defaults;
use callfy_shared::domain::flow::OutreachJob;
use callfy_shared::{ManualClock, Phone};
use chrono::{DateTime, Utc};
use serde_yaml::Value as Yaml;
use std::sync::Arc;

fn template() -> Yaml {
    let text = std::fs::read_to_string(root().join("infra/template.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn res<'a>(t: &'a Yaml, name: &str) -> &'a Yaml {
    &t["Resources"][name]["Properties"]
}

fn strs(v: &Yaml, key: &str) -> Vec<String> {
    v.as_sequence().unwrap().iter().map(|x| x[key].as_str().unwrap().to_string()).collect()
}

#[test]
fn template_table_matches_the_local_table() {
    let t = template();
    let table = res(&t, "Table");
    assert_eq!(table["BillingMode"].as_str(), Some("PAY_PER_REQUEST"));
    assert_eq!(strs(&table["KeySchema"], "AttributeName"), vec![TABLE.hash, TABLE.range]);
    assert_eq!(strs(&table["AttributeDefinitions"], "AttributeName"), TABLE.attributes());
    let gsis = table["GlobalSecondaryIndexes"].as_sequence().unwrap();
    assert_eq!(gsis.len(), TABLE.gsis.len());
    for (yaml, spec) in gsis.iter().zip(TABLE.gsis) {
        assert_eq!(yaml["IndexName"].as_str(), Some(spec.name));
        assert_eq!(strs(&yaml["KeySchema"], "AttributeName"), vec![spec.hash, spec.range]);
        let projection = if spec.keys_only { "KEYS_ONLY" } else { "ALL" };
        assert_eq!(yaml["Projection"]["ProjectionType"].as_str(), Some(projection));
    }
    assert_eq!(table["TimeToLiveSpecification"]["AttributeName"].as_str(), Some(TABLE.ttl_attribute));
    assert_eq!(table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(), Some(true));
    assert_eq!(table["SSESpecification"]["SSEType"].as_str(), Some("KMS"));
}

#[test]
fn template_queues_and_bucket_match_the_local_ones() {
    let t = template();
    let q = res(&t, "OutreachQueue");
    assert_eq!(q["VisibilityTimeout"].as_u64(), Some(u64::from(QUEUE.visibility_timeout_seconds)));
    assert_eq!(q["MessageRetentionPeriod"].as_u64(), Some(u64::from(QUEUE.message_retention_seconds)));
    assert_eq!(q["RedrivePolicy"]["maxReceiveCount"].as_u64(), Some(u64::from(QUEUE.max_receive_count)));
    let dlq = res(&t, "OutreachDeadLetterQueue");
    assert_eq!(dlq["MessageRetentionPeriod"].as_u64(), Some(u64::from(QUEUE.dlq_retention_seconds)));
    // The worker's timeout fits six times into the visibility timeout (AWS's advice).
    let worker = res(&t, "OutreachWorkerFunction");
    assert!(worker["Timeout"].as_u64().unwrap() * 6 <= u64::from(QUEUE.visibility_timeout_seconds));
    // The local relay ends the agent's routes when Lambda would.
    assert_eq!(
        res(&t, "VoiceAgentFunction")["Timeout"].as_u64(),
        Some(callfy_local::relay::INVOCATION_TIMEOUT.as_secs())
    );
    let sqs_event = &worker["Events"]["Outreach"]["Properties"];
    assert_eq!(sqs_event["FunctionResponseTypes"][0].as_str(), Some("ReportBatchItemFailures"));
    assert!(sqs_event["BatchSize"].as_u64().unwrap() <= 10);

    let rq = res(&t, "RecordingsQueue");
    assert_eq!(rq["VisibilityTimeout"].as_u64(), Some(u64::from(RECORDINGS_QUEUE.visibility_timeout_seconds)));
    assert_eq!(rq["MessageRetentionPeriod"].as_u64(), Some(u64::from(RECORDINGS_QUEUE.message_retention_seconds)));
    assert_eq!(rq["RedrivePolicy"]["maxReceiveCount"].as_u64(), Some(u64::from(RECORDINGS_QUEUE.max_receive_count)));
    let rdlq = res(&t, "RecordingsDeadLetterQueue");
    assert_eq!(rdlq["MessageRetentionPeriod"].as_u64(), Some(u64::from(RECORDINGS_QUEUE.dlq_retention_seconds)));
    assert!(worker["Timeout"].as_u64().unwrap() * 6 <= u64::from(RECORDINGS_QUEUE.visibility_timeout_seconds));
    let copies = &worker["Events"]["Recordings"]["Properties"];
    assert_eq!(copies["FunctionResponseTypes"][0].as_str(), Some("ReportBatchItemFailures"));
    let alarm = res(&t, "RecordingsDeadLetterAlarm");
    assert_eq!(alarm["MetricName"].as_str(), Some("ApproximateNumberOfMessagesVisible"));

    let bucket = res(&t, "RecordingsBucket");
    let rule = &bucket["LifecycleConfiguration"]["Rules"][0];
    assert_eq!(rule["Prefix"].as_str(), Some(BUCKET.recordings_prefix));
    assert_eq!(rule["ExpirationInDays"].as_i64(), Some(i64::from(BUCKET.expiration_days)));
    // Raw webhook bodies (personal data) never outlive two days, whatever happens to their copy.
    let rules = bucket["LifecycleConfiguration"]["Rules"].as_sequence().unwrap();
    let deliveries = rules.iter().find(|r| r["Prefix"].as_str() == Some(BUCKET.deliveries_prefix)).unwrap();
    assert_eq!(deliveries["ExpirationInDays"].as_i64(), Some(i64::from(BUCKET.deliveries_expiration_days)));
    assert!(deliveries["ExpirationInDays"].as_i64().is_some_and(|days| (1..=2).contains(&days)));
    let pab = &bucket["PublicAccessBlockConfiguration"];
    for k in ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"] {
        assert_eq!(pab[k].as_bool(), Some(true), "{k}");
    }
    let enc = &bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0];
    assert_eq!(enc["ServerSideEncryptionByDefault"]["SSEAlgorithm"].as_str(), Some("aws:kms"));
}

#[test]
fn template_functions_are_static_arm64_builds_with_secrets_from_secrets_manager() {
    let t = template();
    // sam build runs ../Makefile's build-<LogicalId>, which must build that function's binary
    // as a static arm64 (musl) executable.
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    assert!(makefile.lines().any(|l| l == "LAMBDA_TARGET ?= aarch64-unknown-linux-musl"), "the deployed target");
    // One rule builds every function, from the Makefile's table of LogicalId:binary.
    assert!(makefile.lines().any(|l| l == "build-%:"), "sam build's rule");
    assert!(makefile.contains("--bin $(call binary,$*)"), "the rule builds the table's binary");
    let listed = |name: &str, binary: &str| makefile.split_whitespace().any(|w| w == format!("{name}:{binary}"));
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(globals["Architectures"][0].as_str(), Some("arm64"));
    for (name, binary) in [
        ("WebhookIngestFunction", "webhook-ingest"),
        ("OutreachWorkerFunction", "outreach-worker"),
        ("ConsentApiFunction", "consent-api"),
        ("SmsInboundFunction", "sms-inbound"),
        ("VoiceCallbacksFunction", "voice-callbacks"),
        ("VoiceAgentFunction", "voice-agent"),
        ("RetentionPurgerFunction", "retention-purger"),
    ] {
        let meta = &t["Resources"][name]["Metadata"];
        assert_eq!(meta["BuildMethod"].as_str(), Some("makefile"), "{name}");
        assert!(listed(name, binary), "{name}: the Makefile builds {binary}");
    }
    // Secrets come from Secrets Manager at init, by id: no value (not even a dynamic reference,
    // which CloudFormation would copy into the environment) is in the template.
    let text = std::fs::read_to_string(root().join("infra/template.yaml")).unwrap();
    assert!(!text.contains("{{resolve:"), "no dynamic references: functions read secrets by id");
    for value_var in ["SHOPIFY_API_SECRET", "TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "CALLFY_LOG_KEY"] {
        assert!(!text.lines().any(|l| l.trim_start().starts_with(value_var)), "{value_var} must be read by id");
    }
    assert_eq!(ref_name(&globals["Environment"]["Variables"]["LOG_KEY_SECRET_ID"]), Some("LogKeySecret"));
    // Every function loads the one marker key (§3d); it is kept if the stack is deleted.
    assert_eq!(ref_name(&globals["Environment"]["Variables"]["MARKER_KEY_SECRET_ID"]), Some("MarkerKeySecret"));
    assert_eq!(t["Resources"]["MarkerKeySecret"]["DeletionPolicy"].as_str(), Some("Retain"));
    // Export files are written under the stack's key, like recordings.
    for f in ["OutreachWorkerFunction", "RetentionPurgerFunction"] {
        let kms = &res(&t, f)["Environment"]["Variables"]["RECORDINGS_KMS_KEY_ID"];
        assert_eq!(tagged(kms, "GetAtt").and_then(Yaml::as_str), Some("DataKey.Arn"), "{f}: the stack's key");
    }
    assert_eq!(
        ref_name(&res(&t, "WebhookIngestFunction")["Environment"]["Variables"]["SHOPIFY_SECRET_ID"]),
        Some("ShopifySecret")
    );
    for name in ["OutreachWorkerFunction", "SmsInboundFunction", "VoiceCallbacksFunction", "VoiceAgentFunction"] {
        let id = &res(&t, name)["Environment"]["Variables"]["TWILIO_SECRET_ID"];
        assert_eq!(ref_name(id), Some("TwilioSecret"), "{name}");
    }
    // Every HTTP route of DESIGN §3 this code serves, on the function that serves it.
    for (function, event, path, method) in [
        ("WebhookIngestFunction", "Shopify", "/webhooks/shopify", "POST"),
        ("WebhookIngestFunction", "WooCommerce", "/webhooks/woocommerce/{merchant_id}", "POST"),
        ("WebhookIngestFunction", "BigCommerce", "/webhooks/bigcommerce/{merchant_id}", "POST"),
        ("WebhookIngestFunction", "Custom", "/webhooks/custom/{merchant_id}", "POST"),
        ("WebhookIngestFunction", "RecoveryLink", "/r/{code}", "GET"),
        ("ConsentApiFunction", "CreateConsent", "/v1/consents", "POST"),
        ("ConsentApiFunction", "ReadConsent", "/v1/consents/{phone}", "GET"),
        ("ConsentApiFunction", "PrivacyExport", "/v1/privacy/export", "POST"),
        ("ConsentApiFunction", "PrivacyDelete", "/v1/privacy/delete", "POST"),
        ("ConsentApiFunction", "PrivacyRequest", "/v1/privacy/requests/{id}", "GET"),
        ("SmsInboundFunction", "InboundSms", "/twilio/sms", "POST"),
        ("SmsInboundFunction", "SmsStatus", "/twilio/sms/status", "POST"),
        ("VoiceCallbacksFunction", "VoiceAnswer", "/twilio/voice/answer", "POST"),
        ("VoiceCallbacksFunction", "VoiceGather", "/twilio/voice/gather", "POST"),
        ("VoiceCallbacksFunction", "VoiceStatus", "/twilio/voice/status", "POST"),
        ("VoiceCallbacksFunction", "VoiceRecording", "/twilio/voice/recording", "POST"),
        ("VoiceCallbacksFunction", "VoiceRelayEnded", "/twilio/voice/relay-ended", "POST"),
        ("VoiceCallbacksFunction", "VoiceIncoming", "/twilio/voice/incoming", "POST"),
    ] {
        let route = &res(&t, function)["Events"][event]["Properties"];
        assert_eq!((route["Path"].as_str(), route["Method"].as_str()), (Some(path), Some(method)), "{function}");
    }
    // Least privilege: the consent API and sms-inbound may only send (a deletion's Twilio
    // copies for the worker; the durable copy of an opt-out), never receive or delete.
    for function in ["ConsentApiFunction", "SmsInboundFunction"] {
        let policies = serde_json::to_string(&res(&t, function)["Policies"]).unwrap();
        let sqs: Vec<&str> = policies.match_indices("sqs:").map(|(i, _)| &policies[i..i + 15]).collect();
        assert!(!sqs.is_empty() && sqs.iter().all(|a| a.starts_with("sqs:SendMessage")), "{function}: {sqs:?}");
        assert!(!policies.contains("dynamodb:DeleteItem") && !policies.contains("dynamodb:Scan"), "{function}");
        // Only the privacy API (in consent-api) deletes, and only in batches of a person's items.
        assert_eq!(policies.contains("dynamodb:BatchWriteItem"), function == "ConsentApiFunction", "{function}");
    }
    // Recordings: only the worker writes them (PutObject on the prefix), nobody reads or deletes
    // them yet (retention and the privacy path will), voice-callbacks only queues their copy.
    let functions: Vec<&str> = t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .map(|(k, _)| k.as_str().unwrap())
        .collect();
    for function in functions {
        let policies = serde_json::to_string(&res(&t, function)["Policies"]).unwrap();
        // Every S3 action named (condition keys such as s3:prefix are not actions).
        let s3: Vec<&str> = policies
            .match_indices("\"s3:")
            .map(|(i, _)| {
                let rest = &policies[i + 1..];
                &rest[..rest.find('"').unwrap_or(rest.len())]
            })
            .filter(|a| *a != "s3:prefix")
            .collect();
        match function {
            // Recordings are written (and, for a platform's data-subject request, read for an
            // export's links or deleted); a webhook body under deliveries/ is read and deleted
            // once its delivery is processed.
            "OutreachWorkerFunction" => {
                assert_eq!(s3, vec!["s3:PutObject", "s3:GetObject", "s3:DeleteObject"], "{policies}");
                assert!(policies.contains("${RecordingsBucket.Arn}/recordings/*"), "{policies}");
                assert!(policies.contains("${RecordingsBucket.Arn}/deliveries/*"), "{policies}");
            }
            // A webhook body too large for a queue message, written (and removed again if its
            // copy could not be queued), on that prefix only.
            "WebhookIngestFunction" => {
                assert_eq!(s3, vec!["s3:PutObject", "s3:DeleteObject"], "{policies}");
                assert!(policies.contains("${RecordingsBucket.Arn}/deliveries/*"), "{policies}");
                assert!(!policies.contains("/recordings/"), "{policies}");
            }
            // The purger and the privacy API alone delete recordings, on the prefix only.
            "ConsentApiFunction" => assert_eq!(s3, vec!["s3:GetObject", "s3:DeleteObject"], "{policies}"),
            "RetentionPurgerFunction" => {
                assert_eq!(s3, vec!["s3:DeleteObject", "s3:PutObject", "s3:GetObject", "s3:ListBucket"], "{policies}");
                assert!(policies.contains("${RecordingsBucket.Arn}/recordings/*"), "{policies}");
            }
            _ => assert!(s3.is_empty(), "{function} must not touch recordings: {policies}"),
        }
    }
    // Merchant secrets (`Z#` partition keys) are readable by webhook ingest, and by the worker
    // to verify a webhook's durable copy (GetItem only); nothing else of the worker's touches them.
    let worker = serde_json::to_string(&res(&t, "OutreachWorkerFunction")["Policies"]).unwrap();
    let worker_deny = &worker[..worker.find("Z#*").unwrap_or(0)];
    assert!(worker_deny.contains("dynamodb:PutItem") && !worker_deny.contains("dynamodb:GetItem"), "{worker}");
    for (name, r) in t["Resources"].as_mapping().unwrap() {
        if r["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let name = name.as_str().unwrap();
        let policies = serde_json::to_string(&r["Properties"]["Policies"]).unwrap();
        let denied = policies.contains("\"Effect\":\"Deny\"") && policies.contains("Z#*");
        // Ingest reads them; the purger erases a closed account's, secrets included.
        let allowed = ["WebhookIngestFunction", "RetentionPurgerFunction"].contains(&name);
        assert_eq!(denied, !allowed, "{name}: {policies}");
    }
    // The purger runs daily, on a schedule whose time is its clock.
    let daily = &res(&t, "RetentionPurgerFunction")["Events"]["Daily"];
    assert_eq!(daily["Type"].as_str(), Some("Schedule"));
    assert!(daily["Properties"]["Schedule"].as_str().unwrap().starts_with("cron("));
    let voice = serde_json::to_string(&res(&t, "VoiceCallbacksFunction")["Policies"]).unwrap();
    assert!(voice.contains("sqs:SendMessage") && voice.contains("RecordingsQueue") && voice.contains("OutreachQueue"));
    assert!(!voice.contains("sqs:ReceiveMessage") && !voice.contains("sqs:DeleteMessage"));
}

// ---- The template's least-privilege and encryption contracts (issue 11) ----

/// The value under a CloudFormation short-form tag (`!Ref X`, `!GetAtt X.Arn`, `!Sub "…"`).
fn tagged<'a>(v: &'a Yaml, tag: &str) -> Option<&'a Yaml> {
    match v {
        Yaml::Tagged(t) if t.tag == tag => Some(&t.value),
        _ => None,
    }
}

/// The logical id a `!Ref` or `!GetAtt X.Arn` names.
fn ref_name(v: &Yaml) -> Option<&str> {
    tagged(v, "Ref")
        .and_then(Yaml::as_str)
        .or_else(|| tagged(v, "GetAtt").and_then(Yaml::as_str).and_then(|s| s.strip_suffix(".Arn")))
}

fn is_stack_key(v: &Yaml) -> bool {
    ref_name(v) == Some("DataKey")
}

fn resources_of<'a>(t: &'a Yaml, kind: &str) -> Vec<(&'a str, &'a Yaml)> {
    t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .map(|(k, r)| (k.as_str().unwrap(), &r["Properties"]))
        .collect()
}

fn seq(v: &Yaml) -> Vec<&Yaml> {
    match v {
        Yaml::Sequence(items) => items.iter().collect(),
        Yaml::Null => vec![],
        other => vec![other],
    }
}

/// Every policy statement in the template with its owner: function policies, IAM roles and
/// policies, the key policy and resource policies.
fn policy_statements(t: &Yaml) -> Vec<(String, &Yaml)> {
    let mut out = Vec::new();
    for (name, r) in t["Resources"].as_mapping().unwrap() {
        let name = name.as_str().unwrap().to_string();
        let p = &r["Properties"];
        let documents: Vec<&Yaml> = match r["Type"].as_str().unwrap() {
            "AWS::Serverless::Function" => seq(&p["Policies"]).into_iter().filter(|d| d.is_mapping()).collect(),
            "AWS::IAM::Role" => seq(&p["Policies"]).into_iter().map(|d| &d["PolicyDocument"]).collect(),
            "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy" => vec![&p["PolicyDocument"]],
            "AWS::S3::BucketPolicy" | "AWS::SNS::TopicPolicy" | "AWS::SQS::QueuePolicy" => vec![&p["PolicyDocument"]],
            "AWS::KMS::Key" => vec![&p["KeyPolicy"]],
            _ => vec![],
        };
        for d in documents {
            for s in seq(&d["Statement"]) {
                out.push((name.clone(), s));
            }
        }
    }
    out
}

fn actions(statement: &Yaml) -> Vec<&str> {
    seq(&statement["Action"]).into_iter().map(|a| a.as_str().unwrap()).collect()
}

fn allows(statement: &Yaml) -> bool {
    statement["Effect"].as_str() == Some("Allow")
}

#[test]
fn template_allows_no_wildcard_action_on_the_data_services() {
    let t = template();
    let statements = policy_statements(&t);
    let owners: std::collections::BTreeSet<&str> = statements.iter().map(|(o, _)| o.as_str()).collect();
    for owner in ["WebhookIngestFunction", "OutreachWorkerFunction", "RetentionPurgerFunction", "DataKey"] {
        assert!(owners.contains(owner), "the test reads {owner}'s statements: {owners:?}");
    }
    for (owner, s) in statements.iter().filter(|(_, s)| allows(s)) {
        assert!(s["NotAction"].is_null(), "{owner}: Allow with NotAction");
        for action in actions(s) {
            let service = action.split(':').next().unwrap();
            let wildcard =
                action == "*" || (["dynamodb", "sqs", "s3", "kms"].contains(&service) && action.contains('*'));
            assert!(!wildcard, "{owner} allows the wildcard action {action}");
        }
    }
    // The key policy names its users: administration by the account, use only by the stack's
    // roles and OperatorRoleArns through the services, and the two log/alarm services.
    let key = &res(&t, "DataKey");
    assert_eq!(key["EnableKeyRotation"].as_bool(), Some(true));
    for s in seq(&key["KeyPolicy"]["Statement"]) {
        let principal = serde_json::to_string(&s["Principal"]).unwrap();
        assert!(!principal.contains("\"*\""), "key policy with a public principal: {principal}");
        let uses = actions(s).iter().any(|a| ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"].contains(a));
        if uses && principal.contains(":root") {
            assert!(!s["Condition"]["StringEquals"]["kms:ViaService"].is_null(), "use only through services: {s:?}");
            // Not every principal of the account: the stack's roles and named operators only.
            let named = serde_json::to_string(&s["Condition"]["ArnLike"]["aws:PrincipalArn"]).unwrap();
            assert!(named.contains("role/${AWS::StackName}-*"), "use only by named principals: {s:?}");
        }
    }
}

#[test]
fn template_lets_only_the_purger_and_the_privacy_api_delete_recordings() {
    let t = template();
    let mut deleters = std::collections::BTreeSet::new();
    for (owner, s) in policy_statements(&t).iter().filter(|(_, s)| allows(s)) {
        let deletes = actions(s).iter().any(|a| {
            let a = a.to_ascii_lowercase();
            a == "*" || a == "s3:*" || a.starts_with("s3:delete") || a == "s3:putlifecycleconfiguration"
        });
        let resources = serde_json::to_string(&s["Resource"]).unwrap();
        // Webhook bodies waiting under deliveries/ are not recordings (checked below).
        let deliveries_only =
            resources.contains("${RecordingsBucket.Arn}/deliveries/*") && !resources.contains("/recordings/");
        let on_recordings = (resources.contains("RecordingsBucket") && !deliveries_only) || resources.contains("\"*\"");
        if deletes && on_recordings {
            assert!(!resources.contains("RecordingsBucket.Arn}/*"), "{owner}: deletes anywhere in the bucket");
            deleters.insert(owner.clone());
        }
    }
    // The worker carries out a platform's data-subject request when it is received.
    let expected: std::collections::BTreeSet<String> =
        ["ConsentApiFunction", "OutreachWorkerFunction", "RetentionPurgerFunction"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    assert_eq!(deleters, expected);
    // Webhook bodies (deliveries/) are deleted by the worker once processed, and by ingest when
    // their copy could not be queued; neither reaches past that prefix.
    for f in ["WebhookIngestFunction", "OutreachWorkerFunction"] {
        let p = serde_json::to_string(&res(&t, f)["Policies"]).unwrap();
        assert!(p.contains("s3:DeleteObject") && p.contains("${RecordingsBucket.Arn}/deliveries/*"), "{f}: {p}");
    }
    for f in ["ConsentApiFunction", "RetentionPurgerFunction"] {
        let p = serde_json::to_string(&res(&t, f)["Policies"]).unwrap();
        assert!(p.contains("${RecordingsBucket.Arn}/recordings/*"), "{f}");
        assert!(!p.contains("DeleteObjectVersion"), "no versions to delete: the bucket is unversioned");
    }
}

#[test]
fn template_functions_read_exactly_the_secrets_their_code_uses() {
    let t = template();
    assert!(!serde_json::to_string(&t).unwrap().contains("{{resolve:"));
    let expected = [
        ("WebhookIngestFunction", vec!["LogKeySecret", "MarkerKeySecret", "ShopifySecret"]),
        ("OutreachWorkerFunction", vec!["LogKeySecret", "MarkerKeySecret", "ShopifySecret", "TwilioSecret"]),
        ("ConsentApiFunction", vec!["LogKeySecret", "MarkerKeySecret"]),
        ("SmsInboundFunction", vec!["LogKeySecret", "MarkerKeySecret", "TwilioSecret"]),
        ("VoiceCallbacksFunction", vec!["LogKeySecret", "MarkerKeySecret", "TwilioSecret"]),
        ("VoiceAgentFunction", vec!["LogKeySecret", "MarkerKeySecret", "TwilioSecret"]),
        ("RetentionPurgerFunction", vec!["LogKeySecret", "MarkerKeySecret"]),
    ];
    let functions = resources_of(&t, "AWS::Serverless::Function");
    assert_eq!(functions.len(), expected.len());
    let global_env = &t["Globals"]["Function"]["Environment"]["Variables"];
    for (name, secrets) in expected {
        let f = res(&t, name);
        let mut granted: Vec<&str> = vec![];
        for (owner, s) in policy_statements(&t) {
            if owner != name || !allows(s) {
                continue;
            }
            for action in actions(s).into_iter().filter(|a| a.starts_with("secretsmanager:")) {
                assert_eq!(action, "secretsmanager:GetSecretValue", "{name}");
                for r in seq(&s["Resource"]) {
                    granted.push(ref_name(r).unwrap_or_else(|| panic!("{name}: secret by exact ARN (!Ref): {r:?}")));
                }
            }
        }
        granted.sort_unstable();
        assert_eq!(granted, secrets, "{name}: GetSecretValue on exactly its secrets");
        // …and the secret ids in its environment are those same secrets.
        let mut ids: Vec<&str> = vec![];
        for env in [global_env, &f["Environment"]["Variables"]] {
            if let Some(vars) = env.as_mapping() {
                for (k, v) in vars {
                    if k.as_str().unwrap().ends_with("_SECRET_ID") {
                        ids.push(ref_name(v).unwrap());
                    }
                }
            }
        }
        ids.sort_unstable();
        assert_eq!(ids, secrets, "{name}: *_SECRET_ID variables");
    }
    // The stack creates every secret (exact ARNs), encrypted with its key; no value is typed in.
    let secrets = resources_of(&t, "AWS::SecretsManager::Secret");
    assert_eq!(secrets.len(), 4);
    for (name, s) in secrets {
        assert!(is_stack_key(&s["KmsKeyId"]), "{name}");
        assert!(s["SecretString"].is_null() && s["GenerateSecretString"].is_mapping(), "{name}: no plaintext");
    }
    assert!(
        t["Parameters"]["TwilioWebhookSharedKey"].is_null() && t["Conditions"]["UseTwilioWebhookSharedKey"].is_null()
    );
}

#[test]
fn template_encrypts_everything_it_stores_with_its_own_key() {
    let t = template();
    let logs = resources_of(&t, "AWS::Logs::LogGroup");
    assert_eq!(logs.len(), 9, "seven functions, the HTTP API's and the WebSocket API's access logs");
    for (name, l) in logs {
        assert!(is_stack_key(&l["KmsKeyId"]), "{name}");
        assert_eq!(ref_name(&l["RetentionInDays"]), Some("LogRetentionDays"), "{name}: kept briefly");
    }
    let queues = resources_of(&t, "AWS::SQS::Queue");
    assert_eq!(queues.len(), 5);
    for (name, q) in queues {
        assert!(is_stack_key(&q["KmsMasterKeyId"]), "{name}");
        assert!(q["SqsManagedSseEnabled"].is_null(), "{name}");
    }
    for (name, topic) in resources_of(&t, "AWS::SNS::Topic") {
        assert!(is_stack_key(&topic["KmsMasterKeyId"]), "{name}");
    }
    let table = res(&t, "Table");
    assert!(is_stack_key(&table["SSESpecification"]["KMSMasterKeyId"]));
    let enc = &res(&t, "RecordingsBucket")["BucketEncryption"]["ServerSideEncryptionConfiguration"][0];
    assert_eq!(enc["ServerSideEncryptionByDefault"]["SSEAlgorithm"].as_str(), Some("aws:kms"));
    assert!(is_stack_key(&enc["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]));
    assert!(is_stack_key(&t["Globals"]["Function"]["KmsKeyArn"]), "the functions' environment");
    let worker = res(&t, "OutreachWorkerFunction");
    assert!(is_stack_key(&worker["Environment"]["Variables"]["RECORDINGS_KMS_KEY_ID"]), "recording copies");
    // Every function logs to its own encrypted log group.
    for (name, f) in resources_of(&t, "AWS::Serverless::Function") {
        let group = ref_name(&f["LoggingConfig"]["LogGroup"]).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(t["Resources"][group]["Type"].as_str(), Some("AWS::Logs::LogGroup"), "{name}");
    }
    // The API's access log never carries the path or query (a phone is in /v1/consents/{phone}).
    let access = &res(&t, "HttpApi")["AccessLogSettings"];
    assert_eq!(ref_name(&access["DestinationArn"]), Some("ApiAccessLogs"));
    let format = access["Format"].as_str().unwrap();
    serde_json::from_str::<serde_json::Value>(format).expect("the access log format is JSON");
    assert!(format.contains("$context.routeKey"));
    for leak in
        ["$context.path", "$context.rawPath", "querystring", "$context.identity.sourceIp", "$context.domainName"]
    {
        assert!(!format.contains(leak), "{leak} in the access log");
    }
}

#[test]
fn template_alarms_watch_every_dead_letter_queue_and_failure() {
    let t = template();
    let alarms = resources_of(&t, "AWS::CloudWatch::Alarm");
    for (name, a) in &alarms {
        assert_eq!(ref_name(&a["AlarmActions"][0]), Some("AlarmTopic"), "{name} notifies");
        if let (Some(p), Some(n)) = (a["Period"].as_u64(), a["EvaluationPeriods"].as_u64()) {
            assert!(p * n <= if p < 3600 { 86_400 } else { 604_800 }, "{name}: CloudWatch's evaluation range");
        }
    }
    let dimension_of = |a: &Yaml| -> Option<String> {
        let v = &a["Dimensions"][0]["Value"];
        ref_name(v).map(str::to_string).or_else(|| tagged(v, "GetAtt").and_then(Yaml::as_str).map(|s| s.to_string()))
    };
    let watched: Vec<(String, String)> =
        alarms.iter().filter_map(|(_, a)| Some((a["MetricName"].as_str()?.to_string(), dimension_of(a)?))).collect();
    for (name, _) in resources_of(&t, "AWS::SQS::Queue").into_iter().filter(|(n, _)| n.contains("DeadLetter")) {
        let dim = format!("{name}.QueueName");
        assert!(watched.contains(&("ApproximateNumberOfMessagesVisible".into(), dim)), "{name} has no alarm");
    }
    for f in [
        "OutreachWorkerFunction",
        "SmsInboundFunction",
        "VoiceCallbacksFunction",
        "VoiceAgentFunction",
        "RetentionPurgerFunction",
    ] {
        assert!(watched.contains(&("Errors".into(), f.into())), "{f}'s Errors have no alarm");
    }
    assert!(
        alarms.iter().any(|(_, a)| a["MetricName"].as_str() == Some("AgentModelFallbacks")),
        "Bedrock failures and throttling (the agent's fallback) raise an alarm"
    );
    // The agent's WebSocket API: its three routes, replies to its own connections only, and
    // Bedrock on the configured model only.
    for route in ["$connect", "$default", "$disconnect"] {
        assert!(
            resources_of(&t, "AWS::ApiGatewayV2::Route").iter().any(|(_, r)| r["RouteKey"].as_str() == Some(route)),
            "{route}"
        );
    }
    let agent = serde_json::to_string(&res(&t, "VoiceAgentFunction")["Policies"]).unwrap();
    assert!(agent.contains("execute-api:ManageConnections") && agent.contains("@connections"), "{agent}");
    assert!(agent.contains("bedrock:InvokeModelWithResponseStream") && agent.contains("foundation-model/"), "{agent}");
    assert!(!agent.contains("bedrock:*") && !agent.contains("\"execute-api:*\""), "{agent}");
    let not_run = res(&t, "PurgerDidNotRunAlarm");
    assert_eq!(not_run["MetricName"].as_str(), Some("PurgeRuns"));
    // No run is no data: it notifies on INSUFFICIENT_DATA, so a fresh stack (never run, no
    // state change) stays quiet where `breaching` would page before the first scheduled run.
    assert_eq!(not_run["TreatMissingData"].as_str(), Some("missing"));
    assert_eq!(ref_name(&not_run["InsufficientDataActions"][0]), Some("AlarmTopic"));
    assert_eq!(not_run["Period"].as_u64().unwrap() * not_run["EvaluationPeriods"].as_u64().unwrap(), 26 * 3600);
    // Silence is an alarm: the purger's daily check emits MerchantSilent (Service only); no run
    // is the PurgerDidNotRunAlarm's business, so missing data does not breach here.
    let silent = res(&t, "MerchantSilentAlarm");
    assert_eq!(silent["MetricName"].as_str(), Some("MerchantSilent"));
    assert_eq!(silent["Dimensions"].as_sequence().map(Vec::len), Some(1));
    assert_eq!(silent["TreatMissingData"].as_str(), Some("notBreaching"));
    assert_eq!(silent["ComparisonOperator"].as_str(), Some("GreaterThanThreshold"));
    let twilio = serde_json::to_string(res(&t, "TwilioErrorRateAlarm")).unwrap();
    assert!(twilio.contains("TwilioErrors") && twilio.contains("TwilioRequests") && twilio.contains("\"Callfy\""));
    let api = serde_json::to_string(res(&t, "Api5xxRateAlarm")).unwrap();
    assert!(api.contains("\"5xx\"") && api.contains("\"Count\"") && api.contains("ApiId"));
    let purger = res(&t, "RetentionPurgerFunction");
    assert_eq!(ref_name(&purger["DeadLetterQueue"]["TargetArn"]), Some("PurgerDeadLetterQueue"));
}

#[test]
fn twilio_sample_events_are_signed_for_the_local_runner() {
    for file in [
        "twilio-sms-stop.json",
        "twilio-sms-help.json",
        "twilio-sms-start.json",
        "twilio-sms-status-21610.json",
        "twilio-voice-answer.json",
        "twilio-voice-gather.json",
        "twilio-voice-status.json",
        "twilio-voice-recording.json",
    ] {
        let e = event(file);
        let body = e["body"].as_str().unwrap();
        let query = e["rawQueryString"].as_str().unwrap_or_default();
        let url = match query {
            "" => format!("http://127.0.0.1:3000{}", e["rawPath"].as_str().unwrap()),
            q => format!("http://127.0.0.1:3000{}?{q}", e["rawPath"].as_str().unwrap()),
        };
        let sig = e["headers"]["x-twilio-signature"].as_str();
        let params =
            callfy_shared::twilio_signature::validate(local_defaults::TWILIO_AUTH_TOKEN, &url, body.as_bytes(), sig)
                .unwrap_or_else(|err| panic!("{file}: {err}: run scripts/build-events"));
        assert!(params.iter().any(|(k, _)| k == "MessageSid" || k == "CallSid"), "{file}");
        lambda_http::request::from_str(&e.to_string()).unwrap_or_else(|err| panic!("{file}: {err}"));
    }
    for file in ["consent-api-post.json", "consent-api-get.json", "shopify-marketing-consent-update.json"] {
        lambda_http::request::from_str(&event(file).to_string()).unwrap_or_else(|err| panic!("{file}: {err}"));
    }
}

fn event(name: &str) -> serde_json::Value {
    read_json(&format!("events/{name}"))
}

#[test]
fn shopify_sample_events_are_signed_and_match_their_payloads() {
    for (file, payload, topic) in [
        ("shopify-checkout-create.json", "checkouts-create.json", "checkouts/create"),
        ("shopify-checkout-update.json", "checkouts-update.json", "checkouts/update"),
        ("shopify-checkout-delete.json", "checkouts-delete.json", "checkouts/delete"),
        ("shopify-orders-create.json", "orders-create.json", "orders/create"),
        (
            "shopify-marketing-consent-update.json",
            "customers-marketing-consent-update.json",
            "customers_marketing_consent/update",
        ),
        ("shopify-customers-data-request.json", "customers-data-request.json", "customers/data_request"),
        ("shopify-customers-redact.json", "customers-redact.json", "customers/redact"),
        ("shopify-shop-redact.json", "shop-redact.json", "shop/redact"),
    ] {
        let e = event(file);
        let body = e["body"].as_str().unwrap();
        let sig = e["headers"]["x-shopify-hmac-sha256"].as_str().unwrap();
        assert_eq!(sig, shopify_signature(body.as_bytes()), "{file}: run scripts/build-events");
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(parsed, read_json(&format!("events/shopify/{payload}")), "{file}: run scripts/build-events");
        assert_eq!(e["headers"]["x-shopify-topic"].as_str(), Some(topic));
        let req = lambda_http::request::from_str(&e.to_string()).unwrap_or_else(|err| panic!("{file}: {err}"));
        assert_eq!(req.uri().path(), "/webhooks/shopify");
        assert_eq!(req.headers()["x-shopify-shop-domain"], SHOP);
    }
}

#[tokio::test]
async fn sample_events_drive_the_handlers_as_lambda_would() {
    // Daytime for the shopper in San Francisco, soon after the checkout event's own time.
    let at: DateTime<Utc> = "2026-11-28T19:00:00Z".parse().unwrap();
    let clock = Arc::new(ManualClock::new(at));
    let local = start_local("ct-events", clock, &merchant(|_| {})).await;
    let req = lambda_http::request::from_str(&event("shopify-checkout-create.json").to_string()).unwrap();
    let resp = webhook_ingest::handle(&local.functions().ingest, req).await;
    assert_eq!(resp.status(), 200);

    let sqs: SqsEvent = serde_json::from_value(event("sqs-outreach.json")).unwrap();
    let job: OutreachJob = serde_json::from_str(sqs.records[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(job.cart_token.as_str(), read_json("events/shopify/checkouts-create.json")["token"]);
    let response = outreach_worker::handle_batch(&local.functions().worker, sqs).await;
    assert!(response.batch_item_failures.is_empty());
    let sent = local.sandbox.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, PHONE);
    local.shutdown().await;
}

#[test]
fn sandbox_answers_match_twilio_message_schema() {
    let clock = Arc::new(ManualClock::new("2026-11-28T15:00:00Z".parse().unwrap()));
    let sandbox = Sandbox::new(
        local_defaults::TWILIO_ACCOUNT_SID,
        local_defaults::TWILIO_AUTH_TOKEN,
        clock,
        "http://127.0.0.1:9",
        false,
    );
    let mut headers = axum::http::HeaderMap::new();
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", local_defaults::TWILIO_ACCOUNT_SID, local_defaults::TWILIO_AUTH_TOKEN),
    );
    headers.insert("authorization", format!("Basic {basic}").parse().unwrap());
    let form: Vec<(String, String)> = [("To", PHONE), ("From", "+15005550006"), ("Body", "hi")]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let answer = sandbox.create_message(local_defaults::TWILIO_ACCOUNT_SID, &headers, &form);
    assert_eq!(answer.status, 201);
    let problems = contract().check_response("api.v2010.account.message", &answer.body);
    assert!(problems.is_empty(), "{problems:?}");
    let query: Vec<(String, String)> = vec![("To".into(), PHONE.into()), ("PageSize".into(), "50".into())];
    let list = sandbox.list_messages(local_defaults::TWILIO_ACCOUNT_SID, &headers, &query);
    assert_eq!(list.status, 200);
    assert_eq!(list.body["messages"].as_array().unwrap().len(), 1);
    let problems = contract().check_message_list(&list.body);
    assert!(problems.is_empty(), "{problems:?}");

    // A request Twilio would refuse is refused and remembered as a contract violation.
    let bad: Vec<(String, String)> = vec![("Body".into(), "hi".into()), ("Colour".into(), "red".into())];
    assert_eq!(sandbox.create_message(local_defaults::TWILIO_ACCOUNT_SID, &headers, &bad).status, 400);
    assert_eq!(sandbox.violations().len(), 2);
    let bad_query: Vec<(String, String)> = vec![("Colour".into(), "red".into())];
    assert_eq!(sandbox.list_messages(local_defaults::TWILIO_ACCOUNT_SID, &headers, &bad_query).status, 400);
    assert_eq!(sandbox.violations().len(), 3);
    assert!(contract().check_form(MESSAGES_PATH, "post", &form).is_empty());
    assert!(Phone::parse(PHONE, None).is_ok());
}

#[tokio::test]
async fn prism_accepts_the_requests_the_twilio_client_makes() {
    use callfy_shared::adapters::twilio::{PlaceCall, SendSms, SmsSender, TwilioClient, TwilioError};
    use callfy_shared::config::{TwilioAuth, TwilioConfig};
    use callfy_shared::domain::message::RecoverySms;

    let url = std::env::var("CALLFY_PRISM_URL").expect("scripts/test starts Prism and sets CALLFY_PRISM_URL");
    let client = TwilioClient::new(&TwilioConfig {
        api_base: url,
        account_sid: local_defaults::TWILIO_ACCOUNT_SID.into(),
        auth: TwilioAuth::AuthToken(local_defaults::TWILIO_AUTH_TOKEN.into()),
        auth_token: None,
        timeout: callfy_shared::config::DEFAULT_TWILIO_TIMEOUT,
    })
    .unwrap();
    let body = RecoverySms {
        merchant_name: "Snowdevil",
        first_name: Some("Ann"),
        items: &[],
        recovery_url: "https://snowdevil.myshopify.com/48723984/checkouts/cd8e/recover?key=9a6d",
        discount_code: Some("COMEBACK10"),
        first_contact: true,
    }
    .render();
    for sender in [
        SmsSender::MessagingService("MG0123456789abcdef0123456789abcdef".into()),
        SmsSender::From("+15005550006".into()),
    ] {
        let request = SendSms {
            to: PHONE.into(),
            sender,
            body: body.clone(),
            status_callback: Some("https://hooks.callfy.example/twilio/sms/status".into()),
            validity_seconds: Some(900),
        };
        let message = client.send_sms(&request).await.expect("Twilio's spec accepts the request");
        assert!(message.sid.starts_with("SM"));
    }
    // The check has teeth: Prism refuses what the spec forbids.
    let broken = SendSms {
        to: PHONE.into(),
        sender: SmsSender::From("+15005550006".into()),
        body,
        status_callback: Some("not a url".into()),
        validity_seconds: None,
    };
    let err = client.send_sms(&broken).await.unwrap_err();
    assert!(matches!(err, TwilioError::Api { status: 422, .. }), "{err}");
    // A deletion's redaction of Twilio's copy of a message (an empty Body).
    assert!(client.redact_message("SM0123456789abcdef0123456789abcdef").await.expect("Twilio's spec accepts it"));

    // The call the worker places, with and without recording, and the lookup of a lost answer.
    let base = "https://hooks.callfy.example/twilio/voice";
    for recording_callback in [None, Some(format!("{base}/recording?m=snowdevil&c=t&s=1"))] {
        let call = PlaceCall {
            to: PHONE.into(),
            from: "+15005550006".into(),
            url: format!("{base}/answer?m=snowdevil&c=t&s=1"),
            status_callback: format!("{base}/status?m=snowdevil&c=t&s=1"),
            machine_detection: "Enable",
            timeout_seconds: 25,
            time_limit_seconds: 300,
            recording_callback,
        };
        let placed = client.place_call(&call).await.expect("Twilio's spec accepts the call");
        assert!(placed.sid.starts_with("CA"), "{placed:?}");
    }
    client.recent_calls_to(PHONE).await.expect("Twilio's spec accepts the call list query");
    let err = client
        .place_call(&PlaceCall {
            to: PHONE.into(),
            from: "+15005550006".into(),
            url: "not a url".into(),
            status_callback: format!("{base}/status"),
            machine_detection: "Enable",
            timeout_seconds: 25,
            time_limit_seconds: 300,
            recording_callback: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, TwilioError::Api { status: 422, .. }), "{err}");
}

#[test]
fn the_vendored_twilio_spec_is_the_shared_one() {
    let shared = root().join("../shared/twilio/twilio_api_v2010.json");
    let vendored = root().join("tools/callfy-local/twilio/twilio_api_v2010.json");
    let vendored = std::fs::read(vendored).unwrap();
    assert!(vendored.len() > 1_000_000, "the full spec is vendored");
    match std::fs::read(&shared) {
        Ok(shared) => {
            assert!(shared == vendored, "copy ../shared/twilio/twilio_api_v2010.json into tools/callfy-local/twilio/")
        }
        Err(_) => eprintln!("../shared/twilio is not beside this clone; only the vendored copy was checked"),
    }
}
