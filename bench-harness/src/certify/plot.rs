//! SVG plots of a certification report, drawn with `plotters` (SVG backend only, no font
//! files needed: text becomes SVG `<text>` elements).
//!
//! Owns: the three report plots, each a line per peer with the median as a point and the
//! min..max range as a vertical whisker:
//! - `throughput-vs-loss.svg`: WAN cases, goodput against loss, one line per peer and RTT;
//! - `throughput-vs-rtt.svg`: datacenter (RTT 0) and WAN cases, one line per peer and loss;
//! - `throughput-vs-streams.svg`: datacenter cases at the smallest MTU, one line per peer.
//!
//! WAN goodput spans three decades (TCP cubic at 1 % loss against a rate-limited link), so
//! the loss and RTT plots have a logarithmic y axis. Does not: decide anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::report::{Report, TransferCase, TransferPeer};
use super::suite::LinkKind;
use crate::peers::Summary;

const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One line of a plot: points (x, summary of y).
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points, sorted by x when drawn.
    pub points: Vec<(f64, Summary)>,
}

/// How the x axis is labelled.
#[derive(Debug, Clone)]
pub enum XAxis {
    /// Numeric values.
    Numeric,
    /// Categories at x = 0, 1, 2, ... with these labels.
    Categories(Vec<String>),
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// X axis description.
    pub x_desc: String,
    /// Y axis description.
    pub y_desc: String,
    /// X axis kind.
    pub x_axis: XAxis,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// Lines.
    pub series: Vec<Series>,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Chart {
    /// Draws the chart as SVG text.
    pub fn to_svg(&self) -> std::io::Result<String> {
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, (900, 540)).into_drawing_area();
            root.fill(&WHITE).map_err(io_err)?;
            let ys: Vec<f64> = self
                .series
                .iter()
                .flat_map(|s| s.points.iter().flat_map(|(_, p)| [p.min, p.max]))
                .collect();
            let xs: Vec<f64> = self
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|(x, _)| *x))
                .collect();
            let ty = |v: f64| if self.log_y { v.max(1e-6).log10() } else { v };
            let (mut y0, mut y1) = ys
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(ty(*v)), b.max(ty(*v)))
                });
            if !y0.is_finite() {
                (y0, y1) = (0.0, 1.0);
            }
            if self.log_y {
                y0 = y0.floor();
                y1 = y1.ceil().max(y0 + 1.0);
            } else {
                y0 = 0.0f64.min(y0);
                y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
            }
            let (x0, x1) = match &self.x_axis {
                XAxis::Categories(c) => (-0.5, c.len().max(1) as f64 - 0.5),
                XAxis::Numeric => {
                    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    if lo.is_finite() {
                        let pad = ((hi - lo) * 0.05).max(0.5);
                        (lo - pad, hi + pad)
                    } else {
                        (0.0, 1.0)
                    }
                }
            };
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(io_err)?;
            let cats = match &self.x_axis {
                XAxis::Categories(c) => Some(c.clone()),
                XAxis::Numeric => None,
            };
            let x_fmt = move |x: &f64| match &cats {
                Some(c) => {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < c.len() {
                        c[i as usize].clone()
                    } else {
                        String::new()
                    }
                }
                None => format!("{x}"),
            };
            let log_y = self.log_y;
            let y_fmt = move |y: &f64| {
                if log_y {
                    let v = 10f64.powf(*y);
                    if v >= 1.0 {
                        format!("{v:.0}")
                    } else {
                        format!("{v}")
                    }
                } else {
                    format!("{y:.2}")
                }
            };
            let n_x = match &self.x_axis {
                XAxis::Categories(c) => c.len().max(1) * 2 + 1,
                XAxis::Numeric => 10,
            };
            let n_y = if self.log_y {
                (y1 - y0) as usize + 1
            } else {
                10
            };
            chart
                .configure_mesh()
                .x_desc(self.x_desc.as_str())
                .y_desc(self.y_desc.as_str())
                .x_labels(n_x)
                .y_labels(n_y)
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&y_fmt)
                .draw()
                .map_err(io_err)?;
            for (i, s) in self.series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let mut pts: Vec<(f64, f64, f64, f64)> = s
                    .points
                    .iter()
                    .map(|(x, p)| (*x, ty(p.median), ty(p.min), ty(p.max)))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                chart
                    .draw_series(LineSeries::new(
                        pts.iter().map(|p| (p.0, p.1)),
                        color.stroke_width(2),
                    ))
                    .map_err(io_err)?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(
                        pts.iter()
                            .map(|p| Circle::new((p.0, p.1), 3, color.filled())),
                    )
                    .map_err(io_err)?;
                chart
                    .draw_series(
                        pts.iter()
                            .map(|p| PathElement::new(vec![(p.0, p.2), (p.0, p.3)], color)),
                    )
                    .map_err(io_err)?;
            }
            if !self.series.is_empty() {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()
                    .map_err(io_err)?;
            }
            root.present().map_err(io_err)?;
        }
        Ok(out)
    }
}

