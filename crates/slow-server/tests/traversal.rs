//! No request reads outside the served root: a list of hostile paths against the directory
//! mode (with symbolic links that leave the root) and the built-in set.

mod common;

use std::net::SocketAddr;

use common::{exchange, get};
use slow_server::{ServerConfig, start};

const SECRET: &str = "TOP-SECRET-DO-NOT-SERVE";

/// Paths that try to leave `/flags/`: none may answer anything but 400 or 404.
fn hostile_paths() -> Vec<String> {
    let mut paths: Vec<String> = [
        "/flags/../secret.txt",
        "/flags/../../secret.txt",
        "/flags/br/../../secret.txt",
        "/flags/./../secret.txt",
        "/flags/%2e%2e/secret.txt",
        "/flags/%2E%2E/secret.txt",
        "/flags/.%2e/secret.txt",
        "/flags/%2e./secret.txt",
        "/flags/%2e%2e%2fsecret.txt",
        "/flags/..%2fsecret.txt",
        "/flags/%2f..%2fsecret.txt",
        "/flags/br%2f..%2f..%2fsecret.txt",
        "/flags/%252e%252e/secret.txt",
        "/flags/..%5csecret.txt",
        "/flags/%5c..%5csecret.txt",
        "/flags/..\\secret.txt",
        "/flags/\\..\\secret.txt",
        "/flags/%c0%ae%c0%ae/secret.txt",
        "/flags/%e0%80%ae%e0%80%ae/secret.txt",
        "/flags/..;/secret.txt",
        "/flags//secret.txt",
        "/flags/%2fetc%2fpasswd",
        "/flags//etc/passwd",
        "/flags/%2f%2fetc/passwd",
        "//etc/passwd",
        "/../etc/passwd",
        "/etc/passwd",
        "/secret.txt",
        "/flags/escape",
        "/flags/escape-dir/secret.txt",
        "/flags/escape-dir/",
        "/flags/absolute/passwd",
        "/flags/absolute/",
        "/flags/br/escape",
        "/flags/secret.txt%00",
        "/flags/secret.txt%00.gif",
        "/flags/br/br.gif%00../../secret.txt",
        "/flags/%00",
        "/flags/%0d%0asecret",
        "/flags/C:%5csecret.txt",
        "/flags/file:%2f%2f%2fetc%2fpasswd",
        "/flags/....//secret.txt",
        "/flags/..../secret.txt",
        "/flags/.../secret.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    paths.push(format!("/flags/{}", "a/".repeat(600)));
    paths.push(format!("/flags/{}", "x".repeat(5000)));
    paths.push(format!("/flags/{}secret.txt", "../".repeat(40)));
    paths.push(format!("/flags/{}secret.txt", "%2e%2e/".repeat(40)));
    paths
}

/// Requests sent raw: they are not valid request lines, or the path is not a path.
fn hostile_requests() -> Vec<&'static [u8]> {
    vec![
        b"GET ../secret.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET secret.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET /flags/\0/../secret.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET /flags/../ secret.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET http://t/flags/../secret.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET file:///etc/passwd HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET /flags/\xff\xfe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET /flags/%%32%65%%32%65/secret.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ]
}

/// A served root with a secret beside it and links that leave it.
struct Layout {
    _dir: tempfile::TempDir,
    served: std::path::PathBuf,
}

fn layout() -> Layout {
    let dir = tempfile::tempdir().expect("temp dir");
    let served = dir.path().join("served");
    std::fs::create_dir_all(served.join("br")).expect("mkdir");
    std::fs::write(served.join("br/br.gif"), b"GIF89a-test").expect("write");
    std::fs::write(dir.path().join("secret.txt"), SECRET).expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        symlink(dir.path().join("secret.txt"), served.join("escape")).expect("link");
        symlink("../../secret.txt", served.join("br/escape")).expect("link");
        symlink(dir.path(), served.join("escape-dir")).expect("link");
        symlink("/etc", served.join("absolute")).expect("link");
        symlink("br", served.join("inside")).expect("link");
    }
    Layout { _dir: dir, served }
}

fn assert_refused(addr: SocketAddr, label: &str, status: u16, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    assert!(
        matches!(status, 400 | 404 | 414 | 431),
        "{label}: status {status}"
    );
    assert!(!text.contains(SECRET), "{label}: leaked the secret");
    assert!(!text.contains("root:"), "{label}: leaked /etc/passwd");
    assert!(!text.contains("passwd"), "{label}: listed /etc ({addr})");
}

