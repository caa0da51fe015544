//! `flags bench` end to end, against its own in-process server on a loopback port: the `--json`
//! schema, the SVG (well-formed, one bar per request, coloured as the report counts) and the
//! usage errors. Delays of 1–5 ms and a few codes keep it fast; nothing here asserts a time.

use std::path::Path;

use serde_json::Value;

use crate::util::{TestResult, flags};

/// The outcome colours of the request bars (see `src/bench/svg.rs`).
const OK: &str = "#2CA02C";
const NOT_FOUND: &str = "#F0A020";
const ERROR: &str = "#D62728";

/// `flags bench ARGS` in `dir`, proxies removed.
fn bench(dir: &Path, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = flags(dir);
    cmd.arg("bench").args(args);
    cmd
}

/// Codes with flags (BR, DE, FR), without (AA, ZZ), and a seeded error rate: every outcome.
const ARGS: [&str; 16] = [
    "AA",
    "BR",
    "DE",
    "FR",
    "ZZ",
    "-m",
    "2,3",
    "--runs",
    "1",
    "--min-delay",
    "0.001",
    "--max-delay",
    "0.005",
    "--error-rate",
    "0.4",
    "--json",
];

#[test]
fn json_schema_and_svg_bars() -> TestResult {
    let dir = tempfile::tempdir()?;
    let svg = dir.path().join("bench.svg");
    let output = bench(dir.path(), &ARGS).arg("--svg").arg(&svg).output()?;
    assert!(output.status.success(), "{output:?}");
    let json: Value = serde_json::from_slice(&output.stdout)?;

    assert_eq!(json["server"], "BUILTIN");
    assert!(
        json["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:"))
    );
    assert_eq!(json["codes"], 5);
    assert_eq!(json["runs"], 1);
    assert_eq!(json["ideal_source"], "seed");
    assert_eq!(json["delay"]["seed"], 1);
    assert_eq!(json["delay"]["error_rate"], 0.4);
    assert!(json["record_ns"].as_f64().is_some_and(|ns| ns > 0.0));
    assert!(json["trace_line_ns"].as_f64().is_some_and(|ns| ns > 0.0));
    assert!(json["cpus"].as_u64().is_some_and(|n| n >= 1));
    if cfg!(target_os = "linux") {
        assert_eq!(json["load_average"].as_array().map(Vec::len), Some(2));
    }
    let results = json["results"].as_array().ok_or("results")?;
    // Sequential once, then each concurrent mode at -m 2 and -m 3.
    let modes: Vec<(&str, u64)> = results
        .iter()
        .map(|r| {
            (
                r["mode"].as_str().unwrap_or("?"),
                r["max_req"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(modes[0], ("sequential", 1));
    assert!(modes.contains(&("threads", 2)) && modes.contains(&("threads", 3)));
    assert!(modes.contains(&("async", 2)) && modes.contains(&("async", 3)));

    let (mut ok, mut not_found, mut errors) = (0, 0, 0);
    for row in results {
        for key in [
            "median_secs",
            "min_secs",
            "max_secs",
            "ideal_secs",
            "lower_bound_secs",
        ] {
            assert!(row[key].as_f64().is_some_and(|s| s >= 0.0), "{key}: {row}");
        }
        assert!(row["ratio"].as_f64().is_some_and(|r| r > 0.0), "{row}");
        assert!(row["speedup"].as_f64().is_some_and(|s| s > 0.0), "{row}");
        assert!(row["trace_cost_pct"].as_f64().is_some(), "{row}");
        assert!(
            row["extra_per_request_secs"]
                .as_f64()
                .is_some_and(|s| s >= 0.0),
            "{row}"
        );
        assert_eq!(row["elapsed_secs"].as_array().map(Vec::len), Some(1));
        assert!(row["ideal_secs"].as_f64() >= row["lower_bound_secs"].as_f64());
        if cfg!(target_os = "linux") {
            assert!(row["peak_rss_kib"].as_u64().is_some_and(|k| k > 0), "{row}");
        }
        // Untraced runs are measured for the concurrent modes only.
        let concurrent = row["mode"] != "sequential";
        assert_eq!(row["untraced_median_secs"].is_f64(), concurrent, "{row}");
        assert_eq!(row["trace_overhead_wall_pct"].is_f64(), concurrent, "{row}");
        let counts = [&row["downloaded"], &row["not_found"], &row["errors"]]
            .map(|v| v.as_u64().unwrap_or(99));
        assert_eq!(counts.iter().sum::<u64>(), 5, "{row}");
        assert!(counts[1] + counts[2] >= 2, "AA and ZZ are never OK: {row}");
        ok += counts[0];
        not_found += counts[1];
        errors += counts[2];
    }
    // The seeded server gives every row the same verdicts; the 40% rate fails some of them.
    assert!(
        errors > 0 && not_found > 0 && ok > 0,
        "{ok} {not_found} {errors}"
    );

    // The SVG parses, and has exactly one bar per request drawn, in its outcome's colour.
    let text = std::fs::read_to_string(&svg)?;
    let doc = roxmltree::Document::parse(&text)?;
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let bars = |fill: &str| {
        doc.descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some(fill))
            .count() as u64
    };
    assert_eq!(
        (bars(OK), bars(NOT_FOUND), bars(ERROR)),
        (ok, not_found, errors)
    );
    // One panel per mode and max_req, with its caption.
    let captions = doc
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .filter(|t| t.contains("(max_req "))
        .count();
    assert_eq!(captions, results.len());
    Ok(())
}

#[test]
fn table_and_mode_filter() -> TestResult {
    let dir = tempfile::tempdir()?;
    let output = bench(
        dir.path(),
        &[
            "BR",
            "DE",
            "--mode",
            "threads",
            "--runs",
            "2",
            "--min-delay",
            "0.001",
            "--max-delay",
            "0.002",
            "--no-overhead",
        ],
    )
    .output()?;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout)?;
    let header = stdout
        .lines()
        .find(|l| l.starts_with("mode"))
        .ok_or("header")?;
    for column in [
        "max_req",
        "median s",
        "min–max s",
        "ideal s",
        "bound s",
        "ratio",
        "speed-up",
        "peak RSS",
    ] {
        assert!(header.contains(column), "{column}: {header}");
    }
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("threads "))
        .collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    assert!(
        !stdout
            .lines()
            .any(|l| l.starts_with("async") || l.starts_with("sequential"))
    );
    Ok(())
}

