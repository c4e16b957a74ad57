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
