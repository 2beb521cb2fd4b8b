//! `PgCredentialStore` against a real PostgreSQL.
//!
//! Each test makes its own database on the server `DATABASE_URL` points at
//! (CI: 127.0.0.1:5432, user postgres). Without `DATABASE_URL` the tests
//! print why and pass without running; with `CI` set they fail instead.
#![cfg(feature = "postgres")]

mod common;

#[allow(dead_code)]
#[path = "../examples/onboardinghub/app.rs"]
mod app;
#[path = "../examples/demo/mod.rs"]
mod demo;

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use scopegate::credential::{PresentedToken, TokenHash};
use scopegate::key::ApiKey;
use scopegate::limit::Limit;
use scopegate::store::postgres::{PgCredentialStore, PgStoreError};
use scopegate::store::{CredentialStore, EntitlementSource};
use scopegate::{CachedStore, Gate};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// A database of its own for one test; dropped by [`TestDb::drop_db`].
struct TestDb {
    admin: PgConnectOptions,
    name: String,
    pool: PgPool,
}

async fn test_db() -> Option<TestDb> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "DATABASE_URL is not set: CI must provide PostgreSQL (see .ci/run)"
        );
        eprintln!("skipping: set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run the PostgreSQL tests");
        return None;
    };
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "scopegate_test_{}_{}_{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_micros()
            % 1_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let admin = PgConnectOptions::from_str(&url).expect("DATABASE_URL");
    let mut conn = admin
        .connect()
        .await
        .expect("PostgreSQL at DATABASE_URL must be reachable");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(admin.clone().database(&name))
        .await
        .unwrap();
    Some(TestDb { admin, name, pool })
}

impl TestDb {
    async fn drop_db(self) {
        self.pool.close().await;
        let mut conn = self.admin.connect().await.unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
}

/// A key of `ws_acme` with `contacts:read`.
async fn reader_key(store: &PgCredentialStore, name: &str) -> scopegate::store::postgres::NewKey {
    store
        .create_key("ws_acme", name, &["contacts:read"], None)
        .await
        .unwrap()
}

async fn store(db: &TestDb) -> PgCredentialStore {
    let store = PgCredentialStore::new(db.pool.clone());
    store.migrate().await.unwrap();
    store.migrate().await.unwrap(); // idempotent
    store.set_plan("pro", &["api-access", "sso"]).await.unwrap();
    store.set_plan("free", &[]).await.unwrap();
    store.upsert_account("ws_acme", "pro").await.unwrap();
    store
}

#[tokio::test]
async fn keys_resolve_with_their_scopes_and_plan_until_revoked() {
    let Some(db) = test_db().await else { return };
    let store = store(&db).await;

    let key = store
        .create_key(
            "ws_acme",
            "CRM sync",
            &["contacts:read", "guides:read"],
            None,
        )
        .await
        .unwrap();
    assert!(
        ApiKey::is_well_formed(key.token.as_bytes()),
        "{}",
        key.token.as_str()
    );
    assert!(
        !format!("{key:?}").contains(key.token.as_str()),
        "Debug redacts the token"
    );
    assert_eq!(key.record.name, "CRM sync");
    assert_eq!(key.record.scopes, ["contacts:read", "guides:read"]);
    assert!(key.record.created_at <= SystemTime::now() + Duration::from_secs(5));
    assert_eq!((key.record.revoked_at, key.record.expires_at), (None, None));

    let presented = PresentedToken::new(&key.token);
    let credential = store.resolve(&presented).await.unwrap().unwrap();
    assert_eq!(credential.id(), key.record.id);
    assert_eq!(credential.account_id(), "ws_acme");
    assert_eq!(
        format!("{:?}", credential.scopes()),
        r#"{"contacts:read", "guides:read"}"#
    );
    assert_eq!(
        credential.entitlements().collect::<Vec<_>>(),
        ["api-access", "sso"]
    );
    assert!(store
        .resolve(&PresentedToken::new("ohk_unknown"))
        .await
        .unwrap()
        .is_none());

    // Scope changes and plan changes show on the next resolve.
    assert!(store
        .set_scopes(&key.record.id, &["webhooks:manage"])
        .await
        .unwrap());
    // The same plans, for OAuth tokens that name the account.
    assert_eq!(
        store.entitlements("ws_acme").await.unwrap(),
        ["api-access", "sso"]
    );
    assert!(store.entitlements("ws_nobody").await.unwrap().is_empty());
    store.upsert_account("ws_acme", "free").await.unwrap();
    assert!(store.entitlements("ws_acme").await.unwrap().is_empty());
    let credential = store.resolve(&presented).await.unwrap().unwrap();
    assert_eq!(
        format!("{:?}", credential.scopes()),
        r#"{"webhooks:manage"}"#
    );
    assert_eq!(credential.entitlements().count(), 0);

    assert!(store.revoke_key(&key.record.id).await.unwrap());
    assert!(
        !store.revoke_key(&key.record.id).await.unwrap(),
        "already revoked"
    );
    assert!(store.resolve(&presented).await.unwrap().is_none());
    let listed = store.list_keys("ws_acme").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_at.is_some());
    db.drop_db().await;
}

