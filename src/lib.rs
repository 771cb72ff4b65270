//! maskgate: a field-masking and encryption gateway.
//!
//! The pure cores ([`rewrite`], [`detect`], [`class`], [`config`]) know
//! nothing of hyper or tokio; [`proxy`] wires them together.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admit;
pub mod audit;
pub mod bench;
pub mod class;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod detect;
mod fsutil;
pub mod identity;
pub mod logging;
pub mod pg;
pub mod proxy;
pub mod rewrite;
#[cfg(test)]
mod testutil;
pub mod unmask;
