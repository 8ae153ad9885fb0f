//! The PNG: one panel per workload (grouped bars per phase, log scale, the limits as a last
//! group) and one of the daemons' peak memory. Text is drawn with ab_glyph from a TTF file
//! read at run time (Debian's fonts-dejavu-core), so no fontconfig or freetype is needed.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::WorkloadResult;
use crate::systems::System;
use crate::units::{MIB, fmt_value};

pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn color(s: System) -> RGBColor {
    match s {
        System::Fluid => RGBColor(230, 85, 13),
        System::S3fs => RGBColor(49, 130, 189),
        System::S3fsCache => RGBColor(158, 202, 225),
        System::Rclone => RGBColor(49, 163, 84),
        System::RcloneNewest => RGBColor(161, 217, 155),
        System::Mountpoint => RGBColor(117, 107, 177),
        System::Source => RGBColor(150, 150, 150),
        System::Memory => RGBColor(80, 80, 80),
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e}")
}

pub fn render(path: &Path, title: &str, results: &[WorkloadResult], font: &Path) -> Result<()> {
    let bytes = std::fs::read(font).with_context(|| {
        format!(
            "reading the chart font {} (Debian fonts-dejavu-core)",
            font.display()
        )
    })?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a usable font", font.display()))?;

    let root = BitMapBackend::new(path, (1800, 1560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (head, body) = root.split_vertically(80);
    head.draw(&Text::new(
        title.to_string(),
        (20, 12),
        ("sans-serif", 26).into_font(),
    ))
    .map_err(err)?;
    // The legend, once for all panels.
    let mut x = 20;
    for s in System::ALL {
        if !results.iter().any(|w| w.runs.iter().any(|(x, _)| *x == s)) {
            continue;
        }
        head.draw(&Rectangle::new([(x, 50), (x + 18, 68)], color(s).filled()))
            .map_err(err)?;
        head.draw(&Text::new(
            s.name(),
            (x + 24, 50),
            ("sans-serif", 18).into_font(),
        ))
        .map_err(err)?;
        x += 40 + 11 * s.name().len() as i32;
    }
    let panels = body.split_evenly((3, 2));
    for (panel, w) in panels.iter().zip(results) {
        workload_panel(panel, w)?;
    }
    if let Some(panel) = panels.get(results.len()) {
        rss_panel(panel, results)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

struct Group {
    label: String,
    bars: Vec<(System, Option<f64>, bool)>,
}

fn workload_panel(area: &Area, w: &WorkloadResult) -> Result<()> {
    let Some(kind) = w.kind else { return Ok(()) };
    let metric = kind.main_metric();
    let unit = w.rows.first().map(|r| r.metric.clone()).unwrap_or_default();
    let mut groups: Vec<Group> = kind
        .phases()
        .iter()
        .map(|phase| Group {
            label: phase.to_string(),
            bars: w
                .runs
                .iter()
                .filter(|(s, _)| s.is_mount())
                .map(|(s, r)| {
                    let m = r.phase(phase);
                    (*s, m.map(|m| m.value(metric)), m.is_some_and(|m| m.partial))
                })
                .collect(),
        })
        .collect();
    let limits: Vec<_> = w
        .runs
        .iter()
        .filter(|(s, _)| s.is_limit())
        .map(|(s, r)| (*s, r.phase("limit").map(|m| m.value(metric)), false))
        .collect();
    if !limits.is_empty() {
        groups.push(Group {
            label: "limits".into(),
            bars: limits,
        });
    }
    bars(
        area,
        &format!("{}: {unit} (log scale)", w.workload),
        &unit,
        &groups,
        true,
    )
}

fn rss_panel(area: &Area, results: &[WorkloadResult]) -> Result<()> {
    let groups: Vec<Group> = results
        .iter()
        .map(|w| Group {
            label: w.workload.to_string(),
            bars: w
                .runs
                .iter()
                .filter(|(s, _)| s.is_mount())
                .map(|(s, r)| (*s, r.peak_rss_bytes.map(|b| b as f64 / MIB), false))
                .collect(),
        })
        .collect();
    bars(
        area,
        "daemon peak RSS, MiB (lower is better)",
        "MiB",
        &groups,
        false,
    )
}

fn bars(area: &Area, caption: &str, unit: &str, groups: &[Group], log: bool) -> Result<()> {
    let values: Vec<f64> = groups
        .iter()
        .flat_map(|g| g.bars.iter().filter_map(|b| b.1))
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    if values.is_empty() || groups.is_empty() {
        area.draw(&Text::new(
            format!("{caption}: no figures"),
            (20, 20),
            ("sans-serif", 20).into_font(),
        ))
        .map_err(err)?;
        return Ok(());
    }
    let max = values.iter().cloned().fold(f64::MIN, f64::max);
    let min = values.iter().cloned().fold(f64::MAX, f64::min);
    let n = groups.len();
    let yfmt = |v: &f64| {
        if *v >= 1.0 || *v == 0.0 {
            format!("{v:.0}")
        } else {
            fmt_value(*v)
        }
    };
    let value_style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));

    let label_style =
        TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    let (bx, by) = area.get_base_pixel();
    macro_rules! draw_bars {
        ($chart:expr, $base:expr) => {{
            for (gi, g) in groups.iter().enumerate() {
                let (px, py) = $chart.backend_coord(&(gi as f64 + 0.5, $base));
                area.draw(&Text::new(
                    g.label.clone(),
                    (px - bx, py - by + 8),
                    label_style.clone(),
                ))
                .map_err(err)?;
            }
            for (gi, g) in groups.iter().enumerate() {
                let nb = g.bars.len().max(1) as f64;
                let width = 0.8 / nb;
                for (bi, (sys, v, partial)) in g.bars.iter().enumerate() {
                    let Some(v) = v.filter(|v| *v > 0.0) else {
                        continue;
                    };
                    let x0 = gi as f64 + 0.1 + bi as f64 * width;
                    let x1 = x0 + width * 0.92;
                    $chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(x0, $base), (x1, v)],
                            color(*sys).filled(),
                        )))
                        .map_err(err)?;
                    let star = if *partial { "*" } else { "" };
                    $chart
                        .draw_series(std::iter::once(Text::new(
                            format!("{}{star}", fmt_value(v)),
                            ((x0 + x1) / 2.0, v),
                            value_style.clone(),
                        )))
                        .map_err(err)?;
                }
            }
        }};
    }

    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70);
    if log {
        let (lo, hi) = (min / 3.0, max * 4.0);
        let mut chart = builder
            .build_cartesian_2d(0f64..n as f64, (lo..hi).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&yfmt)
            .y_desc(unit)
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(err)?;
        draw_bars!(chart, lo);
    } else {
        let mut chart = builder
            .build_cartesian_2d(0f64..n as f64, 0f64..max * 1.2)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&yfmt)
            .y_desc(unit)
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(err)?;
        draw_bars!(chart, 0.0);
    }
    Ok(())
}
