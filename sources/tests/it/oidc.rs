//! Pub/Sub push authentication against a real JWKS server with the two test keys.

use serde_json::{Value, json};

use crate::common::*;
use crate::services::JwksServer;

const AUDIENCE: &str = "https://herald.example.edu/push/classroom";
const PUSHER: &str = "push@district-edu.iam.gserviceaccount.com";

async fn gateway(jwks: &JwksServer) -> Gateway {
    gateway_named(jwks, "classroom").await
}

async fn gateway_named(jwks: &JwksServer, name: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
sources:
  {name}:
    type: classroom_pubsub
    path: /push/classroom
    auth: {{ audience: "{AUDIENCE}", service_account: "{PUSHER}", jwks_url: "{}" }}
"#,
        jwks.url
    ))
    .await
}

fn body(id: &str) -> String {
    push_body(&read_json("classroom/roster-student-created.json"), id)
}

async fn push(gateway: &Gateway, authorization: Option<&str>, id: &str) -> (u16, Value) {
    let mut request = client().post(gateway.url("/push/classroom")).body(body(id));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    answer(request.send().await.unwrap()).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn claims_with(change: impl FnOnce(&mut Value)) -> Value {
    let mut claims = push_claims(AUDIENCE, PUSHER);
    change(&mut claims);
    claims
}

#[tokio::test]
async fn a_valid_token_is_accepted_and_keys_are_cached() {
    let jwks = JwksServer::start(vec![jwk("a")]).await;
    let gateway = gateway(&jwks).await;
    let token = sign("a", "key-a", &push_claims(AUDIENCE, PUSHER));
    for id in ["1", "2", "3"] {
        assert_eq!(
            push(&gateway, Some(&bearer(&token)), id).await,
            (204, Value::Null)
        );
    }
    // Google writes `iss` with and without the scheme.
    let plain_iss = sign(
        "a",
        "key-a",
        &claims_with(|c| c["iss"] = json!("accounts.google.com")),
    );
    assert_eq!(push(&gateway, Some(&bearer(&plain_iss)), "4").await.0, 204);
    assert_eq!(gateway.ingest.events().len(), 4);
    assert_eq!(jwks.fetches(), 1, "the keys are fetched once and cached");
    gateway.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_and_nothing_is_stored() {
    let jwks = JwksServer::start(vec![jwk("a")]).await;
    let gateway = gateway_named(&jwks, "guarded").await;
    let valid = push_claims(AUDIENCE, PUSHER);
    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("missing header", None, 401, "no Authorization header"),
        (
            "not bearer",
            Some("Basic dXNlcjpwYXNz".into()),
            401,
            "not `Bearer <token>`",
        ),
        ("not a JWT", Some(bearer("abc.def")), 401, "not a JWT"),
        (
            "wrong audience",
            Some(bearer(&sign(
                "a",
                "key-a",
                &claims_with(|c| c["aud"] = json!("https://other.example/push")),
            ))),
            401,
            "audience is not `https://herald.example.edu/push/classroom`",
        ),
        (
            "wrong issuer",
            Some(bearer(&sign(
                "a",
                "key-a",
                &claims_with(|c| c["iss"] = json!("https://accounts.evil.example")),
            ))),
            401,
            "not issued by accounts.google.com",
        ),
        (
            "wrong email",
            Some(bearer(&sign(
                "a",
                "key-a",
                &claims_with(|c| c["email"] = json!("intruder@evil.example")),
            ))),
            403,
            "the token is for `intruder@evil.example`",
        ),
        (
            "email not verified",
            Some(bearer(&sign(
                "a",
                "key-a",
                &claims_with(|c| c["email_verified"] = json!(false)),
            ))),
            403,
            "`email_verified` is not true",
        ),
        (
            "no email",
            Some(bearer(&sign(
                "a",
                "key-a",
                &claims_with(|c| {
                    c.as_object_mut().unwrap().remove("email");
                }),
            ))),
            403,
            "no `email`",
        ),
        (
            "expired",
            Some(bearer(&sign(
                "a",
                "key-a",
                &claims_with(|c| {
                    c["iat"] = json!(now() - 7200);
                    c["exp"] = json!(now() - 3600);
                }),
            ))),
            401,
            "expired",
        ),
        (
            "issued in the future",
            Some(bearer(&sign(
                "a",
                "key-a",
                &claims_with(|c| c["iat"] = json!(now() + 600)),
            ))),
            401,
            "issued in the future",
        ),
        (
            "bad signature (key b posing as key a)",
            Some(bearer(&sign("b", "key-a", &valid))),
            401,
            "signature does not verify",
        ),
        (
            "tampered payload",
            Some(bearer(&{
                let token = sign("a", "key-a", &valid);
                let parts: Vec<&str> = token.split('.').collect();
                let other = sign(
                    "a",
                    "key-a",
                    &claims_with(|c| c["email"] = json!("x@y.example")),
                );
                format!(
                    "{}.{}.{}",
                    parts[0],
                    other.split('.').nth(1).unwrap(),
                    parts[2]
                )
            })),
            401,
            "signature does not verify",
        ),
        (
            "alg none",
            Some(bearer(&unsigned("none", "key-a", &valid))),
            401,
            "`none` is not accepted",
        ),
        (
            "HS256 keyed with the public key",
            Some(bearer(&hs256_with_public_key("key-a", &valid))),
            401,
            "`HS256` is not accepted",
        ),
        (
            "unknown kid",
            Some(bearer(&sign("b", "key-unknown", &valid))),
            401,
            "key `key-unknown`, which auth.jwks_url does not publish",
        ),
    ];
    for (i, (name, authorization, status, reason)) in cases.iter().enumerate() {
        let (got, body) = push(&gateway, authorization.as_deref(), &format!("bad-{i}")).await;
        assert_eq!(got, *status, "{name}: {body}");
        let text = body["reason"].as_str().unwrap_or_default();
        assert!(text.contains(reason), "{name}: {text}");
        assert!(
            matches!(body["error"].as_str(), Some("unauthorized" | "forbidden")),
            "{name}: {body}"
        );
        if let Some(authorization) = authorization {
            let token = authorization.trim_start_matches("Bearer ");
            assert!(!text.contains(token), "{name}: the reason quotes the token");
        }
    }
    assert!(gateway.ingest.events().is_empty(), "nothing is stored");
    assert!(gateway.ingest.rejected().is_empty(), "nothing is kept");

    let metrics = gateway.metrics().await;
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("herald_source_auth_failures_total{source=\"guarded\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(
        failures.ends_with(&format!(" {}", cases.len())),
        "{failures}"
    );

    // And a good one still goes through.
    let token = sign("a", "key-a", &push_claims(AUDIENCE, PUSHER));
    assert_eq!(push(&gateway, Some(&bearer(&token)), "good").await.0, 204);
    assert_eq!(gateway.ingest.events().len(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn a_key_added_after_start_is_accepted() {
    let jwks = JwksServer::start(vec![jwk("a")]).await;
    let gateway = gateway(&jwks).await;
    let claims = push_claims(AUDIENCE, PUSHER);
    assert_eq!(
        push(&gateway, Some(&bearer(&sign("a", "key-a", &claims))), "1")
            .await
            .0,
        204
    );
    assert_eq!(jwks.fetches(), 1);

    // Google rotates: key b is published and tokens start naming it.
    jwks.add(jwk("b"));
    assert_eq!(
        push(&gateway, Some(&bearer(&sign("b", "key-b", &claims))), "2")
            .await
            .0,
        204
    );
    assert_eq!(jwks.fetches(), 2, "the unknown kid made one refetch");
    assert_eq!(
        push(&gateway, Some(&bearer(&sign("a", "key-a", &claims))), "3")
            .await
            .0,
        204
    );
    assert_eq!(
        push(&gateway, Some(&bearer(&sign("b", "key-b", &claims))), "4")
            .await
            .0,
        204
    );
    assert_eq!(jwks.fetches(), 2, "both keys are cached now");

    // Made-up kids do not make the gateway hammer the key server.
    for i in 0..5 {
        let (status, _) = push(
            &gateway,
            Some(&bearer(&sign("b", &format!("made-up-{i}"), &claims))),
            "x",
        )
        .await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        jwks.fetches(),
        2,
        "refetches for unknown kids are rate-limited"
    );
    assert_eq!(gateway.ingest.events().len(), 4);
    gateway.stop().await;
}

#[tokio::test]
async fn an_unreachable_key_server_answers_503_so_pubsub_retries() {
    let jwks = JwksServer::start(vec![jwk("a")]).await;
    let url = jwks.url.clone();
    drop(jwks);
    let gateway = Gateway::start(&format!(
        r#"
sources:
  classroom:
    type: classroom_pubsub
    auth: {{ audience: "{AUDIENCE}", service_account: "{PUSHER}", jwks_url: "{url}" }}
"#
    ))
    .await;
    let token = sign("a", "key-a", &push_claims(AUDIENCE, PUSHER));
    let (status, body) = push(&gateway, Some(&bearer(&token)), "1").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("cannot be fetched from auth.jwks_url")
    );
    assert!(gateway.ingest.events().is_empty());
    gateway.stop().await;
}
