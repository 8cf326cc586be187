//! `kksync refunds`: turn each returned order (RMA) into exactly one refund with the provider
//! that took the payment: Komfortkasse (bank transfer), AfterPay/Riverty or Ratepay (BNPL).
//!
//! A refund paid twice is money lost, so every refund goes through the journal in the state
//! store ([`journal`]): its intent is committed **before** it is sent, its result before it is
//! written back into the source. A run killed in between leaves a pending intent that the next
//! run reconciles with the provider instead of sending again. How each provider is reconciled
//! is described in [`komfortkasse`], [`afterpay`] and [`ratepay`].
//!
//! Modules: [`config`] (checked settings, credentials), [`model`] and [`items`] (the source
//! columns, validation, request bodies), [`source`] (CSV and SQLite read and write-back),
//! [`journal`], the three provider clients, [`retry`] (bounded backoff), [`run`] (the run
//! itself) and [`summary`].

pub mod afterpay;
pub mod config;
pub mod error;
pub mod http;
pub mod items;
pub mod journal;
pub mod json;
pub mod komfortkasse;
pub mod model;
pub mod outcome;
pub mod ratepay;
pub mod retry;
pub mod run;
pub mod source;
pub mod summary;

pub use config::RefundsConfig;
pub use error::RefundsError;
pub use run::run;
pub use source::init_db;
pub use summary::RefundSummary;
