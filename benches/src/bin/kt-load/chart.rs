//! The cost-per-epoch chart of `docs/performance.md`: seconds per epoch against the
//! number of entries (log scale), one line per cost, as a standalone SVG.

use crate::report::{EpochReport, RunReport};
use std::fmt::Write as _;

/// One line of the chart: its name, colour and value per epoch.
struct Series {
    name: &'static str,
    colour: &'static str,
    value: fn(&EpochReport) -> f64,
}

const SERIES: [Series; 4] = [
    Series {
        name: "publish (akd, commit, head)",
        colour: "#1f77b4",
        value: |e| e.publish_secs,
    },
    Series {
        name: "audit blob",
        colour: "#ff7f0e",
        value: |e| e.audit_blob_secs,
    },
    Series {
        name: "publish + audit blob",
        colour: "#2ca02c",
        value: |e| e.publish_secs + e.audit_blob_secs,
    },
    Series {
        name: "auditor verification",
        colour: "#d62728",
        value: |e| e.auditor_verify_secs,
    },
];

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// A "nice" step for about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// The chart of `runs` (sorted by entries).
pub fn svg(runs: &[RunReport]) -> String {
    let points: Vec<(f64, Vec<f64>)> = runs
        .iter()
        .filter(|r| !r.epochs.is_empty() && r.entries > 0)
        .map(|r| {
            let values = SERIES.iter().map(|s| r.mean(s.value)).collect();
            ((r.entries as f64).log10(), values)
        })
        .collect();
    let updates = runs.first().map_or(0, |r| r.updates_per_epoch);
    let lo = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min).floor();
    let hi = points.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max).ceil();
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (5.0, 8.0)
    };
    let ymax_data = points.iter().flat_map(|p| p.1.iter().copied()).fold(1.0, f64::max);
    let step = tick_step(ymax_data * 1.1);
    let ymax = (ymax_data * 1.1 / step).ceil() * step;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |v: f64| LEFT + (v - lo) / (hi - lo) * pw;
    let y = |v: f64| TOP + ph - v / ymax * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="{W}" height="{H}" fill="#fff"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="22" font-size="14" font-weight="bold">Seconds per epoch of {updates} rotations, against entries in the directory</text>"##
    );
    // Axes and grid.
    let mut t = 0.0;
    while t <= ymax + 1e-9 {
        let yy = y(t);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{t}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0
        );
        t += step;
    }
    let mut d = lo;
    while d <= hi + 1e-9 {
        let xx = x(d);
        let label = match d as i64 {
            3 => "1k".to_owned(),
            4 => "10k".to_owned(),
            5 => "100k".to_owned(),
            6 => "1M".to_owned(),
            7 => "10M".to_owned(),
            8 => "100M".to_owned(),
            9 => "1B".to_owned(),
            e => format!("1e{e}"),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + ph,
            TOP + ph + 18.0
        );
        d += 1.0;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">entries (log scale)</text>"##,
        LEFT + pw / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        s,
        r##"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">seconds per epoch</text>"##,
        TOP + ph / 2.0
    );
    // Lines, points and legend.
    for (i, series) in SERIES.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(lx, v)| format!("{:.1},{:.1}", x(*lx), y(v[i])))
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"##,
            path.join(" "),
            series.colour
        );
        for (lx, v) in &points {
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"><title>{}: {:.1} s</title></circle>"##,
                x(*lx),
                y(v[i]),
                series.colour,
                series.name,
                v[i]
            );
        }
        let ly = TOP + 10.0 + i as f64 * 20.0;
        let lx = LEFT + pw + 16.0;
        let _ = writeln!(
            s,
            r##"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            lx + 20.0,
            series.colour,
            lx + 26.0,
            ly + 4.0,
            series.name
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(100.0), 20.0);
        assert_eq!(tick_step(7.0), 2.0);
        assert_eq!(tick_step(0.9), 0.2);
    }
}
