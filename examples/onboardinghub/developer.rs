//! `/developer`: the reference's developer settings as a page, rendered by
//! the server, with no front-end build step. A person registers a custom
//! connection with a name, ticks the scopes it needs, copies its token (shown
//! once), sees the workspace's keys and revokes them. It calls the same key
//! code as the JSON endpoints under `/developer/keys`.
//!
//! - **Admin token, once per browser session.** It is posted once, in a
//!   form body (never a URL), and exchanged for a random session cookie
//!   (`HttpOnly`, `SameSite=Strict`, no expiry: it ends with the browser
//!   session, and the server forgets it after 12 idle hours); the server
//!   keeps only the session id's SHA-256, and a new sign-in replaces the
//!   browser's old session. Served over HTTPS, the cookie would also be
//!   `Secure` and `__Host-` prefixed; the example serves plain HTTP on
//!   loopback.
//! - **CSRF-safe.** Every form carries the session's own random token, and
//!   a request whose `Origin` is another site's (or `null`) is refused; the
//!   cookie is `SameSite=Strict` as well. `Referrer-Policy: same-origin`,
//!   not `no-referrer`: with the latter, browsers send `Origin: null` on
//!   the page's own forms.
//! - **Nothing to leak.** A `Content-Security-Policy` allows only this
//!   server's own script and style (no inline script), `no-store` keeps the
//!   pages out of caches, and the new token's page replaces its address with
//!   `/developer`, so a reload shows the list, never the token again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use scopegate::credential::TokenHash;

use super::{checked_name, checked_scopes, lock, App, KeyRecord};
use crate::demo::{SCOPE_TABLE, WORKSPACE};

/// The session cookie's name.
const COOKIE: &str = "onboardinghub_developer";
/// Sessions idle longer than this are forgotten.
const SESSION_IDLE: Duration = Duration::from_secs(12 * 60 * 60);
/// The most sessions held at once; the oldest goes first.
const MAX_SESSIONS: usize = 1024;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// One signed-in browser session: its CSRF token, and when it was last used.
pub(super) struct Session {
    csrf: String,
    seen: Instant,
}

/// Sessions by the SHA-256 of their cookie.
pub(super) type Sessions = std::sync::Mutex<BTreeMap<TokenHash, Session>>;

/// The page's routes.
pub(super) fn routes(app: App) -> Router {
    Router::new()
        .route("/developer", get(page))
        .route("/developer/session", post(sign_in))
        .route("/developer/session/end", post(sign_out))
        .route("/developer/connections", post(create))
        .route("/developer/connections/{id}/revoke", post(revoke))
        .route("/developer/assets/{file}", get(asset))
        .with_state(app)
}

async fn page(State(app): State<App>, headers: HeaderMap) -> Response {
    match session(&app, &headers) {
        Some(csrf) => settings(&app, &csrf, None, None, StatusCode::OK).await,
        None => sign_in_page(None, StatusCode::OK),
    }
}

async fn sign_in(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if foreign_origin(&headers) {
        return Refused::Forbidden(FOREIGN).into_response();
    }
    let form = Form::parse(&body);
    let presented = form.one("admin_token").unwrap_or_default();
    if TokenHash::of(presented) != app.admin {
        return sign_in_page(
            Some("That is not the admin token."),
            StatusCode::UNAUTHORIZED,
        );
    }
    let (Some(id), Some(csrf)) = (random_hex(), random_hex()) else {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            "No session could be made.".to_owned(),
        );
    };
    {
        let mut sessions = lock(&app.sessions);
        // A new session replaces the one this browser had (no fixation).
        if let Some(old) = cookie(&headers) {
            sessions.remove(&TokenHash::of(old));
        }
        sessions.retain(|_, s| s.seen.elapsed() < SESSION_IDLE);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.seen).map(|(k, _)| *k) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            TokenHash::of(&id),
            Session {
                csrf,
                seen: Instant::now(),
            },
        );
    }
    let cookie = format!("{COOKIE}={id}; Path=/developer; HttpOnly; SameSite=Strict");
    let mut response = see_other();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn sign_out(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = checked(&app, &headers, &body) {
        return refused.into_response();
    }
    if let Some(id) = cookie(&headers) {
        lock(&app.sessions).remove(&TokenHash::of(id));
    }
    let mut response = see_other();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE}=; Path=/developer; HttpOnly; SameSite=Strict; Max-Age=0"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("")),
    );
    response
}

