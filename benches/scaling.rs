//! Does the hit cost stay flat as the cache grows and as credentials carry
//! more scopes? And what does one shared gate do on one and on two threads?
//!
//! ```text
//! cargo bench --bench scaling
//! ```

mod support;

use std::cell::Cell;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use http::HeaderValue;
use scopegate::credential::TokenHash;
use scopegate::scope::Requirement;
use scopegate::{CachedStore, Gate, MemoryStore};
use support::{bare, bearer, call, credential, request, runtime, SCOPES};
use tower::ServiceBuilder;

/// A cache holding `n` credentials, each resolved once, and their
/// `Authorization` headers.
fn cached(rt: &tokio::runtime::Runtime, n: usize) -> (CachedStore<MemoryStore>, Vec<HeaderValue>) {
    let keys = MemoryStore::new();
    let tokens: Vec<String> = (0..n).map(|i| format!("ohk_scale_{i:034}")).collect();
    for (i, token) in tokens.iter().enumerate() {
        keys.insert_token(token, credential(&format!("key_{i}"), &SCOPES, true));
    }
    let cache = CachedStore::builder(keys)
        .max_capacity(n as u64 + 1)
        .build();
    rt.block_on(async {
        for token in &tokens {
            let token = scopegate::credential::PresentedToken::new(token);
            cache
                .resolve(&token)
                .await
                .expect("store")
                .expect("credential");
        }
        cache.run_pending_tasks().await;
    });
    assert_eq!(cache.entry_count(), n as u64, "all {n} credentials cached");
    let headers = tokens.iter().map(|t| bearer(t)).collect();
    (cache, headers)
}

/// A plainly configured moka cache holding the same credentials under the
/// same token hashes as `cached`, and the hashes: the floor a front miss
/// pays.
fn plain_moka(
    rt: &tokio::runtime::Runtime,
    headers: &[HeaderValue],
) -> (
    moka::future::Cache<TokenHash, std::sync::Arc<scopegate::Credential>>,
    Vec<TokenHash>,
) {
    let moka = moka::future::Cache::new(headers.len() as u64 + 1);
    let hashes: Vec<_> = headers
        .iter()
        .map(|h| TokenHash::of(&h.as_bytes()[7..]))
        .collect();
    rt.block_on(async {
        for (i, hash) in hashes.iter().enumerate() {
            let credential = credential(&format!("key_{i}"), &SCOPES, true);
            moka.insert(*hash, std::sync::Arc::new(credential)).await;
        }
    });
    (moka, hashes)
}

fn cache_size(c: &mut Criterion) {
    let rt = runtime();
    let _context = rt.enter();
    let mut g = c.benchmark_group("scaling/cached_credentials");
    for n in [1usize, 10_000, 1_000_000] {
        let (cache, headers) = cached(&rt, n);
        let gate = Gate::new(cache.clone());
        let mut service = ServiceBuilder::new()
            .layer(gate.api_access())
            .layer(gate.require_scope("contacts:read").expect("scope"))
            .service(bare());
        // Round-robin over every cached token, so 1M entries are not served
        // from a warm CPU cache.
        let next = Cell::new(0usize);
        let round_robin = || {
            let i = next.get();
            next.set((i + 1) % headers.len());
            request(Some(&headers[i]))
        };
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                round_robin,
                |req| call(&rt, &mut service, req),
                BatchSize::SmallInput,
            )
        });
        // One hot key while all n are cached: does a hit's own cost grow
        // with the cache? (Real traffic is skewed; this is its best case, as
        // round-robin is its worst.)
        g.bench_function(BenchmarkId::new("hot_key", n), |b| {
            b.iter_batched(
                || request(Some(&headers[0])),
                |req| call(&rt, &mut service, req),
                BatchSize::SmallInput,
            )
        });
        // The round-robin requests, same order, to the bare service: what
        // building, reading and dropping them costs without the layers.
        let mut plain = bare();
        g.bench_function(BenchmarkId::new("bare", n), |b| {
            b.iter_batched(
                round_robin,
                |req| call(&rt, &mut plain, req),
                BatchSize::SmallInput,
            )
        });
        let misses = cache.stats().misses;
        assert_eq!(misses, n as u64, "the bench ran on hits only");
        drop((service, gate, cache));

        // The floor at this size: a bare moka get of the same keys, same order.
        let (moka, hashes) = plain_moka(&rt, &headers);
        let next = Cell::new(0usize);
        g.bench_function(BenchmarkId::new("floor_moka_get", n), |b| {
            b.iter(|| {
                let i = next.get();
                next.set((i + 1) % hashes.len());
                support::drive(&rt, moka.get(&hashes[i]))
            })
        });
    }
    g.finish();
}

