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
    /// A logarithmic y axis (latency percentiles that span microseconds to milliseconds); points at or below
    /// 0 are not drawn.
    pub log_y: bool,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// Builds one panel's chart on `$b` with x range `$x` and y range `$y`, draws its mesh and series.
macro_rules! panel_chart {
    ($b:expr, $x:expr, $y:expr, $panel:expr, $x_label:expr) => {{
        let mut chart = $b.build_cartesian_2d($x, $y).map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc($x_label)
            .y_desc(&$panel.y_label)
            .x_label_formatter(&|v| short(*v))
            .y_label_formatter(&|v| short(*v))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        series(&mut chart, $panel)?;
    }};
}

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
        // A log y axis starts a little below the smallest positive value (points at 0 are left out).
        let positive = panel.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|y| *y > 0.0);
        let y0_log = (bounds(positive).0 * 0.8).min(y1 / 10.0).max(1e-12);
        let mut b = ChartBuilder::on(area);
        b.caption(&panel.title, ("sans-serif", 20)).margin(12).x_label_area_size(40).y_label_area_size(70);
        let log_range = (x0.max(1e-9)..x1.max(x0 * 1.0001)).log_scale();
        let lin_range = x0.min(0.0)..x1.max(x0 + 1.0) * 1.02;
        match (log_x, panel.log_y) {
            (true, true) => panel_chart!(b, log_range, (y0_log..y1).log_scale(), panel, x_label),
            (true, false) => panel_chart!(b, log_range, 0f64..y1, panel, x_label),
            (false, true) => panel_chart!(b, lin_range, (y0_log..y1).log_scale(), panel, x_label),
            (false, false) => panel_chart!(b, lin_range, 0f64..y1, panel, x_label),
        }
    }
    root.present().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}

fn series<'a, DB, X, Y>(chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>, panel: &Panel) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let keep = |p: &(f64, f64)| !panel.log_y || p.1 > 0.0;
    for (i, s) in panel.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(s.points.iter().copied().filter(keep), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(s.points.iter().copied().filter(keep).map(|p| Circle::new(p, 3, color.filled())))
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

/// 1000 → "1k", 1000000 → "1M", 0.25 → "0.25" (at most 3 significant digits).
fn short(v: f64) -> String {
    let (x, unit) = if v.abs() >= 1e6 {
        (v / 1e6, "M")
    } else if v.abs() >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if x == 0.0 { 0 } else { (2 - x.abs().log10().floor() as i32).clamp(0, 6) as usize };
    let t = format!("{x:.digits$}");
    let t = if t.contains('.') { t.trim_end_matches('0').trim_end_matches('.').to_string() } else { t };
    format!("{t}{unit}")
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
            log_y: false,
        };
        draw(&path, "connections", true, &[panel("one"), panel("two")]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        for text in ["alpha", "beta", "one", "two", "connections", "1M", "10k"] {
            assert!(svg.contains(text), "{text} missing");
        }
        draw(&path, "bytes", false, &[panel("lin")]).unwrap();
        let mut log = panel("log");
        log.log_y = true;
        log.series[1].points.push((2e6, 0.0));
        draw(&path, "bytes", false, &[log]).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("log"));
        assert!(draw(&path, "x", false, &[]).is_err());
        assert_eq!(
            [short(1e6), short(2500.0), short(0.25), short(12.0), short(0.0)],
            ["1M", "2.5k", "0.25", "12", "0"]
        );
    }
}
