//! The bench's pictures, in one SVG: the timelines of the median run of every mode and max_req
//! (one panel each, one lane per connection or worker, one bar per request coloured by outcome,
//! the ideal marked), then a bar chart of the elapsed times.
//!
//! Request bars are the only `<rect>`s filled with an outcome colour: the legend draws its
//! swatches as thick lines, so a reader (and the tests) can count the requests in the file.

use std::fmt::Display;

use flags_engine::DownloadStatus;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Bench, Row};

/// Width of the picture, in pixels.
const WIDTH: u32 = 1000;
/// Height of the title and legend band.
const HEADER: u32 = 70;
const FONT: &str = "sans-serif";

/// The fill of a request bar with this outcome.
pub(crate) fn colour(status: DownloadStatus) -> RGBColor {
    match status {
        DownloadStatus::Ok => RGBColor(0x2c, 0xa0, 0x2c),
        DownloadStatus::NotFound => RGBColor(0xf0, 0xa0, 0x20),
        DownloadStatus::Error => RGBColor(0xd6, 0x27, 0x28),
    }
}

/// The legend's name of a request with this outcome.
fn legend(status: DownloadStatus) -> &'static str {
    match status {
        DownloadStatus::Ok => "OK",
        DownloadStatus::NotFound => "not found",
        DownloadStatus::Error => "error",
    }
}

/// The ideal (greedy schedule) marker.
const IDEAL: RGBColor = RGBColor(0x1f, 0x3a, 0x93);
/// The lower-bound marker.
const BOUND: RGBColor = RGBColor(0x99, 0x99, 0x99);
/// The elapsed-time bars.
const BAR: RGBColor = RGBColor(0x5b, 0x8d, 0xc9);

fn failed(error: impl Display) -> anyhow::Error {
    anyhow::anyhow!("{error}")
}

/// Lanes drawn for a row: those used, or more if the trace names more.
fn lanes(row: &Row) -> usize {
    let traced = row
        .median_run()
        .into_iter()
        .flat_map(|run| &run.requests)
        .map(|r| r.lane)
        .filter(|&lane| lane != usize::MAX)
        .max()
        .map_or(0, |lane| lane + 1);
    row.lanes.max(traced).max(1)
}

/// The plot height of a timeline panel with `lanes` lanes.
fn panel_height(lanes: usize) -> u32 {
    let lanes = u32::try_from(lanes).unwrap_or(u32::MAX);
    90 + lanes.saturating_mul(8).clamp(40, 360)
}

/// An axis label: as many decimals as the axis's span needs (`20`, `1.5`, `0.25`).
fn seconds_label(x: f64, span: f64) -> String {
    match span {
        s if s >= 20.0 => format!("{x:.0}"),
        s if s >= 2.0 => format!("{x:.1}"),
        _ => format!("{x:.2}"),
    }
}

/// Renders the picture as an SVG document.
///
/// # Errors
///
/// A drawing failure (plotters reports them; none is expected when drawing to a string).
pub(crate) fn render(bench: &Bench) -> anyhow::Result<String> {
    let panels: Vec<u32> = bench.rows.iter().map(|r| panel_height(lanes(r))).collect();
    let bars_height = 110 + 40 * u32::try_from(bench.rows.len()).unwrap_or(u32::MAX);
    let height = HEADER + panels.iter().sum::<u32>() + bars_height;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let (header, mut rest) = root.split_vertically(HEADER);
        draw_header(&header, bench)?;
        for (row, &h) in bench.rows.iter().zip(&panels) {
            let (panel, below) = rest.split_vertically(h);
            draw_timeline(&panel, row)?;
            rest = below;
        }
        draw_bars(&rest, bench)?;
        root.present().map_err(failed)?;
    }
    Ok(svg)
}

/// The title and the legend.
fn draw_header(area: &DrawingArea<SVGBackend<'_>, Shift>, bench: &Bench) -> anyhow::Result<()> {
    let server = match bench.delay {
        Some((min, max, _, seed)) => format!(
            "built-in server, delays {}–{} s (seed {seed})",
            super::short_secs(min),
            super::short_secs(max)
        ),
        None => bench.url.clone(),
    };
    let load = bench.load.map_or_else(String::new, |(before, after)| {
        format!("; {} CPUs, load {before:.1}→{after:.1}", bench.cpus)
    });
    let title = format!(
        "flags bench: {} codes, {server}; median of {} run{}{load}",
        bench.codes,
        bench.runs,
        if bench.runs == 1 { "" } else { "s" }
    );
    area.draw(&Text::new(title, (20, 12), (FONT, 20).into_font()))
        .map_err(failed)?;
    let label = (FONT, 14).into_font();
    let mut x = 20;
    let mut item = |colour: RGBColor, width: u32, text: &str| -> anyhow::Result<()> {
        let y = 50;
        area.draw(&PathElement::new(
            vec![(x, y), (x + 24, y)],
            colour.stroke_width(width),
        ))
        .map_err(failed)?;
        area.draw(&Text::new(text.to_owned(), (x + 30, y - 8), label.clone()))
            .map_err(failed)?;
        x += 40 + 8 * i32::try_from(text.len()).unwrap_or(0);
        Ok(())
    };
    for status in DownloadStatus::ALL {
        item(colour(status), 10, &format!("request: {}", legend(status)))?;
    }
    item(IDEAL, 3, "ideal (greedy schedule)")?;
    item(BOUND, 3, "lower bound")?;
    Ok(())
}

