//! SVG line plots for `vswitch-bench sweep` (plotters' SVG back-end: text is written as SVG text, no font
//! files are read). One or more panels stacked vertically, sharing the x axis; each panel has named series.

use plotters::prelude::*;
use std::path::Path;

/// One line.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend.
    pub name: String,
    /// Points (x, y), in x order.
    pub points: Vec<(f64, f64)>,
}

/// One chart.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Caption above the chart.
    pub title: String,
    /// The y axis' label.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// Draws `panels` into an SVG file at `path`; `log_x` for a logarithmic x axis (values must be > 0).
pub fn draw(path: &Path, x_label: &str, log_x: bool, panels: &[Panel]) -> anyhow::Result<()> {
    anyhow::ensure!(!panels.is_empty(), "nothing to plot");
    let height = 420 * panels.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let areas = root.split_evenly((panels.len(), 1));
    let xs = panels.iter().flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (x0, x1) = bounds(xs);
    for (area, panel) in areas.iter().zip(panels) {
        let ys = panel.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
        let (_, y1) = bounds(ys);
        let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.1 };
        let mut b = ChartBuilder::on(area);
        b.caption(&panel.title, ("sans-serif", 20)).margin(12).x_label_area_size(40).y_label_area_size(70);
        if log_x {
            let mut chart = b
                .build_cartesian_2d((x0.max(1e-9)..x1.max(x0 * 1.0001)).log_scale(), 0f64..y1)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(&panel.y_label)
                .x_label_formatter(&|v| short(*v))
                .draw()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            series(&mut chart, panel)?;
        } else {
            let mut chart = b
                .build_cartesian_2d(x0.min(0.0)..x1.max(x0 + 1.0) * 1.02, 0f64..y1)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            chart.configure_mesh().x_desc(x_label).y_desc(&panel.y_label).draw().map_err(|e| anyhow::anyhow!("{e}"))?;
            series(&mut chart, panel)?;
        }
    }
    root.present().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}

fn series<'a, DB: DrawingBackend + 'a, X: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>,
    panel: &Panel,
) -> anyhow::Result<()> {
    for (i, s) in panel.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.filter(|x| x.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)))
}

/// 1000 → "1k", 1000000 → "1M".
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg_with_every_series_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let panel = |t: &str| Panel {
            title: t.into(),
            y_label: "Mpps".into(),
            series: vec![
                Series { name: "alpha".into(), points: vec![(1.0, 2.0), (10.0, 3.0), (1e6, 1.0)] },
                Series { name: "beta".into(), points: vec![(1.0, 1.0), (1e6, 0.5)] },
            ],
        };
        draw(&path, "connections", true, &[panel("one"), panel("two")]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        for text in ["alpha", "beta", "one", "two", "connections", "1M"] {
            assert!(svg.contains(text), "{text} missing");
        }
        draw(&path, "bytes", false, &[panel("lin")]).unwrap();
        assert!(draw(&path, "x", false, &[]).is_err());
    }
}
