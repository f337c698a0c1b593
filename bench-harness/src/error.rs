//! Error types of the lab, the emulator and the peer runners (one enum per boundary).
//!
//! Owns: typed errors with context. Does not: print or recover; callers decide.

use std::process::ExitStatus;

/// Errors building or running the lab and its WAN emulator.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A namespace primitive (ip, setns) failed.
    #[error("lab set-up failed at step `{step}`")]
    Netns {
        /// What the lab was doing.
        step: &'static str,
        /// The primitive's error.
        #[source]
        source: dwcp_netns::LabError,
    },
    /// An emulator socket could not be opened or bound.
    #[error("emulator socket on interface {ifname}")]
    Socket {
        /// Interface in the router namespace.
        ifname: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An emulator thread ended before it was ready.
    #[error("emulator thread for {direction} died during start")]
    ThreadDied {
        /// Direction name (`from->to`).
        direction: String,
    },
    /// The options make no sense.
    #[error("invalid lab options: {0}")]
    Config(String),
    /// Output of a lab command could not be understood.
    #[error("unexpected output from `{cmd}`: {detail}")]
    Parse {
        /// The command.
        cmd: String,
        /// What was wrong.
        detail: String,
    },
}

impl LabError {
    /// Maps a namespace-primitive error to [`LabError::Netns`] with the step name.
    pub fn from_netns(step: &'static str) -> impl FnOnce(dwcp_netns::LabError) -> LabError {
        move |source| LabError::Netns { step, source }
    }
}

/// Errors running a peer program (iperf3, ping) in the lab.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The program could not be started.
    #[error("could not start `{cmd}`")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program failed.
    #[error("`{cmd}` failed with {status}: {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Exit status.
        status: ExitStatus,
        /// Its stderr (and, for iperf3 -J, the JSON error field).
        stderr: String,
    },
    /// The program's output could not be parsed.
    #[error("could not parse output of `{cmd}`: {detail}")]
    Parse {
        /// The command line.
        cmd: String,
        /// What was wrong.
        detail: String,
    },
    /// A TCP congestion control is not available on this kernel.
    #[error("TCP congestion control `{cc}` unavailable (available: {available})")]
    CongestionControlUnavailable {
        /// Requested algorithm.
        cc: String,
        /// What the kernel offers.
        available: String,
    },
    /// The server did not start listening in time.
    #[error("{what} did not become ready within {secs} s")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: u64,
    },
    /// A packet loop could not run.
    #[error("packet loop {path}: {detail}")]
    Loop {
        /// Loop path name.
        path: &'static str,
        /// What failed.
        detail: String,
    },
    /// A lab operation failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// An I/O operation of a measurement failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
