//! maskgate: a field-masking and encryption gateway.
//!
//! The pure cores ([`rewrite`], [`detect`], [`class`]) know nothing of hyper
//! or tokio; the proxy wires them together.
#![forbid(unsafe_code)]

pub mod class;
pub mod detect;
pub mod rewrite;
