//! Every mode against the built-in server: the default set, `-a`, `-e`, a seeded ERROR server
//! and `--name-by country`.

use predicates::prelude::*;
use slow_server::{ServerConfig, country_codes, plan_for};

use crate::util::{Scratch, TestResult, counts, flags, gif_path};

const MODES: [&str; 4] = ["sequential", "threads", "async", "processes"];

#[test]
fn default_set_in_every_mode() -> TestResult {
    for mode in MODES {
        let scratch = Scratch::new()?;
        let output = flags(scratch.path())
            .args(["--mode", mode])
            .assert()
            .success()
            .get_output()
            .clone();
        let stdout = String::from_utf8(output.stdout)?;
        assert!(
            stdout.starts_with("BUILTIN site: http://127.0.0.1:"),
            "{stdout}"
        );
        assert!(
            stdout.contains("Searching for 20 flags: from BD to VN\n"),
            "{stdout}"
        );
        let connections = if mode == "sequential" {
            "1 connection will be used.\n"
        } else {
            "20 concurrent connections will be used.\n"
        };
        assert!(stdout.contains(connections), "{mode}: {stdout}");
        assert!(
            stdout.contains("\n 20 flags downloaded.\nElapsed time: "),
            "{stdout}"
        );
        // The default --dest is ./downloaded.
        let mut saved: Vec<String> = std::fs::read_dir(scratch.path().join("downloaded"))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        saved.sort();
        let mut expected: Vec<String> = [
            "CN", "IN", "US", "ID", "BR", "PK", "NG", "BD", "RU", "JP", "MX", "PH", "VN", "ET",
            "EG", "DE", "IR", "TR", "CD", "FR",
        ]
        .iter()
        .map(|cc| format!("{cc}.gif"))
        .collect();
        expected.sort();
        assert_eq!(saved, expected, "{mode}");
    }
    Ok(())
}

// The other tests share one in-process server per test rather than start the built-in one
// in every run: generating the built-in flag set dominates a debug build's run time.

/// Runs `flags ARGS` in every mode against the built-in flag set; checks the "Searching"
/// line, the counts and that `dest` holds exactly the 194 flags.
fn whole_set_in_every_mode(
    args: &[&str],
    searching: &str,
    expected: (usize, usize, usize),
) -> TestResult {
    let server = slow_server::start(ServerConfig::new())?;
    for mode in MODES {
        let scratch = Scratch::new()?;
        let output = flags(scratch.path())
            .args(args)
            .args(["--mode", mode, "--dest", "dest", "-s", &server.flags_url()])
            .assert()
            .success()
            .stdout(predicate::str::contains(searching))
            .get_output()
            .clone();
        assert_eq!(counts(&output.stdout), expected, "{mode}");
        scratch.assert_clean(194);
    }
    Ok(())
}

#[test]
fn all_in_every_mode() -> TestResult {
    whole_set_in_every_mode(
        &["-a"],
        "Searching for 194 flags: from AD to ZW\n",
        (194, 0, 0),
    )
}

#[test]
fn every_in_every_mode() -> TestResult {
    whole_set_in_every_mode(
        &["-e", "-m", "100"],
        "Searching for 676 flags: from AA to ZZ\n",
        (194, 482, 0),
    )
}

#[test]
fn seeded_error_server_in_every_mode() -> TestResult {
    let config = || ServerConfig::new().error_rate(0.25).seed(7);
    let failing: Vec<&str> = country_codes()
        .iter()
        .copied()
        .filter(|cc| plan_for(&config(), &gif_path(cc)).error)
        .collect();
    assert!(!failing.is_empty());
    let server = slow_server::start(config())?;
    for mode in MODES {
        let scratch = Scratch::new()?;
        let output = flags(scratch.path())
            .args([
                "-a",
                "-v",
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
        assert_eq!(
            counts(&output.stdout),
            (194 - failing.len(), 0, failing.len()),
            "{mode}"
        );
        let stdout = String::from_utf8(output.stdout)?;
        assert!(
            stdout.starts_with(&format!("URL site: {}\n", server.flags_url())),
            "{stdout}"
        );
        for cc in &failing {
            assert!(
                stdout.contains(&format!("\n{cc} error: HTTP error 418 - I'm a teapot\n")),
                "{cc}: {stdout}"
            );
            assert!(!scratch.dest().join(format!("{cc}.gif")).exists());
        }
        assert!(stdout.contains("\nBR OK\n") || failing.contains(&"BR"));
        scratch.assert_clean(194 - failing.len());
    }
    Ok(())
}

#[test]
fn name_by_country() -> TestResult {
    for mode in MODES {
        let scratch = Scratch::new()?;
        flags(scratch.path())
            .args([
                "BR",
                "FR",
                "--name-by",
                "country",
                "--mode",
                mode,
                "--dest",
                "dest",
            ])
            .assert()
            .success();
        assert_eq!(scratch.saved(), ["Brazil.gif", "France.gif"], "{mode}");
    }
    Ok(())
}

#[test]
fn letters_and_limit() -> TestResult {
    let scratch = Scratch::new()?;
    flags(scratch.path())
        .args(["b", "zw", "-l", "3", "--dest", "dest"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "Searching for 3 flags: BA, BB, BC\n3 concurrent connections will be used.\n",
        ))
        .stdout(predicate::str::contains(
            "  2 flags downloaded.\n  1 not found.\n",
        ));
    assert_eq!(scratch.saved(), ["BA.gif", "BB.gif"]);
    Ok(())
}
