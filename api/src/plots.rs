//! The plots of a model's evaluation, drawn by the service as SVG with `plotters` from the curves
//! its report keeps: ROC, precision–recall, calibration (reliability) and the score distribution
//! by label. When the report has the champion scored on the same hold-out (a model trained from
//! the store), the champion is drawn beside the model, dashed.

use plotters::prelude::*;
use serde_json::Value;

pub const WIDTH: u32 = 480;
pub const HEIGHT: u32 = 360;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plot {
    Roc,
    PrecisionRecall,
    Calibration,
    Scores,
}

impl Plot {
    pub const ALL: [Plot; 4] = [Plot::Roc, Plot::PrecisionRecall, Plot::Calibration, Plot::Scores];

    /// The plot's name in its URL (`/v1/models/{id}/plots/{name}.svg`).
    pub fn name(self) -> &'static str {
        match self {
            Plot::Roc => "roc",
            Plot::PrecisionRecall => "precision-recall",
            Plot::Calibration => "calibration",
            Plot::Scores => "scores",
        }
    }

    pub fn parse(file: &str) -> Option<Plot> {
        let name = file.strip_suffix(".svg")?;
        Plot::ALL.into_iter().find(|plot| plot.name() == name)
    }

    fn title(self) -> &'static str {
        match self {
            Plot::Roc => "Curva ROC",
            Plot::PrecisionRecall => "Precisão × recall",
            Plot::Calibration => "Calibração",
            Plot::Scores => "Distribuição dos scores",
        }
    }
}

/// One model's series of a plot, read from a report's section.
struct Side {
    label: String,
    points: Vec<(f64, f64)>,
    /// Score distribution only: (fraud, legitimate) shares per bin.
    bins: Vec<(f64, f64)>,
}

fn pairs(value: &Value) -> Vec<(f64, f64)> {
    value
        .as_array()
        .map(|points| {
            points
                .iter()
                .filter_map(|point| Some((point.get(0)?.as_f64()?, point.get(1)?.as_f64()?)))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect()
        })
        .unwrap_or_default()
}