#[test]
fn a_real_server_gets_the_ideal_of_the_sequential_run() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ms = std::time::Duration::from_millis;
    let server = slow_server::start(slow_server::ServerConfig::new().delay(ms(1), ms(3)))?;
    let output = bench(
        dir.path(),
        &[
            "BR",
            "DE",
            "FR",
            "-m",
            "2",
            "--runs",
            "1",
            "--no-overhead",
            "--json",
            "--server",
        ],
    )
    .arg(server.flags_url())
    .output()?;
    assert!(output.status.success(), "{output:?}");
    let json: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(json["server"], "URL");
    assert_eq!(json["url"], server.flags_url());
    assert!(json["delay"].is_null());
    assert_eq!(json["ideal_source"], "sequential");
    let results = json["results"].as_array().ok_or("results")?;
    for row in results {
        assert_eq!(row["downloaded"], 3, "{row}");
        assert!(row["ideal_secs"].as_f64().is_some_and(|s| s > 0.0), "{row}");
        // Without seeded delays there is nothing to subtract.
        assert!(row["extra_per_request_secs"].is_null(), "{row}");
        assert!(row["untraced_median_secs"].is_null(), "{row}");
    }
    server.shutdown();
    Ok(())
}

#[test]
fn usage_errors_exit_2() -> TestResult {
    let dir = tempfile::tempdir()?;
    for args in [
        &["-m", "0"][..],
        &["-m", "3,0"],
        &["--runs", "0"],
        &["-l", "0"],
        &["--min-delay", "2", "--max-delay", "1"],
        &["--max-delay", "NaN"],
        &["--error-rate", "1.5"],
        &["--server", "ftp://example.invalid"],
        &["BRA"],
        &["--mode", "carrier-pigeon"],
    ] {
        let output = bench(dir.path(), args).output()?;
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let stderr = String::from_utf8(output.stderr)?;
        assert!(!stderr.trim().is_empty(), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    Ok(())
}
