//! Instruction counts of the request path, for callgrind: deterministic
//! where wall-clock medians on a shared machine are not, so two builds
//! (before and after a change) compare fairly.
//!
//! ```text
//! cargo bench --bench instructions --no-run    # prints the binary's path
//! valgrind --tool=callgrind --toggle-collect='*instructions::run*' BIN stacked_hit 10000
//! ```
//!
//! Only `run` is counted. The difference of the totals (`Collected`) for
//! 10 000 requests and for none, divided by 10 000, is the variant's
//! instructions per request. `benches/instructions.sh`
//! does that for every variant. Variants: `bare`, `stacked_hit`,
//! `stacked_hit_one_limit`, `stacked_hit_one_limit_no_headers`,
//! `stacked_hit_one_limit_cluster` (with `--features redis`),
//! `json_stacked_hit`, `json_stacked_hit_one_limit`,
//! `reject_401_missing`, `reject_401_unknown`, `reject_403_scope`.

mod support;

use std::hint::black_box;

use http::HeaderValue;
use scopegate::{CachedStore, Gate, MemoryStore};
use support::{
    bare, bearer, call, credential, request, runtime, warm, with_limit, Req, LIMITED, SCOPES, TOKEN,
};
use tower::{Service, ServiceBuilder};

const READ_ONLY: &str = "ohk_bench_readonly_23456789abcdef0123456789";
const UNKNOWN: &str = "ohk_bench_unknown0_23456789abcdef0123456789";

fn main() {
    // `cargo bench` passes `--bench`; the rest is ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (variant, n) = match args.as_slice() {
        [variant, n] => (variant.as_str(), n.parse::<usize>().expect("a count")),
        _ => {
            eprintln!("usage: instructions VARIANT COUNT");
            std::process::exit(2);
        }
    };
    let rt = runtime();
    let _context = rt.enter();
    let keys = MemoryStore::new();
    keys.insert_token(TOKEN, credential("key_all", &SCOPES, true));
    keys.insert_token(READ_ONLY, credential("key_read", &["contacts:read"], true));
    keys.insert_token(
        LIMITED,
        with_limit(credential("key_limited", &SCOPES, true)),
    );
    let cache = CachedStore::new(keys);
    warm(&rt, &cache, &[TOKEN, READ_ONLY, LIMITED]);
    let gate = Gate::new(cache.clone());
    let stacked = |scope: &str| {
        ServiceBuilder::new()
            .layer(gate.api_access())
            .layer(gate.require_scope(scope).expect("scope"))
            .service(bare())
    };
    let stacked_json = || {
        ServiceBuilder::new()
            .layer(gate.api_access())
            .layer(gate.require_scope("contacts:read").expect("scope"))
            .service(support::json())
    };
    let (all, read_only, unknown, limited) = (
        bearer(TOKEN),
        bearer(READ_ONLY),
        bearer(UNKNOWN),
        bearer(LIMITED),
    );
    match variant {
        "bare" => run(&rt, bare(), Some(&all), n),
        "peer_minimal_handwritten" => {
            let minimal =
                support::Minimal::new(&[(TOKEN, credential("key_all", &SCOPES, true))], bare());
            run(&rt, minimal, Some(&all), n)
        }
        "stacked_hit" => run(&rt, stacked("contacts:read"), Some(&all), n),
        // The same two, answering as a handler's JSON does (the response's
        // header map already allocated): the limit headers' cost on a real
        // response.
        "json_stacked_hit" => run(&rt, stacked_json(), Some(&all), n),
        "json_stacked_hit_one_limit" => run(&rt, stacked_json(), Some(&limited), n),
        "stacked_hit_one_limit" => run(&rt, stacked("contacts:read"), Some(&limited), n),
        "stacked_hit_one_limit_no_headers" => {
            let quiet = Gate::builder(cache.clone())
                .rate_limit_headers(false)
                .build()
                .expect("gate");
            let service = ServiceBuilder::new()
                .layer(quiet.api_access())
                .layer(quiet.require_scope("contacts:read").expect("scope"))
                .service(bare());
            run(&rt, service, Some(&limited), n)
        }
        // Cluster mode's hot path: its sync task is spawned on a runtime
        // that never runs, so only the requests count (in the state before
        // Redis first answers, which takes the same path: a share of 1).
        #[cfg(feature = "redis")]
        "stacked_hit_one_limit_cluster" => {
            let side = runtime();
            let cluster = {
                let _side = side.enter();
                let redis = scopegate::cluster::RedisLimits::new("redis://127.0.0.1:1")
                    .expect("a Redis URL");
                Gate::builder(cache.clone())
                    .cluster(redis)
                    .build()
                    .expect("gate")
            };
            let service = ServiceBuilder::new()
                .layer(cluster.api_access())
                .layer(cluster.require_scope("contacts:read").expect("scope"))
                .service(bare());
            run(&rt, service, Some(&limited), n)
        }
        "reject_401_missing" => run(&rt, stacked("contacts:read"), None, n),
        "reject_401_unknown" => run(&rt, stacked("contacts:read"), Some(&unknown), n),
        "reject_403_scope" => run(&rt, stacked("contacts:write"), Some(&read_only), n),
        other => {
            eprintln!("unknown variant {other}");
            std::process::exit(2);
        }
    }
}

/// Two warm-up requests (the first fills this thread's front), then `n`.
/// Never inlined: callgrind counts only inside it (`--toggle-collect`), so
/// the set-up (the TSC calibration among it, whose loop runs as long as it
/// takes) does not count.
#[inline(never)]
fn run<S>(rt: &tokio::runtime::Runtime, mut service: S, token: Option<&HeaderValue>, n: usize)
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..2 {
        black_box(call(rt, &mut service, request(token)));
    }
    for _ in 0..n {
        black_box(call(rt, &mut service, request(token)));
    }
}
