//! The labelled CSV an analyst uploads to train on: any bytes give a dataset or an error, and a
//! dataset is rectangular with one label per row.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medpay_ml::train::Dataset;

fuzz_target!(|data: &[u8]| {
    for time_column in [None, Some("created_at")] {
        if let Ok(dataset) = Dataset::from_csv(data, "is_fraud", time_column) {
            assert_eq!(dataset.rows.len(), dataset.labels.len());
            assert!(dataset.rows.iter().all(|row| row.len() == dataset.names.len()), "{:?}", dataset.names);
        }
    }
});
