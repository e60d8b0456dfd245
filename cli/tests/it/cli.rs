//! End-to-end tests of the `qkd` binary.

use crate::common::{ok, qkd};

use std::path::Path;

use qkd_core::BitBlock;
use qkd_core::amplify::toeplitz_reference;
use qkd_core::dataset::Manifest;

#[test]
fn sim_writes_a_pair_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let json = ok(&[
        "sim", "--bits", "10000", "--qber", "0.05", "--seed", "3", "--out", d, "--name", "p",
        "--json",
    ]);
    let entry: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(entry["bits"], 10000);
    assert_eq!(entry["errors"], 500);
    let manifest = Manifest::load(dir.path()).unwrap();
    let e = manifest.get("p").unwrap();
    let (a, b) = qkd_core::dataset::load_pair(dir.path(), e).unwrap();
    assert_eq!(a.hamming_distance(&b).unwrap(), 500);
    // Without a seed the OS CSPRNG is used and recorded.
    ok(&[
        "sim", "--bits", "1000", "--qber", "0.1", "--model", "burst", "--out", d, "--name", "q",
    ]);
    let manifest = Manifest::load(dir.path()).unwrap();
    assert_eq!(manifest.get("q").unwrap().simulation.rng, "os");
    assert_eq!(manifest.get("q").unwrap().simulation.seed, None);
}

#[test]
fn sim_rejects_bad_input_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = qkd(&[
        "sim",
        "--bits",
        "100",
        "--qber",
        "0.7",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0.7"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn demo_json_on_the_embedded_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let json = ok(&["demo", "--json", "--out", dir.path().to_str().unwrap()]);
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).expect("stdout is one JSON object");
    assert_eq!(v["dataset"], "iid-2pct");
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 4);
    let (mut final_bits, mut auth_bits) = (0, 0);
    for b in blocks {
        let q = b["qber"].as_f64().unwrap();
        assert!(
            q > 0.005 && q < 0.04,
            "observed {q} far from the dataset's 2 %"
        );
        assert!(b["qber_upper"].as_f64().unwrap() >= q);
        assert_eq!(b["residual_errors"], 0);
        assert_eq!(b["outcome"]["kind"], "key");
        assert_eq!(b["entropy"], "pass");
        let bits = b["final_bits"].as_u64().unwrap();
        let file = dir
            .path()
            .join(format!("block-{:06}.key", b["index"].as_u64().unwrap()));
        assert_eq!(std::fs::metadata(&file).unwrap().len(), bits.div_ceil(8));
        final_bits += bits;
        // Every block's two transcript tags took two pads (and one block the link's hash key).
        let auth = b["auth_bits"].as_u64().unwrap();
        assert!(auth == 256 || auth == 384, "{b}");
        auth_bits += auth;
    }
    assert_eq!(v["summary"]["final_bits"].as_u64().unwrap(), final_bits);
    assert_eq!(v["summary"]["auth_bits"].as_u64().unwrap(), auth_bits);
    // The two-site path: two `qkd serve` processes post-processed a simulated device.
    let kme = &v["kme"];
    assert_eq!(kme["bytes_match"], true, "{kme}");
    assert_eq!(kme["keys"], 4, "{kme}");
    assert!(kme["blocks_kept"].as_u64().unwrap() >= 1, "{kme}");
    let q = kme["qber"].as_f64().unwrap();
    assert!(q > 0.005 && q < 0.04, "{kme}");
}

