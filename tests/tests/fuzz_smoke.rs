//! In-suite smoke of the fuzz targets (`fuzz/src/lib.rs`): 1 000 mutated
//! inputs each from the committed seeds, no crash. The real runs (10 M per
//! target, libFuzzer or the stable driver) are in `fuzz/README.md`.
#![allow(clippy::unwrap_used)]

#[path = "../examples/fuzz_stable.rs"]
#[allow(dead_code)]
mod fuzz_stable;

#[test]
fn every_decoder_survives_a_thousand_mutated_inputs() {
    let seeds = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    assert!(
        seeds.join("wire_gossip").exists(),
        "seeds missing: {}",
        seeds.display()
    );
    for t in fuzz_stable::TARGETS {
        let r = fuzz_stable::run_target(t, &seeds, 1_000, 12, None);
        assert_eq!(
            r.crashes, 0,
            "{}: {} crashing inputs (rerun the driver to save them)",
            r.target, r.crashes
        );
    }
}
