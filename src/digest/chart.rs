//! The digest's chart, drawn in process: daily spend over the last days,
//! stacked by flow, with the daily cap as a line, and approval decisions
//! by outcome beside it. The font is compiled in, so the PNG is the same on
//! every machine and in a container with no fonts installed.

use std::io::Cursor;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// Pixel size of the chart.
pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 500;

/// DejaVu Sans, compiled in once: the chart and the proposal PDFs
/// (`offers::pdf`) both use it.
pub(crate) const FONT: &[u8] = include_bytes!("font/DejaVuSans.ttf");

/// What the chart shows.
#[derive(Debug, Clone, Default)]
pub struct ChartData {
    /// Day labels ("11-16"), oldest first.
    pub days: Vec<String>,
    /// Per flow, its spend per day (same length as `days`).
    pub flows: Vec<(String, Vec<f64>)>,
    pub daily_cap_usd: f64,
    /// (outcome, count) over the same days.
    pub decisions: Vec<(String, i64)>,
}

#[derive(Debug, thiserror::Error)]
#[error("drawing the digest chart failed: {0}")]
pub struct ChartError(String);

fn error(e: impl std::fmt::Display) -> ChartError {
    ChartError(e.to_string())
}

/// The chart as PNG bytes.
pub fn render_png(data: &ChartData) -> Result<Vec<u8>, ChartError> {
    register_font()?;
    let mut pixels = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(error)?;
        let (left, right) = root.split_horizontally(WIDTH * 68 / 100);
        draw_costs(&left, data)?;
        draw_decisions(&right, data)?;
        root.present().map_err(error)?;
    }
    let image = image::RgbImage::from_raw(WIDTH, HEIGHT, pixels)
        .ok_or_else(|| ChartError("the pixel buffer has the wrong size".into()))?;
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(error)?;
    Ok(png)
}

fn register_font() -> Result<(), ChartError> {
    static REGISTER: Once = Once::new();
    let mut result = Ok(());
    REGISTER.call_once(|| {
        result = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| ChartError("the compiled-in font is not a valid TrueType font".into()));
    });
    result
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw_costs(area: &Area<'_>, data: &ChartData) -> Result<(), ChartError> {
    let days = data.days.len().max(1);
    let totals: Vec<f64> = (0..days)
        .map(|d| {
            data.flows
                .iter()
                .map(|(_, v)| v.get(d).copied().unwrap_or(0.0))
                .sum()
        })
        .collect();
    let top = totals
        .iter()
        .copied()
        .fold(data.daily_cap_usd, f64::max)
        .max(0.01)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption("Daily spend (USD) by flow, daily cap", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..days as f64, 0f64..top)
        .map_err(error)?;
    let labels = data.days.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(days.min(7))
        .x_label_formatter(&|x| labels.get(*x as usize).cloned().unwrap_or_default())
        .y_label_formatter(&|y| format!("{y:.2}"))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(error)?;
    let mut base = vec![0.0; days];
    for (i, (flow, values)) in data.flows.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let bars: Vec<_> = (0..days)
            .map(|d| {
                let value = values.get(d).copied().unwrap_or(0.0);
                let bar = Rectangle::new(
                    [
                        (d as f64 + 0.15, base[d]),
                        (d as f64 + 0.85, base[d] + value),
                    ],
                    color.filled(),
                );
                base[d] += value;
                bar
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(error)?
            .label(flow.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, data.daily_cap_usd), (days as f64, data.daily_cap_usd)],
            RED.stroke_width(2),
        ))
        .map_err(error)?
        .label("daily cap")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 10, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(error)
}

fn draw_decisions(area: &Area<'_>, data: &ChartData) -> Result<(), ChartError> {
    let outcomes = ["approve", "edit", "reject"];
    let counts: Vec<i64> = outcomes
        .iter()
        .map(|o| {
            data.decisions
                .iter()
                .find(|(name, _)| name == o)
                .map(|(_, n)| *n)
                .unwrap_or(0)
        })
        .collect();
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption("Approvals by outcome", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0f64..3f64, 0f64..top)
        .map_err(error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(3)
        .x_label_formatter(&|x| {
            ["approved", "edited", "rejected"]
                .get(x.floor() as usize)
                .map(|s| s.to_string())
                .unwrap_or_default()
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(error)?;
    let colors = [
        RGBColor(44, 160, 44),
        RGBColor(255, 191, 0),
        RGBColor(214, 39, 40),
    ];
    chart
        .draw_series(counts.iter().enumerate().map(|(i, n)| {
            Rectangle::new(
                [(i as f64 + 0.2, 0.0), (i as f64 + 0.8, *n as f64)],
                colors[i].filled(),
            )
        }))
        .map_err(error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_is_a_png_of_the_expected_size() {
        let data = ChartData {
            days: (1..=14).map(|d| format!("11-{d:02}")).collect(),
            flows: vec![
                ("draft".into(), (0..14).map(|d| d as f64 * 0.1).collect()),
                ("(none)".into(), vec![0.05; 14]),
            ],
            daily_cap_usd: 2.0,
            decisions: vec![("approve".into(), 5), ("reject".into(), 1)],
        };
        let png = render_png(&data).unwrap();
        let decoded = image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (WIDTH, HEIGHT));
        // Something was drawn: not every pixel is the white background.
        let rgb = decoded.to_rgb8();
        assert!(rgb.pixels().any(|p| p.0 != [255, 255, 255]));
    }
}
