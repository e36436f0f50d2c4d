//! Connections from a validated [`PgSpec`]: one client (the CLI, migrations) or a pool (a
//! running gateway). TLS as `sslmode` says ([`crate::tls`]).

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Client;

use crate::config::PgSpec;
use crate::error::{PgError, detail};
use crate::tls::MakeRustlsConnect;

/// One connection; its I/O runs on a task of its own until the client is dropped.
pub async fn connect(spec: &PgSpec) -> Result<Client, PgError> {
    let tls = MakeRustlsConnect::new(spec.ssl, spec.ca.as_deref())?;
    let (client, connection) = spec
        .pg
        .connect(tls)
        .await
        .map_err(|e| connect_error(spec, &e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("queue: PostgreSQL connection ended: {}", detail(&e));
        }
    });
    Ok(client)
}

/// A pool of `spec.pool` connections, opened as they are needed.
pub fn pool(spec: &PgSpec) -> Result<Pool, PgError> {
    let tls = MakeRustlsConnect::new(spec.ssl, spec.ca.as_deref())?;
    let manager = Manager::from_config(
        spec.pg.clone(),
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(spec.pool)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| PgError::Connect {
            target: spec.target(),
            detail: e.to_string(),
        })
}

/// Names the target and, for a certificate that was refused, what `sslmode` asked for.
fn connect_error(spec: &PgSpec, e: &tokio_postgres::Error) -> PgError {
    let mut text = detail(e);
    if text.contains("certificate") && spec.ssl.verifies() {
        text.push_str(&format!(
            " (sslmode {}: the server's certificate must be signed by tls.ca{})",
            spec.ssl.name(),
            if spec.ssl == crate::SslMode::VerifyFull {
                " and name the host in the URL"
            } else {
                ""
            }
        ));
    }
    PgError::Connect {
        target: spec.target(),
        detail: text,
    }
}
