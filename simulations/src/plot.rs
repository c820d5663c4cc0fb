//! PNG plots of the matrix (plotters, bitmap backend), each with a title,
//! labelled axes and a legend. The font (DejaVu Sans, `assets/`, with its
//! licence) is compiled in, so a machine without fonts draws the same text.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::matrix::Summary;

const ROBUST: RGBColor = RGBColor(31, 119, 180);
const NAIVE: RGBColor = RGBColor(44, 160, 44);
const SEED: RGBColor = RGBColor(255, 127, 14);
const GUIDE: RGBColor = RGBColor(150, 150, 150);
const POSTERIOR: RGBColor = RGBColor(148, 103, 189);
const LEGION: RGBColor = RGBColor(214, 39, 40);
const THOR: RGBColor = RGBColor(23, 190, 207);
const OPEN: RGBColor = RGBColor(140, 86, 75);

const AGGREGATIONS: [(&str, &str, RGBColor); 3] = [
    ("naive", "naive pooling", NAIVE),
    ("seed_weighting", "seed weighting", SEED),
    ("robust", "robust (the node's policy)", ROBUST),
];

static FONT: Once = Once::new();

/// Register the compiled-in font once per process (ab_glyph has no system fonts).
fn register_font() -> Result<()> {
    let mut result = Ok(());
    FONT.call_once(|| {
        const BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
        if plotters::style::register_font("sans-serif", FontStyle::Normal, BYTES).is_err() {
            result = Err(anyhow!("plot: the compiled-in font did not parse"));
        }
    });
    result
}

fn e<E: std::fmt::Display>(err: E) -> anyhow::Error {
    anyhow!("plot: {err}")
}

/// The summary of one cell of the members' matrix, if it was run.
pub fn find<'a>(
    s: &'a [Summary],
    honest: usize,
    adv: &str,
    agg: &str,
    strat: &str,
) -> Option<&'a Summary> {
    find_in(s, "members", honest, adv, agg, strat)
}

/// The summary of one cell of the `mesh` (`members` or `strangers`) matrix.
pub fn find_in<'a>(
    s: &'a [Summary],
    mesh: &str,
    honest: usize,
    adv: &str,
    agg: &str,
    strat: &str,
) -> Option<&'a Summary> {
    s.iter().find(|x| {
        x.mesh == mesh
            && x.honest == honest
            && x.adversary == adv
            && x.aggregation == agg
            && x.strategy == strat
    })
}

fn canvas(out: &Path, size: (u32, u32)) -> Result<DrawingArea<BitMapBackend<'_>, Shift>> {
    register_font()?;
    let root = BitMapBackend::new(out, size).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    Ok(root)
}

/// A bar of width 0.9 starting at `x0`.
fn bar(x0: f64, height: f64, colour: RGBColor) -> Rectangle<(f64, f64)> {
    Rectangle::new([(x0, 0.0), (x0 + 0.9, height)], colour.filled())
}

fn legend_box(colour: RGBColor) -> impl Fn((i32, i32)) -> Rectangle<(i32, i32)> {
    move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The legend box, and the finished picture.
fn finish<'a>(
    mut chart: Chart<'a, 'a>,
    root: &DrawingArea<BitMapBackend<'a>, Shift>,
    at: SeriesLabelPosition,
    font_size: u32,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", font_size))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Bar charts draw groups 4 units wide: the label of group `g` sits under
/// its middle (x = 4g + 2), every other tick is blank.
fn group_label(x: f64, names: &[String]) -> String {
    let group = (x / 4.0).floor();
    if (x - (group * 4.0 + 2.0)).abs() < 0.5 && group >= 0.0 {
        names.get(group as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

/// `speedup.png`: speedup over a node alone (median rounds to P(best) ≥ 0.9)
/// against the number of honest nodes, one line per aggregation mode among
/// members, the node's policy among strangers, and the ideal N×.
fn speedup(s: &[Summary], out: &Path) -> Result<()> {
    let root = canvas(out, (760, 520))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Speedup over a node alone (posterior strategy)",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..21f64, 0f64..22f64)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("honest nodes N")
        .y_desc("speedup (median rounds alone / with N)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    chart
        .draw_series(LineSeries::new(
            [(1.0, 1.0), (20.0, 20.0)],
            GUIDE.stroke_width(2),
        ))
        .map_err(e)?
        .label("ideal N×")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], GUIDE.stroke_width(2)));
    let mut lines: Vec<(&str, &str, &str, RGBColor)> = AGGREGATIONS
        .iter()
        .map(|(agg, label, c)| ("members", *agg, *label, *c))
        .collect();
    lines.push((
        "strangers",
        "robust",
        "robust, strangers (default trust)",
        OPEN,
    ));
    for (mesh, agg, label, c) in lines {
        let alone =
            find_in(s, mesh, 1, "none", agg, "posterior").map_or(f64::NAN, |x| x.median_rounds);
        let pts: Vec<(f64, f64)> = [1usize, 3, 5, 10, 20]
            .iter()
            .filter_map(|n| {
                find_in(s, mesh, *n, "none", agg, "posterior")
                    .map(|x| (*n as f64, alone / x.median_rounds))
            })
            .filter(|p| p.1.is_finite())
            .collect();
        if pts.is_empty() {
            continue;
        }
        let label = if mesh == "members" {
            format!("{label}, members")
        } else {
            label.to_string()
        };
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], c.stroke_width(3)));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, c.filled())))
            .map_err(e)?;
    }
    finish(chart, &root, SeriesLabelPosition::UpperLeft, 14)
}

