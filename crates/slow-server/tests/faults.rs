//! Fault injection: delays within their bounds, the error rate within a tolerance, the 418
//! reason phrase, and seeded determinism that matches `plan_for`.

mod common;

use std::time::{Duration, Instant};

use common::{get, gif_path};
use slow_server::{ServerConfig, country_codes, plan_for, start};

/// Timing slack for a loaded machine: only upper bounds get it, lower bounds are exact.
const SLACK: Duration = Duration::from_secs(3);

fn timed_get(addr: std::net::SocketAddr, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let status = get(addr, path).status;
    (status, started.elapsed())
}

#[test]
fn delays_fall_within_the_bounds() {
    let (min, max) = (Duration::from_millis(200), Duration::from_millis(400));
    let server = start(ServerConfig::new().delay(min, max)).expect("start");
    let addr = server.local_addr();
    let started = Instant::now();
    let timings: Vec<(u16, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = country_codes()[..16]
            .iter()
            .map(|cc| scope.spawn(move || timed_get(addr, &gif_path(cc))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    for (status, elapsed) in &timings {
        assert_eq!(*status, 200);
        assert!(
            *elapsed >= min,
            "answered after {elapsed:?}, before the minimum delay"
        );
        assert!(*elapsed <= max + SLACK, "answered after {elapsed:?}");
    }
    // The 16 delays ran at the same time, not one after another.
    assert!(started.elapsed() < min * 16, "{:?}", started.elapsed());
}

#[test]
fn errors_and_404s_are_delayed_too() {
    let delay = Duration::from_millis(150);
    let server = start(ServerConfig::new().delay(delay, delay).error_rate(1.0)).expect("start");
    let (status, elapsed) = timed_get(server.local_addr(), "/flags/br/br.gif");
    assert_eq!(status, 418);
    assert!(elapsed >= delay);
    let server = start(ServerConfig::new().delay(delay, delay)).expect("start");
    let (status, elapsed) = timed_get(server.local_addr(), "/no/such/thing");
    assert_eq!(status, 404);
    assert!(elapsed >= delay);
}

#[test]
fn the_error_rate_holds_over_many_requests() {
    let server = start(ServerConfig::new().error_rate(0.25)).expect("start");
    let addr = server.local_addr();
    let requests = 800;
    let errors = (0..requests)
        .filter(|i| {
            let cc = country_codes()[i % country_codes().len()];
            let response = get(addr, &gif_path(cc));
            assert!(matches!(response.status, 200 | 418));
            response.status == 418
        })
        .count();
    // Expected 200, standard deviation about 12: 140..=260 is five deviations either way.
    assert!(
        (140..=260).contains(&errors),
        "{errors} errors in {requests} requests"
    );
}

#[test]
fn errors_are_i_m_a_teapot() {
    let server = start(ServerConfig::new().error_rate(1.0)).expect("start");
    let response = get(server.local_addr(), "/flags/br/br.gif");
    assert_eq!(response.status, 418);
    assert_eq!(response.reason, "I'm a Teapot");
    assert_eq!(
        response.header("content-length"),
        Some(response.body.len().to_string().as_str())
    );
}

#[test]
fn rates_zero_and_one_are_exact() {
    let never = start(ServerConfig::new().error_rate(0.0)).expect("start");
    let always = start(ServerConfig::new().error_rate(1.0)).expect("start");
    for cc in &country_codes()[..50] {
        assert_eq!(get(never.local_addr(), &gif_path(cc)).status, 200);
        assert_eq!(get(always.local_addr(), &gif_path(cc)).status, 418);
    }
}

#[test]
fn a_seed_fixes_each_paths_verdict_as_plan_for_says() {
    let config = ServerConfig::new().error_rate(0.5).seed(2024);
    let first = start(config.clone()).expect("start");
    let second = start(config.clone()).expect("start");
    let mut errors = 0;
    for cc in country_codes() {
        let path = gif_path(cc);
        let expected = if plan_for(&config, &path).error {
            418
        } else {
            200
        };
        errors += usize::from(expected == 418);
        for round in 0..2 {
            assert_eq!(
                get(first.local_addr(), &path).status,
                expected,
                "{path}, round {round}"
            );
        }
        assert_eq!(
            get(second.local_addr(), &path).status,
            expected,
            "{path} on a second server"
        );
    }
    assert!(errors > 50 && errors < 144, "{errors}");
}

#[test]
fn a_seed_fixes_each_paths_delay_as_plan_for_says() {
    let config = ServerConfig::new()
        .delay(Duration::ZERO, Duration::from_millis(600))
        .seed(7);
    let server = start(config.clone()).expect("start");
    let addr = server.local_addr();
    std::thread::scope(|scope| {
        for cc in &country_codes()[..12] {
            let config = &config;
            scope.spawn(move || {
                let path = gif_path(cc);
                let plan = plan_for(config, &path);
                let (status, elapsed) = timed_get(addr, &path);
                assert_eq!(status, 200);
                assert!(
                    elapsed >= plan.delay,
                    "{path}: {elapsed:?} < {:?}",
                    plan.delay
                );
                assert!(elapsed <= plan.delay + SLACK, "{path}: {elapsed:?}");
            });
        }
    });
}

#[test]
fn different_seeds_give_different_verdicts() {
    let a = ServerConfig::new().error_rate(0.5).seed(1);
    let b = ServerConfig::new().error_rate(0.5).seed(2);
    let differ = country_codes()
        .iter()
        .filter(|cc| plan_for(&a, &gif_path(cc)).error != plan_for(&b, &gif_path(cc)).error)
        .count();
    assert!(differ > 50, "{differ}");
}

#[test]
fn without_a_seed_verdicts_vary_between_requests() {
    let config = ServerConfig::new().error_rate(0.5);
    let verdicts: std::collections::HashSet<bool> = (0..64)
        .map(|_| plan_for(&config, "/flags/br/br.gif").error)
        .collect();
    assert_eq!(verdicts.len(), 2);
}
