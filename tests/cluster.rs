//! Cluster mode through real servers on real Redis: four instances sharing
//! a rate limit (the accuracy table of BENCHMARKS.md), a Redis of the
//! test's own stopped and started under two instances, a quota that
//! survives a restart, and what a crash loses.
//!
//! The shared Redis is `REDIS_URL` (CI: redis://127.0.0.1:6379), each test
//! under a prefix of its own; the outage test starts `redis-server` on a
//! port of its own. Without `REDIS_URL` the tests print why and pass
//! without running; with `CI` set they fail instead.
#![cfg(feature = "redis")]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::Example;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use scopegate::cluster::RedisLimits;
use scopegate::limit::Limit;
use scopegate::{CachedStore, Credential, CredentialKind, Gate, MemoryStore, ScopeSet};

fn redis_url() -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "REDIS_URL is not set: CI must provide Redis (see .ci/run)"
            );
            eprintln!(
                "skipping: set REDIS_URL (e.g. redis://127.0.0.1:6379) to run the cluster tests"
            );
            None
        }
    }
}

/// A key prefix no other test or run uses.
fn prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("scopegate_test:{test}:{}:{nanos}", std::process::id())
}

/// `key_<account>`, token `<account>`, `contacts:read`, with `limit`.
fn keys(accounts: &[&str], limit: &Limit) -> MemoryStore {
    let keys = MemoryStore::new();
    for account in accounts {
        keys.insert_token(
            account,
            Credential::new(format!("key_{account}"), *account, CredentialKind::ApiKey)
                .with_scopes(ScopeSet::parse(["contacts:read"]).unwrap())
                .with_entitlements(["api-access"])
                .with_limits([limit.clone()]),
        );
    }
    keys
}

/// One instance of a service: its own cache and gate in cluster mode, and
/// a real server.
struct Instance {
    gate: Gate,
    http: Endpoint,
}

/// Where an instance listens, and a client for it.
struct Endpoint {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::ops::Deref for Instance {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.http
    }
}

impl Instance {
    async fn start(keys: &MemoryStore, redis: RedisLimits) -> Instance {
        let gate = Gate::builder(CachedStore::new(keys.clone()))
            .cluster(redis)
            .build()
            .unwrap();
        let app = Router::new()
            .route(
                "/api/v1/contacts",
                get(|| async { "contacts" })
                    .route_layer(gate.require_scope("contacts:read").unwrap()),
            )
            .layer(gate.api_access());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Instance {
            gate,
            http: Endpoint::new(addr),
        }
    }

