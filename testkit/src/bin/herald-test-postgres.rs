//! Starts or stops the PostgreSQL server a test run shares (see `herald_testkit::postgres`).
//!
//! `herald-test-postgres start DIR` prints `127.0.0.1:PORT`, for `HERALD_TEST_POSTGRES`;
//! `herald-test-postgres stop DIR` stops that server and removes `DIR`.

use std::path::Path;
use std::process::ExitCode;

use herald_testkit::postgres::Postgres;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [verb, dir] if verb == "start" => Postgres::start_in(Path::new(dir)).map(|pg| {
            println!("{}:{}", pg.host, pg.port);
            // The server outlives this process: `stop DIR` ends it.
            std::mem::forget(pg);
        }),
        [verb, dir] if verb == "stop" => Postgres::stop_in(Path::new(dir)),
        _ => Err("usage: herald-test-postgres start|stop DIR".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-test-postgres: {e}");
            ExitCode::FAILURE
        }
    }
}
