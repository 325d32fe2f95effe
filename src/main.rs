//! `ferry --config FILE` runs the proxy; `ferry check-config FILE` validates a
//! configuration and names the bad key.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "IMAP proxy for mail-system migrations")]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Session worker threads (default: one per CPU).
    #[arg(long, env = "FERRY_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a configuration file and exit.
    CheckConfig { file: PathBuf },
    /// Copy these users' OLD mail into NEW now (resumable: run it again and
    /// only what is missing is copied). Needs --config.
    Migrate {
        #[arg(required = true)]
        users: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    ferry::server::raise_open_files_limit();
    let cli = Cli::parse();
    if let Some(Cmd::CheckConfig { file }) = cli.command {
        let config = ferry::config::load(&file).with_context(|| format!("{}", file.display()))?;
        if let Some(tls) = &config.tls {
            ferry::tls::load_certified_key(&tls.cert, &tls.key).context("tls")?;
        }
        println!("{}: OK", file.display());
        return Ok(());
    }
    let path = cli
        .config
        .context("--config FILE is required (or: ferry check-config FILE)")?;
    if let Some(Cmd::Migrate { users }) = cli.command {
        return migrate(&path, &users);
    }
    let config = ferry::config::load(&path).with_context(|| format!("{}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log.format {
        ferry::config::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        ferry::config::LogFormat::Json => logs.json().with_span_list(true).init(),
    }
    // Sessions run on their own per-core workers; this runtime only accepts,
    // serves /metrics and handles signals.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let workers = cli.threads.unwrap_or_else(ferry::workers::default_count);
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let ferry = ferry::Ferry::start_with_workers(config, workers).await?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                // Errors are logged and counted by reload_file; Ferry keeps running.
                _ = hup.recv() => {
                    // Reading a large users file takes a moment: off the async workers.
                    let _ = tokio::task::block_in_place(|| ferry.reload_file(&path));
                }
            }
        }
        tracing::info!("shutting down: no new connections, finishing commands in flight");
        ferry.shutdown().await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// `ferry migrate USER…`: one pass per user, a line per folder.
fn migrate(path: &std::path::Path, users: &[String]) -> anyhow::Result<()> {
    let config = ferry::config::load(path).with_context(|| format!("{}", path.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let state = ferry::state::State::open(&config.state.url)
            .await
            .context("state.url")?;
        let tokens = ferry::oauth::Tokens::default();
        let mut failed = 0;
        for user in users {
            let done = ferry::copier::user::migrate_user(&config, &state, &tokens, user, |f| {
                let p = f.pass;
                println!(
                    "{user}  {}  {} messages: {} copied, {} already there, {} found on NEW",
                    f.name, p.messages, p.appended, p.skipped, p.adopted
                );
            })
            .await;
            match done {
                Ok(p) => println!(
                    "{user}: done, {} messages, {} copied now",
                    p.messages, p.appended
                ),
                Err(e) => {
                    failed += 1;
                    eprintln!("{user}: {e}");
                }
            }
        }
        anyhow::ensure!(failed == 0, "{failed} of {} users failed", users.len());
        Ok(())
    })
}
