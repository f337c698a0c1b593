//! The tuner's real measurement: each sweep point runs the bench harness's
//! `dwcp-certify measure` in a fresh netns lab and reads the figure from its JSON line.
//!
//! Owns: building the `measure` command for a parameter and a profile (ring, batch and UMEM
//! axes: frames/s of the dataplane's framed AF_XDP loop; stream and backend axes: goodput of
//! a real dwcp transfer), running it, and parsing its output.
//!
//! Does not: sweep ([`crate::tune`]) or build labs itself. The harness is a separate program
//! because the bench-harness crate depends on the dataplane, which depends on this crate.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::schema::Profile;
use crate::tune::{Param, Sample};

/// Errors of one harness measurement.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The harness could not be started.
    #[error("could not run `{cmd}`")]
    Spawn {
        /// Command line.
        cmd: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The harness failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        /// Command line.
        cmd: String,
        /// Exit status.
        status: std::process::ExitStatus,
        /// Last lines of its standard error.
        stderr: String,
    },
    /// Its output had no usable figure.
    #[error("`{cmd}` printed no `{field}` figure: {detail}")]
    Parse {
        /// Command line.
        cmd: String,
        /// Field looked for.
        field: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// Settings of the harness measurements.
#[derive(Debug, Clone)]
pub struct Harness {
    /// The `dwcp-certify` binary.
    pub bin: PathBuf,
    /// DWCP payload bytes of the packet loop (ring, batch, UMEM axes).
    pub payload: usize,
    /// Seconds per packet-loop run.
    pub loop_secs: f64,
    /// Object size of a transfer (stream and backend axes), MiB.
    pub object_mib: u64,
    /// Round-trip delay of the transfer's link, ms (0: datacenter veth).
    pub rtt_ms: f64,
    /// Loss per direction of the transfer's link.
    pub loss: f64,
    /// Bottleneck of the transfer's link, Mbit/s.
    pub rate_mbit: Option<f64>,
}

impl Harness {
    /// Defaults: 64-byte payload loops of 2 s, 64 MiB transfers on the datacenter link.
    pub fn new(bin: PathBuf) -> Self {
        Self {
            bin,
            payload: 64,
            loop_secs: 2.0,
            object_mib: 64,
            rtt_ms: 0.0,
            loss: 0.0,
            rate_mbit: None,
        }
    }

    /// Finds `dwcp-certify`: next to the running program (same target directory), else on
    /// `PATH`.
    pub fn find_bin() -> PathBuf {
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("dwcp-certify")))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("dwcp-certify"))
    }

    /// Unit of the figures measured for `param`.
    pub fn unit(param: Param) -> &'static str {
        match param {
            Param::Streams | Param::Backend => "Gbit/s",
            _ => "pps",
        }
    }

    /// Arguments (after the binary) measuring `profile` for `param`, and the JSON field
    /// holding the figure.
    pub fn args(&self, param: Param, p: &Profile) -> (Vec<String>, &'static str) {
        match param {
            Param::Streams | Param::Backend => {
                let mut a: Vec<String> = [
                    "measure",
                    "transfer",
                    "--streams",
                    &p.transfer.streams_initial.to_string(),
                    "--backend",
                    p.transfer.backend.name(),
                    "--object-mib",
                    &self.object_mib.to_string(),
                    "--mtu",
                    &p.nic.mtu.to_string(),
                ]
                .map(String::from)
                .to_vec();
                if self.rtt_ms > 0.0 || self.loss > 0.0 || self.rate_mbit.is_some() {
                    a.extend(["--rtt-ms".into(), self.rtt_ms.to_string()]);
                    a.extend(["--loss".into(), self.loss.to_string()]);
                    if let Some(r) = self.rate_mbit {
                        a.extend(["--rate-mbit".into(), r.to_string()]);
                    }
                }
                (a, "gbps")
            }
            Param::BatchSize | Param::RingSize | Param::UmemFrames => (
                [
                    "measure",
                    "loop",
                    "--path",
                    "dwcp-frames",
                    "--payload",
                    &self.payload.to_string(),
                    "--secs",
                    &self.loop_secs.to_string(),
                    "--batch",
                    &p.rings.batch_size.to_string(),
                    "--ring",
                    &p.rings.ring_size.to_string(),
                    "--umem",
                    &p.rings.umem_frames.to_string(),
                    "--mtu",
                    &p.nic.mtu.to_string(),
                ]
                .map(String::from)
                .to_vec(),
                "pps",
            ),
        }
    }

    /// Runs one measurement of `profile` for `param`.
    pub fn measure(&self, param: Param, p: &Profile) -> Result<Sample, HarnessError> {
        let (args, field) = self.args(param, p);
        let cmd = command_line(&self.bin, &args);
        let out = Command::new(&self.bin)
            .args(&args)
            .output()
            .map_err(|source| HarnessError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            // A panic dump's useful part is its first line; otherwise the last lines.
            let lines: Vec<&str> = match err.lines().position(|l| l.contains("panicked at")) {
                Some(i) => err.lines().skip(i).take(2).collect(),
                None => {
                    let mut t: Vec<&str> = err.lines().rev().take(3).collect();
                    t.reverse();
                    t
                }
            };
            return Err(HarnessError::Failed {
                cmd,
                status: out.status,
                stderr: lines.join(" | "),
            });
        }
        let figure =
            parse_figure(&String::from_utf8_lossy(&out.stdout), field).map_err(|detail| {
                HarnessError::Parse {
                    cmd: cmd.clone(),
                    field,
                    detail,
                }
            })?;
        Ok(Sample {
            figure,
            command: Some(cmd),
        })
    }
}

