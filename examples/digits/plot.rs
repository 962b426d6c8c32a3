//! The loss curve, drawn with `plotters` (a well-kept plotting crate; criterion already depends on
//! it, so it adds nothing to the build) into an SVG string.

use plotters::prelude::*;

/// One curve: legend name, colour, points (x, y).
pub struct Series<'a> {
    pub name: &'a str,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

/// A line chart of `series` as an SVG document (y from 0, x over the points' range).
pub fn line_chart(title: &str, xlabel: &str, ylabel: &str, series: &[Series<'_>]) -> String {
    let pts = || series.iter().flat_map(|s| s.points.iter().copied());
    let x0 = pts().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x1 = pts().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let y1 = pts().map(|p| p.1).fold(0.0, f64::max) * 1.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 400)).into_drawing_area();
        root.fill(&WHITE).expect("draw");
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1.max(x0 + 1.0), 0.0..y1.max(1e-9))
            .expect("chart");
        chart
            .configure_mesh()
            .x_desc(xlabel)
            .y_desc(ylabel)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .expect("mesh");
        for s in series {
            let color = s.color;
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
                .expect("series")
                .label(s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .expect("legend");
        root.present().expect("svg");
    }
    svg
}