async fn create(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (csrf, form) = match checked(&app, &headers, &body) {
        Ok(checked) => checked,
        Err(refused) => return refused.into_response(),
    };
    let name = match checked_name(form.one("name").unwrap_or_default()) {
        Ok(name) => name,
        Err(_) => {
            let message = "Give the connection a name of at most 100 characters.";
            return settings(&app, &csrf, None, Some(message), StatusCode::BAD_REQUEST).await;
        }
    };
    let ticked = form.all("scope");
    if ticked.is_empty() {
        let message = "Tick at least one scope.";
        return settings(&app, &csrf, None, Some(message), StatusCode::BAD_REQUEST).await;
    }
    let scopes = match checked_scopes(ticked) {
        Ok(scopes) => scopes,
        Err(message) => {
            return settings(&app, &csrf, None, Some(&message), StatusCode::BAD_REQUEST).await
        }
    };
    match app.keys.create(&name, &scopes).await {
        Ok((_, token)) => {
            let created = Created { name, token };
            settings(&app, &csrf, Some(&created), None, StatusCode::OK).await
        }
        Err(message) => unavailable(&app, &csrf, &message).await,
    }
}

async fn revoke(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let csrf = match checked(&app, &headers, &body) {
        Ok((csrf, _)) => csrf,
        Err(refused) => return refused.into_response(),
    };
    match app.keys.revoke(&id).await {
        Ok(true) => see_other(),
        Ok(false) => {
            let message = "That key was not found: it may be revoked already.";
            settings(&app, &csrf, None, Some(message), StatusCode::NOT_FOUND).await
        }
        Err(message) => unavailable(&app, &csrf, &message).await,
    }
}

/// The settings, with why the key store could not do what was asked.
async fn unavailable(app: &App, csrf: &str, message: &str) -> Response {
    settings(
        app,
        csrf,
        None,
        Some(message),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await
}

async fn asset(Path(file): Path<String>) -> Response {
    let (content_type, body) = match file.as_str() {
        "developer.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "developer.css" => ("text/css; charset=utf-8", STYLE),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A key just made, to show once.
struct Created {
    name: String,
    token: String,
}

/// The session's CSRF token, for a request that carries a live session
/// cookie.
fn session(app: &App, headers: &HeaderMap) -> Option<String> {
    let id = cookie(headers)?;
    let mut sessions = lock(&app.sessions);
    let session = sessions.get_mut(&TokenHash::of(id))?;
    if session.seen.elapsed() >= SESSION_IDLE {
        return None;
    }
    session.seen = Instant::now();
    Some(session.csrf.clone())
}

/// Why a form post is refused.
enum Refused {
    /// Signed out, or the session expired: back to the sign-in form.
    SignIn,
    /// From another origin, or without the session's CSRF token.
    Forbidden(&'static str),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::SignIn => see_other(),
            Refused::Forbidden(why) => html(
                StatusCode::FORBIDDEN,
                layout("Refused", &format!("<p>{why}</p>")),
            ),
        }
    }
}

const FOREIGN: &str = "Forms of Developer settings are accepted only from this site.";

/// A form post's session and fields, once its origin, session and CSRF
/// token are checked.
fn checked(app: &App, headers: &HeaderMap, body: &[u8]) -> Result<(String, Form), Refused> {
    if foreign_origin(headers) {
        return Err(Refused::Forbidden(FOREIGN));
    }
    let csrf = session(app, headers).ok_or(Refused::SignIn)?;
    let form = Form::parse(body);
    // Compare hashes, so the comparison's timing says nothing of the token.
    let sent = form.one("csrf").unwrap_or_default();
    if TokenHash::of(sent) != TokenHash::of(&csrf) {
        return Err(Refused::Forbidden(
            "This form has expired. <a href=\"/developer\">Open Developer settings again</a>.",
        ));
    }
    Ok((csrf, form))
}

/// Whether the request comes from a page of another origin (or an opaque
/// one): by the browser's `Sec-Fetch-Site` where it sends one, else by
/// `Origin` against `Host`. Without either, the CSRF token alone decides.
fn foreign_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("null");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    !["http://", "https://"]
        .iter()
        .any(|scheme| origin.strip_prefix(scheme) == Some(host))
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn random_hex() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn see_other() -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/developer"));
    response
}

/// An HTML page with the headers every page of Developer settings carries.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn layout(title: &str, main: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · OnboardingHub</title>
<link rel="stylesheet" href="/developer/assets/developer.css">
<script src="/developer/assets/developer.js" defer></script>
</head>
<body>
<header><span class="brand">OnboardingHub</span> <span class="crumbs">Integrations › Developer</span></header>
<main>
{main}
</main>
</body>
</html>
"#,
        title = escape(title),
    )
}

