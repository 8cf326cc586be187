//! A local imitation of the Komfortkasse API v2 (placeholder until the sandbox lands).
#![allow(missing_docs)]
use std::net::SocketAddr;
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("x")]
    X,
}
#[derive(clap::Args, Debug, Clone)]
pub struct SandboxArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}
pub async fn run(_args: SandboxArgs) -> Result<(), SandboxError> {
    Ok(())
}