fn scope_count(c: &mut Criterion) {
    let rt = runtime();
    let _context = rt.enter();
    let mut g = c.benchmark_group("scaling/scopes_per_credential");
    for k in [1usize, 8, 64] {
        let names: Vec<String> = (0..k).map(|i| format!("scale:{i}")).collect();
        let keys = MemoryStore::new();
        keys.insert_token(support::TOKEN, credential("key_k", &names, true));
        let cache = CachedStore::new(keys);
        support::warm(&rt, &cache, &[support::TOKEN]);
        let gate = Gate::new(cache);
        // The route needs the credential's last scope, and all of them.
        let last = gate.require_scope(&names[k - 1]).expect("scope");
        let all = gate.require(Requirement::all_of(&names).expect("requirement"));
        let token = bearer(support::TOKEN);
        for (what, layer) in [("last", last), ("all_of", all)] {
            let mut service = ServiceBuilder::new()
                .layer(gate.api_access())
                .layer(layer)
                .service(bare());
            g.bench_function(BenchmarkId::new(what, k), |b| {
                b.iter_batched(
                    || request(Some(&token)),
                    |req| call(&rt, &mut service, req),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

const OTHER: &str = "ohk_bench_other0_123456789abcdef0123456789";

/// Puts a second key into the store and the cache.
fn keys_other(rt: &tokio::runtime::Runtime, cache: &CachedStore<MemoryStore>) {
    cache
        .store()
        .insert_token(OTHER, credential("key_other", &SCOPES, true));
    support::warm(rt, cache, &[OTHER]);
}

fn threads(c: &mut Criterion) {
    let rt = runtime();
    let keys = MemoryStore::new();
    keys.insert_token(support::TOKEN, credential("key_all", &SCOPES, true));
    let cache = CachedStore::new(keys);
    support::warm(&rt, &cache, &[support::TOKEN]);
    keys_other(&rt, &cache);
    let gate = Gate::new(cache);
    let service = ServiceBuilder::new()
        .layer(gate.api_access())
        .layer(gate.require_scope("contacts:read").expect("scope"))
        .service(bare());
    let tokens = [bearer(support::TOKEN), bearer(OTHER)];

    let mut g = c.benchmark_group("scaling/threads");
    g.throughput(Throughput::Elements(1));
    // What the machine itself gives a second thread: the bare service.
    for threads in [1usize, 2] {
        g.bench_function(BenchmarkId::new("bare", threads), |b| {
            b.iter_custom(|iters| run_threads(threads, iters, bare, |_| request(Some(&tokens[0]))))
        });
    }
    // One key shared by every thread (the worst case: one moka entry and one
    // Arc refcount on every request), then one key per thread.
    for (name, threads, keys) in [
        ("1", 1usize, 1usize),
        ("2_one_key", 2, 1),
        ("2_own_keys", 2, 2),
    ] {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                run_threads(
                    threads,
                    iters,
                    || service.clone(),
                    |t| request(Some(&tokens[t % keys])),
                )
            })
        });
    }
    g.finish();
}

/// Runs `iters` requests split over `threads` threads, each with its own
/// service clone and prebuilt requests; times only the requests.
fn run_threads<S, F, R>(threads: usize, iters: u64, service: F, make: R) -> Duration
where
    S: tower::Service<support::Req> + Send,
    S::Error: std::fmt::Debug,
    F: Fn() -> S,
    R: Fn(usize) -> support::Req,
{
    let per_thread = (iters as usize).div_ceil(threads);
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let mut service = service();
            let requests: Vec<_> = (0..per_thread).map(|_| make(t)).collect();
            let barrier = &barrier;
            s.spawn(move || {
                let rt = runtime();
                let _context = rt.enter();
                barrier.wait();
                for req in requests {
                    call(&rt, &mut service, req);
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

/// Skewed traffic, as real API traffic is: Zipf(s = 1.0) over 100,000 and
/// 1,000,000 cached keys, next to round-robin over them and one hot key, in
/// one run (issue #15, target 1: Zipf ≤ 1.5 × the hot key, round-robin
/// ≤ 2.5 ×), and moka's own get of the same Zipf sequence as the floor.
fn skewed(c: &mut Criterion) {
    let rt = runtime();
    let _context = rt.enter();
    let mut g = c.benchmark_group("scaling/skewed");
    for n in [100_000, 1_000_000] {
        let (cache, headers) = cached(&rt, n);
        let gate = Gate::new(cache.clone());
        let mut service = ServiceBuilder::new()
            .layer(gate.api_access())
            .layer(gate.require_scope("contacts:read").expect("scope"))
            .service(bare());
        let sequence = zipf(n, 1 << 20);
        let at = Cell::new(0usize);
        g.bench_function(BenchmarkId::new("zipf_1.0", n), |b| {
            b.iter_batched(
                || {
                    let i = at.get();
                    at.set((i + 1) % sequence.len());
                    request(Some(&headers[sequence[i]]))
                },
                |req| call(&rt, &mut service, req),
                BatchSize::SmallInput,
            )
        });
        let at = Cell::new(0usize);
        g.bench_function(BenchmarkId::new("round_robin", n), |b| {
            b.iter_batched(
                || {
                    let i = at.get();
                    at.set((i + 1) % n);
                    request(Some(&headers[i]))
                },
                |req| call(&rt, &mut service, req),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(BenchmarkId::new("hot_key", n), |b| {
            b.iter_batched(
                || request(Some(&headers[0])),
                |req| call(&rt, &mut service, req),
                BatchSize::SmallInput,
            )
        });
        assert_eq!(cache.stats().misses, n as u64, "the bench ran on hits only");
        drop((service, gate, cache));

        // The floor: moka's own get of the same keys in the same Zipf order.
        let (moka, hashes) = plain_moka(&rt, &headers);
        let at = Cell::new(0usize);
        g.bench_function(BenchmarkId::new("floor_moka_get_zipf_1.0", n), |b| {
            b.iter(|| {
                let i = at.get();
                at.set((i + 1) % sequence.len());
                support::drive(&rt, moka.get(&hashes[sequence[i]]))
            })
        });
    }
    g.finish();
}

/// A fixed Zipf(1.0) sequence of `len` keys out of `n`: rank k drawn with
/// weight 1/k, by inverse CDF from a xorshift generator, and the ranks
/// spread over the keys by a fixed permutation, so that hot keys land
/// anywhere in the front.
fn zipf(n: usize, len: usize) -> Vec<usize> {
    let cumulative: Vec<f64> = (1..=n)
        .scan(0.0, |sum, k| {
            *sum += 1.0 / k as f64;
            Some(*sum)
        })
        .collect();
    let total = cumulative[n - 1];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..len)
        .map(|_| {
            let rank = cumulative.partition_point(|&c| c < next_random() * total);
            (rank * 7_919) % n
        })
        .collect()
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = cache_size, scope_count, threads, skewed
}
criterion_main!(benches);