fn sign_in_page(error: Option<&str>, status: StatusCode) -> Response {
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, escape(e)))
        .unwrap_or_default();
    html(
        status,
        layout(
            "Sign in",
            &format!(
                r#"<h1>Developer settings</h1>
<p>Enter the admin token to manage this workspace's API keys. You stay signed in until you close the browser.</p>
{error}
<form method="post" action="/developer/session" class="card">
<label for="admin_token">Admin token</label>
<input type="password" id="admin_token" name="admin_token" autocomplete="off" required>
<button type="submit">Sign in</button>
</form>"#
            ),
        ),
    )
}

/// The settings: a just-created token (once), the form, and the keys.
async fn settings(
    app: &App,
    csrf: &str,
    created: Option<&Created>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let csrf = escape(csrf);
    let mut main = format!(
        r#"<form method="post" action="/developer/session/end" class="signout">
<input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="quiet">Sign out</button>
</form>
<h1>Developer settings</h1>
<p class="lede">Workspace <code>{workspace}</code>. Custom connections call the API with an API key: <code>Authorization: Bearer &lt;token&gt;</code>.</p>
"#,
        workspace = escape(WORKSPACE),
    );
    if let Some(created) = created {
        main.push_str(&format!(
            r#"<section class="once" role="alert" data-replace-url="/developer">
<h2>Token for {name}</h2>
<p><strong>Copy this token now. It is shown only once</strong>: it is not stored, and it will not be shown again. If you lose it, revoke the key and create a new one.</p>
<div class="token"><code id="token">{token}</code><button type="button" id="copy">Copy</button></div>
</section>
"#,
            name = escape(&created.name),
            token = escape(&created.token),
        ));
    }
    if let Some(error) = error {
        main.push_str(&format!(
            r#"<p class="error" role="alert">{}</p>"#,
            escape(error)
        ));
    }
    let scopes: String = SCOPE_TABLE
        .iter()
        .map(|(scope, grants)| {
            format!(
                r#"<label class="scope"><input type="checkbox" name="scope" value="{scope}"> <code>{scope}</code> <span>{grants}</span></label>
"#,
                scope = escape(scope),
                grants = escape(grants),
            )
        })
        .collect();
    main.push_str(&format!(
        r#"<section class="card">
<h2>Register a custom connection</h2>
<form method="post" action="/developer/connections">
<input type="hidden" name="csrf" value="{csrf}">
<label for="name">Name</label>
<input type="text" id="name" name="name" maxlength="100" required placeholder="CRM sync">
<fieldset><legend>Scopes</legend>
{scopes}</fieldset>
<button type="submit">Create key</button>
</form>
</section>
"#
    ));
    main.push_str(&match app.keys.list().await {
        Ok(keys) => keys_table(&keys, &csrf),
        Err(message) => format!(r#"<p class="error" role="alert">{}</p>"#, escape(&message)),
    });
    html(status, layout("Developer settings", &main))
}

fn keys_table(keys: &[(String, KeyRecord)], csrf: &str) -> String {
    let rows: String = keys
        .iter()
        .map(|(id, key)| {
            let scopes: String = key
                .scopes
                .iter()
                .map(|s| format!("<code>{}</code> ", escape(s)))
                .collect();
            format!(
                r#"<tr data-key="{id}"><td>{name}</td><td><code>{id}</code></td><td>{scopes}</td><td>{used}</td>
<td><form method="post" action="/developer/connections/{id}/revoke"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="danger">Revoke</button></form></td></tr>
"#,
                id = escape(id),
                name = escape(&key.name),
                used = key.last_used.map_or_else(|| "never".to_owned(), ago),
            )
        })
        .collect();
    format!(
        r#"<section class="card">
<h2>API keys</h2>
<table>
<thead><tr><th>Name</th><th>Id</th><th>Scopes</th><th>Last used</th><th></th></tr></thead>
<tbody>
{rows}</tbody>
</table>
</section>
"#
    )
}

/// "12 s ago", "3 min ago", "5 h ago", "2 days ago".
fn ago(when: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(when)
        .unwrap_or_default()
        .as_secs();
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An `application/x-www-form-urlencoded` body's fields, in order.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(&text.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        let body = String::from_utf8_lossy(body);
        Form(
            body.split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(name), decode(value))
                })
                .collect(),
        )
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

