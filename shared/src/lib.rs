//! okta-port: keeps a Port software catalog in step with an Okta org.
//!
//! The functions (`functions/*`) and the `okta-port` CLI are thin entry points over this
//! crate. The core (`sync`) talks to the outside only through small traits
//! (`okta::OktaDirectory`, `port::PortCatalog`, `mapping::Mapping`), implemented over HTTP
//! by `okta::Client` and `port::Client`.

pub mod app;
pub mod aws;
pub mod config;
pub mod events;
pub mod hooks;
pub mod live;
pub mod mapping;
pub mod metrics;
pub mod okta;
pub mod port;
pub mod queue;
pub mod report;
pub mod retry;
pub mod secrets;
pub mod sync;
pub mod telemetry;
pub mod webhook;

pub use app::App;
pub use config::Config;
pub use report::Report;