#[test]
fn process_writes_keys_reports_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&[
        "sim", "--bits", "200000", "--qber", "0.03", "--seed", "4", "--out", d, "--name", "p",
    ]);
    let out = dir.path().join("out");
    let a = dir.path().join("p.alice.bin");
    let b = dir.path().join("p.bob.bin");
    // `qkd process` of Alice's key and `bob`, then `extra`.
    let process = |bob: &Path, extra: &[&str]| {
        let mut args = vec![
            "process",
            "--alice",
            a.to_str().unwrap(),
            "--bob",
            bob.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        qkd(&args)
    };
    let sized = ["--block-bits", "65536", "--sample-bits", "2048"];
    let stdout = |o: std::process::Output| {
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        text
    };
    let json = stdout(process(
        &b,
        &[&sized[..], &["--algorithm", "yanetal", "--json"]].concat(),
    ));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["blocks"], 3);
    assert_eq!(v["ignored_tail_bits"], 200000 - 3 * 65536);
    let lines = std::fs::read_to_string(out.join("reports.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3);
    let keys = std::fs::read_dir(&out).unwrap().filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".key")
    });
    assert_eq!(keys.count() as u64, v["blocks_with_key"].as_u64().unwrap());
    // Unequal inputs, a text file of 0/1 characters and a directory are refused before
    // anything is processed, saying what they are.
    std::fs::write(dir.path().join("short.bin"), [0u8; 100]).unwrap();
    std::fs::write(
        dir.path().join("bits.txt"),
        "0110100111010001\n".repeat(100),
    )
    .unwrap();
    for (bob, says) in [
        (dir.path().join("short.bin"), "must be equal"),
        (
            dir.path().join("bits.txt"),
            "looks like text of '0' and '1'",
        ),
        (dir.path().to_path_buf(), "is a directory"),
    ] {
        let o = process(&bob, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{err}");
    }
    // The table says what the end of the input lost.
    let table = stdout(process(&b, &sized));
    assert!(
        table.contains("ignored tail bits")
            && table.contains(&format!("{} (the input's end", 200000 - 3 * 65536)),
        "{table}"
    );
}

#[test]
fn top_level_help_names_every_subcommand() {
    let help = ok(&["--help"]);
    for sub in [
        "demo", "sim", "process", "amplify", "store", "audit", "serve", "pki", "hsm", "client",
        "keyrate", "bench",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub}:\n{help}"
        );
    }
}

#[test]
fn bench_reconcile_json_and_grid() {
    let json = ok(&[
        "bench",
        "reconcile",
        "--algorithm",
        "yanetal",
        "--qber",
        "0.05",
        "--block-bits",
        "4096",
        "--runs",
        "8",
        "--threads",
        "2",
        "--json",
    ]);
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 1, "--json prints one object and nothing else");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    for field in [
        "algorithm",
        "qber",
        "block_bits",
        "runs",
        "efficiency_mean",
        "efficiency_std",
        "frame_error_rate",
        "round_trips_mean",
        "messages_mean",
        "bits_per_second",
    ] {
        assert!(v.get(field).is_some(), "missing {field}");
    }
    assert_eq!(v["runs"], 8);
    assert_eq!(v["frame_error_rate"], 0.0);
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("grid.json");
    std::fs::write(
        &grid,
        r#"{"algorithm": ["original", "option7"], "qber": [0.01, 0.1], "block_bits": 2048, "runs": 4}"#,
    )
    .unwrap();
    let out = ok(&[
        "bench",
        "reconcile",
        "--grid",
        grid.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.lines().count(), 4);
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["block_bits"], 2048);
    }
}

