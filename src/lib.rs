//! kksync library.
