//! The tuning sweep engine: varies profile parameters over a grid, calls a caller-provided
//! measurement for each point, keeps the best value and records every point in the profile's
//! `measurements` table.
//!
//! The sweep is coordinate-wise: axes are swept in the order given, each value of an axis is
//! tried with the other parameters at their best-so-far values, and the best value is kept
//! before the next axis. That costs the sum of the axis lengths instead of their product,
//! which matters when one point is a multi-second benchmark run repeated N times.
//!
//! This module does not measure anything itself: the figure of merit (e.g. frames per second
//! of the dataplane benchmark in the netns lab) comes from the closure the caller passes.
//! Points that would make the profile invalid (e.g. a batch larger than the ring) are skipped
//! and reported, never measured.

use crate::error::Problem;
use crate::schema::{Measurement, Profile};

/// A parameter the tuner can vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param {
    /// `rings.batch_size`.
    BatchSize,
    /// `rings.ring_size` (raises `rings.umem_frames` to twice the ring when needed).
    RingSize,
    /// `transfer.streams_initial` (raises `transfer.streams_max` when needed).
    Streams,
}

impl Param {
    /// Dotted field name, as recorded in `measurements.parameter`.
    pub fn field(self) -> &'static str {
        match self {
            Self::BatchSize => "rings.batch_size",
            Self::RingSize => "rings.ring_size",
            Self::Streams => "transfer.streams_initial",
        }
    }

    /// The parameter's value in `p`.
    pub fn get(self, p: &Profile) -> u64 {
        match self {
            Self::BatchSize => p.rings.batch_size.into(),
            Self::RingSize => p.rings.ring_size.into(),
            Self::Streams => p.transfer.streams_initial.into(),
        }
    }

    /// `p` with the parameter set to `value` (values too large for the field saturate, and
    /// validation then rejects them).
    pub fn set(self, p: &Profile, value: u64) -> Profile {
        let mut q = p.clone();
        let v32 = u32::try_from(value).unwrap_or(u32::MAX);
        match self {
            Self::BatchSize => q.rings.batch_size = v32,
            Self::RingSize => {
                q.rings.ring_size = v32;
                q.rings.umem_frames = q.rings.umem_frames.max(v32.saturating_mul(2));
            }
            Self::Streams => {
                let v16 = u16::try_from(value).unwrap_or(u16::MAX);
                q.transfer.streams_initial = v16;
                q.transfer.streams_max = q.transfer.streams_max.max(v16);
            }
        }
        q
    }
}

/// A grid point that was not measured because the profile would be invalid.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// Parameter.
    pub parameter: &'static str,
    /// Value.
    pub value: u64,
    /// Why.
    pub problems: Vec<Problem>,
}

/// Result of a sweep.
#[derive(Debug, Clone)]
pub struct TuneOutcome {
    /// The base profile with the best value of every axis and a `measurements` table holding
    /// every measured point.
    pub profile: Profile,
    /// Figure of merit of the last axis's chosen point.
    pub best_figure: f64,
    /// Points not measured.
    pub skipped: Vec<Skipped>,
}

/// A sweep failed.
#[derive(Debug, thiserror::Error)]
pub enum TuneError<E: std::error::Error + 'static> {
    /// No axes, an empty axis, or zero repeats.
    #[error("bad sweep: {0}")]
    BadSweep(String),
    /// The measurement failed.
    #[error("measuring {parameter} = {value} (repeat {repeat})")]
    Measure {
        /// Parameter.
        parameter: &'static str,
        /// Value.
        value: u64,
        /// Repetition index (0-based).
        repeat: usize,
        /// Cause.
        #[source]
        source: E,
    },
    /// The measurement returned NaN or an infinity.
    #[error("measuring {parameter} = {value} gave {figure}, not a finite number")]
    NotFinite {
        /// Parameter.
        parameter: &'static str,
        /// Value.
        value: u64,
        /// Figure returned.
        figure: f64,
    },
    /// Every value of an axis was skipped.
    #[error("no valid value to measure for {parameter}: {skipped} skipped")]
    NothingMeasured {
        /// Parameter.
        parameter: &'static str,
        /// How many were skipped.
        skipped: usize,
    },
}

