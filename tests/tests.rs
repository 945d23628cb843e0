//! The integration tests, one binary (as ripgrep's `tests/tests.rs`): each
//! file of tests/ is a module here, and `common` starts and talks to the
//! real daemon for all of them. One binary links once, not once a file.
//!
//! cargo test --test integration              all of them
//! cargo test --test integration ingest::     one module

mod common;

mod auth;
mod first_steps;
mod hardening;
mod ingest;
mod judge_suite;
mod layers;
mod ledger;
mod live_verdict;
mod loadgen;
mod overload;
mod page;
mod replay;
mod tls;
mod walker;
