//! End-to-end tests of the data plane over real sockets on loopback: testkit clients (classic,
//! dd, ee) → data plane → testkit DC; probes → testkit mask server; limits; live config edits.

#[path = "e2e/support.rs"]
mod support;

#[path = "e2e/relay.rs"]
mod relay;

#[path = "e2e/probes.rs"]
mod probes;

#[path = "e2e/limits.rs"]
mod limits;

#[path = "e2e/reload.rs"]
mod reload;

#[path = "e2e/fronting.rs"]
mod fronting;

#[path = "e2e/me.rs"]
mod me;