/// A sweep description.
#[derive(Debug, Clone)]
pub struct Tuner {
    axes: Vec<(Param, Vec<u64>)>,
    repeats: usize,
    unit: String,
    command: String,
}

impl Tuner {
    /// A sweep whose figures are in `unit` (e.g. `pps`), produced by `command` (recorded with
    /// every measurement so the figure can be reproduced). Repeats default to 3.
    pub fn new(unit: impl Into<String>, command: impl Into<String>) -> Self {
        Self {
            axes: Vec::new(),
            repeats: 3,
            unit: unit.into(),
            command: command.into(),
        }
    }

    /// Adds an axis; axes are swept in the order added.
    pub fn axis(mut self, param: Param, values: impl IntoIterator<Item = u64>) -> Self {
        self.axes.push((param, values.into_iter().collect()));
        self
    }

    /// Measurements per point (the median is the point's figure).
    pub fn repeats(mut self, n: usize) -> Self {
        self.repeats = n;
        self
    }

    /// Points the sweep will consider (sum of axis lengths).
    pub fn points(&self) -> usize {
        self.axes.iter().map(|(_, v)| v.len()).sum()
    }

    /// Runs the sweep from `base`, calling `measure` `repeats` times per valid point. Larger
    /// figures are better; on a tie the earlier value wins.
    pub fn run<E, F>(&self, base: &Profile, mut measure: F) -> Result<TuneOutcome, TuneError<E>>
    where
        E: std::error::Error + 'static,
        F: FnMut(&Profile) -> Result<f64, E>,
    {
        if self.axes.is_empty() {
            return Err(TuneError::BadSweep("no axes".into()));
        }
        if self.repeats == 0 {
            return Err(TuneError::BadSweep("repeats must be at least 1".into()));
        }
        if let Some((p, _)) = self.axes.iter().find(|(_, v)| v.is_empty()) {
            return Err(TuneError::BadSweep(format!("axis {} is empty", p.field())));
        }
        let mut best = base.clone();
        best.measurements.clear();
        let mut records: Vec<Measurement> = Vec::new();
        let mut skipped = Vec::new();
        let mut best_figure = f64::NAN;
        for (param, values) in &self.axes {
            let parameter = param.field();
            let mut axis_best: Option<(usize, f64, u64)> = None;
            let mut axis_skipped = 0;
            for &value in values {
                let candidate = param.set(&best, value);
                let problems = candidate.problems();
                if !problems.is_empty() {
                    axis_skipped += 1;
                    skipped.push(Skipped {
                        parameter,
                        value,
                        problems,
                    });
                    continue;
                }
                let mut samples = Vec::with_capacity(self.repeats);
                for repeat in 0..self.repeats {
                    let figure = measure(&candidate).map_err(|source| TuneError::Measure {
                        parameter,
                        value,
                        repeat,
                        source,
                    })?;
                    if !figure.is_finite() {
                        return Err(TuneError::NotFinite {
                            parameter,
                            value,
                            figure,
                        });
                    }
                    samples.push(figure);
                }
                let figure = median(&samples);
                if axis_best.is_none_or(|(_, f, _)| figure > f) {
                    axis_best = Some((records.len(), figure, value));
                }
                records.push(Measurement {
                    parameter: parameter.to_string(),
                    value,
                    figure,
                    unit: self.unit.clone(),
                    samples,
                    chosen: false,
                    command: self.command.clone(),
                });
            }
            let Some((idx, figure, value)) = axis_best else {
                return Err(TuneError::NothingMeasured {
                    parameter,
                    skipped: axis_skipped,
                });
            };
            records[idx].chosen = true;
            best = param.set(&best, value);
            best_figure = figure;
        }
        best.measurements = records;
        Ok(TuneOutcome {
            profile: best,
            best_figure,
            skipped,
        })
    }
}

/// Median of a non-empty slice (mean of the two middle values for an even length).
pub fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}