/// Grouped bars: one group per case, one bar per aggregation mode, the
/// accuracy at the budget round, and the 95 % goal.
fn accuracy_bars(s: &[Summary], out: &Path, mesh: &str, cases: &[&str], title: &str) -> Result<()> {
    let root = canvas(out, (980, 520))?;
    let xmax = cases.len() as f64 * 4.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..xmax, 0f64..1.25f64)
        .map_err(e)?;
    let names: Vec<String> = cases.iter().map(|c| c.to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(cases.len() * 4)
        .x_label_formatter(&|x| group_label(*x, &names))
        .y_labels(6)
        .y_label_formatter(&|y| {
            if *y <= 1.0 {
                format!("{:.0}%", y * 100.0)
            } else {
                String::new()
            }
        })
        .x_desc("adversary case (N = 10 honest nodes)")
        .y_desc("honest nodes right at the budget round")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    for (j, (agg, label, colour)) in AGGREGATIONS.iter().enumerate() {
        let bars: Vec<_> = cases
            .iter()
            .enumerate()
            .filter_map(|(i, case)| {
                find_in(s, mesh, 10, case, agg, "posterior")
                    .map(|x| bar(i as f64 * 4.0 + 0.5 + j as f64, x.accuracy, *colour))
            })
            .collect();
        if bars.is_empty() {
            continue;
        }
        chart
            .draw_series(bars)
            .map_err(e)?
            .label(*label)
            .legend(legend_box(*colour));
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.95), (xmax, 0.95)],
            GUIDE.stroke_width(2),
        ))
        .map_err(e)?
        .label("goal 95%")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], GUIDE.stroke_width(2)));
    finish(chart, &root, SeriesLabelPosition::UpperRight, 13)
}

/// `regret.png`: mean per-decision regret over the budget by N, one bar per
/// strategy (robust mode, members).
fn regret(s: &[Summary], out: &Path) -> Result<()> {
    let ns = [1usize, 3, 5, 10, 20];
    let strategies = [
        ("posterior", "posterior (metamesh)", POSTERIOR),
        ("legion", "legion (prototype)", LEGION),
        ("thor", "thor (prototype)", THOR),
    ];
    let ymax = s
        .iter()
        .filter(|x| x.adversary == "none" && x.aggregation == "robust")
        .map(|x| x.regret)
        .fold(0.01, f64::max)
        * 1.35;
    let root = canvas(out, (760, 520))?;
    let xmax = ns.len() as f64 * 4.0;
    let names: Vec<String> = ns.iter().map(|n| format!("N = {n}")).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Regret per decision by strategy (robust mode)",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(ns.len() * 4)
        .x_label_formatter(&|x| group_label(*x, &names))
        .x_desc("honest nodes N")
        .y_desc("mean regret per decision (quality lost)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    for (j, (st, label, colour)) in strategies.iter().enumerate() {
        let bars: Vec<_> = ns
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                find(s, *n, "none", "robust", st)
                    .map(|x| bar(i as f64 * 4.0 + 0.5 + j as f64, x.regret, *colour))
            })
            .collect();
        if bars.is_empty() {
            continue;
        }
        chart
            .draw_series(bars)
            .map_err(e)?
            .label(*label)
            .legend(legend_box(*colour));
    }
    finish(chart, &root, SeriesLabelPosition::UpperRight, 13)
}

/// Write `speedup.png`, `accuracy.png`, `accuracy-strangers.png` and
/// `regret.png` into `dir`.
pub fn write_all(s: &[Summary], dir: &Path) -> Result<()> {
    speedup(s, &dir.join("speedup.png"))?;
    accuracy_bars(
        s,
        &dir.join("accuracy.png"),
        "members",
        &crate::matrix::ADVERSARY_CASES,
        "Accuracy under attack, established members",
    )?;
    accuracy_bars(
        s,
        &dir.join("accuracy-strangers.png"),
        "strangers",
        &crate::matrix::OPEN_CASES,
        "Accuracy among strangers (default trust, open mesh)",
    )?;
    regret(s, &dir.join("regret.png"))?;
    Ok(())
}
