//! `berth`: the registry server binary. Thin: sets the umask to 0o077,
//! parses the command line, sets up logging (`RUST_LOG`, default `info`), binds, and runs
//! [`berth_server::serve`] until SIGTERM or SIGINT.

use std::process::ExitCode;

use berth_server::{Config, ServeArgs};
use clap::{Parser, Subcommand};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Parser)]
#[command(name = "berth", version, about = "berth: an OCI container registry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OCI distribution API
    Serve(ServeArgs),
}

fn main() -> ExitCode {
    // Before anything creates a file: everything berth writes is the
    // owner's only (see berth_engine::host).
    berth_engine::host::private_umask();
    return_large_buffers();
    let cli = Cli::parse();
    // RUST_LOG takes `level` or `target=level,...` directives (no regex
    // filters, which keeps regex out of the binary); default: info.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
    let Command::Serve(args) = cli.command;
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Makes the allocator give large buffers back to the system when they are
/// freed. Every password check allocates argon2id's 19 MiB and frees it;
/// glibc's default raises its mmap threshold after the first such free and
/// from then on keeps those buffers in its heaps, so the resident set
/// climbs to ~15 of them (measured: 315 MiB after 20 sequential failed
/// logins) however few run at once. A fixed threshold keeps it at what runs
/// at once: the verification slots × 19 MiB (`auth.rs`; measured: 24 MiB
/// after 40 failed logins, 64 MiB peak under 60 concurrent ones).
fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

async fn run(config: Config) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| {
            format!(
                "berth: listen on {}: {e} (is another server using the port?)",
                config.listen
            )
        })?;
    berth_server::serve(config, listener, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

/// Completes on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}
