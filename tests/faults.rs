//! Real faults against a PostgreSQL cluster of the tests' own (`initdb` and
//! `pg_ctl`, its own port and data directory; the shared server is never
//! touched):
//!
//! - a restart mid-load: uncached keys get 503, never 200, while it is
//!   down; cached ones follow the fallback; a key revoked as it comes back
//!   is refused within the bound; everything recovers without a restart of
//!   the application;
//! - on three hosts (network namespaces: this one with instance A, one
//!   with the database, one with instance B, the example server): B's link
//!   to the database cut silently (`tc`'s `blackhole` qdisc on both ends:
//!   every packet vanishes, no reset) is noticed by its listener's
//!   heartbeat within 2 × `fallback`, and no key revoked through A is
//!   served by B past that;
//! - 200 ms of latency each way on the database link (a delaying proxy:
//!   this kernel has no `netem`): hits stay as fast, and 100 concurrent
//!   cold misses for one key make one store call.
//!
//! They need root (namespaces, and `runuser` to run PostgreSQL as
//! `postgres`), `ip`, `tc` and PostgreSQL's server binaries. Without them
//! the tests print why and pass without running; with `CI` set they fail.
#![cfg(feature = "postgres")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scopegate::cache::CachedStore;
use scopegate::store::postgres::{InvalidationListener, PgCredentialStore};
use scopegate::Gate;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Why these tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
    {
        return Some("not root (network namespaces, and runuser for PostgreSQL)".into());
    }
    for tool in ["ip", "tc", "runuser"] {
        if !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(format!("{tool} is not installed"));
        }
    }
    if pg_bin().is_none() {
        return Some("PostgreSQL's server binaries (initdb, pg_ctl) are not installed".into());
    }
    None
}

/// Skips (or fails, under CI) when the machine cannot run these tests.
fn can_run() -> bool {
    match unavailable() {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => panic!("CI is set, but {why}"),
        Some(why) => {
            eprintln!("skipping: {why}");
            false
        }
    }
}

/// The directory of `initdb` and `pg_ctl`: Debian's, or on the `PATH`.
fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop().or_else(|| {
        let out = Command::new("sh")
            .args(["-c", "dirname \"$(command -v pg_ctl)\""])
            .output()
            .ok()?;
        let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        dir.join("pg_ctl").exists().then_some(dir)
    })
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A unique small number for this test: names, ports and subnets.
fn slot() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst) as u32;
    u16::try_from((std::process::id() * 7 + n) % 200 + 20).unwrap()
}

/// A PostgreSQL cluster of the test's own, run as `postgres`, optionally
/// inside a network namespace.
struct Cluster {
    dir: PathBuf,
    netns: Option<String>,
}

