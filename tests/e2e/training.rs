//! `medpay model train` on a CSV it has never seen, exported by another system: other column
//! names, `;` and decimal commas, dates, yes/no labels in Portuguese, a text column. The report is
//! checked against numbers worked out by hand.

use serde_json::Value;
use std::fmt::Write;

/// 30 payments, one a day from 2026-03-01, in shuffled file order. Fraud ("sim") exactly when
/// `valor` is above 1000; `idade` is noise; `observacao` is text. By date, the last 6 rows (the
/// 20 % hold-out) are days 25–30, of which days 26 and 29 are fraud.
fn csv() -> String {
    let fraud_days = [3, 7, 12, 18, 21, 26, 29];
    let mut rows = Vec::new();
    for day in 1..=30u32 {
        let fraud = fraud_days.contains(&day);
        let valor = if fraud { format!("{},50", 1_500 + day * 10) } else { format!("{},25", 100 + day * 7) };
        let idade = 20 + (day * 37) % 50;
        rows.push(format!("{day:02}/03/2026;{valor};{idade};obs {day};{}", if fraud { "sim" } else { "não" }));
    }
    // File order is not time order.
    rows.sort_by_key(|row| row.bytes().rev().map(u32::from).sum::<u32>());
    let mut text = String::from("data;valor;idade;observacao;fraude\n");
    for row in rows {
        writeln!(text, "{row}").unwrap();
    }
    text
}

#[test]
fn training_on_an_unseen_csv_gives_the_report_worked_out_by_hand() {
    let folder = std::env::temp_dir().join(format!("medpay-train-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("export.csv");
    std::fs::write(&path, csv()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_medpay"))
        .args(["model", "train", "--csv"])
        .arg(&path)
        .args(["--label", "fraude", "--time-column", "data", "--holdout", "0.2", "--out"])
        .arg(folder.join("models"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let mut reports = Vec::new();
    for entry in std::fs::read_dir(folder.join("models")).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".report.json") {
            reports.push(serde_json::from_str::<Value>(&std::fs::read_to_string(&path).unwrap()).unwrap());
        }
    }
    assert_eq!(reports.len(), 2, "a logistic and a tree model");
    for report in reports {
        assert_eq!(report["features"], serde_json::json!(["valor", "idade"]), "{report}");
        assert_eq!(report["ignored_columns"], serde_json::json!(["observacao"]));
        assert!(report["feature_schema"].as_str().unwrap().starts_with("csv:"));
        assert_eq!((report["training_rows"].as_u64(), report["training_positives"].as_u64()), (Some(24), Some(5)));
        let holdout = &report["holdout"];
        assert_eq!((holdout["rows"].as_u64(), holdout["positives"].as_u64()), (Some(6), Some(2)));
        // Fraud is exactly "valor above 1000": every fraud outranks every legitimate payment.
        assert_eq!(holdout["roc_auc"].as_f64(), Some(1.0), "{report}");
        assert_eq!(holdout["pr_auc"].as_f64(), Some(1.0));
        assert_eq!(holdout["recall_at_fpr_1_percent"].as_f64(), Some(1.0));
        let matrix = &holdout["confusion_matrix"];
        let counts: Vec<u64> = ["true_positives", "false_negatives", "false_positives", "true_negatives"]
            .iter()
            .map(|k| matrix[*k].as_u64().unwrap())
            .collect();
        assert_eq!(counts, vec![2, 0, 0, 4]);
        assert_eq!(report["top_features"][0]["name"], "valor");
    }
    assert!(stdout.contains("ROC-AUC: 1.0000"), "{stdout}");
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
fn a_model_of_another_schema_is_refused_by_the_service() {
    let mut other = medpay_ml::ModelArtefact::from_json(medpay_ml::DEFAULT_MODEL_JSON).unwrap();
    other.feature_schema = "csv:0123456789abcdef".to_owned();
    let path = std::env::temp_dir().join(format!("medpay-other-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, other.to_json()).unwrap();
    let error = medpay_api::load_model(Some(&path)).unwrap_err().to_string();
    assert!(error.contains("trained on feature schema \"csv:0123456789abcdef\""), "{error}");
    assert!(medpay_api::load_model(None).is_ok(), "the bundled model loads");
    let _ = std::fs::remove_file(&path);
}