    /// Waits until the gate says Redis answers (or not), with `instances`
    /// if given.
    async fn wait_for(&self, connected: bool, instances: Option<u32>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.gate.cluster_status().unwrap();
            if status.connected() == connected && instances.is_none_or(|n| status.instances() == n)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still {status:?}, waiting for connected={connected}, instances={instances:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Endpoint {
    fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `GET /api/v1/contacts` as `token`.
    async fn get(&self, token: &str) -> (StatusCode, Option<String>, String) {
        get_contacts(&self.client, &format!("http://{}", self.addr), token).await
    }

    /// How many of `n` requests in a row are admitted; the others must be
    /// 429s, never anything else.
    async fn admitted_of(&self, token: &str, n: usize) -> usize {
        let mut admitted = 0;
        for _ in 0..n {
            let (status, retry_after, body) = self.get(token).await;
            match status {
                StatusCode::OK => admitted += 1,
                StatusCode::TOO_MANY_REQUESTS => assert!(retry_after.is_some(), "{body}"),
                other => panic!("{other}: {body}"),
            }
        }
        admitted
    }
}

/// `GET {base}/api/v1/contacts` as `token`: the status, `Retry-After` and
/// the body.
async fn get_contacts(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &str,
    token: &str,
) -> (StatusCode, Option<String>, String) {
    let request = Request::get(format!("{base}/api/v1/contacts"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        retry_after,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// A few sync rounds.
async fn rounds() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Offers `rate` requests a second, spread evenly over `instances` (4
/// clients each), for `warm` and then `window`; answers what was admitted
/// of the requests sent in the window, and how many were sent.
async fn offer(
    instances: &[Instance],
    token: &str,
    rate: f64,
    warm: Duration,
    window: Duration,
) -> (u64, u64) {
    const CLIENTS: usize = 4;
    let admitted = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let (from, until) = (start + warm, start + warm + window);
    let per_client = rate / (instances.len() * CLIENTS) as f64;
    let period = Duration::from_secs_f64(1.0 / per_client);
    let mut clients = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        for c in 0..CLIENTS {
            let (addr, client) = (instance.addr, instance.client.clone());
            let (admitted, sent, token) = (admitted.clone(), sent.clone(), token.to_owned());
            // Clients start spread over one period, so the load is even.
            let offset =
                period.mul_f64((i * CLIENTS + c) as f64 / (instances.len() * CLIENTS) as f64);
            clients.push(tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(start + offset, period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                loop {
                    let at = ticks.tick().await;
                    if at >= until {
                        return;
                    }
                    let request = Request::get(format!("http://{addr}/api/v1/contacts"))
                        .header("authorization", format!("Bearer {token}"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let status = client.request(request).await.unwrap().status();
                    assert!(
                        status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
                        "{status}"
                    );
                    if at >= from {
                        sent.fetch_add(1, Ordering::Relaxed);
                        if status == StatusCode::OK {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
    }
    for client in clients {
        client.await.unwrap();
    }
    (
        admitted.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
    )
}

#[tokio::test]
async fn four_instances_on_one_redis_admit_the_limit_within_a_few_percent() {
    let Some(url) = redis_url() else { return };
    // L = 100 a second, burst 10, per account; loads from half of L to 8 L,
    // each on an account of its own.
    const L: f64 = 100.0;
    let limit = Limit::rate("requests", 100, Duration::from_secs(1))
        .unwrap()
        .with_burst(10)
        .unwrap()
        .per_account();
    let loads = [0.5, 1.0, 2.0, 4.0, 8.0];
    let accounts: Vec<String> = loads
        .iter()
        .map(|l| format!("ws_load_{}", l * 10.0))
        .collect();
    let names: Vec<&str> = accounts.iter().map(String::as_str).collect();
    let keys = keys(&names, &limit);
    let prefix = prefix("accuracy");
    let mut instances = Vec::new();
    for _ in 0..4 {
        let redis = RedisLimits::new(&url).unwrap().prefix(&prefix);
        instances.push(Instance::start(&keys, redis).await);
    }
    for instance in &instances {
        instance.wait_for(true, Some(4)).await;
    }
    let (warm, window) = (Duration::from_secs(1), Duration::from_secs(4));
    println!("| offered (× L) | offered / s | admitted / s | admitted ÷ L | overshoot |");
    println!("|---|---|---|---|---|");
    for (load, account) in loads.iter().zip(&names) {
        let (admitted, sent) = offer(&instances, account, L * load, warm, window).await;
        let secs = window.as_secs_f64();
        let expected = (L * load).min(L) * secs;
        let overshoot = (admitted as f64 / expected - 1.0) * 100.0;
        println!(
            "| {load} | {:.1} | {:.1} | {:.3} | {overshoot:+.1} % |",
            sent as f64 / secs,
            admitted as f64 / secs,
            admitted as f64 / secs / L,
        );
        // Under the limit everything passes; over it, at most the limit and
        // a few percent (the burst of 10 alone is 2.5 % of the window).
        if *load < 1.0 {
            assert!(
                admitted * 100 >= sent * 98,
                "load {load}: {admitted} of {sent} admitted under the limit"
            );
        }
        assert!(
            overshoot <= 5.0,
            "load {load}: {admitted} admitted of {sent}, {overshoot:.1} % over {expected}"
        );
        assert!(
            overshoot >= -5.0,
            "load {load}: {admitted} admitted of {sent}, {overshoot:.1} % under {expected}"
        );
    }
}

/// A `redis-server` of this test's own on a port of its own, without
/// persistence.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn new() -> Option<OwnRedis> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not on PATH: CI must provide it (see .ci/run)"
            );
            eprintln!("skipping: redis-server is not on PATH");
            return None;
        }
        Some(OwnRedis {
            port: common::free_port(),
            child: None,
        })
    }

    /// One started, if the cluster tests run (`REDIS_URL`) and
    /// `redis-server` is there.
    async fn started() -> Option<OwnRedis> {
        redis_url()?;
        let mut redis = OwnRedis::new()?;
        redis.start().await;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn an_outage_falls_back_to_each_instances_share_and_recovers() {
    let Some(mut redis) = OwnRedis::started().await else {
        return;
    };
    // 40 a minute, all at once, per account: shared, 40 in all; while Redis
    // is down, 20 on each of the two instances.
    let limit = Limit::rate("requests", 40, Duration::from_secs(60))
        .unwrap()
        .per_account();
    let keys = keys(&["ws_up", "ws_down", "ws_back", "ws_late"], &limit);
    let url = redis.url();
    let shared = || {
        RedisLimits::new(&url)
            .unwrap()
            .timeout(Duration::from_millis(100))
    };
    let (a, b) = (
        Instance::start(&keys, shared()).await,
        Instance::start(&keys, shared()).await,
    );
    a.wait_for(true, Some(2)).await;
    b.wait_for(true, Some(2)).await;

    // Shared: what `a` spends, `b` cannot, once it has heard of it. Its
    // first request of a budget is judged on the local budget, full until
    // the task's first round with it (the documented first contact).
    assert_eq!(a.admitted_of("ws_up", 45).await, 40);
    rounds().await;
    assert_eq!(b.admitted_of("ws_up", 1).await, 1, "first contact");
    rounds().await;
    assert_eq!(b.admitted_of("ws_up", 5).await, 0);

    // Redis stops: each instance admits its half, never more, never a 5xx.
    redis.stop();
    a.wait_for(false, Some(2)).await;
    b.wait_for(false, Some(2)).await;
    let outage = Instant::now();
    assert_eq!(a.admitted_of("ws_down", 25).await, 20);
    assert_eq!(b.admitted_of("ws_down", 25).await, 20);
    // A flush tries at once, and says that Redis did not take it.
    assert!(!a.gate.flush_limits().await, "Redis is down");
    let (status, retry_after, body) = a.get("ws_down").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after.as_deref(), Some("3"));
    assert_eq!(
        body,
        r#"{"error":{"type":"rate_limited","message":"Rate limit exceeded for 'requests'. Retry after 3 seconds."}}"#
    );
    // An instance that starts while Redis is down counts on its configured
    // share.
    let late = Instance::start(&keys, shared().instances(4)).await;
    late.wait_for(false, Some(4)).await;
    assert_eq!(late.admitted_of("ws_late", 15).await, 10);

    // Redis is back (empty): all three share the full limit again.
    redis.start().await;
    for instance in [&a, &b, &late] {
        instance.wait_for(true, Some(3)).await;
    }
    assert!(a.gate.flush_limits().await, "Redis is back");
    assert_eq!(a.admitted_of("ws_back", 45).await, 40);
    rounds().await;
    assert_eq!(b.admitted_of("ws_back", 1).await, 1, "first contact");
    assert_eq!(late.admitted_of("ws_back", 1).await, 1, "first contact");
    rounds().await;
    assert_eq!(b.admitted_of("ws_back", 5).await, 0);
    assert_eq!(late.admitted_of("ws_back", 5).await, 0);
    // What the two spent on ws_down during the outage reached Redis: of 20
    // more, only what came back since (one every 1.5 s) passes.
    let back = a.admitted_of("ws_down", 10).await + b.admitted_of("ws_down", 10).await;
    let refilled = (outage.elapsed().as_secs_f64() / 1.5).ceil() as usize;
    assert!(
        back <= refilled,
        "{back} admitted after the outage, {refilled} came back"
    );
}

#[tokio::test]
async fn instances_of_the_example_share_the_tiny_plan() {
    let Some(redis) = OwnRedis::started().await else {
        return;
    };
    let url = redis.url();
    let (one, two) = (
        Example::start("admin", &[("REDIS_URL", &url)]),
        Example::start("admin", &[("REDIS_URL", &url)]),
    );
    let client = Client::builder(TokioExecutor::new()).build_http();
    const TINY: &str = "ohk_demo_tiny_limits";
    // Five a minute across both instances: `one` spends them (its first
    // request tells Redis of the budget), and `two` then hears of it.
    assert_eq!(
        get_contacts(&client, &one.base, TINY).await.0,
        StatusCode::OK
    );
    rounds().await;
    for _ in 0..4 {
        assert_eq!(
            get_contacts(&client, &one.base, TINY).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        get_contacts(&client, &one.base, TINY).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // `two`'s first request of the budget: judged on its own, full copy
    // (the documented first contact); from its first round on, Redis's.
    assert_eq!(
        get_contacts(&client, &two.base, TINY).await.0,
        StatusCode::OK
    );
    rounds().await;
    let (status, retry_after, body) = get_contacts(&client, &two.base, TINY).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let wait = retry_after.unwrap();
    let unit = if wait == "1" { "second" } else { "seconds" };
    assert_eq!(
        body,
        format!(
            r#"{{"error":{{"type":"rate_limited","message":"Rate limit exceeded for 'requests'. Retry after {wait} {unit}."}}}}"#
        )
    );
    // Without REDIS_URL, an instance counts alone and says so.
    let alone = Example::start("admin", &[]).stop();
    assert!(
        alone.contains("rate limits: local mode (counted in this process); ohk_demo_tiny_limits gets 5 requests a minute"),
        "{alone}"
    );
    for output in [one.stop(), two.stop()] {
        assert!(
            output.contains("rate limits: cluster mode (shared over Redis at REDIS_URL by every instance); ohk_demo_tiny_limits gets 5 requests a minute in all"),
            "{output}"
        );
        assert!(!output.contains(&url), "the URL is not printed: {output}");
    }
}

fn monthly(count: u64) -> Limit {
    Limit::monthly("monthly", count).unwrap().per_account()
}

/// The month's use of `account`'s quota in Redis: the instances' totals,
/// which must add up to the sum Redis answers with.
async fn redis_used(url: &str, prefix: &str, account: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let pattern = format!("{prefix}:m:monthly:a:{account}:*");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{pattern}: {keys:?}");
    let fields: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(&keys[0])
        .query_async(&mut redis)
        .await
        .unwrap();
    // The `sum` field the script keeps, and the instances' totals it sums.
    let instances: u64 = fields
        .iter()
        .filter(|(f, _)| *f != "sum")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(fields.get("sum"), Some(&instances), "{fields:?}");
    instances
}

/// Deletes what a test left under `prefix` (a quota's month lasts weeks).
async fn forget(url: &str, prefix: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    if !keys.is_empty() {
        let () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_quota_survives_a_restart() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix("quota");
    let keys = keys(&["ws_quota"], &monthly(10));
    let shared = || RedisLimits::new(&url).unwrap().prefix(&prefix);
    let first = Crashable::start(&keys, shared());
    assert_eq!(first.admitted_of("ws_quota", 4).await, 4);
    rounds().await;
    first.crash();
    assert_eq!(redis_used(&url, &prefix, "ws_quota").await, 4);

    // A new instance (a new process, as far as it knows): its first request
    // is counted from nothing, then it learns the month's use from Redis.
    let second = Instance::start(&keys, shared()).await;
    second.wait_for(true, None).await;
    assert_eq!(second.admitted_of("ws_quota", 1).await, 1);
    rounds().await;
    assert_eq!(second.admitted_of("ws_quota", 8).await, 5);
    let (status, retry_after, body) = second.get("ws_quota").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after.unwrap();
    assert_eq!(
        body,
        format!(
            r#"{{"error":{{"type":"quota_exceeded","message":"Quota exceeded for 'monthly'. Retry after {wait} seconds."}}}}"#
        )
    );
    rounds().await;
    assert_eq!(redis_used(&url, &prefix, "ws_quota").await, 10);
    forget(&url, &prefix).await;
}

/// An instance on a runtime of its own, on a thread of its own, that can
/// crash: its runtime is dropped with every task in it (the server, its
/// connections, the sync task) where they stand.
struct Crashable {
    http: Endpoint,
    crash: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::ops::Deref for Crashable {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.http
    }
}

impl Crashable {
    fn start(keys: &MemoryStore, redis: RedisLimits) -> Crashable {
        let (keys, (ready, started)) = (keys.clone(), std::sync::mpsc::channel());
        let (crash, crashed) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let instance = Instance::start(&keys, redis).await;
                instance.wait_for(true, None).await;
                ready.send(instance.addr).unwrap();
                let _ = crashed.await;
                // Still running, but never polled again.
                std::mem::forget(instance);
            });
            drop(runtime);
        });
        Crashable {
            http: Endpoint::new(started.recv().unwrap()),
            crash: Some(crash),
            thread: Some(thread),
        }
    }

    fn crash(mut self) {
        let _ = self.crash.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

#[tokio::test]
async fn a_crash_loses_at_most_one_round_of_a_quota() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix("crash");
    let keys = keys(&["ws_crash"], &monthly(1_000_000_000));
    let instance = Crashable::start(&keys, RedisLimits::new(&url).unwrap().prefix(&prefix));
    // As fast as 8 clients go, for a second; then a crash mid-stream.
    let admitted = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (addr, client, admitted) = (instance.addr, instance.client.clone(), admitted.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let request = Request::get(format!("http://{addr}/api/v1/contacts"))
                    .header("authorization", "Bearer ws_crash")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                match client.request(request).await {
                    Ok(response) if response.status() == StatusCode::OK => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(response) => panic!("{}", response.status()),
                    // The crash.
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The runtime thread stops between two of its polls, here: the clients
    // cannot run meanwhile (they are on this thread).
    instance.crash();
    for client in clients {
        client.await.unwrap();
    }
    let admitted = admitted.load(Ordering::Relaxed);
    let stored = redis_used(&url, &prefix, "ws_crash").await;
    forget(&url, &prefix).await;
    let lost = admitted.saturating_sub(stored);
    // One round is 10 ms: at this rate, that many requests.
    let per_round = admitted / 100;
    println!(
        "admitted {admitted} in 1 s, Redis has {stored}: {lost} lost (one round is ~{per_round})"
    );
    // Requests the server admitted as it crashed may be stored and never
    // answered: one per client at most.
    assert!(stored <= admitted + 8, "{stored} stored of {admitted}");
    assert!(
        lost <= per_round.max(1) * 2,
        "{lost} lost of {admitted}: more than a round's worth ({per_round})"
    );
}

#[tokio::test]
async fn a_flush_and_a_dropped_gate_report_what_was_counted_since_the_last_round() {
    use tower::{Layer, ServiceExt};
    let Some(url) = redis_url() else { return };
    let prefix = prefix("stop");
    let keys = keys(&["ws_stop"], &monthly(1_000));
    // One round at the start, the next an hour later: only a flush, or
    // the last round when the gate is dropped, can report these requests.
    let redis = RedisLimits::new(&url)
        .unwrap()
        .prefix(&prefix)
        .sync_every(Duration::from_secs(3600));
    let gate = Gate::builder(CachedStore::new(keys.clone()))
        .cluster(redis)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gate.cluster_status().unwrap().connected() {
        assert!(Instant::now() < deadline, "Redis does not answer");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let service = gate
        .require_scope("contacts:read")
        .unwrap()
        .layer(tower::service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
        }));
    let admit = |n: usize| {
        let service = service.clone();
        async move {
            for _ in 0..n {
                let request = Request::get("/api/v1/contacts")
                    .header("authorization", "Bearer ws_stop")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = service.clone().oneshot(request).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            }
        }
    };
    // A flush reports at once, the gate running on.
    admit(5).await;
    let both = tokio::join!(gate.flush_limits(), gate.flush_limits());
    assert_eq!(both, (true, true), "Redis took the round");
    assert_eq!(redis_used(&url, &prefix, "ws_stop").await, 5);
    admit(2).await;
    // The gate's last round reports the rest.
    drop((service, gate));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let used = redis_used(&url, &prefix, "ws_stop").await;
        if used == 7 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{used} in Redis after the gate was dropped, not 7"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    forget(&url, &prefix).await;
}

#[tokio::test]
async fn a_quota_idle_long_enough_to_be_released_keeps_its_count() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix("idle");
    let keys = keys(&["ws_idle"], &monthly(1_000));
    // A round a millisecond: 100 idle rounds, and the task lets the budget go.
    let redis = RedisLimits::new(&url)
        .unwrap()
        .prefix(&prefix)
        .sync_every(Duration::from_millis(1));
    let instance = Instance::start(&keys, redis).await;
    instance.wait_for(true, None).await;
    assert_eq!(instance.admitted_of("ws_idle", 5).await, 5);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(redis_used(&url, &prefix, "ws_idle").await, 5);
    // Watched again: this instance's total goes on from 5.
    assert_eq!(instance.admitted_of("ws_idle", 3).await, 3);
    rounds().await;
    assert_eq!(redis_used(&url, &prefix, "ws_idle").await, 8);
    // Stopped first (its last round run), so that no round writes the
    // key again once it is forgotten.
    drop(instance);
    rounds().await;
    forget(&url, &prefix).await;
}