fn check_all(addr: SocketAddr) {
    for path in hostile_paths() {
        let response = get(addr, &path);
        assert_refused(addr, &path, response.status, &response.body);
    }
    for raw in hostile_requests() {
        let bytes = exchange(addr, raw);
        let label = String::from_utf8_lossy(raw).into_owned();
        // A request hyper rejects gets 400 or a closed connection, never content.
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(SECRET) && !text.contains("root:"),
            "{label}: leaked"
        );
        if let Some((response, _)) = common::parse(&bytes, false) {
            assert_refused(addr, &label, response.status, &response.body);
        }
    }
}

#[test]
fn hostile_paths_read_nothing_outside_the_served_directory() {
    let layout = layout();
    let server = start(ServerConfig::new().dir(&layout.served)).expect("start");
    let addr = server.local_addr();
    // The layout works: the file and a link that stays inside are served.
    assert_eq!(get(addr, "/flags/br/br.gif").body, b"GIF89a-test");
    #[cfg(unix)]
    assert_eq!(get(addr, "/flags/inside/br.gif").body, b"GIF89a-test");
    check_all(addr);
}

#[test]
fn hostile_paths_find_nothing_in_the_builtin_set() {
    let server = start(ServerConfig::new()).expect("start");
    check_all(server.local_addr());
}

#[test]
fn listings_do_not_follow_links_out() {
    let layout = layout();
    let server = start(ServerConfig::new().dir(&layout.served)).expect("start");
    let listing = get(server.local_addr(), "/flags/").text();
    // The names of the links are listed (as http.server does), their targets are not served.
    assert!(listing.contains("escape"));
    assert!(!listing.contains(SECRET));
}

/// Serves `br/br.gif` until it is cached, then replaces it with a link to the secret.
#[cfg(unix)]
fn replace_cached_file_with_link_out(interval: std::time::Duration) -> common::Response {
    let layout = layout();
    let config = ServerConfig::new()
        .dir(&layout.served)
        .file_check_interval(interval);
    let server = start(config).expect("start");
    let addr = server.local_addr();
    let gif = layout.served.join("br/br.gif");
    assert_eq!(get(addr, "/flags/br/br.gif").status, 200);
    assert_eq!(get(addr, "/flags/br/br.gif").status, 200);
    std::fs::remove_file(&gif).expect("remove");
    let secret = layout.served.parent().expect("parent").join("secret.txt");
    std::os::unix::fs::symlink(secret, &gif).expect("link");
    get(addr, "/flags/br/br.gif")
}

#[cfg(unix)]
#[test]
fn a_cached_file_replaced_by_a_link_out_is_refused() {
    let response = replace_cached_file_with_link_out(std::time::Duration::ZERO);
    assert_refused(
        "127.0.0.1:0".parse().expect("addr"),
        "replaced by a link",
        response.status,
        &response.body,
    );
}

#[cfg(unix)]
#[test]
fn within_the_check_interval_the_old_bytes_are_served_never_the_link() {
    let response = replace_cached_file_with_link_out(std::time::Duration::from_secs(3600));
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"GIF89a-test");
}

/// Issue 17, point 8: special files in the served directory are refused at once, and the server
/// goes on serving. (The race itself, a FIFO renamed over a file between the type check and
/// `open()`, is `content::tests::issue_17_a_fifo_at_open_time_is_refused_without_blocking`:
/// the server now opens first and checks the descriptor, so a FIFO is refused whenever it
/// arrives.)
#[cfg(unix)]
#[test]
fn a_fifo_in_the_served_directory_is_404_and_blocks_nothing() {
    let layout = layout();
    let fifo = layout.served.join("br/pipe.gif");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let link = layout.served.join("br/to-pipe.gif");
    std::os::unix::fs::symlink("pipe.gif", &link).expect("link");
    let config = ServerConfig::new()
        .dir(&layout.served)
        .file_check_interval(std::time::Duration::ZERO);
    let server = start(config).expect("start");
    let addr = server.local_addr();
    for path in [
        "/flags/br/pipe.gif",
        "/flags/br/to-pipe.gif",
        "/flags/br/pipe.gif/",
    ] {
        assert_eq!(get(addr, path).status, 404, "{path}");
    }
    assert_eq!(get(addr, "/flags/br/br.gif").body, b"GIF89a-test");
    assert!(get(addr, "/flags/br/").text().contains("pipe.gif"));
}
