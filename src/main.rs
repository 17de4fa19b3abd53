//! `medpay`: configuration, telemetry, start, serve. Everything else lives in the crates.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "medpay", about = "Real-time payment and fraud core for Brazilian health payments")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default). Configured by environment: MEDPAY_BIND, DATABASE_URL,
    /// REDIS_URL, MEDPAY_ADMIN_TOKEN.
    Serve,
}

fn init_telemetry() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,ractor=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::env::var("MEDPAY_LOG_FORMAT").is_ok_and(|format| format == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

async fn serve() -> anyhow::Result<()> {
    let config = medpay_api::Config::from_env()?;
    let database = config.database_url.split('?').next().unwrap_or_default().to_owned();
    let database = if database.starts_with("postgres") { "postgres (DATABASE_URL)".to_owned() } else { database };
    let configured_token = config.admin_token.is_some();
    let server = medpay_api::start(config).await?;
    println!("MedPay listening on http://{}", server.addr);
    println!("database: {database}");
    if configured_token {
        println!("admin token: from MEDPAY_ADMIN_TOKEN");
    } else {
        println!("admin token (generated for this run; set MEDPAY_ADMIN_TOKEN to fix it): {}", server.admin_token);
    }
    let stop = server.shutdown_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop.send(true);
    });
    server.wait().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_telemetry();
    match Cli::parse().command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
    }
}
