//! The per-request cost of scopegate, side by side with the bare service, the
//! peers a user would pick instead, and the floor: the parts the work cannot
//! do without, measured alone.
//!
//! ```text
//! cargo bench --bench hot_path
//! python3 benches/report.py        # medians, ratios and plots for BENCHMARKS.md
//! ```

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::AUTHORIZATION;
use http::{Extensions, HeaderMap};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use scopegate::credential::{PresentedToken, TokenHash};
use scopegate::{CachedStore, Credential, Gate, MemoryStore};
use sha2::{Digest, Sha256};
use support::{
    bare, bearer, call, credential, request, runtime, warm, with_limit, LIMITED, SCOPES, TOKEN,
};
use tower::{Layer, ServiceBuilder};

const READ_ONLY: &str = "ohk_bench_readonly_23456789abcdef0123456789";
const FREE_PLAN: &str = "ohk_bench_freeplan_23456789abcdef0123456789";
const UNKNOWN: &str = "ohk_bench_unknown0_23456789abcdef0123456789";
/// Keys of their own for the other gates' limited benches: a cached
/// credential is bound to the first gate that counts it, and another gate
/// would look its budgets up on every request.
const LIMITED_QUIET: &str = "ohk_bench_limitedq_3456789abcdef0123456789";
#[cfg(feature = "redis")]
const LIMITED_CLUSTER: &str = "ohk_bench_limitedc_3456789abcdef0123456789";

