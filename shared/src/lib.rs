//! okta-port: keeps a Port software catalog in step with an Okta org.
//!
//! The functions (`functions/*`) and the `okta-port` CLI are thin entry points over this
//! crate. The core (`sync`: the resync and the live path) talks to the outside only through
//! one port per system (`okta::OktaSource`, `port::PortSink`), each implemented over HTTP
//! (`okta::Client`, `port::Client`) and in memory for the core's own tests; the mapping
//! (`mapping::Mapping`) and the domain (`domain`) do no I/O. docs/architecture.md draws
//! the layers; tests/tests/house.rs keeps them.

pub mod app;
pub mod aws;
pub mod config;
pub mod domain;
pub mod events;
pub mod hooks;
pub mod keys;
pub mod mapping;
pub mod metrics;
pub mod okta;
pub mod port;
pub mod progress;
pub mod queue;
pub mod report;
pub mod retry;
pub mod secrets;
pub mod state;
pub mod status_line;
pub mod sync;
pub mod telemetry;
pub mod webhook;

pub use app::App;
pub use config::Config;
pub use report::Report;

/// A JSON value's type as a user reads it in an error (jq's names), never the value itself.
pub(crate) fn json_type(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
