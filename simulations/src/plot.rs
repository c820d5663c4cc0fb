//! PNG plots of the matrix (plotters, bitmap backend). They carry no text —
//! no font has to exist on the machine — so axes and colours are described
//! in `docs/learning.md`: blue = robust, green = naive, orange =
//! seed weighting, grey = the ideal or a goal line; purple/red/teal =
//! posterior/legion/thor.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::matrix::Summary;

const ROBUST: RGBColor = RGBColor(31, 119, 180);
const NAIVE: RGBColor = RGBColor(44, 160, 44);
const SEED: RGBColor = RGBColor(255, 127, 14);
const GUIDE: RGBColor = RGBColor(150, 150, 150);
const GRID: RGBColor = RGBColor(225, 225, 225);
const POSTERIOR: RGBColor = RGBColor(148, 103, 189);
const LEGION: RGBColor = RGBColor(214, 39, 40);
const THOR: RGBColor = RGBColor(23, 190, 207);

fn mode_colour(agg: &str) -> RGBColor {
    match agg {
        "robust" => ROBUST,
        "naive" => NAIVE,
        _ => SEED,
    }
}

fn e<E: std::fmt::Display>(err: E) -> anyhow::Error {
    anyhow!("plot: {err}")
}

/// Grid lines every `step` and the two axes.
fn frame<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    x: (f64, f64, f64),
    y: (f64, f64, f64),
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let mut v = x.0;
    while v <= x.1 + 1e-9 {
        chart
            .draw_series(LineSeries::new([(v, y.0), (v, y.1)], GRID))
            .map_err(e)?;
        v += x.2;
    }
    let mut v = y.0;
    while v <= y.1 + 1e-9 {
        chart
            .draw_series(LineSeries::new([(x.0, v), (x.1, v)], GRID))
            .map_err(e)?;
        v += y.2;
    }
    chart
        .draw_series(LineSeries::new(
            [(x.0, y.0), (x.1, y.0)],
            BLACK.stroke_width(2),
        ))
        .map_err(e)?;
    chart
        .draw_series(LineSeries::new(
            [(x.0, y.0), (x.0, y.1)],
            BLACK.stroke_width(2),
        ))
        .map_err(e)?;
    Ok(())
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

/// `speedup.png`: x = honest nodes N (0–21, grid every 5), y = speedup
/// (median rounds alone ÷ median rounds with N; 0–21, grid every 5), posterior
/// strategy; one line per aggregation mode; grey = the ideal N×.
fn speedup(s: &[Summary], out: &Path) -> Result<()> {
    let root = BitMapBackend::new(out, (640, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(24)
        .build_cartesian_2d(0f64..21f64, 0f64..21f64)
        .map_err(e)?;
    frame(&mut chart, (0.0, 21.0, 5.0), (0.0, 21.0, 5.0))?;
    chart
        .draw_series(LineSeries::new(
            [(1.0, 1.0), (20.0, 20.0)],
            GUIDE.stroke_width(2),
        ))
        .map_err(e)?;
    let alone = find(s, 1, "none", "robust", "posterior").map_or(f64::NAN, |x| x.median_rounds);
    for agg in ["naive", "seed_weighting", "robust"] {
        let pts: Vec<(f64, f64)> = [1usize, 3, 5, 10, 20]
            .iter()
            .filter_map(|n| {
                find(s, *n, "none", agg, "posterior").map(|x| (*n as f64, alone / x.median_rounds))
            })
            .filter(|p| p.1.is_finite())
            .collect();
        let c = mode_colour(agg);
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))
            .map_err(e)?;
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 5, c.filled())))
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

/// `accuracy.png`: for each adversary case at N = 10 (left to right:
/// liars 10%, liars 30%, camouflaged 10%, camouflaged 30%, flooders 10%,
/// flooders 30%, Sybil swarm), three bars — naive, seed weighting, robust —
/// of the accuracy at the budget round (y 0–1, grid every 0.1; grey line at
/// the 0.95 goal). Posterior strategy.
fn accuracy(s: &[Summary], out: &Path) -> Result<()> {
    let advs = crate::matrix::ADVERSARY_CASES;
    let root = BitMapBackend::new(out, (800, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let xmax = advs.len() as f64 * 4.0;
    let mut chart = ChartBuilder::on(&root)
        .margin(24)
        .build_cartesian_2d(0f64..xmax, 0f64..1.05f64)
        .map_err(e)?;
    frame(&mut chart, (0.0, xmax, 4.0), (0.0, 1.0, 0.1))?;
    for (i, adv) in advs.iter().enumerate() {
        for (j, agg) in ["naive", "seed_weighting", "robust"].iter().enumerate() {
            if let Some(x) = find(s, 10, adv, agg, "posterior") {
                let x0 = i as f64 * 4.0 + 0.5 + j as f64;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x0, 0.0), (x0 + 0.9, x.accuracy)],
                        mode_colour(agg).filled(),
                    )))
                    .map_err(e)?;
            }
        }
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.95), (xmax, 0.95)],
            GUIDE.stroke_width(2),
        ))
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// `regret.png`: for N = 1, 3, 5, 10, 20 (left to right), three bars —
/// posterior, legion, thor — of the mean per-decision regret over the budget
/// (robust mode; y from 0 to the largest value, grid every 0.01).
fn regret(s: &[Summary], out: &Path) -> Result<()> {
    let ns = [1usize, 3, 5, 10, 20];
    let strategies = [("posterior", POSTERIOR), ("legion", LEGION), ("thor", THOR)];
    let ymax = s
        .iter()
        .filter(|x| x.adversary == "none" && x.aggregation == "robust")
        .map(|x| x.regret)
        .fold(0.01, f64::max)
        * 1.1;
    let root = BitMapBackend::new(out, (640, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let xmax = ns.len() as f64 * 4.0;
    let mut chart = ChartBuilder::on(&root)
        .margin(24)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(e)?;
    frame(&mut chart, (0.0, xmax, 4.0), (0.0, ymax, 0.01))?;
    for (i, n) in ns.iter().enumerate() {
        for (j, (st, colour)) in strategies.iter().enumerate() {
            if let Some(x) = find(s, *n, "none", "robust", st) {
                let x0 = i as f64 * 4.0 + 0.5 + j as f64;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x0, 0.0), (x0 + 0.9, x.regret)],
                        colour.filled(),
                    )))
                    .map_err(e)?;
            }
        }
    }
    root.present().map_err(e)?;
    Ok(())
}

/// Write `speedup.png`, `accuracy.png` and `regret.png` into `dir`.
pub fn write_all(s: &[Summary], dir: &Path) -> Result<()> {
    speedup(s, &dir.join("speedup.png"))?;
    accuracy(s, &dir.join("accuracy.png"))?;
    regret(s, &dir.join("regret.png"))?;
    Ok(())
}
