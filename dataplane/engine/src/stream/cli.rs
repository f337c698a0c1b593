//! Command-line glue of the stream carrier (`dwcp stream-send` / `dwcp stream-recv`): clap
//! options, the TCP or stdio ends, and the JSON reports. Does not: carry anything itself (the
//! carrier in [`super`] does).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::*;
use crate::codec::CodecChoice;
use crate::runner::RunOptions;

/// `dwcp stream-send` options.
#[derive(clap::Args, Debug, Clone)]
pub struct SendArgs {
    /// Accept one TCP connection here and carry what it sends (QEMU `migrate tcp:ADDR`).
    /// Without it, stdin is carried (QEMU `migrate exec:dwcp stream-send ...`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// Keys: every segment is SEALED and the peer authenticated (as for `dwcp send`).
    #[command(flatten)]
    pub keys: dwcp_secure::cli::KeyArgs,
}

/// `dwcp stream-recv` options.
#[derive(clap::Args, Debug, Clone)]
pub struct RecvArgs {
    /// Connect here and write the stream (QEMU `-incoming tcp:ADDR`); retried until
    /// `--connect-timeout`. Without it, the stream goes to stdout.
    #[arg(long)]
    pub connect: Option<SocketAddr>,
    /// Seconds to keep retrying the connection to the destination.
    #[arg(long, default_value_t = 30)]
    pub connect_timeout: u64,
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// Keys: every segment must be SEALED by an allowed peer (as for `dwcp recv`).
    #[command(flatten)]
    pub keys: dwcp_secure::cli::KeyArgs,
}

/// Segmenting options shared by both sides.
#[derive(clap::Args, Debug, Clone)]
pub struct TuningArgs {
    /// Segment size in KiB.
    #[arg(long, default_value_t = 768)]
    pub segment_kib: usize,
    /// Send a partial segment after this many milliseconds without input.
    #[arg(long, default_value_t = 5)]
    pub idle_ms: u64,
    /// Segments being sent at once (plus as many finishing their tail).
    #[arg(long, default_value_t = 8)]
    pub in_flight: usize,
    /// Fail when the peer is silent this many seconds (receiving side).
    #[arg(long, default_value_t = 20)]
    pub peer_idle_secs: u64,
    /// Chunk codec of the sending side: raw (zero chunks elided), hde (zstd on every block)
    /// or auto (follow the link mode).
    #[arg(long, default_value = "auto", value_parser = parse_codec)]
    pub codec: CodecChoice,
}

fn parse_codec(s: &str) -> Result<CodecChoice, String> {
    match s {
        "raw" => Ok(CodecChoice::Raw),
        "hde" => Ok(CodecChoice::Hde),
        "auto" => Ok(CodecChoice::Auto),
        _ => Err(format!("unknown codec {s:?} (raw, hde, auto)")),
    }
}

impl TuningArgs {
    /// The stream configuration these options give, for a link of `mtu`.
    pub fn config(&self, mtu: usize) -> StreamConfig {
        StreamConfig {
            segment_bytes: (self.segment_kib << 10).max(4096),
            idle_flush: Duration::from_millis(self.idle_ms),
            in_flight: self.in_flight.max(1),
            mtu: Some(mtu),
            idle_timeout: Duration::from_secs(self.peer_idle_secs),
            codec: self.codec,
            ..StreamConfig::default()
        }
    }
}

/// One-line JSON summary of a send (printed on stderr by the CLI: stdout may carry data).
pub fn send_report_json(r: &StreamSendReport) -> serde_json::Value {
    serde_json::json!({
        "stream_bytes": r.bytes,
        "segments": r.segments,
        "seconds": r.elapsed.as_secs_f64(),
        "goodput_mbit_s": r.bytes as f64 * 8.0 / r.elapsed.as_secs_f64().max(1e-9) / 1e6,
        "bytes_on_wire": r.bytes_on_wire,
        "bytes_retransmitted": r.bytes_retransmitted,
        "max_in_flight": r.max_in_flight,
        "sealed": r.sealed,
        "backend": r.selection.as_ref().map(|s| s.kind.to_string()),
    })
}

/// One-line JSON summary of a receive.
pub fn recv_report_json(r: &StreamRecvReport) -> serde_json::Value {
    serde_json::json!({
        "stream_bytes": r.bytes,
        "segments": r.segments,
        "seconds": r.elapsed.as_secs_f64(),
        "frames_corrupt": r.frames_corrupt,
        "duplicate_chunks": r.duplicate_chunks,
        "frames_unroutable": r.frames_unroutable,
        "sealed": r.sealed,
        "backend": r.selection.as_ref().map(|s| s.kind.to_string()),
    })
}

/// Connects to `addr`, retrying until `timeout` (the consumer may not listen yet).
pub fn connect_retry(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let start = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) if start.elapsed() < timeout => {
                tracing::debug!("connect {addr}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs `dwcp stream-send`.
pub fn cli_send(
    args: &SendArgs,
    opts: &RunOptions,
    mtu: usize,
) -> Result<StreamSendReport, StreamError> {
    let cfg = StreamConfig {
        security: args.keys.factory()?,
        ..args.tuning.config(mtu)
    };
    let input = match args.listen {
        Some(addr) => {
            let l = TcpListener::bind(addr).map_err(|source| StreamError::Local {
                what: format!("listening on {addr}"),
                source,
            })?;
            // Inherited by the accepted connection.
            let _ =
                nix::sys::socket::setsockopt(&l, nix::sys::socket::sockopt::RcvBuf, &INPUT_RCVBUF);
            eprintln!("dwcp stream-send: listening on {addr}");
            StreamInput::Listen(l)
        }
        None => StreamInput::Reader(Box::new(std::io::stdin())),
    };
    // The carrier shares the host with the VMs: yield the core when idle.
    let opts = RunOptions {
        idle_yield: true,
        ..opts.clone()
    };
    send_stream(input, &cfg, &opts, None)
}

/// Runs `dwcp stream-recv`.
pub fn cli_recv(
    args: &RecvArgs,
    opts: &RunOptions,
    mtu: usize,
) -> Result<StreamRecvReport, StreamError> {
    let cfg = StreamConfig {
        security: args.keys.factory()?,
        ..args.tuning.config(mtu)
    };
    let open: OutputOpener = match args.connect {
        Some(addr) => {
            let t = Duration::from_secs(args.connect_timeout);
            Box::new(move || connect_retry(addr, t).map(|s| Box::new(s) as Box<dyn Write + Send>))
        }
        None => Box::new(|| Ok(Box::new(std::io::stdout()) as Box<dyn Write + Send>)),
    };
    let opts = RunOptions {
        idle_yield: true,
        ..opts.clone()
    };
    recv_stream(open, &cfg, &opts, None)
}
