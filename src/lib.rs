//! kksync keeps an online shop's orders in sync with the Komfortkasse payment service.
//!
//! One run reads orders from a CSV export or a SQLite database ([`source`]), validates each row
//! ([`order`]), sends them in rate-limited chunks of at most 100 with retries ([`pipeline`],
//! [`api`]) and writes the payment statuses back into the source. [`sandbox`] is a local
//! imitation of the API for demos, tests and benchmarks.
#![deny(missing_docs)]

pub mod api;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod dates;
pub mod demo;
pub mod error;
pub mod order;
pub mod ordersync;
pub mod pause;
pub mod pipeline;
pub mod refunds;
pub mod report;
pub mod run_lock;
pub mod sandbox;
pub mod secret;
pub mod source;
pub mod state;

pub use error::Error;
