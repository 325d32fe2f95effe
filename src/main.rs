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
    /// Session worker threads (default: one per two CPUs).
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
        /// After copying, compare: `--verify` or `--verify=quick` (counts, size, Message-ID, date,
        /// flags), `--verify=full` (and SHA-256 of both bodies).
        #[arg(long, value_name = "HOW", num_args = 0..=1, require_equals = true, default_missing_value = "quick")]
        verify: Option<Verify>,
        /// Remove from NEW the copies of messages expunged on OLD.
        #[arg(long)]
        remove_expunged: bool,
    },
    /// Ask the running Ferry's admin API (`[admin]` in --config).
    Admin {
        #[command(subcommand)]
        what: AdminCmd,
    },
    /// Make the running Ferry read its configuration again (through its
    /// admin API); exits non-zero with the reason when it refuses it.
    /// Needs --config with [admin].
    Reload,
    /// Where users' migrations stand (from the state store). Needs --config.
    Migration {
        #[command(subcommand)]
        what: MigrationCmd,
    },
}

#[derive(Subcommand)]
enum MigrationCmd {
    /// Every user's state, or one user's folders.
    Status {
        user: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// A user's phase, sessions and migration; every user's without USER.
    Status {
        user: Option<String>,
    },
    /// Copy the user now (phase `old` users too), unpausing them.
    Start {
        user: String,
    },
    /// Leave the user's copying alone until resumed.
    Pause {
        user: String,
    },
    Resume {
        user: String,
    },
    /// End the user's sessions (each at its next safe point).
    EndSessions {
        user: String,
    },
    /// Set the user's phase on every instance (it wins over the
    /// configuration files), or with --clear leave it to the files again.
    Phase {
        user: String,
        #[arg(value_parser = ["old", "merged", "new"], required_unless_present = "clear")]
        phase: Option<String>,
        #[arg(long, conflicts_with = "phase")]
        clear: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Verify {
    Quick,
    Full,
}

/// Errors end the process with one line (the causes joined by `: `),
/// never a backtrace: they are the admin's to read, not a developer's.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A cause its error already quotes is not repeated.
            let mut line = e.to_string();
            for cause in e.chain().skip(1).map(|c| c.to_string()) {
                if !line.contains(&cause) {
                    line = format!("{line}: {cause}");
                }
            }
            eprintln!("ferry: {line}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    ferry::server::raise_open_files_limit();
    let cli = Cli::parse();
    if let Some(Cmd::CheckConfig { file }) = cli.command {
        let config = ferry::config::load(&file).with_context(|| format!("{}", file.display()))?;
        if let Some(tls) = &config.tls {
            // Its errors name their key (`tls.cert`, `tls.key`).
            ferry::tls::load_certified_key(&tls.cert, &tls.key)
                .with_context(|| format!("{}", file.display()))?;
        }
        println!("{}: OK", file.display());
        return Ok(());
    }
    let path = cli
        .config
        .context("--config FILE is required (or: ferry check-config FILE)")?;
    if cli.command.is_some() {
        // A command's output may go to `head`: end quietly when it closes
        // the pipe, as command-line tools do (the server keeps Rust's
        // default, where a closed socket is an error to handle).
        // SAFETY: setting a signal's disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Some(Cmd::Migrate {
            users,
            verify,
            remove_expunged,
        }) => {
            let options = ferry::copier::folder::Options {
                verify: match verify {
                    None => ferry::copier::folder::Verify::No,
                    Some(Verify::Quick) => ferry::copier::folder::Verify::Quick,
                    Some(Verify::Full) => ferry::copier::folder::Verify::Full,
                },
                remove_expunged,
            };
            return migrate(&path, &users, options);
        }
        Some(Cmd::Migration {
            what: MigrationCmd::Status { user, json },
        }) => return status(&path, user.as_deref(), json),
        Some(Cmd::Admin { what }) => return admin(&path, what),
        Some(Cmd::Reload) => return reload(&path),
        _ => {}
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
        // systemd's Type=notify: listening now (a no-op outside systemd).
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
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
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!("shutting down: no new connections, finishing commands in flight");
        ferry.shutdown().await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// The state store of the configuration at `path`, on a runtime for one
/// command.
fn with_state<T>(
    path: &std::path::Path,
    f: impl AsyncFnOnce(ferry::config::Config, ferry::state::State) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let config = ferry::config::load(path).with_context(|| format!("{}", path.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let state = ferry::state::State::open(&config.state.url)
            .await
            .context("state.url")?;
        f(config, state).await
    })
}

/// `ferry migrate USER…`: one pass per user, a line per folder, and a
/// progress bar on a terminal.
fn migrate(
    path: &std::path::Path,
    users: &[String],
    options: ferry::copier::folder::Options,
) -> anyhow::Result<()> {
    use ferry::copier::{
        Job,
        user::{Event, migrate_user},
    };
    with_state(path, async |config, state| {
        let tokens = ferry::oauth::Tokens::default();
        let pace = ferry::copier::pace::Pace::new(config.copier.pace.old, config.copier.pace.new);
        let holder = ferry::copier::holder("ferry migrate");
        let job = Job {
            config: &config,
            state: &state,
            tokens: &tokens,
            pace: &pace,
            activity: None,
            options,
            holder: &holder,
        };
        let mut failed = 0;
        for user in users {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr(),
            )
            .with_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} messages, {bytes_per_sec}, {eta} left",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            )
            .with_prefix(user.clone());
            let mut bytes = 0u64;
            let done = loop {
                let done = migrate_user(&job, user, &mut |event| match event {
                Event::Planned { messages, .. } => bar.set_length(messages),
                Event::Message { bytes: b } => {
                    bytes += b;
                    bar.inc(1);
                }
                Event::Folder(f) => {
                    let p = &f.pass;
                    bar.suspend(|| {
                        println!(
                            "{user}  {}  {} messages: {} copied, {} already there, {} found on NEW, \
                             {} flag changes carried, {} expunged on OLD{}",
                            f.name,
                            p.messages,
                            p.appended,
                            p.skipped,
                            p.adopted,
                            p.flags_carried,
                            p.expunged_on_old,
                            if p.removed > 0 {
                                format!(", {} removed from NEW", p.removed)
                            } else {
                                String::new()
                            }
                        );
                        for d in &p.differences {
                            println!("{user}  differs: {d}");
                        }
                    });
                }
            })
            .await;
                // Another copier holds the user (the background copier of an
                // instance, or a `ferry migrate` killed a moment ago, whose
                // lease lapses by itself): wait for it.
                if let Err(ferry::copier::user::UserError::Leased(lease)) = &done {
                    let wait =
                        (lease.expires_ms - ferry::state::lease::now_ms()).max(0) as u64 + 200;
                    bar.suspend(|| {
                        eprintln!(
                            "{user}: {} is copying it; trying again in {} s",
                            lease.holder,
                            wait.div_ceil(1000)
                        )
                    });
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                    continue;
                }
                break done;
            };
            bar.finish_and_clear();
            let _ = bytes;
            match done {
                Ok(p) => {
                    let verdict = match (options.verify, p.differences.len()) {
                        (ferry::copier::folder::Verify::No, _) => String::new(),
                        (_, 0) => ", verified".into(),
                        (_, n) => format!(", {n} differences"),
                    };
                    println!(
                        "{user}: done, {} messages, {} copied now{verdict}",
                        p.messages, p.appended
                    );
                    if !p.differences.is_empty() {
                        failed += 1;
                    }
                }
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

/// `ferry migration status [USER]`.
fn status(path: &std::path::Path, user: Option<&str>, json: bool) -> anyhow::Result<()> {
    with_state(path, async |_, state| {
        let users = match user {
            Some(u) => state.migration(u).await?.into_iter().collect(),
            None => state.migrations().await?,
        };
        if let Some(u) = user
            && users.is_empty()
        {
            anyhow::bail!("{u}: no migration recorded");
        }
        let folders = match user {
            Some(u) => state.migration_folders(u).await?,
            None => Vec::new(),
        };
        if json {
            let value = match user {
                Some(_) => serde_json::json!({ "user": users[0], "folders": folders }),
                None => serde_json::json!({ "users": users }),
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
            return Ok(());
        }
        print!("{}", ferry::copier::report::users_table(&users));
        if user.is_some() {
            print!("{}", ferry::copier::report::folders_table(&folders));
        }
        Ok(())
    })
}

/// `ferry admin …`: one request to the admin API the configuration names.
fn admin(path: &std::path::Path, what: AdminCmd) -> anyhow::Result<()> {
    use ferry::admin::percent_encoded as enc;
    use hyper::Method;
    let (method, route) = match &what {
        AdminCmd::Status { user: None } => (Method::GET, "/users".to_string()),
        AdminCmd::Status { user: Some(u) } => (Method::GET, format!("/users/{}", enc(u))),
        AdminCmd::Start { user } => (
            Method::POST,
            format!("/users/{}/migration/start", enc(user)),
        ),
        AdminCmd::Pause { user } => (
            Method::POST,
            format!("/users/{}/migration/pause", enc(user)),
        ),
        AdminCmd::Resume { user } => (
            Method::POST,
            format!("/users/{}/migration/resume", enc(user)),
        ),
        AdminCmd::EndSessions { user } => {
            (Method::POST, format!("/users/{}/sessions/end", enc(user)))
        }
        AdminCmd::Phase {
            user,
            phase: Some(phase),
            ..
        } => (Method::PUT, format!("/users/{}/phase/{phase}", enc(user))),
        AdminCmd::Phase { user, .. } => (Method::DELETE, format!("/users/{}/phase", enc(user))),
    };
    let (status, value) = ask(path, method, &route)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    anyhow::ensure!(status.is_success(), "the admin API answered {status}");
    Ok(())
}

/// `ferry reload`: the running Ferry's verdict on its configuration file.
fn reload(path: &std::path::Path) -> anyhow::Result<()> {
    let (status, value) = ask(path, hyper::Method::POST, "/reload")?;
    match value["generation"].as_u64() {
        Some(generation) if status.is_success() => {
            println!("reloaded: configuration generation {generation}");
            Ok(())
        }
        _ => anyhow::bail!(
            "reload refused: {}",
            value["error"].as_str().unwrap_or("no reason given")
        ),
    }
}

/// One request to the admin API of the configuration at `path`.
fn ask(
    path: &std::path::Path,
    method: hyper::Method,
    route: &str,
) -> anyhow::Result<(hyper::StatusCode, serde_json::Value)> {
    let config = ferry::config::load(path).with_context(|| format!("{}", path.display()))?;
    let api = config
        .admin
        .context("no [admin] in the configuration: the admin API is off")?;
    let token = std::fs::read_to_string(&api.token_file)
        .with_context(|| format!("admin.token_file {}", api.token_file.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let addr = api.listen.to_string();
    Ok(runtime.block_on(ferry::admin::request(&addr, token.trim(), method, route))?)
}