fn scaled(s: &Summary, k: f64) -> Summary {
    Summary {
        samples: s.samples.iter().map(|x| x * k).collect(),
        min: s.min * k,
        median: s.median * k,
        max: s.max * k,
    }
}

fn push(
    map: &mut BTreeMap<String, Vec<(f64, Summary)>>,
    name: String,
    x: f64,
    s: &Summary,
    k: f64,
) {
    map.entry(name).or_default().push((x, scaled(s, k)));
}

fn peers_with_figures(c: &TransferCase) -> impl Iterator<Item = (&TransferPeer, &Summary)> {
    c.peers
        .iter()
        .filter_map(|p| p.gbps.as_ref().map(|s| (p, s)))
}

/// Goodput (Mbit/s) against loss, WAN cases, one line per peer and RTT.
pub fn loss_chart(r: &Report) -> Chart {
    let wan: Vec<&TransferCase> = r
        .transfer
        .iter()
        .filter(|c| c.link.kind == LinkKind::Wan)
        .collect();
    let mut losses: Vec<f64> = wan.iter().map(|c| c.link.loss).collect();
    losses.sort_by(f64::total_cmp);
    losses.dedup();
    let mut map = BTreeMap::new();
    for c in &wan {
        let xi = losses.iter().position(|l| *l == c.link.loss).unwrap_or(0) as f64;
        for (p, s) in peers_with_figures(c) {
            let name = format!("{}, RTT {} ms, {} st", p.label(), c.link.rtt_ms, c.streams);
            push(&mut map, name, xi, s, 1e3);
        }
    }
    Chart {
        title: "Goodput vs loss (WAN emulator)".into(),
        x_desc: "random loss per direction, %".into(),
        y_desc: "goodput, Mbit/s (log)".into(),
        x_axis: XAxis::Categories(losses.iter().map(|l| format!("{}", l * 100.0)).collect()),
        log_y: true,
        series: map
            .into_iter()
            .map(|(name, points)| Series { name, points })
            .collect(),
    }
}

/// Goodput (Mbit/s) against RTT: datacenter cases at RTT 0 (smallest MTU) and WAN cases,
/// one line per peer and loss.
pub fn rtt_chart(r: &Report) -> Chart {
    let min_mtu = r.transfer.iter().map(|c| c.link.mtu).min().unwrap_or(1500);
    let streams_wan: Option<u16> = r
        .transfer
        .iter()
        .filter(|c| c.link.kind == LinkKind::Wan)
        .map(|c| c.streams)
        .min();
    let mut map = BTreeMap::new();
    for c in &r.transfer {
        if c.link.mtu != min_mtu || Some(c.streams) != streams_wan {
            continue;
        }
        for (p, s) in peers_with_figures(c) {
            let name = format!("{}, loss {}%", p.label(), c.link.loss * 100.0);
            push(&mut map, name, c.link.rtt_ms, s, 1e3);
        }
    }
    Chart {
        title: format!(
            "Goodput vs RTT ({} stream(s); RTT 0 = datacenter veth, no rate limit)",
            streams_wan.unwrap_or(1)
        ),
        x_desc: "round-trip time, ms".into(),
        y_desc: "goodput, Mbit/s (log)".into(),
        x_axis: XAxis::Numeric,
        log_y: true,
        series: map
            .into_iter()
            .map(|(name, points)| Series { name, points })
            .collect(),
    }
}

/// Goodput (Gbit/s) against stream count, datacenter cases at the smallest MTU.
pub fn streams_chart(r: &Report) -> Chart {
    let dc: Vec<&TransferCase> = r
        .transfer
        .iter()
        .filter(|c| c.link.kind == LinkKind::Datacenter)
        .collect();
    let min_mtu = dc.iter().map(|c| c.link.mtu).min().unwrap_or(1500);
    let mut map = BTreeMap::new();
    for c in dc.iter().filter(|c| c.link.mtu == min_mtu) {
        for (p, s) in peers_with_figures(c) {
            push(&mut map, p.label(), f64::from(c.streams), s, 1.0);
        }
    }
    Chart {
        title: format!("Goodput vs streams (datacenter veth, MTU {min_mtu})"),
        x_desc: "streams (dwcp streams, iperf3 -P)".into(),
        y_desc: "goodput, Gbit/s".into(),
        x_axis: XAxis::Numeric,
        log_y: false,
        series: map
            .into_iter()
            .map(|(name, points)| Series { name, points })
            .collect(),
    }
}

/// Writes the report's plots into `dir`; a plot with no data is not written.
pub fn write_plots(r: &Report, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (file, chart) in [
        ("throughput-vs-loss.svg", loss_chart(r)),
        ("throughput-vs-rtt.svg", rtt_chart(r)),
        ("throughput-vs-streams.svg", streams_chart(r)),
    ] {
        if chart.series.is_empty() {
            continue;
        }
        let path = dir.join(file);
        std::fs::write(&path, chart.to_svg()?)?;
        out.push(path);
    }
    Ok(out)
}
