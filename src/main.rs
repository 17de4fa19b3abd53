//! `medpay`: configuration, telemetry, start, serve; and the command-line tools. Everything else
//! lives in the crates.

mod commands;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
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
    /// REDIS_URL, MEDPAY_ADMIN_TOKEN, MEDPAY_ANALYST_TOKEN, MEDPAY_MODEL.
    Serve,
    /// Write labelled synthetic payments (features, label, time, pattern) as CSV.
    Simulate {
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long, default_value_t = 60_000)]
        payments: usize,
        #[arg(long, default_value_t = 90)]
        days: i64,
        #[arg(long, default_value = "data/simulated.csv")]
        out: PathBuf,
    },
    /// Run a local sandbox of an external system (same request and response shapes).
    Sandbox {
        #[command(subcommand)]
        system: SandboxSystem,
    },
    /// Compare Celcoin's statement with the ledger, charge by charge; exits 1 on any difference.
    /// Reads DATABASE_URL and CELCOIN_URL (with CELCOIN_CLIENT_ID / CELCOIN_CLIENT_SECRET).
    Reconcile,
    /// The patients' support bot: its tokenizer and its intent classifier.
    Chatbot {
        #[command(subcommand)]
        command: ChatbotCommand,
    },
    /// Models: training and evaluation.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// The TUSS catalogue of procedures (DATABASE_URL).
    Catalogue {
        #[command(subcommand)]
        command: CatalogueCommand,
    },
}

#[derive(Subcommand)]
enum CatalogueCommand {
    /// Replace the catalogue with a TUSS table: the JSON that the voa-tiss package ships (code,
    /// term, validity), or a CSV (.csv) by column names. With a catalogue loaded, payments for an
    /// unknown or expired code are refused, and payments show the official term.
    Import {
        file: PathBuf,
        #[arg(long, default_value = "codigo")]
        code_column: String,
        #[arg(long, default_value = "termo")]
        term_column: String,
        #[arg(long, default_value = "vigencia_inicio")]
        valid_from_column: String,
        #[arg(long, default_value = "vigencia_fim")]
        valid_until_column: String,
        #[arg(long, default_value = "tabela")]
        table_column: String,
    },
}

