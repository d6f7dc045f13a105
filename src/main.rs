//! The `hookhouse` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hookhouse: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run())
}

/// glibc gives each thread that allocates its own arena, up to eight per core. The writer's
/// batches are decoded on blocking threads and freed on runtime threads, and every arena then
/// keeps a batch's worth of freed memory: draining a large backlog peaked far above the live
/// data. Two arenas keep that bounded; the hot path allocates little.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

async fn run() -> ExitCode {
    let cli = hookhouse::cli::Cli::parse();
    match hookhouse::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hookhouse: {}", hookhouse::error_chain::one_line(&*error));
            ExitCode::FAILURE
        }
    }
}
