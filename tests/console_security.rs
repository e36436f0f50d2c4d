//! The admin listener's access control over plain HTTP against the real gateway binary
//! (docs/architecture.md §12): the admin token on `/api/*` and `/-/*`, the console's login,
//! session cookie, CSRF token, Origin and Host checks, the security headers, the audit log.

mod common;

use common::*;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

const ADMIN_TOKEN: &str = "console-test-admin-token-0123456789";

fn yaml(token: Option<&str>) -> String {
    let mut yaml = config_head();
    if let Some(token) = token {
        yaml = yaml.replacen(
            "server:\n",
            &format!("server:\n  admin_token: {token}\n"),
            1,
        );
    }
    yaml + "sinks:\n  audit: { type: file, path: audit.jsonl }\nroutes:\n  - name: everything\n    to: [audit]\n"
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn json(r: reqwest::Response) -> Value {
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// Logs in with `token`; the session cookie (`name=value`) when it worked.
async fn login(g: &Gateway, token: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client()
        .post(format!("http://{}/console/login", g.admin))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"));
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap()
}

fn session_cookie(r: &reqwest::Response) -> Option<String> {
    let set = r.headers().get("set-cookie")?.to_str().ok()?;
    Some(set.split(';').next()?.to_owned())
}

/// The CSRF token the console page carries for this session.
async fn csrf(g: &Gateway, cookie: &str) -> String {
    let page = client()
        .get(format!("http://{}/console", g.admin))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let text = page.text().await.unwrap();
    let start = text.find("name=\"csrf-token\" content=\"").unwrap() + 27;
    text[start..start + 64].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_wants_the_token_and_the_probes_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(dir.path(), &yaml(Some(ADMIN_TOKEN)));
    let c = client();
    let api = format!("http://{}/api/dlq", g.admin);

    let r = c.get(&api).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let body = json(r).await;
    assert_eq!(body["error"], "unauthorized");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer <server.admin_token>"),
        "{body}"
    );

    let r = c
        .get(&api)
        .bearer_auth("not-the-admin-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(json(r).await["reason"].as_str().unwrap().contains("is not"));

    let r = c.get(&api).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json(r).await, serde_json::json!([]));

    for path in ["/-/tap", "/api/google", "/api/overview"] {
        let r = c
            .get(format!("http://{}{path}", g.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = c
        .post(format!("http://{}/-/reload", g.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "reload");

    for path in ["/metrics", "/healthz", "/readyz"] {
        let r = c
            .get(format!("http://{}{path}", g.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path} stays open");
    }

    // The CLI sends the token of its config...
    let out = g.cli(&["dlq", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no dead letters"));
    // ...and says what is wrong when its config has another.
    let other = dir.path().join("other.yaml");
    std::fs::write(&other, yaml(Some("another-admin-token-9876543210"))).unwrap();
    let out = run(&["dlq", "list", "-c", other.to_str().unwrap()], None);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("401") && said.contains("server.admin_token"),
        "{said}"
    );

    let log = g.log();
    assert!(log.contains("wrong admin token"), "{log}");
    assert!(!log.contains(ADMIN_TOKEN), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_wants_a_login_a_csrf_token_this_origin_and_this_host() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(dir.path(), &yaml(Some(ADMIN_TOKEN)));
    let c = client();
    let console = format!("http://{}/console", g.admin);

    // No session: to the login form, which carries the security headers.
    let r = c.get(&console).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/console/login");
    let r = c.get(format!("{console}/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(r.text().await.unwrap().contains("Admin token"));

    // A wrong token: a generic answer and no cookie.
    let r = login(&g, "wrong-wrong-wrong-wrong", &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/console/login?failed");
    assert!(session_cookie(&r).is_none());
    let page = c
        .get(format!("{console}/login?failed"))
        .send()
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains("Login failed."));

    // A login posted from another site is refused even with the right token.
    let r = login(&g, ADMIN_TOKEN, &[("Origin", "http://evil.example")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(session_cookie(&r).is_none());

    // The right token: an HttpOnly, SameSite=Strict session cookie that expires.
    let r = login(&g, ADMIN_TOKEN, &[("Sec-Fetch-Site", "same-origin")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/console");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(set.contains(attribute), "{set}");
    }
    let cookie = session_cookie(&r).unwrap();
    assert_eq!(
        cookie.len(),
        "herald_session=".len() + 64,
        "256 random bits"
    );
    let token = csrf(&g, &cookie).await;

    // Reading with the session works; a state change without the CSRF token does not.
    let r = c
        .get(format!("http://{}/api/overview", g.admin))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let replay = format!("http://{}/api/dlq/replay", g.admin);
    let post = |headers: HeaderMap| {
        c.post(&replay)
            .header("Cookie", &cookie)
            .headers(headers)
            .json(&serde_json::json!({"sink": "audit"}))
            .send()
    };
    let r = post(HeaderMap::new()).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(json(r).await["error"], "CSRF token missing or wrong");
    let mut wrong = HeaderMap::new();
    wrong.insert("x-csrf-token", HeaderValue::from_static("00"));
    assert_eq!(post(wrong).await.unwrap().status(), StatusCode::FORBIDDEN);

    // A cross-site POST with the right CSRF token is refused too (a foreign Origin, or the
    // browser's Sec-Fetch-Site).
    let with_csrf = |extra: &[(&'static str, &'static str)]| {
        let mut h = HeaderMap::new();
        h.insert("x-csrf-token", HeaderValue::from_str(&token).unwrap());
        for (k, v) in extra {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    };
    let r = post(with_csrf(&[("origin", "http://evil.example")]))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body = json(r).await;
    assert_eq!(body["error"], "cross-site request refused");
    assert!(body["reason"].as_str().unwrap().contains("evil.example"));
    let r = post(with_csrf(&[("sec-fetch-site", "cross-site")]))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A page reached under another name (DNS rebinding) gets nothing.
    let r = c
        .get(format!("http://{}/api/overview", g.admin))
        .header("Cookie", &cookie)
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    assert!(
        json(r).await["reason"]
            .as_str()
            .unwrap()
            .contains("does not name this admin listener")
    );
    let r = c
        .get(&console)
        .header("Cookie", &cookie)
        .header("Host", "evil.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);

    // The console's own request: accepted, and in the audit log.
    let r = post(with_csrf(&[("sec-fetch-site", "same-origin")]))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json(r).await["replayed"], serde_json::json!([]));

    // Logging out ends the session.
    let r = c
        .post(format!("{console}/logout"))
        .header("Cookie", &cookie)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("csrf={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = c
        .get(format!("http://{}/api/overview", g.admin))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let log = g.log();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains(" audit:")).collect();
    assert!(
        audit
            .iter()
            .any(|l| l.contains("action=\"login\"") && l.contains("outcome=\"failed\"")),
        "{log}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("action=\"login\"") && l.contains("outcome=\"ok\"")),
        "{log}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("action=\"replay\"") && l.contains("console session")),
        "{log}"
    );
    assert!(!log.contains(ADMIN_TOKEN), "the token is never logged");
    assert!(
        !log.contains(&cookie["herald_session=".len()..]),
        "nor a session id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_rate_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(dir.path(), &yaml(Some(ADMIN_TOKEN)));
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(login(&g, "guess-guess-guess-guess", &[]).await.status());
    }
    assert_eq!(statuses[..5], [StatusCode::SEE_OTHER; 5]);
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS);
    // Even the right token waits now.
    let r = login(&g, ADMIN_TOKEN, &[]).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("Too many login attempts"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_console_is_off_and_the_api_open_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(dir.path(), &yaml(None));
    let c = client();
    let r = c
        .get(format!("http://{}/console", g.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let page = r.text().await.unwrap();
    assert!(
        page.contains("The console is off") && page.contains("server.admin_token"),
        "{page}"
    );
    let r = login(&g, "anything-anything-anything", &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(session_cookie(&r).is_none());
    let r = c
        .get(format!("http://{}/api/dlq", g.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let out = g.cli(&["check"]);
    assert!(
        text(&out.stdout).contains("console off (no server.admin_token)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_masks_the_admin_token_and_refuses_a_short_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(&path, yaml(Some(ADMIN_TOKEN))).unwrap();
    let out = run(&["check", "-c", path.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("want the admin token (***)"), "{said}");
    assert!(!said.contains(ADMIN_TOKEN));

    std::fs::write(&path, yaml(Some("short"))).unwrap();
    let out = run(&["check", "-c", path.to_str().unwrap()], None);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("routes.yaml:2:") && said.contains("at least 16 characters"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_and_a_deliverys_outcome_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(dir.path(), &yaml(Some(ADMIN_TOKEN)));
    let get = |path: &str| {
        client()
            .get(format!("http://{}{path}", g.admin))
            .bearer_auth(ADMIN_TOKEN)
    };
    // The token guards the outcomes like the rest of /api.
    let r = client()
        .get(format!(
            "http://{}/api/outcomes?source=directory&id=x",
            g.admin
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = get("/api/outcomes?route=everything").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no source and id");
    assert!(
        json(r).await["reason"]
            .as_str()
            .unwrap()
            .contains("`source` and `id`")
    );

    let r = directory_request(&reqwest::Client::new(), &g, "chan-1", 5)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let event_id = herald_testkit::wait::eventually_async(
        "the event on the overview",
        std::time::Duration::from_secs(20),
        || async {
            let o = json(get("/api/overview").send().await.ok()?).await;
            let recent = o["recent"].as_array()?.first()?.clone();
            (o["sinks"][0]["delivered"] == 1.0)
                .then_some(recent["event"]["id"].as_str()?.to_owned())
        },
    )
    .await;
    let o = json(get("/api/overview").send().await.unwrap()).await;
    let sink = &o["sinks"][0];
    assert_eq!(sink["name"], "audit");
    assert_eq!(sink["next_retry"], Value::Null, "nothing waits for a retry");
    let delivered = sink["chart"]["delivered"].as_array().unwrap();
    assert_eq!(delivered.len(), 60, "a bucket a minute, the last hour");
    assert_eq!(delivered.last().unwrap(), 1, "this minute's delivery");
    assert_eq!(
        sink["chart"]["failed"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_u64)
            .sum::<u64>(),
        0
    );
    let per_second = o["sources"][0]["per_second"].as_f64().unwrap();
    assert!((per_second - 1.0 / 60.0).abs() < 1e-9, "{per_second}");
    assert_eq!(o["gateway"]["shared"], false);
    assert_eq!(
        o["gateway"]["gateways"],
        serde_json::json!([]),
        "a local queue has one gateway"
    );

    let q = format!(
        "/api/outcomes?source=directory&id={event_id}&route=everything&sink=audit&route=everything&sink=elsewhere"
    );
    let outcomes = json(get(&q).send().await.unwrap()).await;
    assert_eq!(
        outcomes,
        serde_json::json!([
            {"route": "everything", "sink": "audit", "outcome": "delivered"},
            {"route": "everything", "sink": "elsewhere", "outcome": null},
        ])
    );
}

/// Issue 19 point 7: with several gateways on one PostgreSQL queue, the overview says the
/// queue is shared, lists the gateways sharing it (this one marked) and names which views
/// are the cluster's and which this gateway's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_of_a_shared_queue_lists_the_gateways() {
    let url = herald_testkit::postgres::Postgres::shared().database("console_cluster");
    let config = format!(
        "{}queue:\n  engine: postgres\n  url: '{url}'\n  lease: 1s\n",
        yaml(Some(ADMIN_TOKEN))
    );
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Gateway::start(dir_a.path(), &config);
    let b = Gateway::start(dir_b.path(), &config);
    let o = json(
        client()
            .get(format!("http://{}/api/overview", a.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let gateway = &o["gateway"];
    assert_eq!(gateway["engine"], "postgres");
    assert_eq!(gateway["shared"], true);
    let listed: Vec<(String, bool)> = gateway["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["holder"].as_str().unwrap().to_owned(),
                g["this"].as_bool().unwrap(),
            )
        })
        .collect();
    let mine = |g: &Gateway| format!("/{}/", g.pid());
    assert!(
        listed
            .iter()
            .any(|(h, this)| h.contains(&mine(&a)) && *this),
        "{listed:?}"
    );
    assert!(
        listed
            .iter()
            .any(|(h, this)| h.contains(&mine(&b)) && !*this),
        "{listed:?}"
    );
    let views = |key: &str| gateway[key].to_string();
    assert!(views("cluster_views").contains("dead letters"));
    assert!(views("gateway_views").contains("live events"));
    assert!(views("gateway_views").contains("circuit state"));
}
