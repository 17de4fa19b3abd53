//! The reports' charts, drawn by the service as SVG with `plotters` (as the model plots are):
//! the dashboards fetch them with their token and show them; nothing is drawn by hand in the
//! browser.

use crate::analytics::Report;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::collections::BTreeMap;

pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 320;

const APPROVED: RGBColor = RGBColor(0x1b, 0x7f, 0x4c);
const REVIEW: RGBColor = RGBColor(0xc2, 0x7c, 0x0e);
const DECLINED: RGBColor = RGBColor(0xb4, 0x23, 0x18);
const SERIES: [RGBColor; 4] =
    [RGBColor(0x1f, 0x5f, 0xa8), RGBColor(0xb4, 0x23, 0x18), RGBColor(0x6a, 0x3d, 0x9a), RGBColor(0xc2, 0x7c, 0x0e)];
/// Model versions drawn in one score chart (the most used).
const SCORE_VERSIONS_MAX: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chart {
    /// Payments per period, stacked by the decision: approved, review, declined.
    Outcomes,
    /// Approved and paid amounts per period, in reais.
    Amounts,
    /// Approval, fraud, chargeback and MED rates per period, in percent.
    Rates,
    /// The score distribution by tenths, per model version.
    Scores,
    /// Precision and recall per period over the labelled payments.
    PrecisionRecall,
}

impl Chart {
    pub const ALL: [Chart; 5] = [Chart::Outcomes, Chart::Amounts, Chart::Rates, Chart::Scores, Chart::PrecisionRecall];

    pub fn name(self) -> &'static str {
        match self {
            Chart::Outcomes => "outcomes",
            Chart::Amounts => "amounts",
            Chart::Rates => "rates",
            Chart::Scores => "scores",
            Chart::PrecisionRecall => "precision-recall",
        }
    }

    pub fn parse(file: &str) -> Option<Chart> {
        let name = file.strip_suffix(".svg")?;
        Chart::ALL.into_iter().find(|chart| chart.name() == name)
    }

    pub fn of_models(self) -> bool {
        matches!(self, Chart::Scores | Chart::PrecisionRecall)
    }

    pub fn title(self) -> &'static str {
        match self {
            Chart::Outcomes => "Pagamentos por decisão",
            Chart::Amounts => "Valores aprovados e pagos (R$)",
            Chart::Rates => "Taxas (%)",
            Chart::Scores => "Distribuição dos scores",
            Chart::PrecisionRecall => "Precisão e recall (%)",
        }
    }
}

/// The rows summed per period (a split report drawn whole).
fn per_period(report: &Report) -> Vec<(chrono::NaiveDate, BTreeMap<String, i64>)> {
    let mut periods: BTreeMap<chrono::NaiveDate, BTreeMap<String, i64>> = BTreeMap::new();
    for row in &report.rows {
        let sums = periods.entry(row.period_start).or_default();
        for (name, value) in &row.counts {
            *sums.entry(name.clone()).or_insert(0) += value;
        }
    }
    periods.into_iter().collect()
}

fn get(counts: &BTreeMap<String, i64>, name: &str) -> f64 {
    counts.get(name).copied().unwrap_or(0) as f64
}

fn percent(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0).then(|| 100.0 * numerator / denominator)
}

type Error = String;

pub fn draw(chart: Chart, report: &Report) -> Result<String, Error> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|error| error.to_string())?;
        match chart {
            Chart::Scores => draw_scores(&root, report)?,
            _ => draw_over_time(chart, &root, report)?,
        }
        root.present().map_err(|error| error.to_string())?;
    }
    Ok(svg)
}

/// A stacked bar series: its name, colour and one value per period.
type Bars<'a> = Vec<(&'a str, RGBColor, Vec<f64>)>;
/// A line series: its name, colour and one value per period (none where it has no value).
type Lines<'a> = Vec<(&'a str, RGBColor, Vec<Option<f64>>)>;

