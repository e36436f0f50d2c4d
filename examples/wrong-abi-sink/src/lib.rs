//! wrong-abi-sink: a plugin for Herald's own tests, never for use. It reports plugin ABI
//! version 999, as a library built for a future Herald would: the host must refuse it with
//! both versions and the file named, before calling anything else in it.

use herald_plugin::{DeliverError, Delivery, SinkPlugin};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Config {}

pub struct FromTheFuture;

impl SinkPlugin for FromTheFuture {
    type Config = Config;
    const NAME: &'static str = "wrong-abi-sink";

    fn validate(_: &Config) -> Result<(), String> {
        panic!("the host called a plugin whose ABI version it does not speak");
    }

    fn create(_: Config) -> Result<Self, String> {
        panic!("the host called a plugin whose ABI version it does not speak");
    }

    fn deliver(&self, _: &Delivery) -> Result<(), DeliverError> {
        panic!("the host called a plugin whose ABI version it does not speak");
    }
}

herald_plugin::__export_sink_with_abi!(FromTheFuture, 999);