fn shares(counts: &Value) -> Vec<f64> {
    let counts: Vec<f64> =
        counts.as_array().map(|counts| counts.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
    let total: f64 = counts.iter().sum();
    counts.iter().map(|count| if total > 0.0 { count / total } else { 0.0 }).collect()
}

/// `section` holds `curves` and `calibration` (a report's `holdout`, or a side of `beside_champion`).
fn side(plot: Plot, label: String, section: &Value) -> Side {
    let curves = &section["curves"];
    let points = match plot {
        Plot::Roc => pairs(&curves["roc"]),
        Plot::PrecisionRecall => pairs(&curves["precision_recall"]),
        Plot::Calibration => section["calibration"]
            .as_array()
            .map(|bins| {
                bins.iter()
                    .filter_map(|bin| Some((bin["mean_predicted"].as_f64()?, bin["observed"].as_f64()?)))
                    .collect()
            })
            .unwrap_or_default(),
        Plot::Scores => Vec::new(),
    };
    let bins = match plot {
        Plot::Scores => shares(&curves["scores_fraud"]).into_iter().zip(shares(&curves["scores_legitimate"])).collect(),
        _ => Vec::new(),
    };
    Side { label, points, bins }
}

/// The sides a report draws: the model itself, and the champion on the same hold-out if kept.
fn sides(plot: Plot, version: &str, report: &Value) -> Vec<Side> {
    let mut sides = vec![side(plot, version.to_owned(), &report["holdout"])];
    let champion = &report["beside_champion"]["champion"];
    if champion.is_object() && champion["model_version"].as_str() != Some(version) {
        let label = format!("campeão {}", champion["model_version"].as_str().unwrap_or("?"));
        sides.push(side(plot, label, champion));
    }
    sides
}

/// Whether the report has anything to draw this plot from.
pub fn drawable(plot: Plot, version: &str, report: &Value) -> bool {
    let first = side(plot, version.to_owned(), &report["holdout"]);
    !first.points.is_empty() || first.bins.iter().any(|(fraud, legitimate)| fraud + legitimate > 0.0)
}

const COLOURS: [RGBColor; 2] = [RGBColor(0x0b, 0x5c, 0xad), RGBColor(0xc2, 0x41, 0x0c)];

/// Draws `plot` of the model `version` from its report, as an SVG document.
pub fn draw(plot: Plot, version: &str, report: &Value) -> Result<String, String> {
    let sides = sides(plot, version, report);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|error| error.to_string())?;
        let y_max = match plot {
            Plot::Scores => {
                sides
                    .iter()
                    .flat_map(|side| side.bins.iter().map(|(fraud, legitimate)| fraud.max(*legitimate)))
                    .fold(0.0f64, f64::max)
                    .max(0.01)
                    * 1.05
            }
            _ => 1.0,
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(plot.title(), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..1f64, 0f64..y_max)
            .map_err(|error| error.to_string())?;
        let (x_desc, y_desc) = match plot {
            Plot::Roc => ("taxa de falsos positivos", "recall (fraudes pegas)"),
            Plot::PrecisionRecall => ("recall", "precisão"),
            Plot::Calibration => ("probabilidade prevista", "fraude observada"),
            Plot::Scores => ("score ÷ 1000", "parte da classe"),
        };
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(6)
            .y_labels(6)
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .draw()
            .map_err(|error| error.to_string())?;
        if matches!(plot, Plot::Roc | Plot::Calibration) {
            // Chance (ROC) or perfect calibration: the diagonal.
            chart
                .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], RGBColor(0xaa, 0xaa, 0xaa).stroke_width(1)))
                .map_err(|error| error.to_string())?;
        }
        for (index, side) in sides.iter().enumerate() {
            let colour = COLOURS[index % COLOURS.len()];
            let style = colour.stroke_width(if index == 0 { 2 } else { 1 });
            let series = match plot {
                Plot::Scores => {
                    // Fraud solid, legitimate dashed, each as a share of its class per bin.
                    let width = 1.0 / side.bins.len().max(1) as f64;
                    let centre = |bin: usize| (bin as f64 + 0.5) * width;
                    chart
                        .draw_series(LineSeries::new(
                            side.bins.iter().enumerate().map(|(bin, (_, legitimate))| (centre(bin), *legitimate)),
                            colour.mix(0.5).stroke_width(1),
                        ))
                        .map_err(|error| error.to_string())?
                        .label(format!("{} — legítimos", side.label))
                        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.mix(0.5)));
                    chart.draw_series(LineSeries::new(
                        side.bins.iter().enumerate().map(|(bin, (fraud, _))| (centre(bin), *fraud)),
                        style,
                    ))
                }
                Plot::Calibration => {
                    chart
                        .draw_series(side.points.iter().map(|point| Circle::new(*point, 3, colour.filled())))
                        .map_err(|error| error.to_string())?;
                    chart.draw_series(LineSeries::new(side.points.iter().copied(), style))
                }
                _ => chart.draw_series(LineSeries::new(side.points.iter().copied(), style)),
            }
            .map_err(|error| error.to_string())?;
            let label = if plot == Plot::Scores { format!("{} — fraudes", side.label) } else { side.label.clone() };
            series.label(label).legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
        }
        let position = if plot == Plot::PrecisionRecall || plot == Plot::Scores {
            SeriesLabelPosition::UpperRight
        } else {
            SeriesLabelPosition::LowerRight
        };
        chart
            .configure_series_labels()
            .position(position)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(0xcc, 0xcc, 0xcc))
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(|error| error.to_string())?;
        root.present().map_err(|error| error.to_string())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report() -> Value {
        let section = |shift: f64| {
            json!({
                "curves": {
                    "roc": [[0.0, 0.0], [0.1, 0.7 - shift], [1.0, 1.0]],
                    "precision_recall": [[0.5, 1.0], [1.0, 0.4 - shift]],
                    "scores_fraud": [0, 1, 3],
                    "scores_legitimate": [9, 1, 0],
                },
                "calibration": [{"from": 0.0, "to": 0.5, "count": 10, "mean_predicted": 0.1, "observed": 0.12 + shift}],
                "model_version": "champion-1",
            })
        };
        json!({"holdout": section(0.0), "beside_champion": {"champion": section(0.1)}})
    }

    #[test]
    fn every_plot_draws_both_models() {
        for plot in Plot::ALL {
            assert_eq!(Plot::parse(&format!("{}.svg", plot.name())), Some(plot));
            let svg = draw(plot, "boosted-1", &report()).unwrap();
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{plot:?}");
            assert!(svg.contains(plot.title()), "{plot:?} has its title");
            assert!(svg.contains("boosted-1") && svg.contains("campeão champion-1"), "{plot:?}: both in the legend");
            assert!(svg.matches("<polyline").count() >= 2, "{plot:?} draws lines");
            assert!(drawable(plot, "boosted-1", &report()));
        }
        assert_eq!(Plot::parse("roc.png"), None);
        assert_eq!(Plot::parse("other.svg"), None);
    }

    #[test]
    fn a_report_without_curves_has_nothing_to_draw() {
        let old = json!({"holdout": {"rows": 10}});
        assert!(Plot::ALL.iter().all(|plot| !drawable(*plot, "v", &old)));
        // Drawn anyway it is an empty chart, not an error.
        assert!(draw(Plot::Roc, "v", &old).unwrap().contains("Curva ROC"));
    }
}
