//! Instructions per request under callgrind, with gungraun: the same on
//! every run of the same binary, whatever else the machine is doing, so
//! `.ci/run` holds them to a committed baseline and fails on a regression
//! of more than 10 %.
//!
//! ```text
//! cargo install gungraun-runner --version 0.20.0   # once; must match the library
//! bash benches/gungraun.sh            # compare with the committed baseline
//! bash benches/gungraun.sh --save     # after a deliberate change: new baseline
//! ```
//!
//! Each bench is one request through a service that its setup built and
//! warmed (setup is not counted). The services are boxed alike, so their
//! differences are scopegate's.

mod support;

use std::convert::Infallible;
use std::hint::black_box;

use gungraun::{
    library_benchmark, library_benchmark_group, main, Callgrind, EventKind, LibraryBenchmarkConfig,
};
use http::StatusCode;
use scopegate::credential::PresentedToken;
use scopegate::{CachedStore, Gate, MemoryStore};
use support::{
    bare, bearer, call, credential, request, runtime, warm, with_limit, Req, LIMITED, SCOPES, TOKEN,
};
use tower::util::BoxService;
use tower::{ServiceBuilder, ServiceExt};

const READ_ONLY: &str = "ohk_bench_readonly_23456789abcdef0123456789";
const UNKNOWN: &str = "ohk_bench_unknown0_23456789abcdef0123456789";

/// What one bench needs: a runtime, a warm service and the request.
struct Fixture {
    rt: tokio::runtime::Runtime,
    service: BoxService<Req, StatusCode, Infallible>,
    request: Option<Req>,
}

/// The gate over a warm cache: the full key, the same with a rate limit, a
/// read-only key, and an unknown token's "not found".
fn gate() -> (tokio::runtime::Runtime, Gate, CachedStore<MemoryStore>) {
    let rt = runtime();
    let keys = MemoryStore::new();
    keys.insert_token(TOKEN, credential("key_all", &SCOPES, true));
    keys.insert_token(READ_ONLY, credential("key_read", &["contacts:read"], true));
    keys.insert_token(
        LIMITED,
        with_limit(credential("key_limited", &SCOPES, true)),
    );
    let cache = CachedStore::new(keys);
    // On another thread: moka holds the answers, this thread's front none.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            warm(&rt, &cache, &[TOKEN, READ_ONLY, LIMITED]);
            // Twice: a token's second "not found" is the one cached.
            for _ in 0..2 {
                rt.block_on(cache.resolve(&PresentedToken::new(UNKNOWN)))
                    .expect("store");
            }
        });
    });
    let gate = Gate::new(cache.clone());
    (rt, gate, cache)
}

/// `service`, boxed, answering the response's status (its body dropped),
/// so that every variant has one type.
fn boxed<S, B>(service: S) -> BoxService<Req, StatusCode, Infallible>
where
    S: tower::Service<Req, Response = http::Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    BoxService::new(service.map_response(|response: http::Response<B>| response.status()))
}

fn stacked(gate: &Gate, scope: &str) -> BoxService<Req, StatusCode, Infallible> {
    boxed(
        ServiceBuilder::new()
            .layer(gate.api_access())
            .layer(gate.require_scope(scope).expect("scope"))
            .service(bare()),
    )
}

/// `service` with `token`, after two warm-up requests on this thread (the
/// first fills its front).
fn fixture(
    rt: tokio::runtime::Runtime,
    mut service: BoxService<Req, StatusCode, Infallible>,
    token: Option<&str>,
) -> Fixture {
    let header = token.map(bearer);
    for _ in 0..2 {
        call(&rt, &mut service, request(header.as_ref()));
    }
    Fixture {
        request: Some(request(header.as_ref())),
        rt,
        service,
    }
}

fn bare_service() -> Fixture {
    let (rt, _, _) = gate();
    fixture(rt, boxed(bare()), Some(TOKEN))
}

fn stacked_hit() -> Fixture {
    let (rt, gate, _) = gate();
    fixture(rt, stacked(&gate, "contacts:read"), Some(TOKEN))
}

