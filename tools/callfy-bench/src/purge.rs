//! The retention purge's cost: a run over a table of 50 000 items of which 500 are due, next to
//! a table holding only those 500 (it reads only the purge index, so the two should be close),
//! and its deletes per second next to BatchWriteItem alone on as many items.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use callfy_local::resources::{self, ResourceNames};
use callfy_shared::adapters::recordings::RecordingBucket;
use callfy_shared::adapters::store::Store;
use callfy_shared::app::retention::{ERASURE_PAGE, Purger, RunOptions};
use callfy_shared::domain::retention::purge_bucket;
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::time::Instant;

pub struct Report {
    pub big: std::time::Duration,
    pub small: std::time::Duration,
    /// The same purge-index Queries made bare on each table: what the store itself costs.
    pub big_reads: std::time::Duration,
    pub small_reads: std::time::Duration,
    /// Purge-index entries each run read.
    pub big_index: u64,
    pub small_index: u64,
    pub due: usize,
    pub total: usize,
    pub purger_rate: f64,
    pub bare_rate: f64,
    /// The purge-index Queries that find those items, bare, as items per second of Query time.
    pub bare_read_rate: f64,
    pub rate_items: usize,
    /// The purger ÷ BatchWriteItem alone, round by round.
    pub ratios: Vec<f64>,
}

/// Rounds of the deletes-per-second comparison.
const RATE_ROUNDS: usize = 5;

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// BatchWriteItem alone, 25 keys a call, one call after the other, unprocessed items retried.
async fn bare_deletes(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    items: &[HashMap<String, AttributeValue>],
) -> Result<std::time::Duration, String> {
    let deletes = items.iter().map(|i| {
        let key = HashMap::from([("pk".to_string(), i["pk"].clone()), ("sk".to_string(), i["sk"].clone())]);
        WriteRequest::builder().delete_request(DeleteRequest::builder().set_key(Some(key)).build().unwrap()).build()
    });
    let started = Instant::now();
    batch_write(ddb, table, deletes.collect()).await?;
    Ok(started.elapsed())
}

/// `requests` 25 to a BatchWriteItem, one call after the other, unprocessed ones sent again.
async fn batch_write(ddb: &aws_sdk_dynamodb::Client, table: &str, requests: Vec<WriteRequest>) -> Result<(), String> {
    for chunk in requests.chunks(25) {
        let mut pending = chunk.to_vec();
        while !pending.is_empty() {
            let out = ddb.batch_write_item().request_items(table, pending).send().await.map_err(|e| e.to_string())?;
            pending = out.unprocessed_items.and_then(|mut m| m.remove(table)).unwrap_or_default();
        }
    }
    Ok(())
}

fn item(i: usize, purge_at: DateTime<Utc>) -> HashMap<String, AttributeValue> {
    let pk = format!("C#bench#+1415{:07}", i % 9_000_000);
    let s = |v: String| AttributeValue::S(v);
    HashMap::from([
        ("pk".to_string(), s(pk.clone())),
        ("sk".to_string(), s(format!("SMS#OUT#2026-01-01T00:00:00.000Z#SM{i:032}"))),
        ("body".to_string(), s("Snowdevil: your cart is waiting".into())),
        ("purge_bucket".to_string(), s(purge_bucket(&pk))),
        ("purge_at".to_string(), s(purge_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))),
    ])
}

async fn write_all(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    items: Vec<HashMap<String, AttributeValue>>,
) -> Result<(), String> {
    let puts = items
        .into_iter()
        .map(|i| WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(i)).build().unwrap()).build());
    batch_write(ddb, table, puts.collect()).await
}

async fn table(sdk: &SdkConfig, prefix: &str) -> Result<(Store, Files, String), String> {
    let res = resources::ensure(sdk, &ResourceNames::unique(prefix)).await.map_err(|e| e.to_string())?;
    let clients = callfy_shared::startup::Clients::new(sdk);
    let (store, bucket) = (clients.store(&res.names.table), clients.bucket(&res.names.bucket, None));
    Ok((store, Files { bucket, queue: clients.queue(&res.queue_url) }, res.names.table))
}