#[test]
fn demo_on_a_named_dataset_and_a_missing_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets");
    let json = ok(&[
        "demo",
        "--dataset",
        root.to_str().unwrap(),
        "--name",
        "burst-2pct",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["dataset"], "burst-2pct");
    // At 8 % the 2^18-bit blocks yield no key once both sides' Cascade leakage is counted:
    // the demo says why instead of serving nothing.
    let out = qkd(&[
        "demo",
        "--dataset",
        root.to_str().unwrap(),
        "--name",
        "burst-8pct",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no block yielded key"));
    let out = qkd(&[
        "demo",
        "--dataset",
        root.to_str().unwrap(),
        "--name",
        "nope",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[test]
fn amplify_matches_the_reference_and_checks_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let x: Vec<u8> = (0..125u32).map(|i| (i * 37 + 11) as u8).collect(); // 1000 bits
    let s: Vec<u8> = (0..200u32).map(|i| (i * 101 + 7) as u8).collect(); // 1600 bits
    std::fs::write(p("x"), &x).unwrap();
    std::fs::write(p("s"), &s).unwrap();
    ok(&[
        "amplify",
        "--input",
        &p("x"),
        "--seed",
        &p("s"),
        "--output-bits",
        "300",
        "--out",
        &p("y"),
    ]);
    let y = std::fs::read(p("y")).unwrap();
    assert_eq!(y.len(), 38);
    let expect = toeplitz_reference(
        &BitBlock::from_all_bytes(&x),
        &BitBlock::from_bytes(&s, 1299).unwrap(),
        300,
    )
    .unwrap();
    assert_eq!(&y[..], &expect.to_bytes()[..]);
    // --input-bits shorter than the file; the seed then needs only N+M-1 bits.
    ok(&[
        "amplify",
        "--input",
        &p("x"),
        "--input-bits",
        "999",
        "--seed",
        &p("s"),
        "--output-bits",
        "601",
        "--out",
        &p("y2"),
    ]);
    // A seed one bit short of N+M-1 is refused with the count.
    let out = qkd(&[
        "amplify",
        "--input",
        &p("x"),
        "--seed",
        &p("s"),
        "--output-bits",
        "700",
        "--out",
        &p("y3"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1699"), "{err}");
}

#[test]
fn bench_amplify_json_has_the_fields() {
    let json = ok(&[
        "bench",
        "amplify",
        "--block-bits",
        "20000",
        "--ratio",
        "0.25",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["block_bits"], 20000);
    assert_eq!(v["output_bits"], 5000);
    assert!(v["bits_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn process_into_a_store_then_import_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    ok(&[
        "sim",
        "--bits",
        "140000",
        "--qber",
        "0.02",
        "--seed",
        "9",
        "--out",
        &p(""),
        "--name",
        "x",
    ]);
    let json = ok(&[
        "process",
        "--alice",
        &p("x.alice.bin"),
        "--bob",
        &p("x.bob.bin"),
        "--out",
        &p("out"),
        "--block-bits",
        "65536",
        "--sample-bits",
        "2048",
        "--store",
        &p("st"),
        "--link",
        "KME_B",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let with_key = v["blocks_with_key"].as_u64().unwrap();
    assert!(with_key >= 1);
    let s: serde_json::Value =
        serde_json::from_str(ok(&["store", "status", "--store", &p("st"), "--json"]).trim())
            .unwrap();
    assert_eq!(s["links"][0]["link"], "KME_B");
    assert_eq!(s["links"][0]["blocks"].as_u64().unwrap(), with_key);
    // The same key files imported as .cor files into another store; the second import is a no-op.
    let key = p("out/block-000000.key");
    ok(&[
        "store",
        "import",
        "--store",
        &p("st2"),
        "--link",
        "KME_A",
        &key,
    ]);
    let again = ok(&[
        "store",
        "import",
        "--store",
        &p("st2"),
        "--link",
        "KME_A",
        &key,
    ]);
    assert!(again.contains("already present"), "{again}");
    let missing = qkd(&["store", "status", "--store", &p("nope")]);
    assert!(!missing.status.success());
}

/// A store whose index was restored from an older copy is refused; `store burn-after-restore`
/// burns it and it opens again with nothing available. An encrypted store needs its KEK.
#[test]
fn store_burn_after_restore_and_encrypted_status() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    for (name, byte) in [("a.cor", 1u8), ("b.cor", 2u8)] {
        std::fs::write(dir.path().join("keys").join(name), [byte; 64]).unwrap();
    }
    let kek = p("kek");
    std::fs::write(&kek, [7u8; 32]).unwrap();
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600)).unwrap();
    let import = |f: &str| {
        ok(&[
            "store",
            "import",
            "--store",
            &p("st"),
            "--link",
            "KME_B",
            "--kek-file",
            &kek,
            &p(&format!("keys/{f}")),
        ])
    };
    import("a.cor");
    std::fs::copy(p("st/index.redb"), p("index.old")).unwrap();
    import("b.cor");
    std::fs::copy(p("index.old"), p("st/index.redb")).unwrap();
    let status = |extra: &[&str]| {
        let mut args = vec!["store", "status", "--json", "--store"];
        let st = p("st");
        args.push(&st);
        args.extend_from_slice(extra);
        qkd(&args)
    };
    let refused = status(&["--kek-file", &kek]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("burn-after-restore"), "{err}");
    let out = ok(&[
        "store",
        "burn-after-restore",
        "--store",
        &p("st"),
        "--kek-file",
        &kek,
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["rollback_detected"], true);
    assert_eq!(r["links"][0]["bits_burned"], 512);
    let no_kek = status(&[]);
    assert!(!no_kek.status.success());
    let out = status(&["--kek-file", &kek]);
    assert!(out.status.success());
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["encrypted_at_rest"], true);
    assert_eq!(s["links"][0]["bits_available"], 0);
    assert_eq!(s["links"][0]["bits_burned"], 512);
}

#[test]
fn demo_keeps_an_explicit_sample_size_on_the_embedded_dataset() {
    let json = ok(&["demo", "--json", "--no-kme", "--sample-bits", "2048"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(
        blocks.len(),
        4,
        "block size still defaults to 2^18 on the embedded pair"
    );
    for b in blocks {
        assert_eq!(b["sample_bits"], 2048);
        assert_eq!(b["raw_bits"], 1 << 18);
    }
    assert!(v["kme"].is_null());
    // Values equal to the general defaults are explicit too, and win.
    let json = ok(&[
        "demo",
        "--json",
        "--no-kme",
        "--block-bits",
        "1048576",
        "--sample-bits",
        "16384",
    ]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0]["raw_bits"], 1 << 20);
    assert_eq!(blocks[0]["sample_bits"], 16384);
}

#[test]
fn keyrate_prints_every_term_for_both_models() {
    // TLGR, the reference case of docs/security.md (W1): 624408 bits.
    let w1 = "keyrate --model tlgr2012 --n 1000000 --k 100000 --errors 2000 --leak-ec 150000 \
              --tag-bits 50 --json";
    let w1: Vec<&str> = w1.split_whitespace().collect();
    let json = ok(&w1);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["model"], "bb84-tlgr2012");
    assert_eq!(v["bits"], 624_408);
    for term in [
        "qber_deviation",
        "entropy_bits",
        "confirm_cost_bits",
        "secrecy_cost_bits",
    ] {
        assert!(v[term].is_f64(), "{term} missing: {v}");
    }
    // On the ladder: 41 rungs, a little less key.
    let json = ok(&[&w1[..], &["--ladder"]].concat());
    let w: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(w["length_choices"], 41);
    assert!(w["bits"].as_u64() < v["bits"].as_u64());

    // Lim 2014 from a counts file.
    let dir = tempfile::tempdir().unwrap();
    let counts = dir.path().join("counts.json");
    std::fs::write(
        &counts,
        r#"{"intensities": [0.5, 0.2, 0.0002], "probabilities": [0.6, 0.2, 0.2],
            "x": {"detections": [19000000, 2500000, 4000], "errors": [100000, 13000, 800]},
            "z": {"detections": [1200000, 160000, 250], "errors": [6000, 850, 50]}}"#,
    )
    .unwrap();
    let c = counts.to_str().unwrap();
    let json = ok(&[
        "keyrate",
        "--model",
        "lim2014",
        "--counts",
        c,
        "--leak-ec",
        "1200000",
        "--json",
    ]);
    let d: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(d["model"], "decoy-lim2014");
    assert_eq!(d["bits"], 9_557_773);
    assert!(d["s_x1"].as_f64().unwrap() > 1e7 && d["phi_x"].as_f64().unwrap() < 0.02);

    // Bad input: precise messages, no panic.
    std::fs::write(&counts, r#"{"intensities": [0.1, 0.5, 0.2]}"#).unwrap();
    let out = qkd(&[
        "keyrate",
        "--model",
        "lim2014",
        "--counts",
        c,
        "--leak-ec",
        "5",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("probabilities"));
    let out = qkd(&[
        "keyrate",
        "--model",
        "tlgr2012",
        "--n",
        "100",
        "--k",
        "10",
        "--errors",
        "11",
        "--leak-ec",
        "0",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("exceeds"));
    let out = qkd(&["keyrate", "--model", "tlgr2012", "--leak-ec", "0"]);
    assert!(!out.status.success());
}

#[test]
fn bench_link_runs_two_processes_and_both_hold_the_same_keys() {
    let json = ok(&[
        "bench",
        "link",
        "--block-bits",
        "262144",
        "--frame-bits",
        "16384",
        "--sample-bits",
        "8192",
        "--rtt-ms",
        "2",
        "--seconds",
        "0.5",
        "--in-flight",
        "2",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    for field in [
        "raw_bits_per_second",
        "secret_bits_per_second",
        "round_trips_per_block",
        "auth_bits_per_block",
        "efficiency_mean",
        "cpu_seconds_alice",
        "cpu_seconds_bob",
    ] {
        assert!(r[field].as_f64().is_some_and(|v| v > 0.0), "{field}: {r}");
    }
    let blocks = r["blocks"].as_u64().unwrap();
    assert!(blocks >= 1, "{r}");
    assert_eq!(r["blocks_with_key"].as_u64(), Some(blocks), "{r}");
    assert_eq!(r["blocks_failed"].as_u64(), Some(0), "{r}");
    assert_eq!(r["keys_identical"], true, "{r}");
    // Two pads per block, one hash key per link.
    assert!(r["auth_bits_per_block"].as_f64().unwrap() <= 384.0, "{r}");
    // A bad setting is refused before any process starts.
    let out = qkd(&["bench", "link", "--in-flight", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in-flight"));
}
