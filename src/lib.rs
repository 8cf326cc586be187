//! kksync: keeps an online shop's orders in sync with the Komfortkasse payment service.
#![deny(missing_docs)]

pub mod dates;
pub mod sandbox;