const SCRIPT: &str = r#"// Developer settings: the copy button, and a token page that a reload
// does not show again.
"use strict";
const once = document.querySelector("[data-replace-url]");
if (once) {
  history.replaceState(null, "", once.dataset.replaceUrl);
}
const copy = document.getElementById("copy");
if (copy) {
  copy.addEventListener("click", async () => {
    const token = document.getElementById("token");
    try {
      await navigator.clipboard.writeText(token.textContent);
      copy.textContent = "Copied";
    } catch {
      const range = document.createRange();
      range.selectNodeContents(token);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      copy.textContent = "Selected: press Ctrl+C";
    }
  });
}
"#;

const STYLE: &str = r#"* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, sans-serif; color: #1d2433; background: #f4f6fa; }
header { padding: 12px 32px; background: #1d2433; color: #fff; }
.brand { font-weight: 700; margin-right: 12px; }
.crumbs { color: #aab3c5; }
main { max-width: 920px; margin: 0 auto; padding: 24px 32px 48px; position: relative; }
h1 { margin: 8px 0 4px; font-size: 26px; }
h2 { margin: 0 0 12px; font-size: 18px; }
.lede { color: #4a5468; margin-top: 0; }
.card, .once { background: #fff; border: 1px solid #dde2ec; border-radius: 8px; padding: 20px 24px; margin: 20px 0; }
.once { border-color: #e0a800; background: #fffbea; }
label { display: block; font-weight: 600; margin: 8px 0 4px; }
input[type=text], input[type=password] { width: 100%; max-width: 420px; padding: 8px 10px; border: 1px solid #b9c1d1; border-radius: 6px; font: inherit; }
fieldset { border: 0; padding: 0; margin: 16px 0; }
legend { font-weight: 600; margin-bottom: 6px; }
label.scope { font-weight: 400; margin: 4px 0; }
label.scope span { color: #4a5468; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; background: #eef1f6; padding: 1px 5px; border-radius: 4px; }
button { font: inherit; padding: 7px 16px; border-radius: 6px; border: 1px solid #2f5bd3; background: #2f5bd3; color: #fff; cursor: pointer; }
button.danger { background: #fff; color: #b42318; border-color: #e4a7a1; padding: 3px 12px; }
button.quiet { background: transparent; color: #2f5bd3; border-color: transparent; }
.signout { position: absolute; right: 32px; top: 24px; }
.token { display: flex; gap: 12px; align-items: center; }
.token code { font-size: 15px; padding: 8px 10px; word-break: break-all; }
.error { color: #b42318; font-weight: 600; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 8px 6px; border-bottom: 1px solid #eef1f6; vertical-align: middle; }
th { color: #4a5468; font-weight: 600; font-size: 13px; white-space: nowrap; }
"#;