impl Cluster {
    /// Cluster `n` of this process, on `listen:port`.
    fn init(n: u16, port: u16, listen: &str, netns: Option<&str>) -> Cluster {
        let bin = pg_bin().expect("pg_ctl");
        let dir = PathBuf::from(format!(
            "/var/tmp/scopegate-faults-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        run("chown", &["postgres:postgres", dir.to_str().unwrap()]);
        let data = dir.join("data");
        run(
            "runuser",
            &[
                "-u",
                "postgres",
                "--",
                bin.join("initdb").to_str().unwrap(),
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let conf = format!(
            "listen_addresses = '{listen}'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\n",
            dir.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        append(&data.join("pg_hba.conf"), "host all all 0.0.0.0/0 trust\n");
        let cluster = Cluster {
            dir,
            netns: netns.map(str::to_owned),
        };
        cluster.start();
        cluster
    }

    fn pg_ctl(&self, args: &[&str]) {
        let bin = pg_bin().expect("pg_ctl");
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let mut command: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            command.extend(["ip", "netns", "exec", ns].map(str::to_owned));
        }
        command.extend(["runuser", "-u", "postgres", "--"].map(str::to_owned));
        command.push(bin.join("pg_ctl").display().to_string());
        command
            .extend(["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap()].map(str::to_owned));
        command.extend(args.iter().map(|a| (*a).to_owned()));
        let (program, rest) = command.split_first().unwrap();
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        run(program, &rest);
    }

    fn start(&self) {
        self.pg_ctl(&["-w", "-t", "30", "start"]);
    }

    fn stop(&self) {
        self.pg_ctl(&["-w", "-m", "fast", "stop"]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let bin = pg_bin().expect("pg_ctl");
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                bin.join("pg_ctl").to_str().unwrap(),
                "-D",
            ])
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// Three hosts on one machine: this one (the test, and instance A), `db`
/// (the database) and `b` (instance B, the example server), each a network
/// namespace but this one, joined by veth links with a subnet each:
///
/// ```text
/// this host ──a── db ──b── host b ──h── this host
/// ```
///
/// A reaches the database over `a`, B over `b`, and the test reaches B over
/// `h`.
struct Net {
    db: String,
    b: String,
    n: u16,
}

impl Net {
    fn new(n: u16) -> Net {
        let net = Net {
            db: format!("sgdb{n}"),
            b: format!("sgib{n}"),
            n,
        };
        for ns in [&net.db, &net.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            run("ip", &["netns", "add", ns]);
            run(
                "ip",
                &["netns", "exec", ns, "ip", "link", "set", "lo", "up"],
            );
        }
        net.link("a", None, &net.db.clone(), 201);
        net.link("b", Some(&net.b.clone()), &net.db.clone(), 202);
        net.link("h", None, &net.b.clone(), 204);
        net
    }

    /// A veth link `name` from `from` (this host if `None`, address .1) to
    /// `to` (address .2) on 10.`subnet`.n.0/24.
    fn link(&self, name: &str, from: Option<&str>, to: &str, subnet: u16) {
        let (here, there) = (
            format!("sg{name}{}", self.n),
            format!("sg{name}{}p", self.n),
        );
        let _ = Command::new("ip").args(["link", "del", &here]).output();
        run(
            "ip",
            &["link", "add", &here, "type", "veth", "peer", "name", &there],
        );
        run("ip", &["link", "set", &there, "netns", to]);
        if let Some(from) = from {
            run("ip", &["link", "set", &here, "netns", from]);
        }
        let prefix = format!("10.{subnet}.{}", self.n);
        self.ip(
            from,
            &["addr", "add", &format!("{prefix}.1/24"), "dev", &here],
        );
        self.ip(from, &["link", "set", &here, "up"]);
        self.ip(
            Some(to),
            &["addr", "add", &format!("{prefix}.2/24"), "dev", &there],
        );
        self.ip(Some(to), &["link", "set", &there, "up"]);
    }

    /// `ip args`, in namespace `ns` (this host if `None`).
    fn ip(&self, ns: Option<&str>, args: &[&str]) {
        match ns {
            None => run("ip", args),
            Some(ns) => {
                let mut all = vec!["netns", "exec", ns, "ip"];
                all.extend(args);
                run("ip", &all);
            }
        }
    }

    /// The address of the far end of link `subnet`.
    fn far(&self, subnet: u16) -> String {
        format!("10.{subnet}.{}.2", self.n)
    }

    /// Cuts link `b` silently: both ends drop every packet they would send
    /// (`tc`'s `blackhole` qdisc), so neither side gets a reset.
    fn cut_b(&self) {
        self.tc_b(&["replace"], &["blackhole"]);
    }

    /// Heals link `b`.
    fn heal_b(&self) {
        self.tc_b(&["del"], &[]);
    }

    fn tc_b(&self, verb: &[&str], qdisc: &[&str]) {
        for (ns, dev) in [
            (&self.b, format!("sgb{}", self.n)),
            (&self.db, format!("sgb{}p", self.n)),
        ] {
            let mut args = vec!["netns", "exec", ns.as_str(), "tc", "qdisc"];
            args.extend(verb);
            args.extend(["dev", dev.as_str(), "root"]);
            args.extend(qdisc);
            run("ip", &args);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for link in ["a", "h"] {
            let _ = Command::new("ip")
                .args(["link", "del", &format!("sg{link}{}", self.n)])
                .output();
        }
        for ns in [&self.b, &self.db] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// One API instance: a pool to `host:port`, its cache, listener and gate.
struct Instance {
    cache: CachedStore<PgCredentialStore>,
    listener: InvalidationListener,
    gate: Gate,
}

async fn instance(host: &str, port: u16, fallback: Duration) -> Instance {
    instance_with(host, port, fallback, Duration::from_millis(300)).await
}

/// An instance whose store calls time out after `store_timeout`.
async fn instance_with(
    host: &str,
    port: u16,
    fallback: Duration,
    store_timeout: Duration,
) -> Instance {
    let options = PgConnectOptions::new()
        .host(host)
        .port(port)
        .username("postgres")
        .database("postgres");
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(store_timeout)
        .connect_lazy_with(options);
    // An hour of TTL, so that only the listener can revoke; by default a
    // short store timeout, so that an unreachable database answers 503
    // quickly.
    let cache = CachedStore::builder(PgCredentialStore::new(pool))
        .time_to_live(Duration::from_secs(3600))
        .store_timeout(Some(store_timeout))
        .build();
    let listener = cache
        .store()
        .spawn_invalidation_listener(cache.clone(), fallback);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listener.is_connected() {
        assert!(Instant::now() < deadline, "listener did not connect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gate = Gate::new(cache.clone());
    Instance {
        cache,
        listener,
        gate,
    }
}

impl Instance {
    /// GET through `api-access` + `contacts:read`, as the example API does.
    async fn status(&self, token: &str) -> u16 {
        common::stacked_status(&self.gate, token).await
    }
}

/// A store on the cluster at 127.0.0.1:`port`, for the test's own changes.
async fn admin_store(port: u16) -> PgCredentialStore {
    let options = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("postgres");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options);
    PgCredentialStore::new(pool.await.unwrap())
}

/// The schema, a plan with `api-access`, the account, through `store`.
async fn seed(store: &PgCredentialStore) {
    store.migrate().await.unwrap();
    store.set_plan("pro", &["api-access"]).await.unwrap();
    store.upsert_account("ws_acme", "pro").await.unwrap();
}

async fn key(store: &PgCredentialStore, name: &str) -> (String, String) {
    let key = store
        .create_key("ws_acme", name, &["contacts:read"], None)
        .await
        .unwrap();
    (key.record.id.clone(), key.token.to_string())
}

#[tokio::test]
async fn a_restart_mid_load_never_lets_a_revoked_or_unknown_key_through() {
    if !can_run() {
        return;
    }
    let n = slot();
    let port = 56000 + n;
    let cluster = Cluster::init(n, port, "127.0.0.1", None);
    let fallback = Duration::from_secs(1);
    let app = instance("127.0.0.1", port, fallback).await;
    let admin = admin_store(port).await;
    seed(&admin).await;
    let (_, cached) = key(&admin, "cached").await;
    let (_, uncached) = key(&admin, "uncached").await;
    let (revoked_id, revoked) = key(&admin, "revoked at restart").await;
    assert_eq!(app.status(&cached).await, 200);
    assert_eq!(app.status(&revoked).await, 200);

    let down_at = Instant::now();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .unwrap();
    let mut seen = Vec::new(); // (since down, key, status)
    let mut requests = 0;
    // While it is down: every key, every 20 ms, for 2 s.
    while down_at.elapsed() < Duration::from_secs(2) {
        for (name, token) in [("cached", &cached), ("uncached", &uncached)] {
            requests += 1;
            seen.push((down_at.elapsed(), name, app.status(token).await));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let uncached_200 = seen
        .iter()
        .filter(|(_, k, s)| *k == "uncached" && *s == 200)
        .count();
    assert_eq!(
        uncached_200, 0,
        "an uncached key was let through while the database was down"
    );
    let cached_late = seen
        .iter()
        .filter(|(at, k, s)| {
            *k == "cached" && *s == 200 && *at > fallback + Duration::from_millis(300)
        })
        .count();
    assert_eq!(
        cached_late, 0,
        "a cached key outlived the fallback: {seen:?}"
    );
    let unavailable = seen.iter().filter(|(_, _, s)| *s == 503).count();
    assert!(unavailable > 0, "{seen:?}");

    // Back, and at once a key is revoked, perhaps before the listener is.
    cluster.start();
    let back_at = Instant::now();
    let admin = admin_store(port).await;
    assert!(admin.revoke_key(&revoked_id).await.unwrap());
    let revoked_at = Instant::now();
    let mut revoked_200_late = 0;
    let mut recovered = None;
    while revoked_at.elapsed() < Duration::from_secs(4) {
        requests += 2;
        let (r, u) = (app.status(&revoked).await, app.status(&uncached).await);
        if r == 200 && revoked_at.elapsed() > fallback + Duration::from_millis(300) {
            revoked_200_late += 1;
        }
        if u == 200 && recovered.is_none() {
            recovered = Some(back_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        revoked_200_late, 0,
        "a key revoked at the restart was served past the bound"
    );
    assert_eq!(app.status(&revoked).await, 401);
    let recovered = recovered.expect("the uncached key works again without a restart");
    assert_eq!(app.status(&cached).await, 200);
    assert!(app.listener.is_connected() && app.listener.connections() >= 2);
    println!(
        "restart: {requests} requests, 0 200s for the revoked key past the bound, \
         {unavailable} 503s while down, the first uncached 200 {recovered:?} after the server was back"
    );
    drop(app);
}

/// The example server, run on host B; killed on drop.
struct ExampleOnB(std::process::Child);

impl Drop for ExampleOnB {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_silently_cut_listener_link_is_noticed_and_no_revoked_key_outlives_it() {
    if !can_run() {
        return;
    }
    let n = slot();
    let net = Net::new(n);
    let _cluster = Cluster::init(n, 5432, "*", Some(&net.db));
    // Instance A, here, reaches the database over link a.
    let a = instance(&net.far(201), 5432, Duration::from_secs(1)).await;
    seed(a.cache.store()).await;
    // Instance B is the example server (listener fallback 1 s) on host B,
    // which reaches the database over link b.
    let fallback = Duration::from_secs(1);
    let b_addr = format!("{}:3000", net.far(204));
    let _b = ExampleOnB(
        Command::new("ip")
            .args(["netns", "exec", &net.b])
            .arg(common::example_binary("onboardinghub"))
            .env("ADDR", &b_addr)
            .env(
                "DATABASE_URL",
                format!("postgres://postgres@{}:5432/postgres", net.far(202)),
            )
            .env_remove("OAUTH_ISSUER")
            .env_remove("REDIS_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the example on host B"),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let status = |token: String| {
        let request = http
            .get(format!("http://{b_addr}/api/v1/contacts"))
            .header("authorization", format!("Bearer {token}"));
        async move { request.send().await.map_or(0, |r| r.status().as_u16()) }
    };
    let (id, token) = key(a.cache.store(), "cut").await;
    let started = Instant::now();
    while status(token.clone()).await != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the example on host B did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(token.clone()).await, 200, "cached on B");

    // Link b goes silent; the key is revoked through A.
    net.cut_b();
    assert!(a.cache.store().revoke_key(&id).await.unwrap());
    let revoked_at = Instant::now();
    let (mut requests, mut last_200, mut refused) = (0, None, None);
    while revoked_at.elapsed() < 3 * fallback + Duration::from_secs(1) {
        requests += 1;
        match status(token.clone()).await {
            200 => last_200 = Some(revoked_at.elapsed()),
            other => {
                refused.get_or_insert((other, revoked_at.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bound = 2 * fallback + Duration::from_millis(300);
    let served = last_200.unwrap_or_default();
    assert!(
        served <= bound,
        "the revoked key was served {served:?} after its revocation; bound {bound:?}"
    );
    let (first_refusal, _) = refused.expect("refused once the cut was noticed");
    assert_eq!(
        first_refusal, 503,
        "the database is unreachable from B: 503, never 200"
    );
    assert_eq!(a.status(&token).await, 401, "A got the notification");
    println!(
        "half-open: the revoked key was last served {served:?} after its revocation \
         (bound {bound:?}), then 503; {requests} requests to B"
    );

    // The link heals: B reconnects, and everything works again.
    net.heal_b();
    let (_, fresh) = key(a.cache.store(), "after").await;
    let healed = Instant::now();
    while status(fresh.clone()).await != 200 {
        assert!(
            healed.elapsed() < Duration::from_secs(20),
            "B did not recover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(token).await, 401);
    println!(
        "half-open: B recovered {:?} after the link healed",
        healed.elapsed()
    );
}

/// p99 of `samples`.
fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() * 99 / 100]
}

/// A TCP proxy to `upstream` that delivers every chunk `delay` after it
/// read it, in order, both ways: a link with that much latency each way.
async fn delaying_proxy(upstream: std::net::SocketAddr, delay: Duration) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            for (mut from, mut to) in [(client_read, server_write), (server_read, client_write)] {
                let (tx, mut rx) =
                    tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from.read(&mut buf).await {
                        if tx
                            .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                            .is_err()
                        {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some((at, bytes)) = rx.recv().await {
                        tokio::time::sleep_until(at).await;
                        if to.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });
    addr
}

#[tokio::test]
async fn latency_on_the_database_link_leaves_hits_alone_and_misses_single_flight() {
    if !can_run() {
        return;
    }
    let n = slot();
    let port = 56000 + n;
    let _cluster = Cluster::init(n, port, "127.0.0.1", None);
    let delay = Duration::from_millis(200);
    let proxy = delaying_proxy(([127, 0, 0, 1], port).into(), delay).await;
    // Store calls may take several round trips of 400 ms (a new connection).
    let slow = Duration::from_secs(10);
    let direct = Arc::new(instance("127.0.0.1", port, Duration::from_secs(2)).await);
    seed(direct.cache.store()).await;
    let (_, hot) = key(direct.cache.store(), "hot").await;
    let app =
        Arc::new(instance_with("127.0.0.1", proxy.port(), Duration::from_secs(2), slow).await);
    assert_eq!(app.status(&hot).await, 200);
    let hits = |app: Arc<Instance>, hot: String| async move {
        let mut samples = Vec::new();
        for _ in 0..2000 {
            let start = Instant::now();
            assert_eq!(app.status(&hot).await, 200);
            samples.push(start.elapsed());
        }
        p99(&mut samples)
    };
    // The same hits, through the delayed link, and (the baseline) with the
    // database reached directly.
    let delayed = hits(Arc::clone(&app), hot.clone()).await;
    assert_eq!(direct.status(&hot).await, 200);
    let baseline = hits(Arc::clone(&direct), hot.clone()).await;

    // A new key, and 100 requests for it at once, through the delay.
    let (_, cold) = key(direct.cache.store(), "cold").await;
    let misses = app.cache.stats().misses;
    let started = Instant::now();
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let (app, cold) = (Arc::clone(&app), cold.clone());
            tokio::spawn(async move { app.status(&cold).await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    let took = started.elapsed();
    let store_calls = app.cache.stats().misses - misses;
    assert_eq!(store_calls, 1, "100 concurrent cold misses, one store call");
    assert!(took >= 2 * delay, "the delay was in effect: {took:?}");
    println!(
        "latency: hit p99 {baseline:?} direct, {delayed:?} with {delay:?} each way on the database link; \
         100 concurrent cold misses: {store_calls} store call (one query), all answered in {took:?}"
    );
}