/// The purger's bucket and queue.
struct Files {
    bucket: RecordingBucket,
    queue: callfy_shared::adapters::queue::OutreachQueue,
}

/// The purge-index Queries a run makes (every shard, every page, the same projection), bare, timed.
async fn bare_reads(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    as_of: DateTime<Utc>,
) -> Result<std::time::Duration, String> {
    let started = Instant::now();
    {
        for shard in 0..callfy_shared::domain::retention::PURGE_SHARDS {
            let bucket = callfy_shared::domain::retention::shard_bucket(shard);
            let (projection, names) = callfy_shared::adapters::dynamo::due_projection();
            let mut pages = ddb
                .query()
                .table_name(table)
                .index_name("purge")
                .key_condition_expression("purge_bucket = :b AND purge_at <= :t")
                .projection_expression(projection)
                .set_expression_attribute_names(Some(names.into_iter().collect()))
                .expression_attribute_values(":b", AttributeValue::S(bucket))
                .expression_attribute_values(
                    ":t",
                    AttributeValue::S(as_of.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                )
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                page.map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(started.elapsed())
}

async fn timed_run(
    store: &Store,
    files: &Files,
    as_of: DateTime<Utc>,
) -> Result<(std::time::Duration, u64, u64), String> {
    let purger = Purger { store, recordings: &files.bucket, queue: &files.queue };
    let opts = RunOptions {
        as_of,
        dry_run: false,
        deadline: None,
        started_at: Utc::now(),
        closure_grace_days: 30,
        erasure_page: ERASURE_PAGE,
    };
    let started = Instant::now();
    let report = purger.run(opts).await.map_err(|e| e.to_string())?;
    Ok((started.elapsed(), report.total(), report.index_reads))
}

pub async fn measure(sdk: &SdkConfig, total: usize, due: usize, rate_items: usize) -> Result<Report, String> {
    let as_of = Utc::now();
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let past = as_of - Duration::hours(1);
    let future = as_of + Duration::days(365);

    let (big, big_bucket, big_table) = table(sdk, "bench-purge-big").await?;
    let items: Vec<_> = (0..total).map(|i| item(i, if i < due { past } else { future })).collect();
    eprintln!("seeding {total} items ({due} due)…");
    write_all(&ddb, &big_table, items).await?;
    let (small, small_bucket, small_table) = table(sdk, "bench-purge-small").await?;
    write_all(&ddb, &small_table, (0..due).map(|i| item(i, past)).collect()).await?;

    let big_reads = bare_reads(&ddb, &big_table, as_of).await?;
    let small_reads = bare_reads(&ddb, &small_table, as_of).await?;
    let (big_time, n_big, big_index) = timed_run(&big, &big_bucket, as_of).await?;
    let (small_time, n_small, small_index) = timed_run(&small, &small_bucket, as_of).await?;
    if n_big != due as u64 || n_small != due as u64 {
        return Err(format!("expected {due} deletions, got {n_big} and {n_small}"));
    }
    for t in [&big_table, &small_table] {
        ddb.delete_table().table_name(t.as_str()).send().await.map_err(|e| e.to_string())?;
    }

    // Deletes per second: the purger on `rate_items` due items, and BatchWriteItem alone, in
    // alternating rounds on fresh tables (moto's pauses land on one side or the other; the
    // median of each is reported).
    let mut purger_rates = Vec::new();
    let mut bare_rates = Vec::new();
    let mut read_rates = Vec::new();
    for round in 0..RATE_ROUNDS {
        let (rate, rate_bucket, rate_table) = table(sdk, "bench-purge-rate").await?;
        write_all(&ddb, &rate_table, (0..rate_items).map(|i| item(i, past)).collect()).await?;
        let (_, _, bare_table) = table(sdk, "bench-purge-bare").await?;
        let keys: Vec<_> = (0..rate_items).map(|i| item(i, past)).collect();
        write_all(&ddb, &bare_table, keys.clone()).await?;
        // Each side goes first every other round.
        let mut purger_time = None;
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let (time, n, _) = timed_run(&rate, &rate_bucket, as_of).await?;
                if n != rate_items as u64 {
                    return Err(format!("round {round}: expected {rate_items} deletions, got {n}"));
                }
                purger_time = Some(time);
            } else {
                // What finding them costs the store, bare: the index Queries a run must make first.
                read_rates.push(rate_items as f64 / bare_reads(&ddb, &bare_table, as_of).await?.as_secs_f64());
                bare_rates.push(rate_items as f64 / bare_deletes(&ddb, &bare_table, &keys).await?.as_secs_f64());
            }
        }
        if let Some(time) = purger_time {
            purger_rates.push(rate_items as f64 / time.as_secs_f64());
        }
        // moto keeps every table it was given: dropped, so no round meets a larger heap.
        for t in [&rate_table, &bare_table] {
            ddb.delete_table().table_name(t.as_str()).send().await.map_err(|e| e.to_string())?;
        }
    }
    Ok(Report {
        big: big_time,
        small: small_time,
        big_reads,
        small_reads,
        big_index,
        small_index,
        due,
        total,
        purger_rate: median(&purger_rates),
        bare_rate: median(&bare_rates),
        bare_read_rate: median(&read_rates),
        ratios: purger_rates.iter().zip(&bare_rates).map(|(p, b)| p / b).collect(),
        rate_items,
    })
}

pub fn print(r: &Report) {
    println!();
    println!("| retention purge (moto) | run time | due items deleted | index entries read |");
    println!("|---|---|---|---|");
    println!(
        "| table of {} items, {} due | {} | {} | {} |",
        r.total,
        r.due,
        callfy_bench::ms(r.big),
        r.due,
        r.big_index
    );
    println!("| table of only those {} | {} | {} | {} |", r.due, callfy_bench::ms(r.small), r.due, r.small_index);
    println!("| **ratio (budget: within 2×)** | **{:.2}×** | | |", r.big.as_secs_f64() / r.small.as_secs_f64());
    println!("| the same purge-index Queries, bare: large table | {} | | |", callfy_bench::ms(r.big_reads));
    println!("| the same purge-index Queries, bare: small table | {} | | |", callfy_bench::ms(r.small_reads));
    println!();
    println!(
        "| deleting {} due items ({} rounds, each side first in turn; medians) | items/s |",
        r.rate_items,
        r.ratios.len()
    );
    println!("|---|---|");
    println!("| the purger (index reads, batches, audit record) | {:.0} |", r.purger_rate);
    println!("| BatchWriteItem alone (25 a call, same keys) | {:.0} |", r.bare_rate);
    println!("| the purge-index Queries alone that find them (every shard, every page) | {:.0} |", r.bare_read_rate);
    // One after the other: the least a purge that must find what it deletes can cost.
    let both = 1.0 / (1.0 / r.bare_rate + 1.0 / r.bare_read_rate);
    println!("| those Queries, then BatchWriteItem (bare, one after the other) | {both:.0} |");
    println!(
        "| **the purger ÷ BatchWriteItem alone, the median of the rounds' ratios (budget: ≥ 0.8×); ÷ Queries then BatchWriteItem** | **{:.2}×; {:.2}×** |",
        median(&r.ratios),
        r.purger_rate / both
    );
    let rounds: Vec<String> = r.ratios.iter().map(|x| format!("{x:.2}×")).collect();
    println!("| the purger ÷ BatchWriteItem alone, round by round | {} |", rounds.join(", "));
}