/// One panel: the median run of a row, a bar per request on its lane.
fn draw_timeline(area: &DrawingArea<SVGBackend<'_>, Shift>, row: &Row) -> anyhow::Result<()> {
    let lanes = lanes(row);
    let Some(run) = row.median_run() else {
        return Ok(());
    };
    let end = run
        .requests
        .iter()
        .map(|r| r.end)
        .fold(run.elapsed.as_secs_f64(), f64::max);
    let ideal = row.ideal.map(|i| i.greedy.as_secs_f64());
    let x_max = end.max(ideal.unwrap_or(0.0)).max(1e-3) * 1.03;
    let caption = format!(
        "{} (max_req {}, {} lane{}): {:.3} s{}",
        row.mode.name(),
        row.max_req,
        lanes,
        if lanes == 1 { "" } else { "s" },
        run.elapsed.as_secs_f64(),
        match (ideal, row.ratio()) {
            (Some(ideal), Some(ratio)) => format!(", ideal {ideal:.3} s, ratio {ratio:.3}"),
            _ => String::new(),
        }
    );
    let lanes_f = lanes as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 16))
        .margin_left(20)
        .margin_right(30)
        .margin_top(8)
        .margin_bottom(4)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..x_max, (lanes_f - 0.5)..-0.5f64)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("seconds from the start of the run")
        .y_desc("lane")
        .y_labels(lanes.min(8))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_label_formatter(&|x| seconds_label(*x, x_max))
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .draw()
        .map_err(failed)?;
    // At least a pixel wide, so a very short request stays visible.
    let min_width = x_max / f64::from(WIDTH);
    let half = if lanes > 40 { 0.4 } else { 0.35 };
    chart
        .draw_series(run.requests.iter().map(|r| {
            let lane = r.lane.min(lanes - 1) as f64;
            let end = r.end.max(r.start + min_width);
            let mut bar = Rectangle::new(
                [(r.start, lane - half), (end, lane + half)],
                colour(r.outcome).filled(),
            );
            // A pixel of white between back-to-back requests on a lane.
            if end - r.start > 3.0 * min_width {
                bar.set_margin(0, 0, 0, 1);
            }
            bar
        }))
        .map_err(failed)?;
    if let Some(i) = row.ideal {
        for (at, colour, width) in [
            (i.lower_bound.as_secs_f64(), BOUND, 2),
            (i.greedy.as_secs_f64(), IDEAL, 3),
        ] {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(at, -0.5), (at, lanes_f - 0.5)],
                    colour.stroke_width(width),
                )))
                .map_err(failed)?;
        }
    }
    Ok(())
}

