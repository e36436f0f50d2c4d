//! `sslmode` against a real PostgreSQL with `ssl = on` and a test CA (docs/architecture.md
//! §10): verify-full accepts the host its certificate names and refuses another; verify-ca
//! checks the chain only; require encrypts without checking.

mod common;

use std::path::Path;

use herald_queue_postgres::{PgError, connect};
use herald_testkit::postgres::Postgres;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA and a server certificate it signed for `names`; returns (CA PEM, chain PEM, key PEM).
fn certificates(names: &[&str]) -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Herald test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("the CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let key = KeyPair::generate().expect("a server key");
    let cert = CertificateParams::new(names)
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("the server certificate");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// Whether the session `spec` opens is encrypted, as the server sees it.
async fn encrypted(spec: &herald_queue_postgres::PgSpec) -> Result<bool, PgError> {
    let client = connect(spec).await?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Ok(row.get(0))
}

fn url(pg: &Postgres, host: &str, mode: &str) -> String {
    format!(
        "postgres://herald@{host}:{}/postgres?sslmode={mode}",
        pg.port
    )
}

#[tokio::test]
async fn verify_full_checks_the_chain_and_the_host_and_verify_ca_the_chain_only() {
    let dir = tempfile::tempdir().unwrap();
    // As root the server runs as `postgres`, which must reach its directory inside this one.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let pg = Postgres::start_in(&dir.path().join("pg")).unwrap_or_else(|e| panic!("{e}"));
    // The certificate names `localhost` only, not 127.0.0.1.
    let (ca, chain, key) = certificates(&["localhost"]);
    pg.enable_tls(&chain, &key)
        .unwrap_or_else(|e| panic!("{e}"));
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("ca.pem"), &ca).unwrap();
    let (other_ca, _, _) = certificates(&["localhost"]);
    std::fs::write(config.path().join("other-ca.pem"), &other_ca).unwrap();
    let spec = |url: String, ca: Option<&str>| {
        let ca = ca.map_or(String::new(), |ca| format!(", tls: {{ca: {ca}}}"));
        common::spec_in(config.path(), &format!("url: '{url}'{ca}"))
    };

    // verify-full, the host the certificate names: accepted, encrypted.
    let right = spec(url(&pg, "localhost", "verify-full"), Some("ca.pem"));
    assert_eq!(encrypted(&right).await.map_err(|e| e.to_string()), Ok(true));

    // verify-full, a host the certificate does not name: refused, and the error says why.
    let wrong = spec(url(&pg, "127.0.0.1", "verify-full"), Some("ca.pem"));
    let err = encrypted(&wrong)
        .await
        .expect_err("a host the certificate does not name");
    let text = err.to_string();
    assert!(
        text.starts_with("queue: cannot connect to PostgreSQL at herald@127.0.0.1:")
            && text.contains("certificate not valid for name")
            && text.contains("sslmode verify-full: the server's certificate must be signed by tls.ca and name the host in the URL"),
        "{text}"
    );

    // verify-ca: the same host is fine, the name is not checked ...
    let chain_only = spec(url(&pg, "127.0.0.1", "verify-ca"), Some("ca.pem"));
    assert_eq!(
        encrypted(&chain_only).await.map_err(|e| e.to_string()),
        Ok(true)
    );
    // ... but the chain is: a certificate of another CA is refused.
    let stranger = spec(url(&pg, "localhost", "verify-ca"), Some("other-ca.pem"));
    let err = encrypted(&stranger).await.expect_err("another CA");
    assert!(
        err.to_string().contains("invalid peer certificate")
            && err
                .to_string()
                .contains("sslmode verify-ca: the server's certificate must be signed by tls.ca"),
        "{err}"
    );

    // require: encrypted, nothing checked; disable: plain.
    let require = spec(url(&pg, "127.0.0.1", "require"), None);
    assert_eq!(
        encrypted(&require).await.map_err(|e| e.to_string()),
        Ok(true)
    );
    let plain = spec(url(&pg, "127.0.0.1", "disable"), None);
    assert_eq!(
        encrypted(&plain).await.map_err(|e| e.to_string()),
        Ok(false)
    );

    // A CA file that is not there is named.
    let missing = spec(url(&pg, "localhost", "verify-full"), Some("nope.pem"));
    let err = encrypted(&missing).await.expect_err("no CA file");
    assert!(
        err.to_string().starts_with(&format!(
            "queue: cannot use tls.ca {}",
            Path::new(config.path()).join("nope.pem").display()
        )),
        "{err}"
    );
}
