//! The benchmark's baseline: a bare hyper server that reads each request body and answers
//! 200, nothing else. Herald's numbers are reported as ratios to this one, measured in the same
//! run on the same machine (docs/architecture.md §9).
//!
//! `bare-server ADDR [WORK_US]`: with `WORK_US`, each request also burns that many
//! microseconds of CPU before it is answered (a calibrated loop, not a sleep). `bench/budget.sh`
//! uses it to measure how much work per request a server can add to the bare one and still
//! reach a given share of its throughput on this machine, with wrk on the same cores.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Iterations of [`burn`] that take about one microsecond of CPU here.
fn iterations_per_us() -> u64 {
    let n = 20_000_000;
    let started = Instant::now();
    burn(n);
    let us = started.elapsed().as_secs_f64() * 1e6;
    (n as f64 / us).max(1.0) as u64
}

fn burn(iterations: u64) {
    let mut x = 0u64;
    for i in 0..iterations {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    black_box(x);
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let work_us: f64 = match args.next() {
        Some(v) => v.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("WORK_US must be a number of microseconds, not {v:?}"),
            )
        })?,
        None => 0.0,
    };
    let work = if work_us > 0.0 {
        (work_us * iterations_per_us() as f64) as u64
    } else {
        0
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                // Read the body like a real receiver would.
                let _ = req.into_body().collect().await;
                if work > 0 {
                    burn(work);
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
