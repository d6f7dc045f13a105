//! The `hookhouse` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = hookhouse::cli::Cli::parse();
    match hookhouse::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hookhouse: {error:#}");
            ExitCode::FAILURE
        }
    }
}
