//! The running executable: its identity on disk and where its code is mapped (Linux
//! `/proc`). Used to start workers from the very same file and to check, before a
//! function address crosses to a worker, that it points into that file's code.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use super::wire::ExeIdentity;

/// The path that always names this process's own executable, even if the file was
/// replaced or deleted since (Linux keeps the original inode reachable through it).
pub(super) const SELF_EXE: &str = "/proc/self/exe";

/// The identity of the file this process runs, read once (a forked worker inherits the fork
/// server's answer instead of a `stat` through `/proc` of its own). The running file cannot
/// be rewritten in place (`ETXTBSY`) and a rebuild makes a new inode, so only a `touch` of
/// the executable while the program runs would make a later pool's handshakes fail.
pub(super) fn identity() -> std::io::Result<ExeIdentity> {
    static IDENTITY: OnceLock<ExeIdentity> = OnceLock::new();
    if let Some(identity) = IDENTITY.get() {
        return Ok(identity.clone());
    }
    let meta = std::fs::metadata(SELF_EXE)?;
    let identity = ExeIdentity {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
    };
    Ok(IDENTITY.get_or_init(|| identity).clone())
}

/// Reads the code ranges now (the fork server does, so that its workers need not).
pub(super) fn prepare() {
    let _ = code_ranges();
}

/// The address ranges where this executable's code is mapped (executable mappings of
/// the file with our inode), read once.
fn code_ranges() -> &'static [(usize, usize)] {
    static RANGES: OnceLock<Vec<(usize, usize)>> = OnceLock::new();
    RANGES.get_or_init(|| read_code_ranges().unwrap_or_default())
}

fn read_code_ranges() -> std::io::Result<Vec<(usize, usize)>> {
    let ino = identity()?.ino;
    let maps = BufReader::new(std::fs::File::open("/proc/self/maps")?);
    let mut ranges = Vec::new();
    for line in maps.lines() {
        let line = line?;
        // start-end perms offset dev inode path
        let mut fields = line.split_ascii_whitespace();
        let (Some(span), Some(perms), Some(_), Some(_), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        if !perms.contains('x') || inode.parse::<u64>().ok() != Some(ino) {
            continue;
        }
        let Some((start, end)) = span.split_once('-') else {
            continue;
        };
        if let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) {
            ranges.push((start, end));
        }
    }
    Ok(ranges)
}

/// True when `code` lies in this executable's own code (not in a shared library).
pub(super) fn in_own_code(code: *const ()) -> bool {
    let addr = code.addr();
    code_ranges()
        .iter()
        .any(|&(start, end)| (start..end).contains(&addr))
}
