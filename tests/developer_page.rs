//! `/developer`, the developer-settings page of the example server: in a
//! real browser (Debian's chromium, driven through chromium-driver by
//! fantoccini), a person signs in, creates a key with two scopes, copies its
//! token, uses it, reloads (the token is gone), and revokes it; over plain
//! HTTP, every form is refused without its session's CSRF token or from
//! another origin, and the pages carry their security headers.

mod common;

#[allow(dead_code)]
#[path = "../examples/onboardinghub/app.rs"]
mod app;
#[path = "../examples/demo/mod.rs"]
mod demo;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use reqwest::header::{HeaderMap, CONTENT_TYPE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::json;

const ADMIN: &str = "admin-token-of-the-developer-page-test";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const INVALID_TOKEN: &str = r#"{"error":{"type":"invalid_token","message":"The access token is invalid, expired or revoked."}}"#;

fn insufficient(scope: &str) -> String {
    format!(
        r#"{{"error":{{"type":"insufficient_scope","message":"This action requires the '{scope}' scope. Your credential does not have this permission."}}}}"#
    )
}

/// The value of `name="csrf"` in a page.
fn csrf(page: &str) -> String {
    let at = page.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    page[at..at + 64].to_owned()
}

/// The `ohk_` token shown on a page, if any.
fn shown_token(page: &str) -> Option<String> {
    let at = page.find("ohk_")?;
    Some(
        page[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect(),
    )
}

fn assert_page_headers(headers: &HeaderMap) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(header("content-security-policy"), Some(CSP));
    assert_eq!(header("cache-control"), Some("no-store"));
    assert_eq!(header("x-content-type-options"), Some("nosniff"));
    assert_eq!(header("referrer-policy"), Some("same-origin"));
}

#[tokio::test]
async fn every_form_needs_the_session_and_its_csrf_token() {
    let server = common::serve(app::App::new(ADMIN).router().expect("router")).await;
    let base = server.base();
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let url = |path: &str| format!("{base}{path}");
    let form = |path: &str, cookie: Option<&str>, origin: Option<&str>, body: String| {
        let mut request = http
            .post(url(path))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        request.send()
    };
    let keys = || async {
        let list = http
            .get(url("/developer/keys"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&list).unwrap()["data"]
            .as_array()
            .unwrap()
            .len()
    };

    // Signed out: the sign-in form, with the page's headers.
    let reply = http.get(url("/developer")).send().await.unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert_page_headers(reply.headers());
    let page = reply.text().await.unwrap();
    assert!(page.contains(r#"<input type="password" id="admin_token" name="admin_token""#));
    assert!(!page.contains("csrf"));

    // A wrong admin token, or the right one posted from another site.
    let reply = form("/developer/session", None, None, "admin_token=nope".into())
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    assert!(reply
        .text()
        .await
        .unwrap()
        .contains("That is not the admin token."));
    let sign_in = format!("admin_token={ADMIN}");
    let reply = form(
        "/developer/session",
        None,
        Some("http://evil.example"),
        sign_in.clone(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    assert!(reply.headers().get(SET_COOKIE).is_none());

    // Signed in: a session cookie for /developer only, never readable by script.
    let reply = form("/developer/session", None, Some(&base), sign_in)
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    assert_eq!(reply.headers()[LOCATION], "/developer");
    let set_cookie = reply.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        set_cookie.ends_with("; Path=/developer; HttpOnly; SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let settings = |cookie: &str| {
        let request = http.get(url("/developer")).header("cookie", cookie);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let page = settings(&cookie).await;
    let token = csrf(&page);
    for (scope, grants) in demo::SCOPE_TABLE {
        assert!(page.contains(&format!(
            r#"<input type="checkbox" name="scope" value="{scope}"> <code>{scope}</code> <span>{grants}</span>"#
        )));
    }

    // Refused: no CSRF token, a wrong one, another origin, no session.
    let before = keys().await;
    let create = |csrf: &str| format!("csrf={csrf}&name=CRM+sync&scope=contacts%3Aread");
    for (cookie, origin, body, status) in [
        (
            Some(cookie.as_str()),
            None,
            "name=x&scope=contacts%3Aread".to_owned(),
            StatusCode::FORBIDDEN,
        ),
        (
            Some(cookie.as_str()),
            None,
            create(&"0".repeat(64)),
            StatusCode::FORBIDDEN,
        ),
        (
            Some(cookie.as_str()),
            Some("http://evil.example"),
            create(&token),
            StatusCode::FORBIDDEN,
        ),
        (
            Some(cookie.as_str()),
            Some("null"),
            create(&token),
            StatusCode::FORBIDDEN,
        ),
        (None, None, create(&token), StatusCode::SEE_OTHER),
    ] {
        let reply = form("/developer/connections", cookie, origin, body)
            .await
            .unwrap();
        assert_eq!(reply.status(), status);
    }
    assert_eq!(keys().await, before, "a refused form created a key");

    // A bad form is explained, and the name is escaped wherever it shows.
    let reply = form(
        "/developer/connections",
        Some(&cookie),
        Some(&base),
        format!("csrf={token}&name=x"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
    assert!(reply
        .text()
        .await
        .unwrap()
        .contains("Tick at least one scope."));
    let reply = form(
        "/developer/connections",
        Some(&cookie),
        Some(&base),
        format!("csrf={token}&name=%3Cscript%3Ealert(1)%3C%2Fscript%3E&scope=guides%3Aread&scope=guides%3Aread"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert_page_headers(reply.headers());
    let page = reply.text().await.unwrap();
    assert!(!page.contains("<script>alert"));
    assert!(page.contains("Token for &lt;script&gt;alert(1)&lt;/script&gt;"));
    let created = shown_token(&page).expect("the new token");
    assert_eq!(keys().await, before + 1);

    // The list shows it (once, with its scope), never its token.
    let page = settings(&cookie).await;
    assert_eq!(shown_token(&page), None);
    assert!(!page.contains(&created));
    let row = page
        .lines()
        .find(|l| l.contains("&lt;script&gt;"))
        .expect("its row");
    assert!(
        row.contains("<td><code>guides:read</code> </td><td>never</td>"),
        "{row}"
    );

    // Signing out ends the session: its forms are refused from then on.
    let reply = form(
        "/developer/session/end",
        Some(&cookie),
        Some(&base),
        format!("csrf={token}"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let reply = form(
        "/developer/connections",
        Some(&cookie),
        Some(&base),
        create(&token),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    assert_eq!(keys().await, before + 1);
}

/// chromedriver on its own port, and the browser session it drives.
struct Driver {
    process: Child,
    profile: std::path::PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.process.kill().ok();
        self.process.wait().ok();
        std::fs::remove_dir_all(&self.profile).ok();
    }
}

/// Starts chromedriver and a headless chromium; `None` (with the reason
/// printed) on a machine without them, unless under CI.
async fn browser() -> Option<(Driver, fantoccini::Client)> {
    let (chromium, chromedriver) = ("/usr/bin/chromium", "/usr/bin/chromedriver");
    if !std::path::Path::new(chromedriver).exists() || !std::path::Path::new(chromium).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{chromium} and {chromedriver} are required in CI (.ci/run installs Debian's chromium and chromium-driver)"
        );
        eprintln!(
            "skipped: no {chromium} or {chromedriver} (apt-get install chromium chromium-driver)"
        );
        return None;
    }
    let port = common::free_port();
    let process = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let profile = std::env::temp_dir().join(format!("scopegate-chromium-{}", std::process::id()));
    let driver = Driver { process, profile };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            // As this machine's probe runs it: no sandbox as root, and no
            // background connections, which its closed network refuses.
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1100,1550",
                format!("--user-data-dir={}", driver.profile.display()),
            ]
        }
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a browser session");
    Some((driver, client))
}

#[tokio::test]
async fn a_person_creates_a_key_in_a_real_browser_then_revokes_it() {
    let Some((_driver, browser)) = browser().await else {
        return;
    };
    let example = common::Example::start(ADMIN, &[]);
    let base = example.base.clone();
    let api = reqwest::Client::new();
    let call = |method: reqwest::Method, token: &str| {
        api.request(method, format!("{base}/api/v1/contacts"))
            .bearer_auth(token)
            .body("{}")
            .send()
    };
    let by_css = |css: &'static str| Locator::Css(css);

    // Sign in with the admin token, once.
    browser.goto(&format!("{base}/developer")).await.unwrap();
    browser
        .find(by_css("#admin_token"))
        .await
        .unwrap()
        .send_keys(ADMIN)
        .await
        .unwrap();
    browser
        .find(by_css("form[action='/developer/session'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // Register a custom connection with two scopes.
    let name = match browser.wait().for_element(by_css("#name")).await {
        Ok(name) => name,
        Err(e) => panic!("{e}: {}", browser.source().await.unwrap()),
    };
    name.send_keys("Browser test").await.unwrap();
    for scope in ["contacts:read", "guides:read"] {
        browser
            .find(Locator::Css(&format!("input[name=scope][value='{scope}']")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    browser
        .find(by_css("form[action='/developer/connections'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The token, once, with its warning and a copy button that works.
    let token = browser
        .wait()
        .for_element(by_css("#token"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(token.starts_with("ohk_") && token.len() > 20, "{token}");
    let once = browser
        .find(by_css(".once"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(once.contains("It is shown only once"), "{once}");
    let copy = browser.find(by_css("#copy")).await.unwrap();
    copy.click().await.unwrap();
    // The clipboard answers asynchronously: wait for the label to change.
    let started = Instant::now();
    let label = loop {
        let label = copy.text().await.unwrap();
        if label != "Copy" || started.elapsed() > Duration::from_secs(10) {
            break label;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        label == "Copied" || label == "Selected: press Ctrl+C",
        "{label}"
    );
    // A reload asks for the list, not the form again.
    assert_eq!(
        browser.current_url().await.unwrap().as_str(),
        format!("{base}/developer")
    );
    if let Some(path) = std::env::var_os("SCOPEGATE_SCREENSHOT") {
        std::fs::write(path, browser.screenshot().await.unwrap()).unwrap();
    }

    // The token works for what it was given, and only that.
    let reply = call(reqwest::Method::GET, &token).await.unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let reply = call(reqwest::Method::POST, &token).await.unwrap();
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    assert_eq!(reply.text().await.unwrap(), insufficient("contacts:write"));

    // After a reload, the token is nowhere on the page; the key is listed
    // with its scopes and its last use.
    browser.refresh().await.unwrap();
    let page = browser.source().await.unwrap();
    assert!(!page.contains(&token), "the token is still on the page");
    assert!(browser.find(by_css("#token")).await.is_err());
    let mut row = None;
    for tr in browser.find_all(by_css("tr[data-key]")).await.unwrap() {
        let text = tr.text().await.unwrap();
        if text.contains("Browser test") {
            row = Some((tr, text));
        }
    }
    let (row, text) = row.expect("the new key's row");
    assert!(text.contains("contacts:read guides:read"), "{text}");
    assert!(text.contains(" s ago"), "{text}");

    // Revoke it: the next call is refused.
    row.find(by_css("button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The click returns as the form is submitted: wait for the new list.
    let started = Instant::now();
    let listed = loop {
        let page = browser.source().await.unwrap();
        if !page.contains("Browser test") || started.elapsed() > Duration::from_secs(10) {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        !listed.contains("Browser test"),
        "the revoked key is still listed"
    );
    let reply = call(reqwest::Method::GET, &token).await.unwrap();
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(reply.text().await.unwrap(), INVALID_TOKEN);

    browser.close().await.unwrap();
    let log = example.stop();
    for secret in [token.as_str(), ADMIN] {
        assert!(!log.contains(secret), "the log holds a secret: {log}");
    }
}
