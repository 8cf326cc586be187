//! `kksync refunds`: turn each returned order (RMA) into exactly one refund with the provider
//! that took the payment: Komfortkasse (bank transfer), AfterPay/Riverty or Ratepay (BNPL).
//!
//! A refund paid twice is money lost, so every refund goes through the journal in the state
//! store ([`journal`]): its intent is committed **before** it is sent, its result before it is
//! written back into the source.
//!
//! Modules: [`model`] and [`items`] (the source columns, validation, request bodies), [`json`]
//! (money in JSON without floating point), [`source`] (CSV and SQLite read and write-back),
//! [`journal`].

pub mod items;
pub mod journal;
pub mod json;
pub mod model;
pub mod source;

pub use source::init_db;
