//! The long run of the seeded simulation of payments' money (`medpay_actors::simulation`):
//! thousands of payments through every path, gateway faults and crashes at step boundaries,
//! the world checked after every step and settled to the centavo at the end.
//!
//! `cargo bench --bench simulation` — `MEDPAY_SIM_SEED` (first seed, default: the time),
//! `MEDPAY_SIM_SEEDS` (how many seeds, default 4), `MEDPAY_SIM_PAYMENTS` (per seed, default 5 000).
//! A failure prints its seed; `MEDPAY_SIM_SEED=<seed> MEDPAY_SIM_SEEDS=1` replays it.

use medpay_actors::simulation::{SimConfig, run};
use std::time::Instant;

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|value| value.parse().ok())
}

fn main() {
    let first = env("MEDPAY_SIM_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    });
    let seeds = env("MEDPAY_SIM_SEEDS").unwrap_or(4);
    let payments = env("MEDPAY_SIM_PAYMENTS").unwrap_or(5_000) as usize;
    let mut failed = false;
    for seed in first..first + seeds {
        let started = Instant::now();
        match run(SimConfig::new(seed, payments)) {
            Ok(report) => {
                let crashes: u64 = report.crashed_at.values().sum();
                println!(
                    "seed {seed}: {} payments, {} steps, {} crashes at {} kinds of boundary, {} gateway faults, {} gateway charges, {:.1} s",
                    payments,
                    report.steps,
                    crashes,
                    report.crashed_at.len(),
                    report.gateway_faults,
                    report.gateway_charges,
                    started.elapsed().as_secs_f64()
                );
                println!("  ended: {:?}", report.statuses);
                println!("  paths: {:?}", report.paths);
            }
            Err(failure) => {
                println!("FAILED {failure}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