/// The elapsed times: a bar per row (the median), its min–max, and its ideal.
fn draw_bars(area: &DrawingArea<SVGBackend<'_>, Shift>, bench: &Bench) -> anyhow::Result<()> {
    let n = bench.rows.len();
    let x_max = bench
        .rows
        .iter()
        .map(|r| {
            let ideal = r.ideal.map_or(0.0, |i| i.greedy.as_secs_f64());
            r.min_max().1.as_secs_f64().max(ideal)
        })
        .fold(1e-3, f64::max)
        * 1.25;
    let names: Vec<String> = bench
        .rows
        .iter()
        .map(|r| format!("{} -m {}", r.mode.name(), r.max_req))
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Elapsed time per mode (median; whisker: min–max; blue tick: ideal)",
            (FONT, 16),
        )
        .margin_left(20)
        .margin_right(30)
        .margin_top(12)
        .margin_bottom(8)
        .x_label_area_size(36)
        .y_label_area_size(130)
        .build_cartesian_2d(0f64..x_max, (0..n.saturating_sub(1)).into_segmented())
        .map_err(failed)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("seconds")
        .y_labels(n.max(1))
        .y_label_formatter(&|y| match y {
            // The first row on top.
            SegmentValue::CenterOf(i) => n
                .checked_sub(i + 1)
                .and_then(|row| names.get(row))
                .cloned()
                .unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_formatter(&|x| seconds_label(*x, x_max))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 13))
        .draw()
        .map_err(failed)?;
    for (row_index, row) in bench.rows.iter().enumerate() {
        // The first row on top.
        let i = n - 1 - row_index;
        let median = row.median().as_secs_f64();
        let (min, max) = row.min_max();
        let (min, max) = (min.as_secs_f64(), max.as_secs_f64());
        // Segment i is 40 pixels high; the bar leaves 8 above and below.
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (median, SegmentValue::Exact(i + 1)),
            ],
            BAR.filled(),
        );
        bar.set_margin(8, 8, 0, 0);
        chart.draw_series(std::iter::once(bar)).map_err(failed)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![
                    (min, SegmentValue::CenterOf(i)),
                    (max, SegmentValue::CenterOf(i)),
                ],
                BLACK.stroke_width(2),
            )))
            .map_err(failed)?;
        if let Some(ideal) = row.ideal {
            let at = ideal.greedy.as_secs_f64();
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![
                        (at, SegmentValue::Exact(i)),
                        (at, SegmentValue::Exact(i + 1)),
                    ],
                    IDEAL.stroke_width(3),
                )))
                .map_err(failed)?;
        }
        let label = match bench.speedup(row) {
            Some(s) if row.mode != flags_engine::Mode::Sequential => {
                format!("{median:.3} s, {s:.1}× sequential")
            }
            _ => format!("{median:.3} s"),
        };
        chart
            .draw_series(std::iter::once(Text::new(
                label,
                (max.max(median) + x_max * 0.01, SegmentValue::CenterOf(i)),
                (FONT, 13).into_font(),
            )))
            .map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use flags_engine::DownloadStatus as Status;
    use flags_engine::{Mode, TraceLine};

    use super::super::ideal::Ideal;
    use super::super::measure::Run;
    use super::*;

    fn request(code: &str, lane: usize, start: f64, end: f64, status: Status) -> TraceLine {
        TraceLine {
            code: code.into(),
            lane,
            start,
            end,
            attempts: 1,
            outcome: status,
        }
    }

    fn run(elapsed_ms: u64, requests: Vec<TraceLine>) -> Run {
        Run {
            elapsed: Duration::from_millis(elapsed_ms),
            wall: Duration::from_millis(elapsed_ms + 5),
            peak_rss_kib: Some(10_000),
            downloaded: 0,
            not_found: 0,
            errors: 0,
            requests,
        }
    }

    fn row(mode: Mode, lanes: usize, runs: Vec<Run>) -> Row {
        Row {
            mode,
            max_req: lanes,
            lanes,
            runs,
            untraced: Vec::new(),
            ideal: Some(Ideal {
                greedy: Duration::from_millis(20),
                lower_bound: Duration::from_millis(15),
            }),
            extra_per_request: None,
        }
    }

    #[test]
    fn one_bar_per_request_of_the_median_run() -> Result<(), Box<dyn std::error::Error>> {
        let sequential = vec![
            request("AA", 0, 0.0, 0.01, Status::NotFound),
            request("BR", 0, 0.01, 0.02, Status::Ok),
            request("DE", 0, 0.02, 0.02, Status::Error),
        ];
        let threads = vec![
            request("AA", 0, 0.0, 0.01, Status::NotFound),
            request("BR", 1, 0.0, 0.012, Status::Ok),
            // A panicked task's record has no lane: drawn on the last one, not lost.
            request("??", usize::MAX, 0.013, 0.013, Status::Error),
        ];
        let bench = Bench {
            server: "BUILTIN",
            url: "http://127.0.0.1:1/flags".into(),
            codes: 3,
            runs: 3,
            delay: Some((Duration::from_millis(1), Duration::from_millis(9), 0.0, 1)),
            ideal_source: "seed",
            record_ns: 50.0,
            trace_line_ns: 500.0,
            cpus: 2,
            load: None,
            rows: vec![
                row(Mode::Sequential, 1, vec![run(30, sequential)]),
                // Three runs: only the median one (25 ms) is drawn.
                row(
                    Mode::Threads,
                    2,
                    vec![
                        run(40, threads.clone()),
                        run(25, threads.clone()),
                        run(10, threads[..1].to_vec()),
                    ],
                ),
            ],
        };
        let svg = render(&bench)?;
        let doc = roxmltree::Document::parse(&svg)?;
        let bars = |status: Status| {
            let (r, g, b) = colour(status).rgb();
            let hex = format!("#{r:02X}{g:02X}{b:02X}");
            doc.descendants()
                .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some(&*hex))
                .count()
        };
        assert_eq!(bars(Status::Ok), 2);
        assert_eq!(bars(Status::NotFound), 2);
        assert_eq!(bars(Status::Error), 2);
        Ok(())
    }
}
