//! PNG charts of a training run: the loss, and the four schedules (lr, weight decay, teacher
//! momentum, teacher temperature).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

static FONT: Once = Once::new();

fn font() {
    FONT.call_once(|| {
        // the embedded DejaVu Sans: plots need no system fonts
        let _ =
            plotters::style::register_font("sans-serif", FontStyle::Normal, crate::builtin::FONT);
    });
}

/// One series: `(x, y)` points and a label.
pub struct Series<'a> {
    pub label: &'a str,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
}

/// A line chart with one or more series sharing axes.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[Series],
) -> anyhow::Result<()> {
    font();
    dino_core::atomic_replace(path, |tmp| {
        let root = BitMapBackend::new(tmp, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root, title, x_label, series)?;
        root.present()?;
        Ok(())
    })
}

/// Several charts stacked in a grid (one per series), e.g. the schedules.
pub fn chart_grid(path: &Path, x_label: &str, charts: &[(&str, Series)]) -> anyhow::Result<()> {
    font();
    dino_core::atomic_replace(path, |tmp| {
        let root = BitMapBackend::new(tmp, (1000, 650)).into_drawing_area();
        root.fill(&WHITE)?;
        let cols = 2;
        let rows = charts.len().div_ceil(cols);
        for (area, (title, s)) in root.split_evenly((rows, cols)).iter().zip(charts) {
            draw(area, title, x_label, std::slice::from_ref(s))?;
        }
        root.present()?;
        Ok(())
    })
}

fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    series: &[Series],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        if y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .label_style(("sans-serif", 13))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| {
            if *v == 0.0 || (1e-2..1e4).contains(&v.abs()) {
                format!("{v:.3}")
            } else {
                format!("{v:.1e}")
            }
        })
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for s in series {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(s.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}
