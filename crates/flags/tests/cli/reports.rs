//! `--json` (one object on stdout, its schema), `-v` lines and `--trace`.

use slow_server::{ServerConfig, country_codes, plan_for};

use crate::util::{Scratch, TestResult, flags, gif_path};

#[test]
fn json_schema() -> TestResult {
    let config = || ServerConfig::new().error_rate(0.25).seed(11);
    let errors = country_codes()
        .iter()
        .filter(|cc| plan_for(&config(), &gif_path(cc)).error)
        .count();
    let server = slow_server::start(config())?;
    for mode in ["sequential", "threads", "async", "processes"] {
        let scratch = Scratch::new()?;
        let output = flags(scratch.path())
            .args([
                "-a",
                "-v",
                "--json",
                "--mode",
                mode,
                "--dest",
                "dest",
                "-s",
                &server.flags_url(),
            ])
            .assert()
            .code(1)
            .get_output()
            .clone();
        // -v lines go to stderr with --json; stdout is exactly one JSON object.
        let stderr = String::from_utf8(output.stderr)?;
        assert_eq!(stderr.lines().count(), 194, "{stderr}");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let object = report.as_object().ok_or("not an object")?;
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "concurrency",
                "downloaded",
                "elapsed_secs",
                "error_details",
                "errors",
                "flags",
                "interrupted",
                "mode",
                "not_attempted",
                "not_found",
                "server",
                "url"
            ]
        );
        assert_eq!(report["server"], "URL");
        assert_eq!(report["url"], server.flags_url());
        assert_eq!(report["mode"], mode);
        assert_eq!(report["flags"], 194);
        assert_eq!(
            report["concurrency"],
            if mode == "sequential" { 1 } else { 30 }
        );
        assert_eq!(report["downloaded"], 194 - errors);
        assert_eq!(report["not_found"], 0);
        assert_eq!(report["errors"], errors);
        assert_eq!(report["not_attempted"], 0);
        assert_eq!(report["interrupted"], false);
        assert!(report["elapsed_secs"].as_f64().is_some_and(|s| s >= 0.0));
        let details = report["error_details"].as_array().ok_or("error_details")?;
        assert_eq!(details.len(), errors);
        for detail in details {
            let code = detail["code"].as_str().ok_or("code")?;
            assert!(plan_for(&config(), &gif_path(code)).error, "{code}");
            assert_eq!(detail["message"], "HTTP error 418 - I'm a teapot");
        }
    }
    Ok(())
}

#[test]
fn trace_has_a_line_per_request() -> TestResult {
    // Processes: the workers' times, sent as system time, land on the parent's timeline.
    for mode in ["async", "processes"] {
        trace_of(mode)?;
    }
    Ok(())
}

fn trace_of(mode: &str) -> TestResult {
    let scratch = Scratch::new()?;
    flags(scratch.path())
        .args([
            "-e",
            "-m",
            "7",
            "--mode",
            mode,
            "--dest",
            "dest",
            "--trace",
            "trace.jsonl",
        ])
        .assert()
        .success();
    let trace = std::fs::read_to_string(scratch.path().join("trace.jsonl"))?;
    let lines: Vec<serde_json::Value> = trace
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 676);
    let mut codes: Vec<&str> = lines.iter().filter_map(|l| l["code"].as_str()).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), 676);
    for line in &lines {
        let lane = line["lane"].as_u64().ok_or("lane")?;
        assert!(lane < 7, "{mode}: {line}");
        let (start, end) = (
            line["start"].as_f64().ok_or("start")?,
            line["end"].as_f64().ok_or("end")?,
        );
        assert!(0.0 <= start && start <= end, "{mode}: {line}");
        assert_eq!(line["attempts"], 1);
        assert!(["ok", "not_found"].contains(&line["outcome"].as_str().ok_or("outcome")?));
    }
    Ok(())
}
