//! The Komfortkasse API client: one async function per endpoint, typed errors, and the
//! classification of errors into "retry", "reject" and "stop the run".

pub(crate) mod client;
mod error;
mod status;
pub mod stream;

pub use client::{Ack, ApiClient, Reply};
pub use error::{ApiError, DUNNING_ON_UPDATE_MESSAGE, RetryClass};