type Plot<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The series' names and swatches, in a box at `position`.
fn legend<'a, 'b: 'a>(plot: &mut Plot<'a, 'b>, position: SeriesLabelPosition) -> Result<(), Error> {
    plot.configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(0xcc, 0xcc, 0xcc))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|error| error.to_string())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw_over_time(chart: Chart, root: &Area<'_>, report: &Report) -> Result<(), Error> {
    let periods = per_period(report);
    let labels: Vec<String> = periods.iter().map(|(start, _)| start.format("%d/%m").to_string()).collect();
    // Bars (stacked) or lines, each a name, a colour and one value per period.
    let (bars, lines): (Bars<'_>, Lines<'_>) = match chart {
        Chart::Outcomes => (
            vec![
                ("aprovados", APPROVED, periods.iter().map(|(_, c)| get(c, "approved")).collect()),
                ("em revisão", REVIEW, periods.iter().map(|(_, c)| get(c, "review")).collect()),
                ("recusados", DECLINED, periods.iter().map(|(_, c)| get(c, "declined")).collect()),
            ],
            vec![],
        ),
        Chart::Amounts => (
            vec![],
            vec![
                (
                    "aprovado",
                    APPROVED,
                    periods.iter().map(|(_, c)| Some(get(c, "approved_centavos") / 100.0)).collect(),
                ),
                ("pago", SERIES[0], periods.iter().map(|(_, c)| Some(get(c, "paid_centavos") / 100.0)).collect()),
            ],
        ),
        Chart::Rates => (
            vec![],
            vec![
                (
                    "aprovação",
                    APPROVED,
                    periods.iter().map(|(_, c)| percent(get(c, "approved"), get(c, "payments"))).collect(),
                ),
                (
                    "fraude",
                    DECLINED,
                    periods.iter().map(|(_, c)| percent(get(c, "fraud"), get(c, "labelled"))).collect(),
                ),
                (
                    "chargeback",
                    SERIES[2],
                    periods.iter().map(|(_, c)| percent(get(c, "chargebacks"), get(c, "paid"))).collect(),
                ),
                ("MED", REVIEW, periods.iter().map(|(_, c)| percent(get(c, "med_claims"), get(c, "paid"))).collect()),
            ],
        ),
        Chart::PrecisionRecall => {
            let tp = |c: &BTreeMap<String, i64>| get(c, "true_positives");
            (
                vec![],
                vec![
                    (
                        "precisão",
                        SERIES[0],
                        periods.iter().map(|(_, c)| percent(tp(c), tp(c) + get(c, "false_positives"))).collect(),
                    ),
                    (
                        "recall",
                        DECLINED,
                        periods.iter().map(|(_, c)| percent(tp(c), tp(c) + get(c, "false_negatives"))).collect(),
                    ),
                ],
            )
        }
        Chart::Scores => (vec![], vec![]),
    };
    let stacked_max = (0..periods.len())
        .map(|index| bars.iter().map(|(_, _, values)| values[index]).sum::<f64>())
        .fold(0.0, f64::max);
    let line_max = lines.iter().flat_map(|(_, _, values)| values.iter().flatten()).copied().fold(0.0, f64::max);
    let y_max = match chart {
        Chart::Rates | Chart::PrecisionRecall => 100.0,
        _ => (stacked_max.max(line_max) * 1.1).max(1.0),
    };
    let count = periods.len().max(1);
    let caption = if periods.is_empty() {
        format!("{} — sem pagamentos no período", chart.title())
    } else {
        chart.title().to_owned()
    };
    let mut plot = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5f64..(count as f64 - 0.5), 0f64..y_max)
        .map_err(|error| error.to_string())?;
    let label_at = |x: &f64| {
        let index = x.round();
        if (x - index).abs() > 0.01 || index < 0.0 {
            return String::new();
        }
        labels.get(index as usize).cloned().unwrap_or_default()
    };
    plot.configure_mesh()
        .x_labels(count.min(12))
        .x_label_formatter(&label_at)
        .y_labels(6)
        .disable_x_mesh()
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()
        .map_err(|error| error.to_string())?;
    let mut base = vec![0.0; periods.len()];
    for (name, colour, values) in &bars {
        let colour = *colour;
        let rectangles: Vec<Rectangle<(f64, f64)>> = values
            .iter()
            .enumerate()
            .filter(|(_, value)| **value > 0.0)
            .map(|(index, value)| {
                let x = index as f64;
                Rectangle::new([(x - 0.38, base[index]), (x + 0.38, base[index] + value)], colour.filled())
            })
            .collect();
        for (index, value) in values.iter().enumerate() {
            base[index] += value;
        }
        plot.draw_series(rectangles)
            .map_err(|error| error.to_string())?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    for (name, colour, values) in &lines {
        let colour = *colour;
        let points: Vec<(f64, f64)> =
            values.iter().enumerate().filter_map(|(index, value)| Some((index as f64, (*value)?))).collect();
        plot.draw_series(points.iter().map(|point| Circle::new(*point, 3, colour.filled())))
            .map_err(|error| error.to_string())?;
        plot.draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(|error| error.to_string())?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    legend(&mut plot, SeriesLabelPosition::UpperLeft)
}

/// Each model version's scores as shares of its payments per tenth of the scale.
fn draw_scores(root: &Area<'_>, report: &Report) -> Result<(), Error> {
    let mut versions: BTreeMap<String, [f64; 10]> = BTreeMap::new();
    for row in &report.rows {
        let bins = versions.entry(row.key.clone().unwrap_or_default()).or_insert([0.0; 10]);
        for (bin, total) in bins.iter_mut().enumerate() {
            *total += get(&row.counts, &format!("score_{bin}"));
        }
    }
    let mut versions: Vec<(String, [f64; 10])> = versions.into_iter().collect();
    versions.sort_by(|a, b| b.1.iter().sum::<f64>().total_cmp(&a.1.iter().sum::<f64>()));
    versions.truncate(SCORE_VERSIONS_MAX);
    let caption = if versions.is_empty() {
        "Distribuição dos scores — sem decisões no período"
    } else {
        "Distribuição dos scores"
    };
    let mut plot = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..1000f64, 0f64..100f64)
        .map_err(|error| error.to_string())?;
    plot.configure_mesh()
        .x_desc("score")
        .y_desc("% dos pagamentos")
        .x_labels(11)
        .y_labels(6)
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()
        .map_err(|error| error.to_string())?;
    for (index, (version, bins)) in versions.iter().enumerate() {
        let colour = SERIES[index % SERIES.len()];
        let total: f64 = bins.iter().sum::<f64>().max(1.0);
        let points: Vec<(f64, f64)> =
            bins.iter().enumerate().map(|(bin, count)| (bin as f64 * 100.0 + 50.0, 100.0 * count / total)).collect();
        plot.draw_series(points.iter().map(|point| Circle::new(*point, 3, colour.filled())))
            .map_err(|error| error.to_string())?;
        let short: String = version.chars().take(12).collect();
        plot.draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|error| error.to_string())?
            .label(if short.is_empty() { "sem modelo".to_owned() } else { short })
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    legend(&mut plot, SeriesLabelPosition::UpperRight)
}
