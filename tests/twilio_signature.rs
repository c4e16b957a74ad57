//! Our `X-Twilio-Signature` code against Twilio's own helper library (PyPI `twilio`,
//! `RequestValidator`) on many randomised requests: both must compute the same signature, and
//! each must accept what the other signed, with and without the port in the URL, for auth-token
//! HMAC-SHA1 and SharedKey HMAC-SHA256 signatures.

use callfy_shared::signature::sha256_hex;
use callfy_shared::twilio_signature::{Algorithm, SigningKeys, compute_with, port_variants, validate_request};
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

/// A small deterministic generator (xorshift64*), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn text(&mut self, max: usize) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", "0", "9", " ", "+", "&", "=", "%", "/", "?", "é", "ß", "☃", "日本", "😀", "-", "_", ".", "~",
            "\"", "'",
        ];
        (0..self.below(max + 1)).map(|_| self.pick(PIECES)).collect()
    }
}

fn python() -> String {
    std::env::var("CALLFY_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/callfy/venv/bin/python")
    })
}

fn random_url(rng: &mut Rng) -> String {
    let scheme = rng.pick(&["https", "http"]);
    let host = rng.pick(&["hooks.callfy.example", "mycompany.com", "127.0.0.1", "api.example.org"]);
    let port = rng.pick(&["", ":443", ":80", ":3000", ":8443"]);
    let path = rng.pick(&["/twilio/sms", "/twilio/sms/status", "/myapp.php", "/a/b/c", "/"]);
    let mut url = format!("{scheme}://{host}{port}{path}");
    if rng.below(2) == 0 {
        let pairs: Vec<(String, String)> = (0..1 + rng.below(3)).map(|i| (format!("q{i}"), rng.text(6))).collect();
        url.push('?');
        url.push_str(&serde_urlencoded::to_string(pairs).unwrap());
    }
    url
}

#[test]
fn matches_twilio_request_validator_on_randomised_requests() {
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for i in 0..300 {
        let token = format!("{:032x}", rng.next() as u128 * 7919 + i);
        // A third are signed by a Webhook Rule's SharedKey with HMAC-SHA256.
        let (algorithm, name, settings) = if i % 3 == 1 {
            (Algorithm::HmacSha256, "HMAC_SHA256", Some("key=KS00000000000000000000000000000000,algorithm=HMAC_SHA256"))
        } else {
            (Algorithm::HmacSha1, "HMAC_SHA1", None)
        };
        let request_url = random_url(&mut rng);
        let [without, with] = port_variants(&request_url);
        let signed_url = if rng.below(2) == 0 { without } else { with };
        if i % 5 == 0 {
            // A JSON body, covered by bodySHA256 in the URL.
            let body = json!({ "n": i, "text": rng.text(12) }).to_string();
            let sep = if signed_url.contains('?') { '&' } else { '?' };
            let hash = sha256_hex(body.as_bytes());
            let signed = format!("{signed_url}{sep}bodySHA256={hash}");
            let request =
                format!("{request_url}{}bodySHA256={hash}", if request_url.contains('?') { '&' } else { '?' });
            let sig = compute_with(algorithm, &token, &signed, &[]);
            cases.push(json!({ "token": token, "signed_url": signed, "request_url": request, "json_body": body, "our_signature": sig, "algorithm": name }));
            ours.push((token, request, body.into_bytes(), sig, settings));
            continue;
        }
        let names = ["Body", "From", "To", "MessageSid", "AccountSid", "NumMedia", "Ä", "b", "B", "x y", "日本"];
        let mut params: Vec<(String, String)> = Vec::new();
        for _ in 0..rng.below(9) {
            let name = rng.pick(&names).to_string();
            let value = rng.text(10);
            // Identical repeated pairs are where helper libraries disagree; see the unit tests.
            if !params.iter().any(|(k, v)| *k == name && *v == value) {
                params.push((name, value));
            }
        }
        let sig = compute_with(algorithm, &token, &signed_url, &params);
        let body = serde_urlencoded::to_string(&params).unwrap();
        cases.push(json!({ "token": token, "signed_url": signed_url, "request_url": request_url, "params": params, "our_signature": sig, "algorithm": name }));
        ours.push((token, request_url, body.into_bytes(), sig, settings));
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/support/twilio_sign.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test venv's python runs (scripts/test installs `twilio` into it)");
    child.stdin.take().unwrap().write_all(Value::Array(cases.clone()).to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "twilio helper failed: {}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), cases.len());

    for ((case, result), (token, request_url, body, our_sig, settings)) in cases.iter().zip(&results).zip(&ours) {
        // The SharedKey cases carry the secret as the shared key, the others as the auth token.
        let keys = match settings {
            Some(_) => SigningKeys { shared_key: Some(token), ..SigningKeys::auth_token("not-this-one") },
            None => SigningKeys::auth_token(token),
        };
        let validate = |url: &str, body: &[u8], sig: &str| validate_request(keys, url, body, Some(sig), *settings);
        let theirs = result["signature"].as_str().unwrap();
        assert_eq!(theirs, our_sig, "signature differs for {case}");
        assert_eq!(result["ours_ok"], true, "Twilio's validator rejected our signature for {case}");
        assert!(validate(request_url, body, theirs).is_ok(), "we rejected Twilio's signature for {case}");
        // And a changed body or URL is refused by us.
        let mut tampered = body.clone();
        tampered.extend_from_slice(b"&Extra=1");
        assert!(validate(request_url, &tampered, theirs).is_err(), "{case}");
        assert!(validate(&format!("{request_url}x"), body, theirs).is_err(), "{case}");
    }
}
