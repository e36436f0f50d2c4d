//! herald-testkit: helpers shared by the tests of every Herald crate (never a dependency of
//! the gateway itself).
//!
//! * [`receiver`] — a real HTTP server on 127.0.0.1 that records requests and answers from a
//!   script, standing in for Slack, a webhook consumer or a Teams endpoint;
//! * [`google`] — Google's token endpoint, Classroom registrations and Directory channels,
//!   for the lifecycle tests;
//! * [`postgres`] — a real PostgreSQL server on a free loopback port, a database per test;
//! * [`tansu`] — a real Kafka broker (tansu, in memory) on 127.0.0.1;
//! * [`wait`] — polling until the state a test expects holds (never a sleep as synchronisation).

pub mod google;
pub mod postgres;
pub mod receiver;
pub mod tansu;
pub mod wait;

pub use receiver::{Answer, Received, Receiver};
