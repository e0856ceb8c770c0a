//! Simulators of the Okta Management API and the Port API, a deterministic Okta org
//! generator and an independent computation of the catalog an org should produce.
//! Everything here serves on loopback for end-to-end tests, benchmarks and the demo.

pub mod expected;
pub mod harness;
pub mod lambda_emu;
pub mod moto;
pub mod okta_sim;
pub mod orggen;
pub mod port_sim;
