//! The command-line tools beside the server: the synthetic payment generator and model training.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use medpay_ml::model::ModelKind;
use medpay_ml::simulate::{SimulationOptions, csv_header, csv_row, simulate};
use medpay_ml::train::{Dataset, TrainOptions, fit, report};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn run_simulation(options: &SimulationOptions, out: &Path) -> anyhow::Result<()> {
    if let Some(parent) = out.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    writeln!(writer, "{}", csv_header())?;
    let (mut rows, mut fraud) = (0usize, 0usize);
    let mut failure = None;
    simulate(options, |payment| {
        rows += 1;
        fraud += usize::from(payment.is_fraud);
        if failure.is_none() {
            failure = writeln!(writer, "{}", csv_row(payment)).err();
        }
    });
    if let Some(error) = failure {
        return Err(error.into());
    }
    writer.flush()?;
    println!("wrote {rows} payments ({fraud} fraud) to {}", out.display());
    Ok(())
}

pub struct TrainCommand {
    pub csv: PathBuf,
    pub label: String,
    pub time_column: Option<String>,
    pub holdout: f64,
    pub kinds: Vec<ModelKind>,
    pub out: PathBuf,
}

fn progress(stages: u64) -> ProgressBar {
    let bar = ProgressBar::new(stages);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

pub fn run_training(command: &TrainCommand) -> anyhow::Result<()> {
    let bar = progress(2 + 2 * command.kinds.len() as u64);
    bar.set_message(format!("reading {}", command.csv.display()));
    let file = std::fs::File::open(&command.csv).with_context(|| format!("cannot open {}", command.csv.display()))?;
    let data = Dataset::from_csv(file, &command.label, command.time_column.as_deref())?;
    bar.inc(1);
    bar.set_message(format!("splitting {} rows ({} fraud)", data.rows.len(), data.positives()));
    let (train, test) = data.split(command.holdout)?;
    bar.inc(1);
    std::fs::create_dir_all(&command.out)?;
    let now = chrono::Utc::now();
    let options = TrainOptions {
        version_tag: now.format("%Y%m%dT%H%M%SZ").to_string(),
        trained_at: now.to_rfc3339(),
        ..TrainOptions::default()
    };
    let mut written = Vec::new();
    for kind in &command.kinds {
        bar.set_message(format!("fitting the {} model on {} rows", kind.as_str(), train.rows.len()));
        let model = fit(&train, *kind, &options)?;
        bar.inc(1);
        bar.set_message(format!("evaluating the {} model on {} hold-out rows", kind.as_str(), test.rows.len()));
        let report = report(&model, &train, &test);
        let base = command.out.join(&model.version);
        std::fs::write(base.with_extension("json"), model.to_json())?;
        std::fs::write(base.with_extension("report.json"), serde_json::to_string_pretty(&report)?)?;
        std::fs::write(base.with_extension("report.txt"), report.to_text())?;
        bar.inc(1);
        written.push((base, report));
    }
    bar.finish_with_message("done");
    for (base, report) in &written {
        println!("\n{}", report.to_text());
        println!("model:  {}", base.with_extension("json").display());
        println!("report: {} and .txt", base.with_extension("report.json").display());
    }
    Ok(())
}

/// `medpay model train --from-store`: a training run per kind on the store at `DATABASE_URL`,
/// each registered as a model version (an analyst promotes it), with a progress bar.
pub async fn train_from_store(kinds: &[medpay_ml::ModelKind], holdout: f64) -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| medpay_api::config::DEFAULT_DATABASE_URL.to_owned());
    let store = medpay_store::Store::connect(&url).await?;
    for kind in kinds {
        let mut run = medpay_api::training::new_run(*kind, "cli");
        store.insert_training_run(&run).await?;
        let bar = progress(u64::try_from(run.stages).unwrap_or(5));
        let shown = bar.clone();
        let result = medpay_api::training::run_training(&store, &mut run, *kind, holdout, &move |run| {
            shown.set_position(u64::try_from(run.stages_done).unwrap_or(0));
            shown.set_message(run.stage.clone());
        })
        .await;
        bar.finish_and_clear();
        let model_id = result?;
        println!(
            "{} model trained on {} labelled decisions ({} fraud): run {}, registered as {model_id}",
            kind.as_str(),
            run.rows_used.unwrap_or(0),
            run.positives.unwrap_or(0),
            run.id
        );
    }
    store.close().await;
    Ok(())
}

