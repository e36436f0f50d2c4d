//! The sources over real HTTP: a server started on 127.0.0.1:0 with an in-memory journal,
//! real clients, and real key and Pub/Sub servers started by the tests.

mod common;
mod fixtures;
mod google;
mod logs;
mod malformed;
mod oidc;
mod pull;
mod server;
mod services;
