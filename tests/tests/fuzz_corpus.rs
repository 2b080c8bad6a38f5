//! The gateway fuzz targets' committed corpora, replayed on stable Rust in the ordinary suite:
//! every input in `gateway/fuzz/corpus/TARGET/` goes through the same check the libFuzzer
//! target runs (`gateway/fuzz/checks.rs`), plus a few absurd inputs of our own. A crash the
//! fuzzer found is kept there as a regression.

#[path = "../../gateway/fuzz/checks.rs"]
mod checks;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../gateway/fuzz/corpus")
        .join(target);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            out.push((path, bytes));
        }
    }
    out
}

#[test]
fn every_committed_fuzz_input_is_handled_without_a_panic() {
    for (target, check) in checks::TARGETS {
        let inputs = corpus(target);
        assert!(!inputs.is_empty(), "no corpus for {target}");
        for (path, bytes) in inputs {
            let r = std::panic::catch_unwind(|| check(&bytes));
            assert!(r.is_ok(), "{target} panicked on {}", path.display());
        }
    }
}

#[test]
fn absurd_inputs_are_refused_not_crashed_on() {
    let huge = vec![b'9'; 1 << 20];
    let absurd: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0],
        vec![0xff; 4096],
        huge.clone(),
        b"{\"amount_fen\": 1e400, \"by\": \"S1\"}".to_vec(),
        b"{\"amount_fen\": 9223372036854775808, \"by\": \"S1\"}".to_vec(),
        b"{\"by\": \"\\ud800\"}".to_vec(),
        "[".repeat(100_000).into_bytes(),
        b"resident_id,name\n\xff\xfe,\"\n".to_vec(),
        b"[[periods]]\nname=\"x\"\nstart=\"25:00\"\nend=\"00:00\"\nprice_fen=-1\n".to_vec(),
        b"data_dir = 1\n[central]\nurl = \"\"\n".to_vec(),
    ];
    for (target, check) in checks::TARGETS {
        for input in &absurd {
            let r = std::panic::catch_unwind(|| check(input));
            assert!(
                r.is_ok(),
                "{target} panicked on an absurd input of {} bytes",
                input.len()
            );
        }
    }
}