/// `medpay reconcile`: Celcoin's statement against the ledger; exit status 1 on any difference.
pub async fn reconcile() -> anyhow::Result<()> {
    let config = medpay_api::Config::from_env()?;
    let money = &config.money;
    let url = money
        .celcoin_url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("CELCOIN_URL is not set: there is no Celcoin to reconcile with"))?;
    let store = medpay_store::Store::connect(&config.database_url).await?;
    let policy = money.policy();
    let celcoin = medpay_gateways::celcoin::CelcoinClient::new(
        &url,
        &money.celcoin_client_id,
        &money.celcoin_client_secret,
        &money.celcoin_pix_key,
        policy,
    )?;
    let report = medpay_api::money::reconcile(&store, &celcoin).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    store.close().await;
    if report.ok {
        Ok(())
    } else {
        anyhow::bail!("{} differences between Celcoin and the ledger", report.differences.len())
    }
}

/// `medpay chatbot tokenizer`: trains the BPE tokenizer on the text column of the given CSVs.
pub fn chatbot_tokenizer(csvs: &[PathBuf], text_column: &str, vocab_size: usize, out: &Path) -> anyhow::Result<()> {
    let mut texts = Vec::new();
    for path in csvs {
        let mut reader = csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
        let index = reader
            .headers()?
            .iter()
            .position(|h| h == text_column)
            .ok_or_else(|| anyhow::anyhow!("{}: no column {text_column:?}", path.display()))?;
        for record in reader.records() {
            texts.push(record?.get(index).unwrap_or_default().to_owned());
        }
    }
    let tokenizer = medpay_chatbot::tokenizer::train(&texts, vocab_size)?;
    tokenizer.save(out, false).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "tokenizer of {} tokens trained on {} texts → {}",
        tokenizer.get_vocab_size(true),
        texts.len(),
        out.display()
    );
    Ok(())
}

/// `medpay chatbot train`: the intent classifier on any labelled CSV, evaluated on `test` (or on
/// every fifth example of each label, held out).
pub fn chatbot_train(
    csv: &Path,
    text_column: &str,
    label_column: &str,
    test: Option<&Path>,
    out: Option<&Path>,
    alpha: f64,
) -> anyhow::Result<()> {
    use medpay_chatbot::intents::{TrainOptions, read_csv, split, train};
    if !(alpha.is_finite() && alpha >= 0.0) {
        anyhow::bail!("--alpha must be a non-negative number");
    }
    let examples = read_csv(csv, text_column, label_column)?;
    let (train_set, test_set) = match test {
        Some(path) => (examples, read_csv(path, text_column, label_column)?),
        None => split(&examples, 5),
    };
    let tokenizer = medpay_chatbot::tokenizer::committed()?;
    let started = std::time::Instant::now();
    let model = train(&tokenizer, &train_set, &TrainOptions { alpha, ..TrainOptions::default() })?;
    println!(
        "trained on {} examples, {} intents, {} features in {:.1} s",
        train_set.len(),
        model.classes.len(),
        model.idf.len(),
        started.elapsed().as_secs_f64()
    );
    let evaluation = model.evaluate(&tokenizer, &test_set)?;
    println!(
        "test set: {} examples · accuracy {:.4} · macro-F1 {:.4} · confident on {:.1} % (accuracy there {:.4})",
        evaluation.examples,
        evaluation.accuracy,
        evaluation.macro_f1,
        evaluation.confident_share * 100.0,
        evaluation.confident_accuracy
    );
    println!("{:<24} {:>9} {:>7} {:>7} {:>7}", "intent", "precision", "recall", "F1", "support");
    for (class, precision, recall, f1, support) in &evaluation.per_class {
        println!("{class:<24} {precision:>9.3} {recall:>7.3} {f1:>7.3} {support:>7}");
    }
    println!("most confused (true → predicted: count):");
    for (truth, predicted, count) in evaluation.confusions.iter().take(10) {
        println!("  {truth} → {predicted}: {count}");
    }
    if let Some(out) = out {
        std::fs::write(out, model.to_json()).with_context(|| format!("cannot write {}", out.display()))?;
        println!("model → {}", out.display());
    }
    Ok(())
}

