//! Heap allocations on the hit path, counted: unlike time, counts are exact.
//!
//! Target (issue 3): the layers allocate nothing of their own on a cache hit.
//! The only allocations are those of inserting the `Arc<Credential>` into the
//! request's extensions, which `http::Extensions` makes and which are
//! measured alone here for comparison.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use allocation_counter::measure;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use scopegate::credential::PresentedToken;
use scopegate::{CachedStore, Credential, CredentialKind, Gate, MemoryStore, ScopeSet};
use tower::{service_fn, Service, ServiceBuilder};

type Req = Request<Full<Bytes>>;

fn request(token: &str) -> Req {
    let mut request = Request::get("/api/v1/contacts")
        .body(Full::default())
        .unwrap();
    let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, value);
    request
}

/// Polls ready, calls, and polls the future once: a hit completes at once.
fn call_now<S: Service<Req>>(service: &mut S, request: Req) -> S::Response
where
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(service.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    match pin!(service.call(request)).poll(&mut cx) {
        Poll::Ready(response) => response.unwrap(),
        Poll::Pending => panic!("a cache hit must complete without waiting"),
    }
}

/// Requests per counted window: fewer than the 64 reads after which moka runs
/// its housekeeping (which allocates, amortised over those reads; see
/// BENCHMARKS.md). Each window starts right after `run_pending_tasks`.
const WINDOW: usize = 50;
const WINDOWS: usize = 20;

/// Marks a request that arrives with extensions already present.
#[derive(Clone)]
struct Earlier;

#[tokio::test]
async fn a_cache_hit_allocates_only_what_the_extensions_insert_does() {
    let keys = MemoryStore::new();
    let credential = Credential::new("key_1", "ws", CredentialKind::ApiKey)
        .with_scopes(ScopeSet::parse(["contacts:read"]).unwrap())
        .with_entitlements(["api-access"]);
    keys.insert_token("ohk_alloc", credential.clone());
    let cache = CachedStore::new(keys);
    cache
        .resolve(&PresentedToken::new("ohk_alloc"))
        .await
        .unwrap()
        .unwrap();
    let gate = Gate::new(cache.clone());

    let bare = || {
        service_fn(|_: Req| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        })
    };
    let mut plain = bare();
    let mut stacked = ServiceBuilder::new()
        .layer(gate.api_access())
        .layer(gate.require_scope("contacts:read").unwrap())
        .service(bare());
    // Warm every lazy structure before counting.
    for _ in 0..1_000 {
        drop(call_now(&mut stacked, request("ohk_alloc")));
    }

    let shared = Arc::new(credential);
    for with_extensions in [false, true] {
        let make = || {
            let mut req = request("ohk_alloc");
            if with_extensions {
                req.extensions_mut().insert(Earlier);
            }
            req
        };
        let mut total = [0u64; 3];
        for _ in 0..WINDOWS {
            let runs: [&mut dyn FnMut(Req); 3] = [
                &mut |mut req| {
                    req.extensions_mut().insert(Arc::clone(&shared));
                },
                &mut |req| drop(call_now(&mut plain, req)),
                &mut |req| drop(call_now(&mut stacked, req)),
            ];
            for (sum, run) in total.iter_mut().zip(runs) {
                cache.run_pending_tasks().await;
                let requests: Vec<Req> = (0..WINDOW).map(|_| make()).collect();
                *sum += measure(|| requests.into_iter().for_each(&mut *run)).count_total;
            }
        }
        let [insert_alone, bare_total, stacked_total] = total;
        let per = |n: u64| n as f64 / (WINDOW * WINDOWS) as f64;
        eprintln!(
            "extensions present: {with_extensions}; per request: insert alone {}, bare {}, stacked {}",
            per(insert_alone),
            per(bare_total),
            per(stacked_total)
        );
        assert!(insert_alone > 0, "the allocation counter must be active");
        assert_eq!(bare_total, 0);
        assert_eq!(
            stacked_total - bare_total,
            insert_alone,
            "the layers add no allocation of their own"
        );
    }
    assert_eq!(
        cache.stats().misses,
        1,
        "only the warm-up went to the store"
    );
}