#[tokio::test]
async fn no_raw_token_is_ever_written() {
    let Some(db) = test_db().await else { return };
    let store = store(&db).await;
    let key = reader_key(&store, "k").await;
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM scopegate_api_keys k WHERE k::TEXT LIKE '%' || $1 || '%' OR k::TEXT LIKE '%' || $2 || '%'",
    )
    .bind(key.token.as_str())
    .bind(&key.token[4..])
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows, 0);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_sha256 FROM scopegate_api_keys")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, TokenHash::of(&key.token).as_bytes());
    db.drop_db().await;
}

#[tokio::test]
async fn expired_keys_and_bad_input() {
    let Some(db) = test_db().await else { return };
    let store = store(&db).await;
    let past = store
        .create_key(
            "ws_acme",
            "old",
            &["contacts:read"],
            Some(SystemTime::now() - Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert!(store
        .resolve(&PresentedToken::new(&past.token))
        .await
        .unwrap()
        .is_none());
    let soon = SystemTime::now() + Duration::from_secs(3600);
    let later = store
        .create_key("ws_acme", "new", &["contacts:read"], Some(soon))
        .await
        .unwrap();
    let credential = store
        .resolve(&PresentedToken::new(&later.token))
        .await
        .unwrap()
        .unwrap();
    let expiry = credential.expires_at().unwrap();
    assert!(
        expiry.duration_since(soon).unwrap_or_else(|e| e.duration()) < Duration::from_millis(2)
    );

    assert!(matches!(
        store.create_key("ws_acme", "x", &["bad scope"], None).await,
        Err(PgStoreError::Scope(_))
    ));
    assert!(matches!(
        store
            .create_key("ws_nobody", "x", &["contacts:read"], None)
            .await,
        Err(PgStoreError::Database(_))
    ));
    // Keys of another format can be imported by hash, idempotently.
    let demo = TokenHash::of("ohk_demo_all_scopes");
    assert!(store
        .import_key("key_demo", "ws_acme", "demo", &demo, &["contacts:read"])
        .await
        .unwrap());
    assert!(!store
        .import_key("key_demo", "ws_acme", "demo", &demo, &["contacts:read"])
        .await
        .unwrap());
    assert_eq!(
        store
            .resolve(&PresentedToken::new("ohk_demo_all_scopes"))
            .await
            .unwrap()
            .unwrap()
            .id(),
        "key_demo"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn malformed_keys_are_refused_before_any_lookup() {
    let Some(db) = test_db().await else { return };
    let store = store(&db).await;
    let key = reader_key(&store, "k").await;
    let cache = CachedStore::new(store.clone());
    let gate = Gate::builder(cache.clone())
        .token_filter(ApiKey::filter)
        .build()
        .unwrap();

    use tower::{Layer, ServiceExt};
    let app = gate
        .api_access()
        .layer(tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        }));
    let status = |token: String| {
        let app = app.clone();
        async move {
            let request = http::Request::get("/")
                .header("authorization", format!("Bearer {token}"))
                .body(())
                .unwrap();
            app.oneshot(request).await.unwrap().status()
        }
    };
    assert_eq!(status(key.token.to_string()).await, 200);
    let mut typo = key.token.as_bytes().to_vec();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    assert_eq!(status(String::from_utf8(typo).unwrap()).await, 401);
    assert_eq!(status("ohk_demo_guess".into()).await, 401);
    let stats = cache.stats();
    assert_eq!(
        (stats.misses, stats.negative_hits),
        (1, 0),
        "only the good key reached the store"
    );
    db.drop_db().await;
}

/// One API instance: its own pool, cache, listener and layers.
struct Instance {
    cache: CachedStore<PgCredentialStore>,
    /// `None`: no push invalidation.
    listener: Option<scopegate::store::postgres::InvalidationListener>,
    gate: Gate,
}

async fn instance(db: &TestDb, fallback: Duration) -> Instance {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(db.admin.clone().database(&db.name))
        .await
        .unwrap();
    // An hour of TTL: within the test, only push invalidation can revoke.
    let cache = CachedStore::builder(PgCredentialStore::new(pool))
        .time_to_live(Duration::from_secs(3600))
        .build();
    let listener = cache
        .store()
        .spawn_invalidation_listener(cache.clone(), fallback);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !listener.is_connected() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener did not connect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gate = Gate::new(cache.clone());
    Instance {
        cache,
        listener: Some(listener),
        gate,
    }
}

impl Instance {
    /// GET through `api-access` + `contacts:read`, as the example API does.
    async fn status(&self, token: &str) -> u16 {
        common::stacked_status(&self.gate, token).await
    }

    /// Polls until `token` gets `want`, and returns how long that took.
    async fn becomes(&self, token: &str, want: u16, within: Duration) -> Duration {
        let start = tokio::time::Instant::now();
        loop {
            let got = self.status(token).await;
            if got == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "still {got} after {within:?}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test]
async fn a_revocation_on_one_instance_reaches_the_other_within_a_second() {
    let Some(db) = test_db().await else { return };
    let admin = store(&db).await;
    let (a, b) = (
        instance(&db, Duration::from_secs(1)).await,
        instance(&db, Duration::from_secs(1)).await,
    );

    // Created through A's store, used on B: B's cache now holds it.
    let key = a
        .cache
        .store()
        .create_key("ws_acme", "k", &["contacts:read"], None)
        .await
        .unwrap();
    assert_eq!(b.status(&key.token).await, 200);
    assert_eq!(b.status(&key.token).await, 200);
    assert_eq!(b.cache.stats().hits, 1, "served from B's cache");

    assert!(a.cache.store().revoke_key(&key.record.id).await.unwrap());
    let took = b.becomes(&key.token, 401, Duration::from_secs(1)).await;
    eprintln!("revocation reached instance B in {took:?}");

    // A plan downgrade: api-access gone everywhere, within the same bound.
    let other = reader_key(&admin, "k2").await;
    assert_eq!(
        (a.status(&other.token).await, b.status(&other.token).await),
        (200, 200)
    );
    admin.upsert_account("ws_acme", "free").await.unwrap();
    let took_a = a.becomes(&other.token, 403, Duration::from_secs(1)).await;
    let took_b = b.becomes(&other.token, 403, Duration::from_secs(1)).await;
    eprintln!("plan downgrade reached A in {took_a:?}, B in {took_b:?}");

    // Changing the plan's entitlements reaches accounts on it, too.
    admin.set_plan("free", &["api-access"]).await.unwrap();
    b.becomes(&other.token, 200, Duration::from_secs(1)).await;
    assert!(b.listener.as_ref().unwrap().applied() >= 3);
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test]
async fn plan_limits_resolve_with_the_key_and_their_changes_reach_running_instances() {
    let Some(db) = test_db().await else { return };
    let admin = store(&db).await;
    let minute = Duration::from_secs(60);
    let limits = [
        Limit::monthly("monthly", 100_000).unwrap().per_account(),
        Limit::rate("requests", 3, minute).unwrap(),
        Limit::rate("writes", 10, Duration::from_secs(1))
            .unwrap()
            .with_burst(20)
            .unwrap()
            .per_account(),
    ];
    admin.set_plan_limits("pro", &limits).await.unwrap();
    assert_eq!(admin.plan_limits("pro").await.unwrap(), limits);
    assert_eq!(admin.plan_limits("free").await.unwrap(), []);

    // With the key, by name; and for OAuth tokens of the account.
    let key = reader_key(&admin, "limited").await;
    let credential = admin
        .resolve(&PresentedToken::new(&key.token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(credential.limits(), limits);
    assert_eq!(
        EntitlementSource::limits(&admin, "ws_acme").await.unwrap(),
        limits
    );
    assert_eq!(
        EntitlementSource::limits(&admin, "ws_nobody")
            .await
            .unwrap(),
        []
    );

    // Enforced on a running instance; a new plan reaches it by push.
    let (a, b) = (
        instance(&db, Duration::from_secs(1)).await,
        instance(&db, Duration::from_secs(1)).await,
    );
    for _ in 0..3 {
        assert_eq!(b.status(&key.token).await, 200);
    }
    assert_eq!(b.status(&key.token).await, 429);
    assert_eq!(
        a.status(&key.token).await,
        200,
        "each instance counts its own"
    );
    let upgrade = [Limit::rate("requests", 1000, minute).unwrap()];
    admin.set_plan_limits("pro", &upgrade).await.unwrap();
    let took = b.becomes(&key.token, 200, Duration::from_secs(1)).await;
    eprintln!("a plan's new limits reached instance B in {took:?}");
    let credential = b
        .cache
        .resolve(&PresentedToken::new(&key.token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(credential.limits(), upgrade);

    // What the table cannot hold, and what it refuses.
    let odd = Limit::rate("requests", 1, Duration::from_micros(1500)).unwrap();
    assert!(matches!(
        admin.set_plan_limits("pro", &[odd]).await,
        Err(PgStoreError::Period(p)) if p == Duration::from_micros(1500)
    ));
    assert_eq!(
        admin.plan_limits("pro").await.unwrap(),
        upgrade,
        "nothing changed"
    );
    for bad in [
        "('pro', 'x', 'rate', 5, NULL, NULL, 'key')",
        "('pro', 'x', 'monthly', 5, 1000, NULL, 'key')",
        "('pro', 'X', 'rate', 5, 1000, NULL, 'key')",
        "('pro', 'x', 'rate', 0, 1000, NULL, 'key')",
        "('pro', 'x', 'rate', 5, 1000, NULL, 'team')",
    ] {
        let insert = format!(
            "INSERT INTO scopegate_plan_limits (plan_id, name, kind, count, period_ms, burst, per) VALUES {bad}"
        );
        assert!(
            sqlx::query(&insert).execute(&db.pool).await.is_err(),
            "{bad}"
        );
    }
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test]
async fn a_killed_listener_never_lets_a_revoked_key_through_past_the_fallback() {
    let Some(db) = test_db().await else { return };
    let admin = store(&db).await;
    let fallback = Duration::from_millis(300);
    let b = instance(&db, fallback).await;
    let key = reader_key(&admin, "k").await;
    assert_eq!(b.status(&key.token).await, 200);

    // Kill the listener's connection, then revoke while it cannot hear.
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = 'scopegate-listener' AND datname = current_database()",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(killed, 1);
    assert!(admin.revoke_key(&key.record.id).await.unwrap());

    // The documented bound without push: the fallback interval (plus the time
    // to notice the dropped connection and one store round trip).
    let took = b.becomes(&key.token, 401, fallback * 3).await;
    eprintln!("revoked key refused {took:?} after the listener was killed");
    // Once refused, it stays refused: no stale entry comes back.
    for _ in 0..20 {
        assert_eq!(b.status(&key.token).await, 401);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And the listener comes back by itself.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let listener = b.listener.as_ref().unwrap();
    while !(listener.is_connected() && listener.connections() >= 2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fresh = reader_key(&admin, "k2").await;
    assert_eq!(b.status(&fresh.token).await, 200);
    assert!(admin.revoke_key(&fresh.record.id).await.unwrap());
    b.becomes(&fresh.token, 401, Duration::from_secs(1)).await;
    drop(b);
    db.drop_db().await;
}

/// Two example servers on one database: a key created through A's developer
/// settings works on B; revoked through A, B refuses it within a second.
#[tokio::test]
async fn two_example_servers_share_keys_and_revocations() {
    let Some(db) = test_db().await else { return };
    let pool = || {
        PgPoolOptions::new()
            .max_connections(4)
            .connect_with(db.admin.clone().database(&db.name))
    };
    // One after the other: the first runs the migrations and seeds.
    let app_a = app::App::with_postgres("admin", pool().await.unwrap(), None)
        .await
        .unwrap();
    let a = common::serve(app_a.router().unwrap()).await;
    let app_b = app::App::with_postgres("admin", pool().await.unwrap(), None)
        .await
        .unwrap();
    let b = common::serve(app_b.router().unwrap()).await;
    let admin = [
        ("authorization", "Bearer admin"),
        ("content-type", "application/json"),
    ];

    assert_eq!(
        b.get("/api/v1/contacts", "ohk_demo_all_scopes")
            .await
            .status,
        200
    );
    assert_eq!(
        b.get("/api/v1/contacts", "ohk_demo_no_api_access")
            .await
            .status,
        403
    );

    let created = a
        .send(
            http::Method::POST,
            "/developer/keys",
            &admin,
            r#"{"name":"CRM","scopes":["contacts:read"]}"#,
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let key = created.json();
    let (id, token) = (key["id"].as_str().unwrap(), key["token"].as_str().unwrap());
    assert!(ApiKey::is_well_formed(token.as_bytes()));
    for _ in 0..3 {
        assert_eq!(b.get("/api/v1/contacts", token).await.status, 200);
    }
    let listed = b
        .send(http::Method::GET, "/developer/keys", &admin, "")
        .await;
    assert!(listed.body.contains(id) && !listed.body.contains(token));

    let revoked = a
        .send(
            http::Method::DELETE,
            &format!("/developer/keys/{id}"),
            &admin,
            "",
        )
        .await;
    assert_eq!(revoked.status, 204);
    assert_eq!(
        a.get("/api/v1/contacts", token).await.status,
        401,
        "at once on A"
    );
    let start = tokio::time::Instant::now();
    loop {
        let reply = b.get("/api/v1/contacts", token).await;
        if reply.status == 401 {
            break;
        }
        assert_eq!(reply.status, 200);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "B still accepts the key after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "revocation through A's developer settings refused on B after {:?}",
        start.elapsed()
    );
    let again = a
        .send(
            http::Method::DELETE,
            &format!("/developer/keys/{id}"),
            &admin,
            "",
        )
        .await;
    assert_eq!(again.status, 404);
    drop((app_a, app_b));
    db.drop_db().await;
}

#[tokio::test]
async fn last_used_at_is_recorded_off_the_request_path() {
    let Some(db) = test_db().await else { return };
    let store = store(&db).await;
    let used = reader_key(&store, "used").await;
    let idle = reader_key(&store, "idle").await;
    let mut b = instance(&db, Duration::from_secs(1)).await;
    let recorder = b
        .cache
        .store()
        .spawn_usage_recorder(Duration::from_millis(50));
    b.gate = Gate::builder(b.cache.clone())
        .usage_recorder(recorder)
        .build()
        .unwrap();

    let before = SystemTime::now() - Duration::from_secs(1);
    for _ in 0..5 {
        assert_eq!(b.status(&used.token).await, 200);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let last_used = loop {
        let keys = store.list_keys("ws_acme").await.unwrap();
        let key = keys.iter().find(|k| k.id == used.record.id).unwrap();
        if let Some(at) = key.last_used_at {
            break at;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "last_used_at never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(last_used >= before);
    let keys = store.list_keys("ws_acme").await.unwrap();
    assert_eq!(
        keys.iter()
            .find(|k| k.id == idle.record.id)
            .unwrap()
            .last_used_at,
        None
    );
    // Recording use sends no invalidation: the key stays cached.
    let hits = b.cache.stats().hits;
    assert_eq!(b.status(&used.token).await, 200);
    assert_eq!(b.cache.stats().hits, hits + 1);
    drop(b);
    db.drop_db().await;
}

/// 2 clients, each sending at least 600 requests and until 1 s after the last
/// revocation, through both instances while keys are revoked
/// one by one: no key is served 1 s after its revocation committed, and no
/// request gets a 5xx.
#[tokio::test]
async fn under_load_revoked_keys_stop_everywhere_within_the_bound() {
    let Some(db) = test_db().await else { return };
    let admin = store(&db).await;
    let (a, b) = (
        instance(&db, Duration::from_secs(1)).await,
        instance(&db, Duration::from_secs(1)).await,
    );
    let mut keys = Vec::new();
    for i in 0..12 {
        keys.push(reader_key(&admin, &format!("k{i}")).await);
    }
    let tokens: Vec<String> = keys.iter().map(|k| k.token.to_string()).collect();
    let revoked_at = std::sync::Mutex::new(vec![None::<tokio::time::Instant>; keys.len()]);
    let bound = Duration::from_secs(1);

    // The clients keep going until the bound has passed after the last
    // revocation, so that every revocation is exercised whatever the timing.
    let revoked_all = std::sync::Mutex::new(None::<tokio::time::Instant>);
    let revoker = async {
        for (i, key) in keys.iter().enumerate().take(8) {
            tokio::time::sleep(Duration::from_millis(40)).await;
            assert!(admin.revoke_key(&key.record.id).await.unwrap());
            revoked_at.lock().unwrap()[i] = Some(tokio::time::Instant::now());
        }
        *revoked_all.lock().unwrap() = Some(tokio::time::Instant::now());
    };
    let client = |offset: usize| {
        let (a, b, tokens, revoked_at, revoked_all) = (&a, &b, &tokens, &revoked_at, &revoked_all);
        async move {
            let mut seen = Vec::new();
            for n in 0.. {
                let finished = revoked_all
                    .lock()
                    .unwrap()
                    .is_some_and(|at| tokio::time::Instant::now() > at + bound);
                if n >= 600 && finished {
                    break;
                }
                let key = (n + offset) % tokens.len();
                let instance = if (n + offset).is_multiple_of(2) { a } else { b };
                let started = tokio::time::Instant::now();
                let status = instance.status(&tokens[key]).await;
                let revoked = revoked_at.lock().unwrap()[key];
                seen.push((key, started, status, revoked));
                tokio::task::yield_now().await;
            }
            seen
        }
    };
    let ((), first, second) = tokio::join!(revoker, client(0), client(1));

    let seen: Vec<_> = first.into_iter().chain(second).collect();
    let server_errors = seen
        .iter()
        .filter(|(_, _, status, _)| *status >= 500)
        .count();
    let late: Vec<_> = seen
        .iter()
        .filter(|(_, started, status, revoked)| {
            *status == 200 && revoked.is_some_and(|at| *started > at + bound)
        })
        .collect();
    let (ok, refused) = (
        seen.iter().filter(|s| s.2 == 200).count(),
        seen.iter().filter(|s| s.2 == 401).count(),
    );
    eprintln!(
        "{} requests: {ok} allowed, {refused} refused after revocation, {server_errors} 5xx",
        seen.len()
    );
    assert_eq!(server_errors, 0);
    assert!(late.is_empty(), "served after the bound: {late:?}");
    assert!(ok > 0 && refused > 0, "the run exercised both outcomes");
    drop((a, b));
    db.drop_db().await;
}

/// A TCP proxy to PostgreSQL that can be taken down and brought back.
struct Proxy {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(target: (String, u16)) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, conns2) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused, in effect
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            port,
            up,
            connections,
        }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// The database goes away mid-run: an uncached key gets 503, never 200; a
/// cached key is served at most `fallback` longer, then 503 too (fail
/// closed: nobody can vouch for it); all recovers when the database returns.
#[tokio::test]
async fn when_the_database_is_unreachable_nothing_is_let_through() {
    let Some(db) = test_db().await else { return };
    let admin = store(&db).await;
    let cached = reader_key(&admin, "cached").await;
    let uncached = reader_key(&admin, "uncached").await;

    let target = (db.admin.get_host().to_owned(), db.admin.get_port());
    let proxy = Proxy::start(target).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(300))
        .connect_with(
            db.admin
                .clone()
                .database(&db.name)
                .host("127.0.0.1")
                .port(proxy.port),
        )
        .await
        .unwrap();
    let cache = CachedStore::builder(PgCredentialStore::new(pool))
        .time_to_live(Duration::from_secs(3600))
        .store_timeout(Some(Duration::from_millis(500)))
        .build();
    let fallback = Duration::from_millis(300);
    let listener = cache
        .store()
        .spawn_invalidation_listener(cache.clone(), fallback);
    while !listener.is_connected() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = Instance {
        gate: Gate::new(cache.clone()),
        cache,
        listener: Some(listener),
    };
    assert_eq!(b.status(&cached.token).await, 200);

    proxy.down();
    assert_eq!(
        b.status(&uncached.token).await,
        503,
        "an uncached key is never let through"
    );
    // The cached key: refused within the fallback (plus noticing the drop).
    let took = b.becomes(&cached.token, 503, fallback * 4).await;
    eprintln!("cached key refused {took:?} into the outage");
    for _ in 0..5 {
        assert_eq!(b.status(&cached.token).await, 503);
        assert_eq!(b.status(&uncached.token).await, 503);
    }

    proxy.up();
    b.becomes(&uncached.token, 200, Duration::from_secs(5))
        .await;
    b.becomes(&cached.token, 200, Duration::from_secs(5)).await;
    drop(b);
    db.drop_db().await;
}

/// Without the listener, the bound is the cache's time_to_live: a revoked
/// key is still served from the cache until then, and refused after.
#[tokio::test]
async fn without_push_the_bound_is_the_time_to_live() {
    let Some(db) = test_db().await else { return };
    let admin = store(&db).await;
    let key = reader_key(&admin, "k").await;
    let ttl = Duration::from_millis(400);
    let cache = CachedStore::builder(admin.clone())
        .time_to_live(ttl)
        .build();
    let gate = Gate::new(cache.clone());
    let b = Instance {
        gate,
        cache,
        listener: None,
    };

    assert_eq!(b.status(&key.token).await, 200);
    let cached_at = tokio::time::Instant::now();
    assert!(admin.revoke_key(&key.record.id).await.unwrap());
    assert_eq!(b.status(&key.token).await, 200, "no push: still cached");
    let took = b.becomes(&key.token, 401, ttl * 2).await;
    assert!(
        cached_at.elapsed() >= ttl - Duration::from_millis(50),
        "refused only once the TTL ran out"
    );
    eprintln!("without push, refused {took:?} after the revocation (ttl {ttl:?})");
    drop(b);
    db.drop_db().await;
}

/// `examples/keys.rs` against the real database, next to a running example
/// server: a key the CLI creates works at once; the CLI lists it without its
/// token; its revocation and a plan change reach the server within a second.
#[tokio::test]
async fn the_keys_cli_manages_what_a_running_server_enforces() {
    let Some(db) = test_db().await else { return };
    let url = db
        .admin
        .clone()
        .database(&db.name)
        .to_url_lossy()
        .to_string();
    let app = app::App::with_postgres("admin", db.pool.clone(), None)
        .await
        .unwrap();
    let server = common::serve(app.router().unwrap()).await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(common::example_binary("keys"))
            .args(args)
            .env("DATABASE_URL", &url)
            .output()
            .expect("the keys CLI runs");
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };

    let (ok, stdout, stderr) = cli(&[
        "create",
        "--workspace",
        "ws_acme",
        "--name",
        "CLI key",
        "--scopes",
        "contacts:read,guides:read",
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("shown only once"), "{stderr}");
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|rest| rest.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
    };
    let (id, token) = (field("id "), field("token "));
    assert!(ApiKey::is_well_formed(token.as_bytes()), "{token}");
    let status = |token: &str, path: &str| {
        let server = &server;
        let (token, path) = (token.to_owned(), path.to_owned());
        async move { server.get(&path, &token).await.status.as_u16() }
    };
    assert_eq!(status(&token, "/api/v1/contacts").await, 200);
    assert_eq!(status(&token, "/api/v1/webhooks").await, 403);

    let (ok, listed, _) = cli(&["list", "--workspace", "ws_acme"]);
    assert!(ok);
    let row = listed.lines().find(|l| l.starts_with(&id)).expect("listed");
    assert!(
        row.contains("CLI key") && row.contains("contacts:read,guides:read"),
        "{row}"
    );
    assert!(!listed.contains(&token), "a token is never listed");

    // Unknown ids and bad scopes are errors, with a message.
    let (ok, _, stderr) = cli(&["revoke", "key_does_not_exist"]);
    assert!(
        !ok && stderr.contains("no live key key_does_not_exist"),
        "{stderr}"
    );
    let (ok, _, stderr) = cli(&["set-scopes", &id, "--scopes", "contacts read"]);
    assert!(!ok && stderr.contains("invalid scope"), "{stderr}");

    let within = |token: String, want: u16| {
        let server = &server;
        async move {
            let start = tokio::time::Instant::now();
            loop {
                let got = server.get("/api/v1/contacts", &token).await.status.as_u16();
                if got == want {
                    return start.elapsed();
                }
                assert!(
                    start.elapsed() < Duration::from_secs(1),
                    "still {got} after 1 s, want {want}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let (ok, _, stderr) = cli(&["revoke", &id]);
    assert!(ok, "{stderr}");
    let took = within(token.clone(), 401).await;
    eprintln!("revoked by the CLI, refused by the server {took:?} later");

    // A plan's limits, set and read back; bad ones refused with a reason.
    let (ok, stdout, stderr) = cli(&[
        "set-limits",
        "pro",
        "--limit",
        "requests=2/1m",
        "--limit",
        "monthly=100000/month,per=account",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        "pro: \"monthly\";q=100000 per account; \"requests\";q=2;w=60 per key\n"
    );
    let (ok, stdout, _) = cli(&["limits", "pro"]);
    assert!(ok);
    assert!(stdout.contains("\"requests\";q=2;w=60"), "{stdout}");
    for (bad, why) in [
        ("requests=2", "want COUNT/PERIOD"),
        ("requests=2/1w", "the unit is ms, s, m, h, d, or month"),
        ("Requests=2/1m", "invalid limit name"),
        ("requests=2/1m,per=team", "want burst=N or per=account|key"),
    ] {
        let (ok, _, stderr) = cli(&["set-limits", "pro", "--limit", bad]);
        assert!(!ok && stderr.contains(why), "{bad}: {stderr}");
    }
    // The running server counts against them at once: the demo key's
    // third request in a minute is refused.
    let all = "ohk_demo_all_scopes";
    let spent = within(all.to_owned(), 429).await;
    eprintln!("limits set by the CLI enforced {spent:?} later");
    let (ok, _, stderr) = cli(&["set-limits", "pro"]);
    assert!(ok, "{stderr}");
    within(all.to_owned(), 200).await;

    // A plan change: ws_acme onto the free plan, api-access gone.
    assert_eq!(status("ohk_demo_all_scopes", "/api/v1/contacts").await, 200);
    let (ok, _, stderr) = cli(&["set-plan", "ws_acme", "free"]);
    assert!(ok, "{stderr}");
    within("ohk_demo_all_scopes".to_owned(), 403).await;
    db.drop_db().await;
}