/// Where a catalogue's columns are.
pub struct CatalogueColumns {
    pub code: String,
    pub term: String,
    pub valid_from: String,
    pub valid_until: String,
    pub table: Option<String>,
}

/// The voa-tiss package's table: `{"records": [{"codigo", "termo", "tabela", "vigencia_inicio",
/// "vigencia_fim"}, …]}`; a CSV by the named columns. Rows without a well-formed 8-digit code
/// or a term are counted and left out; a code twice keeps its last row.
fn read_catalogue(
    path: &Path,
    columns: &CatalogueColumns,
) -> anyhow::Result<(Vec<medpay_store::CatalogueEntry>, usize)> {
    let is_json = path.extension().is_some_and(|extension| extension.eq_ignore_ascii_case("json"));
    let mut rows: Vec<[String; 5]> = Vec::new();
    if is_json {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let document: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        let records = document
            .get("records")
            .or(Some(&document))
            .and_then(|records| records.as_array())
            .ok_or_else(|| anyhow::anyhow!("{}: no array of records", path.display()))?;
        let field = |record: &serde_json::Value, name: &str| match record.get(name) {
            Some(serde_json::Value::String(text)) => text.trim().to_owned(),
            Some(serde_json::Value::Number(number)) => number.to_string(),
            _ => String::new(),
        };
        for record in records {
            let table = columns.table.as_deref().map(|name| field(record, name)).unwrap_or_default();
            rows.push([
                field(record, &columns.code),
                field(record, &columns.term),
                table,
                field(record, &columns.valid_from),
                field(record, &columns.valid_until),
            ]);
        }
    } else {
        let mut reader = csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
        let headers = reader.headers()?.clone();
        let index = |name: &str| headers.iter().position(|header| header.trim() == name);
        let code = index(&columns.code).ok_or_else(|| anyhow::anyhow!("no column {:?}", columns.code))?;
        let term = index(&columns.term).ok_or_else(|| anyhow::anyhow!("no column {:?}", columns.term))?;
        let (from, until) = (index(&columns.valid_from), index(&columns.valid_until));
        let table = columns.table.as_deref().and_then(index);
        for record in reader.records() {
            let record = record?;
            let at = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or_default().trim().to_owned();
            rows.push([at(Some(code)), at(Some(term)), at(table), at(from), at(until)]);
        }
    }
    let mut by_code = std::collections::BTreeMap::new();
    let mut skipped = 0;
    for [code, term, table, valid_from, valid_until] in rows {
        let date = |text: &str| text.is_empty() || chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok();
        let well_formed = code.parse::<medpay_models::TussCode>().is_ok()
            && !term.is_empty()
            && date(&valid_from)
            && date(&valid_until);
        if !well_formed {
            skipped += 1;
            continue;
        }
        let term: String = term.chars().take(500).collect();
        by_code.insert(
            code.clone(),
            medpay_store::CatalogueEntry { code, term, table_code: table, valid_from, valid_until },
        );
    }
    Ok((by_code.into_values().collect(), skipped))
}

/// `medpay catalogue import`: replaces the TUSS catalogue in DATABASE_URL with the file's.
pub async fn catalogue_import(path: &Path, columns: &CatalogueColumns) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let (entries, skipped) = read_catalogue(path, columns)?;
    if entries.is_empty() {
        anyhow::bail!("{}: no row with an 8-digit code and a term ({skipped} rows left out)", path.display());
    }
    let config = medpay_api::Config::from_env()?;
    let store = medpay_store::Store::connect(&config.database_url).await?;
    let bar = ProgressBar::new(u64::try_from(entries.len()).unwrap_or(u64::MAX));
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} codes ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let version = format!("{}:{}", medpay_store::now_ms(), entries.len());
    let shown = bar.clone();
    store.replace_catalogue(&entries, &version, move |written| shown.set_position(written as u64)).await?;
    bar.finish_and_clear();
    let today = chrono::Utc::now().date_naive().to_string();
    let expired = entries.iter().filter(|entry| !entry.valid_until.is_empty() && entry.valid_until < today).count();
    println!(
        "{} TUSS codes imported ({expired} no longer valid; {skipped} rows left out: not an 8-digit code, no term or a bad date) in {:.1} s; running nodes read it within seconds",
        entries.len(),
        started.elapsed().as_secs_f64()
    );
    store.close().await;
    Ok(())
}
