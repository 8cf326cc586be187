//! `kksync refunds`: turn each returned order (RMA) into exactly one refund with the provider
//! that took the payment: Komfortkasse (bank transfer), AfterPay/Riverty or Ratepay (BNPL).
//!
//! Modules: [`model`] and [`items`] (the source columns, validation, request bodies), [`json`]
//! (money in JSON without floating point), [`source`] (CSV and SQLite read and write-back).

pub mod items;
pub mod json;
pub mod model;
pub mod source;

pub use source::init_db;
