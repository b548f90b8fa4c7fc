//! `--svg FILE`: latency percentile curves drawn with `plotters`.
//!
//! The x axis is the percentile on a "nines" scale (50, 90, 99, 99.9, ...),
//! where tail latency lives; the y axis is latency in milliseconds.

use crate::fanout::Percentiles;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// Position of quantile `q` on the nines scale: 0.5 -> 0.3, 0.9 -> 1, 0.99 -> 2.
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-5).log10()
}

pub fn percentile_plot(path: &Path, title: &str, series: &[(&str, &Percentiles)]) -> Result<()> {
    let drawable: Vec<_> = series.iter().filter(|(_, p)| !p.curve.is_empty()).collect();
    if drawable.is_empty() {
        return Err(anyhow!("no latency was measured, so there is nothing to plot"));
    }
    let y_max = drawable.iter().flat_map(|(_, p)| p.curve.iter().map(|&(_, us)| us / 1000.0)).fold(0.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..nines(1.0), 0.0..y_max.max(0.001))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| {
            let percent = format!("{:.3}", 100.0 * (1.0 - 10f64.powf(-x)));
            percent.trim_end_matches('0').trim_end_matches('.').to_owned()
        })
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (name, p)) in drawable.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = p.curve.iter().map(|&(q, us)| (nines(q), us / 1000.0)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(points.into_iter().map(|pt| Circle::new(pt, 3, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
