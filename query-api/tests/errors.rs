//! The error contract, each class produced for real: a status per kind, the
//! JSON body `{"error", "kind", "request_id"}` with the id of the
//! `x-request-id` header, no server internals in the body, and the cause in
//! the server's log exactly once under that id.
//!
//! Every class comes from a real server: a bad parameter, a missing token, an
//! unknown path, a scan over `--max-rows-scanned` on seeded data, a query over
//! `--query-timeout-seconds` (a view that sleeps per row), ClickHouse on a
//! port where nothing listens, and a table whose columns our row type cannot
//! decode (made by hand here).

mod common;

use std::time::Duration;

use common::{Log, drop_database, seeded_database, start_api, start_api_at};
use javelin_schema::testkit::{clickhouse_client, free_port, unique_name, wait_for};
use serde_json::Value;

/// One answer of the API.
struct Answer {
    status: u16,
    /// The `x-request-id` header.
    id: String,
    www_authenticate: Option<String>,
    text: String,
    body: Value,
}

async fn call(url: &str, request_id: Option<&str>, token: Option<&str>) -> Answer {
    // Bounded: an API that never answers fails the test instead of hanging it.
    let mut request = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(30));
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    answer(request.send().await.expect("request")).await
}

async fn answer(response: reqwest::Response) -> Answer {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let id = header("x-request-id").unwrap_or_default();
    let www_authenticate = header("www-authenticate");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        id,
        www_authenticate,
        text,
        body,
    }
}

/// The answer is the contract's error of `kind` with `status`: exactly the
/// three fields, the body's id is the header's, and it names no internals.
fn assert_error(a: &Answer, status: u16, kind: &str) {
    println!("{status} {kind}: {}", a.text);
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(a.body["kind"], kind, "{}", a.text);
    assert!(!a.id.is_empty(), "x-request-id header on {}", a.text);
    assert_eq!(
        a.body["request_id"].as_str(),
        Some(a.id.as_str()),
        "{}",
        a.text
    );
    assert!(
        a.body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        a.text
    );
    assert_eq!(
        a.body.as_object().map(|o| o.len()),
        Some(3),
        "error, kind and request_id only: {}",
        a.text
    );
    for internal in [
        "Code:",
        "DB::Exception",
        "e.displayText",
        "Connection refused",
        "network error",
        "not enough data",
        "127.0.0.1",
        "bad response",
    ] {
        assert!(
            !a.text.contains(internal),
            "{internal:?} leaked: {}",
            a.text
        );
    }
}

