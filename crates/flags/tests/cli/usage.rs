//! Usage errors (exit 2, `*** Usage error: …` and the usage line) and other exit statuses.

use predicates::prelude::*;

use crate::util::{Scratch, TestResult, flags};

#[test]
fn usage_errors_exit_2() -> TestResult {
    let scratch = Scratch::new()?;
    std::fs::write(scratch.path().join("file"), b"x")?;
    for (args, reason) in [
        (&["ABC"][..], "invalid country code \"ABC\""),
        (&["B1"], "invalid country code"),
        (&["-m", "0"], "--max-req must be at least 1"),
        (&["-l", "0"], "--limit must be at least 1"),
        (&["-s", "NOWHERE"], "unknown server \"NOWHERE\""),
        (&["-s", "ftp://example.com"], "unknown server"),
        (&["--timeout", "0"], "--timeout"),
        (&["--dest", "file"], "cannot write to --dest file"),
        (&["--dest", "file/below"], "cannot write to --dest"),
    ] {
        flags(scratch.path())
            .args(args)
            .assert()
            .code(2)
            .stdout("")
            .stderr(predicate::str::starts_with(format!(
                "*** Usage error: {reason}"
            )))
            .stderr(predicate::str::contains("\nUsage: flags [OPTIONS] [CC]..."));
    }
    assert!(!scratch.path().join("downloaded").exists());
    Ok(())
}

#[test]
fn clap_errors_exit_2() -> TestResult {
    let scratch = Scratch::new()?;
    for args in [
        &["-a", "-e"][..],
        &["-a", "BR"],
        &["--mode", "fast"],
        &["-m", "x"],
        &["--bogus"],
    ] {
        flags(scratch.path()).args(args).assert().code(2).stdout("");
    }
    flags(scratch.path())
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("--max-req"));
    Ok(())
}

#[test]
fn not_found_alone_exits_0() -> TestResult {
    let scratch = Scratch::new()?;
    flags(scratch.path())
        .args(["AA", "--dest", "dest"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "  0 flags downloaded.\n  1 not found.\n",
        ));
    scratch.assert_clean(0);
    Ok(())
}

#[test]
fn dest_is_created() -> TestResult {
    let scratch = Scratch::new()?;
    flags(scratch.path())
        .args(["BR", "--dest", "dest/a/b"])
        .assert()
        .success();
    assert!(scratch.dest().join("a/b/BR.gif").is_file());
    Ok(())
}