fn hot_path(c: &mut Criterion) {
    let rt = runtime();
    // The store timeout needs the runtime's timer, as it does in a server.
    let _context = rt.enter();
    let keys = MemoryStore::new();
    keys.insert_token(TOKEN, credential("key_all", &SCOPES, true));
    keys.insert_token(READ_ONLY, credential("key_read", &["contacts:read"], true));
    keys.insert_token(FREE_PLAN, credential("key_free", &SCOPES, false));
    keys.insert_token(
        LIMITED,
        with_limit(credential("key_limited", &SCOPES, true)),
    );
    keys.insert_token(
        LIMITED_QUIET,
        with_limit(credential("key_limited_quiet", &SCOPES, true)),
    );
    #[cfg(feature = "redis")]
    keys.insert_token(
        LIMITED_CLUSTER,
        with_limit(credential("key_limited_cluster", &SCOPES, true)),
    );
    let cache = CachedStore::new(keys.clone());
    warm(
        &rt,
        &cache,
        &[TOKEN, READ_ONLY, FREE_PLAN, LIMITED, LIMITED_QUIET],
    );
    #[cfg(feature = "redis")]
    warm(&rt, &cache, &[LIMITED_CLUSTER]);
    let gate = Gate::new(cache.clone());
    let (all, read_only, free, unknown, limited) = (
        bearer(TOKEN),
        bearer(READ_ONLY),
        bearer(FREE_PLAN),
        bearer(UNKNOWN),
        bearer(LIMITED),
    );

    let mut g = c.benchmark_group("hot_path");
    macro_rules! serve {
        ($name:literal, $service:expr, $token:expr) => {{
            let mut service = $service;
            g.bench_function($name, |b| {
                b.iter_batched(
                    || request($token),
                    |req| call(&rt, &mut service, req),
                    BatchSize::SmallInput,
                )
            });
        }};
    }
    let stacked = |scope: &str| {
        ServiceBuilder::new()
            .layer(gate.api_access())
            .layer(gate.require_scope(scope).expect("scope"))
            .service(bare())
    };

    // The baseline and the three deployments, on a cache hit.
    serve!("bare", bare(), Some(&all));
    serve!(
        "entitlement_hit",
        gate.api_access().layer(bare()),
        Some(&all)
    );
    serve!(
        "scope_hit",
        gate.require_scope("contacts:read")
            .expect("scope")
            .layer(bare()),
        Some(&all)
    );
    serve!("stacked_hit", stacked("contacts:read"), Some(&all));
    // The same, counted against one rate limit no request reaches.
    serve!(
        "stacked_hit_one_limit",
        stacked("contacts:read"),
        Some(&limited)
    );
    let quiet = Gate::builder(cache.clone())
        .rate_limit_headers(false)
        .build()
        .expect("gate");
    serve!(
        "stacked_hit_one_limit_no_headers",
        ServiceBuilder::new()
            .layer(quiet.api_access())
            .layer(quiet.require_scope("contacts:read").expect("scope"))
            .service(bare()),
        Some(&bearer(LIMITED_QUIET))
    );
    // The same limit in cluster mode, shared over the Redis at REDIS_URL:
    // the sync task runs on this runtime, between the requests, and its
    // rounds count in the time.
    #[cfg(feature = "redis")]
    if let Ok(url) = std::env::var("REDIS_URL") {
        let redis = scopegate::cluster::RedisLimits::new(&url)
            .expect("REDIS_URL")
            .prefix("scopegate_bench");
        let cluster = Gate::builder(cache.clone())
            .cluster(redis)
            .build()
            .expect("gate");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !cluster.cluster_status().is_some_and(|s| s.connected()) {
            assert!(
                std::time::Instant::now() < deadline,
                "Redis at REDIS_URL does not answer"
            );
            rt.block_on(tokio::time::sleep(Duration::from_millis(10)));
        }
        serve!(
            "stacked_hit_one_limit_cluster",
            ServiceBuilder::new()
                .layer(cluster.api_access())
                .layer(cluster.require_scope("contacts:read").expect("scope"))
                .service(bare()),
            Some(&bearer(LIMITED_CLUSTER))
        );
    }

    // A route policy table in place of the two layers: matching must not
    // grow with the table. The requested route is the table's last.
    for routes in [10usize, 200] {
        let mut policy = scopegate::policy::RoutePolicy::new().require_entitlement("api-access");
        for i in 0..routes - 1 {
            policy = policy.scope(
                http::Method::GET,
                &format!("/api/v1/resource{i}/{{id}}"),
                "contacts:write",
            );
        }
        let policy = gate
            .policy(policy.scope(http::Method::GET, "/api/v1/contacts", "contacts:read"))
            .expect("policy");
        let name = if routes == 10 {
            "policy_hit_10_routes"
        } else {
            "policy_hit_200_routes"
        };
        let mut service = policy.layer(bare());
        g.bench_function(name, |b| {
            b.iter_batched(
                || request(Some(&all)),
                |req| call(&rt, &mut service, req),
                BatchSize::SmallInput,
            )
        });
    }

    // A miss on every request: no caching (time_to_live 0), MemoryStore behind.
    let uncached = Gate::new(
        CachedStore::builder(keys.clone())
            .time_to_live(Duration::ZERO)
            .build(),
    );
    serve!(
        "stacked_miss_memory_store",
        ServiceBuilder::new()
            .layer(uncached.api_access())
            .layer(uncached.require_scope("contacts:read").expect("scope"))
            .service(bare()),
        Some(&all)
    );

    // Rejections: denial floods must be cheap too.
    // Twice: a token's second "not found" is the one cached.
    for _ in 0..2 {
        rt.block_on(cache.resolve(&PresentedToken::new(UNKNOWN)))
            .expect("store");
    }
    serve!("reject_401_missing", stacked("contacts:read"), None);
    serve!(
        "reject_401_unknown",
        stacked("contacts:read"),
        Some(&unknown)
    );
    serve!(
        "reject_403_scope",
        stacked("contacts:write"),
        Some(&read_only)
    );
    serve!(
        "reject_403_entitlement",
        stacked("contacts:read"),
        Some(&free)
    );

    // A flood of made-up tokens, a new one on every request (issue #15,
    // target 2): each is a store call and a negative-cache entry without a
    // token filter; with `ApiKey::filter`, a malformed key is refused before
    // any lookup, as cheaply as a missing header.
    let fresh = std::cell::Cell::new(0u64);
    let fresh_token = |prefix: &str| {
        fresh.set(fresh.get() + 1);
        bearer(&format!("{prefix}{:032}", fresh.get()))
    };
    // The same fresh requests to the bare service: what building and
    // dropping a request with a new header costs by itself.
    let mut plain = bare();
    g.bench_function("bare_fresh_token", |b| {
        b.iter_batched(
            || request(Some(&fresh_token("ohk_fresh_"))),
            |req| call(&rt, &mut plain, req),
            BatchSize::SmallInput,
        )
    });
    let mut flood = stacked("contacts:read");
    g.bench_function("reject_401_fresh_unknown", |b| {
        b.iter_batched(
            || request(Some(&fresh_token("ohk_fresh_"))),
            |req| call(&rt, &mut flood, req),
            BatchSize::SmallInput,
        )
    });
    let filtered = Gate::builder(cache.clone())
        .token_filter(scopegate::key::ApiKey::filter)
        .build()
        .expect("gate");
    let mut flood = ServiceBuilder::new()
        .layer(filtered.api_access())
        .layer(filtered.require_scope("contacts:read").expect("scope"))
        .service(bare());
    g.bench_function("reject_401_fresh_malformed_filtered", |b| {
        b.iter_batched(
            || request(Some(&fresh_token("ohk_fresh_"))),
            |req| call(&rt, &mut flood, req),
            BatchSize::SmallInput,
        )
    });

    // Peers a user would pick instead.
    #[allow(deprecated)] // `bearer` is the peer being measured.
    let tower_http_bearer = tower_http::validate_request::ValidateRequestHeaderLayer::bearer(TOKEN);
    serve!(
        "peer_tower_http_bearer",
        tower_http_bearer.layer(bare()),
        Some(&all)
    );
    serve!(
        "peer_minimal_handwritten",
        support::Minimal::new(&[(TOKEN, credential("key_all", &SCOPES, true))], bare()),
        Some(&all)
    );
    jwt_peers(&mut g);
    #[cfg(feature = "jwt")]
    scopegate_jwt(&mut g, &rt, keys.clone());

    // The floor: each part the hit path cannot do without, alone.
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, all.clone());
    g.bench_function("floor_parse_header", |b| {
        b.iter(|| {
            black_box(&headers)
                .get(AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
                .map(<[u8]>::len)
        })
    });
    g.bench_function("floor_sha256", |b| {
        b.iter(|| Sha256::digest(black_box(TOKEN.as_bytes())))
    });
    let moka: moka::future::Cache<TokenHash, Arc<Credential>> = moka::future::Cache::new(100_000);
    let hash = TokenHash::of(TOKEN);
    rt.block_on(moka.insert(hash, Arc::new(credential("key_all", &SCOPES, true))));
    g.bench_function("floor_moka_get", |b| {
        b.iter(|| support::drive(&rt, moka.get(black_box(&hash))))
    });
    let credential = Arc::new(credential("key_all", &SCOPES, true));
    g.bench_function("floor_extensions_insert", |b| {
        b.iter(|| {
            let mut extensions = Extensions::new();
            extensions.insert(Arc::clone(&credential));
            extensions
        })
    });
    g.finish();
}