fn command_line(bin: &Path, args: &[String]) -> String {
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| bin.display().to_string());
    format!("{name} {}", args.join(" "))
}

/// The number in `field` of the last JSON object line of `stdout`.
pub fn parse_figure(stdout: &str, field: &str) -> Result<f64, String> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| format!("no JSON line in {stdout:?}"))?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    v.get(field)
        .and_then(|x| x.as_f64())
        .filter(|x| x.is_finite())
        .ok_or_else(|| format!("`{field}` missing or not a finite number in {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_loop_and_transfer_commands_from_the_profile() {
        let mut p = Profile::embedded_default();
        p.rings.batch_size = 32;
        p.transfer.streams_initial = 4;
        p.transfer.backend = crate::BackendKind::Udp;
        let mut h = Harness::new("/x/dwcp-certify".into());
        let (a, f) = h.args(Param::BatchSize, &p);
        assert_eq!(f, "pps");
        assert!(a.windows(2).any(|w| w == ["--batch", "32"]), "{a:?}");
        assert!(a.windows(2).any(|w| w == ["--ring", "2048"]), "{a:?}");
        let (a, f) = h.args(Param::Backend, &p);
        assert_eq!(f, "gbps");
        assert!(a.windows(2).any(|w| w == ["--backend", "udp"]), "{a:?}");
        assert!(a.windows(2).any(|w| w == ["--streams", "4"]), "{a:?}");
        assert!(!a.contains(&"--rtt-ms".to_string()));
        h.rtt_ms = 50.0;
        h.rate_mbit = Some(200.0);
        let (a, _) = h.args(Param::Streams, &p);
        assert!(a.windows(2).any(|w| w == ["--rate-mbit", "200"]), "{a:?}");
        assert_eq!(
            command_line(&h.bin, &["measure".into()]),
            "dwcp-certify measure"
        );
    }

    #[test]
    fn parses_the_last_json_line() {
        let out = "suite...\n{\"kind\":\"loop\",\"pps\":612345.5}\n";
        assert_eq!(parse_figure(out, "pps").unwrap(), 612_345.5);
        assert!(parse_figure(out, "gbps").is_err());
        assert!(parse_figure("no json", "pps").is_err());
        assert!(parse_figure("{\"pps\":null}", "pps").is_err());
    }
}
