//! The analysts' rule language: any source compiles or is refused with a position inside it, and a
//! compiled rule evaluates any feature values (NaN and infinities included) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medpay_ml::features::FEATURE_COUNT;
use medpay_ml::scorer::NamedRule;

fuzz_target!(|input: (&str, Vec<f64>)| {
    let (source, values) = input;
    match NamedRule::compile("fuzzed", source) {
        Ok(named) => {
            // The features, then `score`: pad or cut what the fuzzer gave to that length.
            let mut variables: Vec<f64> = values.into_iter().take(FEATURE_COUNT + 1).collect();
            variables.resize(FEATURE_COUNT + 1, 0.0);
            let first = named.rule.matches(&variables);
            assert_eq!(first, named.rule.matches(&variables), "a rule is a pure function of its inputs");
        }
        Err(error) => assert!(error.position <= source.len(), "{error:?} points past the source"),
    }
});
