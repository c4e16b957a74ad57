//! The benchmark harness itself: the baseline Lambda runs through the local Runtime API.

use callfy_bench::{measure, median};
use std::path::Path;

#[tokio::test]
async fn measures_the_hello_world_baseline() {
    let bin = Path::new(env!("CARGO_BIN_EXE_hello-lambda"));
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(measure(bin, &[], b"{\"hello\":\"world\"}").await.expect("baseline runs"));
    }
    let m = median(&runs).unwrap();
    assert!(m.init.as_micros() > 0 && m.init.as_secs() < 5, "{m:?}");
    assert!(m.peak_rss_kib > 0, "{m:?}");
}

/// The memory figure is taken after many warm invocations of one process, each answered.
#[tokio::test]
async fn serves_many_warm_invocations_to_one_process() {
    let bin = Path::new(env!("CARGO_BIN_EXE_hello-lambda"));
    let events = (0..200).map(|i| format!("{{\"hello\":\"{i}\"}}").into_bytes()).collect();
    let m = callfy_bench::measure_process(&[bin.as_os_str().into()], &[], events).await.expect("200 invocations");
    assert!(m.peak_rss_kib > 0 && m.first_invoke.as_secs() < 5, "{m:?}");
}

/// The steps between hello-world and a function start (SDK clients built from the environment, no
/// call made) and answer, as the bench's table of where init goes needs them to.
#[tokio::test]
async fn the_init_steps_start_and_answer() {
    let env: Vec<(String, String)> =
        [("AWS_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "y")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    for bin in [env!("CARGO_BIN_EXE_hello-sdk"), env!("CARGO_BIN_EXE_hello-sdk-log")] {
        let m = measure(Path::new(bin), &env, b"{\"hello\":\"world\"}").await.unwrap_or_else(|e| panic!("{bin}: {e}"));
        assert!(m.init.as_micros() > 0 && m.init.as_secs() < 5, "{bin}: {m:?}");
    }
}