/// The log names `id` exactly once, on a line that holds `cause`. `marker`
/// is a request made after `id`'s answer that logs too: once its line is
/// there, every line of `id` is (each request logs before it answers).
async fn assert_logged_once(log: &Log, id: &str, cause: &str, base: &str) {
    // Not containing `id` (whose parts are joined by `-`).
    let marker = format!("marker_{}", id.replace('-', "_"));
    assert!(!marker.contains(id));
    let _ = call(&format!("{base}/api/v1/nope"), Some(&marker), None).await;
    wait_for("the marker in the log", Duration::from_secs(10), || {
        let seen = !log.lines_with(&marker).is_empty();
        async move { seen.then_some(()) }
    })
    .await;
    let lines = log.lines_with(id);
    println!("log: {}", lines.join("\n"));
    assert_eq!(lines.len(), 1, "one line for {id}:\n{}", log.text());
    assert_eq!(
        log.text().matches(id).count(),
        1,
        "{id} once:\n{}",
        log.text()
    );
    assert!(
        lines[0].contains(cause),
        "the cause {cause:?} is logged: {}",
        lines[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_of_the_request_carry_their_kind_and_request_id() {
    let (database, _, from, to) = seeded_database("query_errors").await;
    let (_api, base) = start_api(&database, &[]);

    // A bad parameter: 400 with the caller's id, in the header and the body.
    let a = call(
        &format!("{base}/api/v1/flamegraph?type=cpu&from={from}&to={to}"),
        Some("client-42.a:b_c"),
        None,
    )
    .await;
    assert_error(&a, 400, "bad_request");
    assert_eq!(a.id, "client-42.a:b_c");
    assert!(
        a.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("`service` is required")),
        "{}",
        a.text
    );
    let a = call(&format!("{base}/api/v1/services?from=abc"), None, None).await;
    assert_error(&a, 400, "bad_request");
    assert!(a.text.contains("`from` must be an integer"), "{}", a.text);

    // Without an id, or with one that is not sane, the server makes one.
    let generated = call(&format!("{base}/api/v1/services?to=0"), None, None).await;
    assert_error(&generated, 400, "bad_request");
    assert!(
        generated.id.len() == 16 && generated.id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        generated.id
    );
    for insane in ["two words", "semi;colon", &"x".repeat(65)] {
        let a = call(&format!("{base}/api/v1/services?to=0"), Some(insane), None).await;
        assert_error(&a, 400, "bad_request");
        assert_ne!(a.id, insane);
        assert_ne!(a.id, generated.id, "ids differ per request");
    }

    // Unknown paths, in and outside the API, and a method the API does not answer.
    let a = call(&format!("{base}/api/v1/nope"), None, None).await;
    assert_error(&a, 404, "not_found");
    assert!(a.text.contains("openapi.json"), "{}", a.text);
    let a = call(&format!("{base}/favicon.ico"), None, None).await;
    assert_error(&a, 404, "not_found");
    let post = reqwest::Client::new()
        .post(format!("{base}/api/v1/services"))
        .send()
        .await
        .expect("post");
    let a = answer(post).await;
    assert_error(&a, 405, "bad_request");

    // Success carries the id too.
    let ok = call(&format!("{base}/api/v1/services"), Some("ok-1"), None).await;
    assert_eq!((ok.status, ok.id.as_str()), (200, "ok-1"), "{}", ok.text);
    drop_database(&database).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_list_defaults_to_the_last_hour_and_says_so() {
    let (database, start, _, _) = seeded_database("query_services_default").await;
    let (_api, base) = start_api(&database, &[]);
    let before = common::now_s() as i64 * 1000;
    let a = call(&format!("{base}/api/v1/services"), None, None).await;
    let after = (common::now_s() as i64 + 1) * 1000;
    assert_eq!(a.status, 200, "{}", a.text);
    println!("GET /api/v1/services → {}", a.text);
    assert_eq!(a.body["services"], serde_json::json!(["svc"]), "{}", a.text);
    let (from, to) = (
        a.body["from"].as_i64().expect("from"),
        a.body["to"].as_i64().expect("to"),
    );
    assert_eq!(to - from, 3_600_000, "the last hour");
    assert!((before..=after).contains(&to), "to is now: {to}");
    assert!(
        from <= i64::from(start) * 1000,
        "the seeded window is inside"
    );

    // `to` alone: the hour before it; an explicit range is echoed as asked.
    let a = call(&format!("{base}/api/v1/services?to=7200000"), None, None).await;
    assert_eq!(
        (a.body["from"].as_i64(), a.body["to"].as_i64()),
        (Some(3_600_000), Some(7_200_000))
    );
    assert_eq!(a.body["services"], serde_json::json!([]));
    let a = call(
        &format!("{base}/api/v1/profile-types?service=svc"),
        None,
        None,
    )
    .await;
    assert_eq!(a.body["types"][0]["name"], "cpu", "{}", a.text);
    assert!(a.body["to"].as_i64().is_some(), "{}", a.text);
    let a = call(
        &format!("{base}/api/v1/labels?service=svc&label=pod"),
        None,
        None,
    )
    .await;
    assert_eq!(
        a.body["values"],
        serde_json::json!(["pod-a", "pod-b"]),
        "{}",
        a.text
    );
    drop_database(&database).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_token_and_a_scan_over_the_limit_are_their_own_kinds() {
    let (database, _, from, to) = seeded_database("query_errors_limits").await;
    let token = "a-long-enough-test-token";
    let (_api, base, log) = start_api_at(
        &javelin_schema::testkit::clickhouse_url(),
        &database,
        &["--auth-token", token, "--max-rows-scanned", "2"],
    );
    let url = format!("{base}/api/v1/flamegraph?service=svc&from={from}&to={to}");
    let a = call(&url, Some("unauth-1"), None).await;
    assert_error(&a, 401, "unauthorized");
    assert_eq!(a.www_authenticate.as_deref(), Some("Bearer"));
    let a = call(&url, None, Some("wrong-token-of-enough-length")).await;
    assert_error(&a, 401, "unauthorized");
    // Unknown paths need the token too (they say nothing about the data, but
    // answer 401 first: no path probing without it).
    let a = call(&format!("{base}/api/v1/nope"), None, None).await;
    assert_error(&a, 401, "unauthorized");

    let a = call(&url, Some("scan-1"), Some(token)).await;
    assert_error(&a, 422, "scan_limit");
    assert!(a.text.contains("--max-rows-scanned"), "{}", a.text);
    assert_logged_once(&log, "scan-1", "Code: 158", &base).await;
    drop_database(&database).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_failures_are_classified_logged_once_and_kept_from_the_caller() {
    // Unavailable: a ClickHouse URL where nothing listens.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (_down, base, log) = start_api_at(&nowhere, "javelin", &[]);
    let a = call(&format!("{base}/api/v1/services"), Some("down-1"), None).await;
    assert_error(&a, 503, "unavailable");
    assert!(a.text.contains("retry later"), "{}", a.text);
    assert_logged_once(&log, "down-1", "Connection refused", &base).await;

    // Timeout and internal, from one hand-made database: `stored_parts` (which
    // the service list reads) is a view that sleeps 0.5 s per row (4 rows: 2 s > the 1 s allowed), and
    // `target_status` shows one column of the many of our row type (the
    // answer ends before the row does: the decoder finds not enough data).
    let database = unique_name("query_errors_ch");
    let ch = clickhouse_client();
    for sql in [
        format!("CREATE DATABASE {database}"),
        format!(
            "CREATE VIEW {database}.stored_parts AS SELECT toString(number) AS service, now() AS window_start \
             FROM numbers(4) WHERE sleepEachRow(0.5) = 0"
        ),
        // `SELECT *` returns the one ordinary column: the 4 bytes of 'svc'.
        format!(
            "CREATE TABLE {database}.target_status (service String, pod String MATERIALIZED '', \
             target_id UInt64 MATERIALIZED 0, observed_at DateTime ALIAS now()) \
             ENGINE = ReplacingMergeTree ORDER BY (service, pod, target_id)"
        ),
        format!("INSERT INTO {database}.target_status (service) VALUES ('svc')"),
    ] {
        ch.query(&sql).execute().await.expect(&sql);
    }
    let (_api, base, log) = start_api_at(
        &javelin_schema::testkit::clickhouse_url(),
        &database,
        &["--query-timeout-seconds", "1"],
    );
    let a = call(&format!("{base}/api/v1/services"), Some("slow-1"), None).await;
    assert_error(&a, 504, "timeout");
    assert!(a.text.contains("--query-timeout-seconds"), "{}", a.text);
    assert_logged_once(&log, "slow-1", "Code: 159", &base).await;

    let a = call(&format!("{base}/api/v1/targets"), Some("bug-1"), None).await;
    assert_error(&a, 500, "internal");
    assert!(a.text.contains("bug-1"), "{}", a.text);
    assert_logged_once(&log, "bug-1", "not enough data", &base).await;
    drop_database(&database).await;
}

/// A ClickHouse that accepts the connection and never answers (a stalled
/// server: fault injection, no data) is abandoned after the query timeout
/// plus a margin, answered as unavailable, and logged once; before, the API
/// and the UI waited forever.
#[tokio::test(flavor = "multi_thread")]
async fn a_clickhouse_that_never_answers_is_abandoned_as_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let stalled = format!("http://{}", listener.local_addr().expect("address"));
    // Accept and hold every connection without a byte of answer.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            held.push(stream);
        }
    });
    let (_api, base, log) = start_api_at(&stalled, "javelin", &["--query-timeout-seconds", "1"]);
    let started = std::time::Instant::now();
    let a = call(&format!("{base}/api/v1/services"), Some("stalled-1"), None).await;
    let took = started.elapsed();
    assert_error(&a, 503, "unavailable");
    assert!(a.text.contains("did not answer in time"), "{}", a.text);
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(20),
        "abandoned after the 1-s timeout plus the 5-s margin: {took:?}"
    );
    assert_logged_once(&log, "stalled-1", "no answer within 6s", &base).await;
}
