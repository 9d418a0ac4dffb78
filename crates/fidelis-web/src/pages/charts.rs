//! Charts as SVG, drawn on the server by charts-rs. Every chart on a page stands beside the
//! table of its numbers, so the figures are readable without the picture (and by screen
//! readers).

use charts_rs::{BarChart, LineChart, Series};

const WIDTH: f32 = 640.0;
const HEIGHT: f32 = 300.0;

fn series(list: &[(&str, Vec<f64>)]) -> Vec<Series> {
    list.iter()
        .map(|(name, values)| {
            Series::new(
                (*name).to_owned(),
                values.iter().map(|v| *v as f32).collect(),
            )
        })
        .collect()
}

fn finish(svg: charts_rs::Result<String>) -> String {
    svg.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "a chart could not be drawn");
        String::new()
    })
}

/// Bars per label, one colour per series.
pub fn bars(labels: &[String], list: &[(&str, Vec<f64>)]) -> String {
    let mut chart = BarChart::new(series(list), labels.to_vec());
    chart.width = WIDTH;
    chart.height = HEIGHT;
    finish(chart.svg())
}

/// A line per series over the labels (months, usually).
pub fn lines(labels: &[String], list: &[(&str, Vec<f64>)]) -> String {
    let mut chart = LineChart::new(series(list), labels.to_vec());
    chart.width = WIDTH;
    chart.height = HEIGHT;
    finish(chart.svg())
}
