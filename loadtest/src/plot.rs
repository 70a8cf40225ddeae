//! `--plot FILE.svg`: a run's delivery latency (p50, p99 and max of each second) and delivery
//! rate over time, one chart above the other, from the report's `latency_by_second`. The
//! figures in BENCHMARKS.md that show a run over time are drawn with this.

use std::path::Path;

use plotters::prelude::*;

use crate::report::SecondRow;

const W: u32 = 960;
const H: u32 = 640;

/// Writes the SVG; `title` names the run (mode and parameters).
pub fn write(path: &Path, title: &str, rows: &[SecondRow]) -> anyhow::Result<()> {
    if rows.is_empty() {
        anyhow::bail!("--plot: no deliveries to draw");
    }
    let root = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(err)?;
    let (top, bottom) = root.split_vertically(H / 2 - 10);
    let last = rows.last().map_or(1, |r| r.second + 1);

    let max_ms = rows
        .iter()
        .map(|r| r.max_ms.max(r.p99_ms))
        .fold(0.1f64, f64::max)
        * 1.1;
    let mut lat = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .caption("delivery latency per second (ms)", ("sans-serif", 14))
        .build_cartesian_2d(0u64..last, 0f64..max_ms)
        .map_err(err)?;
    lat.configure_mesh()
        .x_desc("second of the run")
        .y_desc("ms")
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()
        .map_err(err)?;
    type Series = (&'static str, RGBColor, fn(&SecondRow) -> f64);
    let series: [Series; 3] = [
        ("p50", RGBColor(59, 130, 246), |r| r.p50_ms),
        ("p99", RGBColor(234, 88, 12), |r| r.p99_ms),
        ("max", RGBColor(120, 120, 120), |r| r.max_ms),
    ];
    for (name, color, f) in series {
        lat.draw_series(LineSeries::new(
            rows.iter().map(|r| (r.second, f(r))),
            color.stroke_width(2),
        ))
        .map_err(err)?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    lat.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    let max_rate = rows.iter().map(|r| r.delivered).max().unwrap_or(1).max(1) as f64 * 1.1;
    let mut rate = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .caption("deliveries per second", ("sans-serif", 14))
        .build_cartesian_2d(0u64..last, 0f64..max_rate)
        .map_err(err)?;
    rate.configure_mesh()
        .x_desc("second of the run")
        .y_desc("deliveries/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    rate.draw_series(LineSeries::new(
        rows.iter().map(|r| (r.second, r.delivered as f64)),
        RGBColor(22, 163, 74).stroke_width(2),
    ))
    .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("--plot: {e:?}")
}
