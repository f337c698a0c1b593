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
use crate::schema::{BackendKind, Measurement, ParamValue, Profile};

/// A parameter the tuner can vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param {
    /// `rings.batch_size`.
    BatchSize,
    /// `rings.ring_size` (raises `rings.umem_frames` to twice the ring when needed).
    RingSize,
    /// `transfer.streams_initial` (raises `transfer.streams_max` when needed).
    Streams,
    /// `rings.umem_frames`.
    UmemFrames,
    /// `transfer.backend` (values are names: `auto`, `afxdp`, `udp`).
    Backend,
}

impl Param {
    /// Dotted field name, as recorded in `measurements.parameter`.
    pub fn field(self) -> &'static str {
        match self {
            Self::BatchSize => "rings.batch_size",
            Self::RingSize => "rings.ring_size",
            Self::Streams => "transfer.streams_initial",
            Self::UmemFrames => "rings.umem_frames",
            Self::Backend => "transfer.backend",
        }
    }

    /// The parameter's value in `p` (the backend as its index in [`BackendKind::ALL`]).
    pub fn get(self, p: &Profile) -> u64 {
        match self {
            Self::BatchSize => p.rings.batch_size.into(),
            Self::RingSize => p.rings.ring_size.into(),
            Self::Streams => p.transfer.streams_initial.into(),
            Self::UmemFrames => p.rings.umem_frames.into(),
            Self::Backend => BackendKind::ALL
                .iter()
                .position(|b| *b == p.transfer.backend)
                .unwrap_or(0) as u64,
        }
    }

    /// The parameter's value in `p` as recorded in `measurements.value`.
    pub fn get_value(self, p: &Profile) -> ParamValue {
        match self {
            Self::Backend => ParamValue::Name(p.transfer.backend.name().into()),
            _ => ParamValue::Int(self.get(p)),
        }
    }

    /// `p` with the parameter set to `value`: a number for the numeric parameters, a name
    /// for the backend. `None` when the kind of value does not fit the parameter or the
    /// name is unknown.
    pub fn set_value(self, p: &Profile, value: &ParamValue) -> Option<Profile> {
        match (self, value) {
            (Self::Backend, ParamValue::Name(n)) => {
                let mut q = p.clone();
                q.transfer.backend = BackendKind::from_name(n)?;
                Some(q)
            }
            (Self::Backend, ParamValue::Int(_)) | (_, ParamValue::Name(_)) => None,
            (_, ParamValue::Int(v)) => Some(self.set(p, *v)),
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
            Self::UmemFrames => q.rings.umem_frames = v32,
            Self::Backend => {
                if let Some(b) = usize::try_from(value)
                    .ok()
                    .and_then(|i| BackendKind::ALL.get(i))
                {
                    q.transfer.backend = *b;
                }
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
    pub value: ParamValue,
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
        value: ParamValue,
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
        value: ParamValue,
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

/// Unit and command of one axis's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Unit, e.g. `pps` or `Gbit/s`.
    pub unit: String,
    /// How the figure is produced (recorded unless the measurement names its own command).
    pub command: String,
}

#[derive(Debug, Clone)]
struct Axis {
    param: Param,
    values: Vec<ParamValue>,
    figure: Option<Figure>,
}

/// A sweep description.
#[derive(Debug, Clone)]
pub struct Tuner {
    axes: Vec<Axis>,
    repeats: usize,
    unit: String,
    command: String,
}

/// One sample returned by a measurement of [`Tuner::run_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Figure of merit (larger is better).
    pub figure: f64,
    /// The exact command that produced it (`None`: the axis's command).
    pub command: Option<String>,
}

impl From<f64> for Sample {
    fn from(figure: f64) -> Self {
        Self {
            figure,
            command: None,
        }
    }
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

    /// Adds a numeric axis; axes are swept in the order added.
    pub fn axis(mut self, param: Param, values: impl IntoIterator<Item = u64>) -> Self {
        self.axes.push(Axis {
            param,
            values: values.into_iter().map(ParamValue::Int).collect(),
            figure: None,
        });
        self
    }

    /// Adds an axis of any values, with its own unit and command (e.g. a backend axis
    /// measured as transfer goodput after ring axes measured in frames per second).
    pub fn axis_with(
        mut self,
        param: Param,
        values: impl IntoIterator<Item = ParamValue>,
        figure: Figure,
    ) -> Self {
        self.axes.push(Axis {
            param,
            values: values.into_iter().collect(),
            figure: Some(figure),
        });
        self
    }

    /// Measurements per point (the median is the point's figure).
    pub fn repeats(mut self, n: usize) -> Self {
        self.repeats = n;
        self
    }

    /// Points the sweep will consider (sum of axis lengths).
    pub fn points(&self) -> usize {
        self.axes.iter().map(|a| a.values.len()).sum()
    }

    /// Runs the sweep from `base`, calling `measure` `repeats` times per valid point. Larger
    /// figures are better; on a tie the earlier value wins.
    pub fn run<E, F>(&self, base: &Profile, mut measure: F) -> Result<TuneOutcome, TuneError<E>>
    where
        E: std::error::Error + 'static,
        F: FnMut(&Profile) -> Result<f64, E>,
    {
        self.run_with(base, |_, p| measure(p).map(Sample::from))
    }

    /// As [`Tuner::run`], but the measurement is told which parameter is being swept (so it
    /// can pick the right benchmark) and may return the exact command it ran.
    pub fn run_with<E, F>(
        &self,
        base: &Profile,
        mut measure: F,
    ) -> Result<TuneOutcome, TuneError<E>>
    where
        E: std::error::Error + 'static,
        F: FnMut(Param, &Profile) -> Result<Sample, E>,
    {
        if self.axes.is_empty() {
            return Err(TuneError::BadSweep("no axes".into()));
        }
        if self.repeats == 0 {
            return Err(TuneError::BadSweep("repeats must be at least 1".into()));
        }
        if let Some(a) = self.axes.iter().find(|a| a.values.is_empty()) {
            return Err(TuneError::BadSweep(format!(
                "axis {} is empty",
                a.param.field()
            )));
        }
        let mut best = base.clone();
        best.measurements.clear();
        let mut records: Vec<Measurement> = Vec::new();
        let mut skipped = Vec::new();
        let mut best_figure = f64::NAN;
        for axis in &self.axes {
            let param = axis.param;
            let parameter = param.field();
            let (unit, command) = match &axis.figure {
                Some(f) => (f.unit.clone(), f.command.clone()),
                None => (self.unit.clone(), self.command.clone()),
            };
            let mut axis_best: Option<(usize, f64, ParamValue)> = None;
            let mut axis_skipped = 0;
            for value in &axis.values {
                let Some(candidate) = param.set_value(&best, value) else {
                    return Err(TuneError::BadSweep(format!(
                        "value {value} does not fit {parameter}"
                    )));
                };
                let problems = candidate.problems();
                if !problems.is_empty() {
                    axis_skipped += 1;
                    skipped.push(Skipped {
                        parameter,
                        value: value.clone(),
                        problems,
                    });
                    continue;
                }
                let mut samples = Vec::with_capacity(self.repeats);
                let mut point_command = None;
                for repeat in 0..self.repeats {
                    let sample =
                        measure(param, &candidate).map_err(|source| TuneError::Measure {
                            parameter,
                            value: value.clone(),
                            repeat,
                            source,
                        })?;
                    if !sample.figure.is_finite() {
                        return Err(TuneError::NotFinite {
                            parameter,
                            value: value.clone(),
                            figure: sample.figure,
                        });
                    }
                    if point_command.is_none() {
                        point_command = sample.command;
                    }
                    samples.push(sample.figure);
                }
                let figure = median(&samples);
                if axis_best.as_ref().is_none_or(|(_, f, _)| figure > *f) {
                    axis_best = Some((records.len(), figure, value.clone()));
                }
                records.push(Measurement {
                    parameter: parameter.to_string(),
                    value: value.clone(),
                    figure,
                    unit: unit.clone(),
                    samples,
                    chosen: false,
                    command: point_command.unwrap_or_else(|| command.clone()),
                });
            }
            let Some((idx, figure, value)) = axis_best else {
                return Err(TuneError::NothingMeasured {
                    parameter,
                    skipped: axis_skipped,
                });
            };
            records[idx].chosen = true;
            best = param
                .set_value(&best, &value)
                .expect("the value was applied to this profile before");
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
