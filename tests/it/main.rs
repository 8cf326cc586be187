//! End-to-end tests: the real `kksync` binary against the in-process sandbox.

mod cli;
mod csv_flow;
mod faults;
mod incremental;
mod operations;
mod ordersync;
mod partial_write_back;
mod refunds;
mod source_integrity;
mod sqlite_flow;
mod util;
