//! The latency plot for BENCHMARKS.md: each histogram drawn as a percentile distribution
//! (HdrHistogram's classic plot), latency against percentile on a scale that spreads out
//! the tail: 0 %, 90 %, 99 %, 99.9 %, … are equally spaced.
//!
//! Only plotters' SVG backend is used, so no font or image system library is needed; labels
//! are SVG `<text>` elements that the browser renders.

use std::path::Path;

use plotters::prelude::*;

use crate::latency::Latency;

/// Why the plot could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the latency plot: {0}")]
pub struct PlotError(String);

/// Colours of the series, in order (colour-blind-friendly Okabe–Ito hues).
const COLOURS: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

/// The percentile for a position on the x axis (x nines: 1 → 90 %, 2 → 99 %).
fn quantile_at(x: f64) -> f64 {
    1.0 - 10f64.powf(-x)
}

/// `99.9%` for 0.999.
fn percent_label(q: f64) -> String {
    let text = format!("{:.4}", q * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// Writes an SVG percentile plot of `series` (label, histogram) to `path`.
pub fn latency_svg(path: &Path, title: &str, series: &[(&str, &Latency)]) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError(e.to_string());
    let series: Vec<_> = series.iter().filter(|(_, l)| l.count() > 0).collect();
    if series.is_empty() {
        return Err(PlotError("no latencies were recorded".into()));
    }
    // Plot as many nines as the largest sample supports (no 99.99 % from 100 samples).
    let most = series.iter().map(|(_, l)| l.count()).max().unwrap_or(1);
    let nines = (most as f64).log10().floor().clamp(1.0, 5.0);
    let top = series
        .iter()
        .map(|(_, l)| l.quantile_ms(quantile_at(nines)))
        .fold(0.0_f64, f64::max)
        .max(0.001)
        * 1.1;

    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..nines, 0f64..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(nines as usize + 1)
        .x_label_formatter(&|x| percent_label(quantile_at(*x)))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (label, latency)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let steps = 400;
        let points = (0..=steps).map(|s| {
            let x = nines * f64::from(s) / f64::from(steps);
            (x, latency.quantile_ms(quantile_at(x)))
        });
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn labels_percentiles() {
        assert_eq!(percent_label(quantile_at(0.0)), "0%");
        assert_eq!(percent_label(quantile_at(1.0)), "90%");
        assert_eq!(percent_label(quantile_at(3.0)), "99.9%");
    }

    #[test]
    fn writes_an_svg() {
        let mut latency = Latency::new();
        for i in 1..=1000 {
            latency.record(Duration::from_micros(i * 37));
        }
        let path = std::env::temp_dir().join(format!("codraft-plot-{}.svg", std::process::id()));
        latency_svg(&path, "test", &[("round trip", &latency)]).expect("plot");
        let svg = std::fs::read_to_string(&path).expect("written");
        let _ = std::fs::remove_file(&path);
        assert!(svg.contains("<svg") && svg.contains("round trip"));
        assert!(latency_svg(&path, "empty", &[("none", &Latency::new())]).is_err());
    }
}