/// The same hit, counted against one rate limit.
fn stacked_hit_one_limit() -> Fixture {
    let (rt, gate, _) = gate();
    fixture(rt, stacked(&gate, "contacts:read"), Some(LIMITED))
}

/// A hit this thread's front does not hold: moka answers. This thread's
/// front is warm, with another key.
fn front_miss() -> Fixture {
    let (rt, gate, _) = gate();
    let mut fixture = fixture(rt, stacked(&gate, "contacts:read"), Some(READ_ONLY));
    fixture.request = Some(request(Some(&bearer(TOKEN))));
    fixture
}

fn unknown_token() -> Fixture {
    let (rt, gate, _) = gate();
    fixture(rt, stacked(&gate, "contacts:read"), Some(UNKNOWN))
}

/// A made-up token never seen before: a store call, whose first "not found"
/// is not cached. Two other made-up tokens warm the path first.
fn fresh_unknown_token() -> Fixture {
    let (rt, gate, _) = gate();
    let mut fixture = fixture(rt, stacked(&gate, "contacts:read"), Some(UNKNOWN));
    {
        let _context = fixture.rt.enter();
        for warm in [
            "ohk_bench_fresh01_3456789abcdef0123456789",
            "ohk_bench_fresh02_3456789abcdef0123456789",
        ] {
            call(
                &fixture.rt,
                &mut fixture.service,
                request(Some(&bearer(warm))),
            );
        }
    }
    let fresh = "ohk_bench_fresh03_3456789abcdef0123456789";
    fixture.request = Some(request(Some(&bearer(fresh))));
    fixture
}

/// A malformed `ohk_` key, refused by `ApiKey::filter` before any lookup,
/// next to a request without a header.
fn malformed_filtered() -> Fixture {
    let (rt, _, cache) = gate();
    let gate = Gate::builder(cache)
        .token_filter(scopegate::key::ApiKey::filter)
        .build()
        .expect("gate");
    fixture(rt, stacked(&gate, "contacts:read"), Some(UNKNOWN))
}

fn missing_header() -> Fixture {
    let (rt, gate, _) = gate();
    fixture(rt, stacked(&gate, "contacts:read"), None)
}

fn forbidden_scope() -> Fixture {
    let (rt, gate, _) = gate();
    fixture(rt, stacked(&gate, "contacts:write"), Some(READ_ONLY))
}

// One request. The fixture is handed back, so that dropping it (the
// runtime among it) is not counted.
#[library_benchmark]
#[bench::bare(setup = bare_service)]
#[bench::stacked_hit(setup = stacked_hit)]
#[bench::stacked_hit_one_limit(setup = stacked_hit_one_limit)]
#[bench::front_miss_moka_hit(setup = front_miss)]
#[bench::reject_401_unknown(setup = unknown_token)]
#[bench::reject_401_malformed_filtered(setup = malformed_filtered)]
#[bench::reject_401_missing(setup = missing_header)]
#[bench::reject_403_scope(setup = forbidden_scope)]
fn one_request(mut fixture: Fixture) -> (StatusCode, Fixture) {
    let request = fixture.request.take().expect("a request");
    let response = call(&fixture.rt, &mut fixture.service, black_box(request));
    (response, fixture)
}

// One request that calls the store, in the runtime's context (its timeout
// needs the timer); entering the context is counted too, about 600
// instructions (`bare` costs 1856 this way).
#[library_benchmark]
#[bench::reject_401_fresh_unknown(setup = fresh_unknown_token)]
fn one_request_in_runtime(mut fixture: Fixture) -> (StatusCode, Fixture) {
    let request = fixture.request.take().expect("a request");
    let response = {
        let _context = fixture.rt.enter();
        call(&fixture.rt, &mut fixture.service, black_box(request))
    };
    (response, fixture)
}

library_benchmark_group!(name = requests; benchmarks = one_request, one_request_in_runtime);

main!(
    config = LibraryBenchmarkConfig::default()
        .tool(Callgrind::default().soft_limits([(EventKind::Ir, 10.0)]));
    library_benchmark_groups = requests
);