#[derive(Subcommand)]
enum SandboxSystem {
    /// Receita Federal's CPF and CNPJ status (Serpro's Consulta CPF / Consulta CNPJ shapes).
    Receita {
        #[arg(long, default_value = "127.0.0.1:9101")]
        bind: std::net::SocketAddr,
    },
    /// Celcoin: PIX cob/cobv, boleto, card, devolução, escrow, statement, webhooks, faults.
    Celcoin {
        #[arg(long, default_value = "127.0.0.1:9102")]
        bind: std::net::SocketAddr,
        /// Where to send Celcoin's webhooks (MedPay's /v1/gateways/celcoin/webhooks).
        #[arg(long)]
        webhook_url: Option<String>,
        #[arg(long, default_value = "celcoin", env = "CELCOIN_WEBHOOK_USER")]
        webhook_user: String,
        #[arg(long, default_value = "", env = "CELCOIN_WEBHOOK_PASSWORD")]
        webhook_password: String,
    },
    /// ClickSign v3: envelopes, documents, signers, requirements, webhooks signed with Content-Hmac.
    Clicksign {
        #[arg(long, default_value = "127.0.0.1:9103")]
        bind: std::net::SocketAddr,
        #[arg(long, env = "CLICKSIGN_TOKEN")]
        token: String,
        #[arg(long, env = "CLICKSIGN_WEBHOOK_SECRET")]
        secret: String,
        /// Where to send ClickSign's webhooks (MedPay's /v1/gateways/clicksign/webhooks).
        #[arg(long)]
        webhook_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum ChatbotCommand {
    /// Train the intent classifier on a labelled CSV (ours or anyone's) and report accuracy,
    /// macro-F1 and the most confused pairs on the test set (or on a held-out fifth).
    Train {
        #[arg(long)]
        csv: PathBuf,
        #[arg(long, default_value = "text")]
        text_column: String,
        #[arg(long, default_value = "intent")]
        label_column: String,
        /// A separate labelled test set with the same columns.
        #[arg(long)]
        test: Option<PathBuf>,
        /// Where to write the model artefact (JSON).
        #[arg(long)]
        out: Option<PathBuf>,
        /// L2 penalty of the logistic regression (larger: softer, better calibrated probabilities).
        #[arg(long, default_value_t = 0.2)]
        alpha: f64,
    },
    /// Train the subword tokenizer (BPE) on the text column of CSV files; writes tokenizer.json.
    Tokenizer {
        #[arg(long, required = true)]
        csv: Vec<PathBuf>,
        #[arg(long, default_value = "text")]
        text_column: String,
        #[arg(long, default_value_t = 800)]
        vocab_size: usize,
        #[arg(long, default_value = "chatbot/tokenizer.json")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Train on a labelled CSV (every numeric column but the label and time is a feature), or with
    /// --from-store on the features recorded with each decision and the labels in the store at
    /// DATABASE_URL, registering what it makes as a model version (not promoted).
    Train {
        #[arg(long, required_unless_present = "from_store")]
        csv: Option<PathBuf>,
        /// The label column (0/1, true/false, yes/no).
        #[arg(long, required_unless_present = "from_store")]
        label: Option<String>,
        /// Train on the store's labelled decisions instead of a CSV.
        #[arg(long, conflicts_with_all = ["csv", "label", "time_column"])]
        from_store: bool,
        /// Split by this column (a number or a date) instead of row order.
        #[arg(long)]
        time_column: Option<String>,
        /// Share of the rows, the most recent, kept for evaluation.
        #[arg(long, default_value_t = 0.2)]
        holdout: f64,
        #[arg(long, value_enum, default_values_t = [Kind::Logistic, Kind::Tree])]
        kind: Vec<Kind>,
        /// Folder for the model artefacts and reports.
        #[arg(long, default_value = "models")]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Logistic,
    Tree,
    /// Gradient-boosted trees.
    Boosted,
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
    println!("Celcoin: {}   ClickSign: {}   Receita: {}", server.celcoin_url, server.clicksign_url, server.receita_url);
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
    match Cli::parse().command.unwrap_or(Command::Serve) {
        Command::Serve => {
            init_telemetry();
            serve().await
        }
        Command::Sandbox { system: SandboxSystem::Receita { bind } } => {
            init_telemetry();
            let address = medpay_gateways::receita::start_sandbox(bind).await?;
            println!(
                "Receita Federal sandbox listening on http://{address} (PUT /sandbox/cpf/{{cpf}} {{\"codigo\":\"2\"}} suspends a CPF)"
            );
            shutdown_signal().await;
            Ok(())
        }
        Command::Sandbox { system: SandboxSystem::Celcoin { bind, webhook_url, webhook_user, webhook_password } } => {
            init_telemetry();
            let target = webhook_url.map(|url| medpay_gateways::celcoin_sandbox::WebhookTarget {
                url,
                username: webhook_user,
                password: webhook_password,
            });
            let address = medpay_gateways::celcoin_sandbox::start_sandbox(bind, target).await?;
            println!(
                "Celcoin sandbox listening on http://{address} (POST /sandbox/charges/{{id}}/pay pays a charge; PUT /sandbox/faults injects faults)"
            );
            shutdown_signal().await;
            Ok(())
        }
        Command::Sandbox { system: SandboxSystem::Clicksign { bind, token, secret, webhook_url } } => {
            init_telemetry();
            let address = medpay_gateways::clicksign::start_sandbox(bind, &token, &secret, webhook_url).await?;
            println!("ClickSign sandbox listening on http://{address} (POST /sandbox/envelopes/{{id}}/sign signs)");
            shutdown_signal().await;
            Ok(())
        }
        Command::Catalogue {
            command:
                CatalogueCommand::Import {
                    file,
                    code_column,
                    term_column,
                    valid_from_column,
                    valid_until_column,
                    table_column,
                },
        } => {
            init_telemetry();
            let columns = commands::CatalogueColumns {
                code: code_column,
                term: term_column,
                valid_from: valid_from_column,
                valid_until: valid_until_column,
                table: Some(table_column),
            };
            commands::catalogue_import(&file, &columns).await
        }
        Command::Reconcile => {
            init_telemetry();
            commands::reconcile().await
        }
        Command::Chatbot { command: ChatbotCommand::Train { csv, text_column, label_column, test, out, alpha } } => {
            tokio::task::spawn_blocking(move || {
                commands::chatbot_train(&csv, &text_column, &label_column, test.as_deref(), out.as_deref(), alpha)
            })
            .await?
        }
        Command::Chatbot { command: ChatbotCommand::Tokenizer { csv, text_column, vocab_size, out } } => {
            commands::chatbot_tokenizer(&csv, &text_column, vocab_size, &out)
        }
        Command::Simulate { seed, payments, days, out } => {
            let options = medpay_ml::simulate::SimulationOptions { seed, payments, days, ..Default::default() };
            commands::run_simulation(&options, &out)
        }
        Command::Model { command: ModelCommand::Train { csv, label, from_store, time_column, holdout, kind, out } } => {
            let kinds: Vec<medpay_ml::ModelKind> = kind
                .into_iter()
                .map(|kind| match kind {
                    Kind::Logistic => medpay_ml::ModelKind::Logistic,
                    Kind::Tree => medpay_ml::ModelKind::Tree,
                    Kind::Boosted => medpay_ml::ModelKind::Boosted,
                })
                .collect();
            if from_store {
                return commands::train_from_store(&kinds, holdout).await;
            }
            let (Some(csv), Some(label)) = (csv, label) else {
                anyhow::bail!("--csv and --label are needed (or --from-store)");
            };
            let command = commands::TrainCommand { csv, label, time_column, holdout, kinds, out };
            // Training is CPU-bound: off the async runtime's workers.
            tokio::task::spawn_blocking(move || commands::run_training(&command)).await?
        }
    }
}