fn jwt_peers(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Claims {
        sub: String,
        scope: String,
        exp: u64,
    }
    let claims = Claims {
        sub: "key_all".into(),
        scope: SCOPES.join(" "),
        exp: 4_102_444_800, // 2100-01-01
    };
    let secret = b"bench-secret-0123456789abcdef0123456789";
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("encode");
    let hs_key = DecodingKey::from_secret(secret);
    let hs_validation = Validation::new(Algorithm::HS256);
    g.bench_function("peer_jwt_hs256_verify", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<Claims>(black_box(&hs256), &hs_key, &hs_validation)
                .expect("valid")
        })
    });

    let private = include_bytes!("fixtures/rs256-private.pem");
    let public = include_bytes!("fixtures/rs256-public.pem");
    let rs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(private).expect("private key"),
    )
    .expect("encode");
    let rs_key = DecodingKey::from_rsa_pem(public).expect("public key");
    let rs_validation = Validation::new(Algorithm::RS256);
    g.bench_function("peer_jwt_rs256_verify", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<Claims>(black_box(&rs256), &rs_key, &rs_validation)
                .expect("valid")
        })
    });
}

/// scopegate's own JWT path: a cached JWT through the stacked layers (the
/// signature is checked once, on the miss), and the miss itself, which
/// verifies an RS256 access token against a static JWKS.
#[cfg(feature = "jwt")]
fn scopegate_jwt(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    keys: MemoryStore,
) {
    use scopegate::store::oauth::jwt::{JwtIssuers, JwtStore};
    use scopegate::store::{ChainStore, CredentialStore};

    const ISSUER: &str = "https://auth.bench.test";
    const AUDIENCE: &str = "https://api.bench.test";
    let private = EncodingKey::from_rsa_pem(include_bytes!("fixtures/rs256-private.pem"))
        .expect("private key");
    let mut jwk =
        jsonwebtoken::jwk::Jwk::from_encoding_key(&private, Algorithm::RS256).expect("public JWK");
    jwk.common.key_id = Some("bench".into());
    let jwks = serde_json::to_string(&jsonwebtoken::jwk::JwkSet { keys: vec![jwk] }).expect("jwks");
    let plans = std::collections::HashMap::from([(
        "ws_bench".to_owned(),
        vec![scopegate::error::API_ACCESS.to_owned()],
    )]);
    let store = JwtStore::builder(ISSUER, AUDIENCE)
        .jwks_json(&jwks)
        .account_claim("workspace_id")
        .entitlements(plans.clone())
        .build()
        .expect("jwt store");
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some("bench".into());
    let token = jsonwebtoken::encode(
        &header,
        &serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "app_bench", "client_id": "app_bench",
            "jti": "jti_bench", "iat": 1_700_000_000u64, "exp": 4_102_444_800u64,
            "scope": SCOPES.join(" "), "workspace_id": "ws_bench",
        }),
        &private,
    )
    .expect("encode");
    g.bench_function("jwt_miss_verify_rs256", |b| {
        b.iter(|| {
            rt.block_on(store.resolve(&PresentedToken::new(black_box(&token))))
                .expect("store")
                .expect("valid")
        })
    });

    // The same miss through a store of three issuers: the `iss` peek and
    // the routing are what it adds.
    let issuers = JwtIssuers::new(
        [
            "https://auth-a.bench.test",
            ISSUER,
            "https://auth-c.bench.test",
        ]
        .map(|issuer| {
            JwtStore::builder(issuer, AUDIENCE)
                .jwks_json(&jwks)
                .account_claim("workspace_id")
                .entitlements(plans.clone())
                .build()
                .expect("jwt store")
        }),
    )
    .expect("issuers");
    // What the routing reads before any signature check, alone.
    #[derive(serde::Deserialize)]
    struct Unverified {
        #[allow(dead_code)]
        iss: String,
    }
    g.bench_function("jwt_iss_peek", |b| {
        b.iter(|| {
            jsonwebtoken::dangerous::insecure_decode_claims::<Unverified>(black_box(&token))
                .expect("claims")
        })
    });
    g.bench_function("jwt_miss_verify_rs256_3_issuers", |b| {
        b.iter(|| {
            rt.block_on(issuers.resolve(&PresentedToken::new(black_box(&token))))
                .expect("store")
                .expect("valid")
        })
    });

    let jwt = bearer(&token);
    for (name, chain) in [
        (
            "jwt_stacked_hit",
            ChainStore::new().api_keys(keys.clone()).jwt(store),
        ),
        (
            "jwt_stacked_hit_3_issuers",
            ChainStore::new().api_keys(keys).jwt(issuers),
        ),
    ] {
        let cache = CachedStore::new(chain);
        rt.block_on(cache.resolve(&PresentedToken::new(&token)))
            .expect("store")
            .expect("valid");
        let gate = Gate::new(cache);
        let mut service = ServiceBuilder::new()
            .layer(gate.api_access())
            .layer(gate.require_scope("contacts:read").expect("scope"))
            .service(bare());
        g.bench_function(name, |b| {
            b.iter_batched(
                || request(Some(&jwt)),
                |req| call(rt, &mut service, req),
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = hot_path
}
criterion_main!(benches);
