//! The chapter's listings as examples (issue 18): each one runs against an in-process
//! server and prints what the book's script prints.

use std::path::PathBuf;
use std::process::Command;

use super::util::TestResult;

/// The book's 20 codes, sorted.
const POP20_SORTED: [&str; 20] = [
    "BD", "BR", "CD", "CN", "DE", "EG", "ET", "FR", "ID", "IN", "IR", "JP", "MX", "NG", "PH", "PK",
    "RU", "TR", "US", "VN",
];

/// The built example, built now if this test binary was built alone (`cargo test --test
/// cli` builds no examples; `cargo test` does).
fn example(name: &str) -> std::io::Result<PathBuf> {
    let deps = std::env::current_exe()?;
    let debug = deps
        .parent()
        .and_then(|d| d.parent())
        .ok_or_else(|| std::io::Error::other("no target dir"))?;
    let path = debug.join("examples").join(name);
    if !path.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "flags", "--example", name])
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "could not build example {name}"
            )));
        }
    }
    Ok(path)
}

/// Runs an example against its own built-in server and a fresh directory; returns its
/// stdout and the files it saved.
fn run(name: &str) -> Result<(String, Vec<String>), Box<dyn std::error::Error>> {
    let dest = tempfile::tempdir()?;
    let output = Command::new(example(name)?)
        .arg("-d")
        .arg(dest.path())
        .env_remove("FLAGS_SERVER")
        .output()?;
    assert!(
        output.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut saved: Vec<String> = std::fs::read_dir(dest.path())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    saved.sort();
    Ok((String::from_utf8(output.stdout)?, saved))
}

/// Checks the book's output: every code once on the first line, then
/// `N downloads in X.XXs`.
fn assert_book_output(name: &str, stdout: &str, codes: &[&str]) {
    let (first, last) = stdout.trim_end().rsplit_once('\n').unwrap_or(("", stdout));
    let mut printed: Vec<&str> = first.split_whitespace().collect();
    printed.sort_unstable();
    assert_eq!(printed, codes, "{name}: {stdout}");
    let (count, rest) = last.split_once(" downloads in ").unwrap_or_default();
    assert_eq!(count, codes.len().to_string(), "{name}: {stdout}");
    assert!(
        rest.ends_with('s') && rest.trim_end_matches('s').parse::<f64>().is_ok(),
        "{name}: {last}"
    );
}

fn gifs(codes: &[&str]) -> Vec<String> {
    codes.iter().map(|cc| format!("{cc}.gif")).collect()
}

#[test]
fn issue_18_every_pop20_example_prints_the_20_codes_and_the_count() -> TestResult {
    for name in [
        "flags",
        "flags_threadpool",
        "flags_asyncio",
        "flags_processpool",
    ] {
        let (stdout, saved) = run(name)?;
        assert_book_output(name, &stdout, &POP20_SORTED);
        assert_eq!(saved, gifs(&POP20_SORTED), "{name}");
    }
    Ok(())
}

#[test]
fn issue_18_the_sequential_example_prints_in_sorted_order() -> TestResult {
    let (stdout, _) = run("flags")?;
    assert!(stdout.starts_with(&POP20_SORTED.join(" ")), "{stdout}");
    Ok(())
}

#[test]
fn issue_18_the_futures_example_prints_each_future_like_the_book() -> TestResult {
    let (stdout, saved) = run("flags_threadpool_futures")?;
    let five = ["BR", "CN", "ID", "IN", "US"];
    assert_eq!(saved, gifs(&five));
    let scheduled: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("Scheduled for "))
        .collect();
    assert_eq!(scheduled.len(), 5, "{stdout}");
    for (line, cc) in scheduled.iter().zip(five) {
        // `Scheduled for BR: <FutureHandle at 0x… state=…>`
        let rest = line
            .strip_prefix(&format!("Scheduled for {cc}: <FutureHandle at 0x"))
            .unwrap_or_default();
        assert!(rest.contains(" state=") && rest.ends_with('>'), "{line}");
    }
    for cc in five {
        // `<FutureHandle at 0x… state=finished returned String> result: 'BR'`
        let done = format!("state=finished returned String> result: '{cc}'");
        assert!(stdout.contains(&done), "{cc}: {stdout}");
    }
    assert!(
        stdout.trim_end().ends_with('s') && stdout.contains("\n5 downloads in "),
        "{stdout}"
    );
    Ok(())
}
