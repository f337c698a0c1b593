//! A stand-in dataplane for demos and load scripts: attaches to the region as the dataplane,
//! heartbeats, acknowledges every command, and finishes jobs immediately. Not a transfer
//! engine; it exists so /readyz can be exercised without one.
//!
//! Usage: `cargo run --release -p dwcp-control --example fake_dataplane -- /dev/shm/dwcp`

use std::time::Duration;

use dwcp_shm::{AckStatus, Command, Event, JobOutcome, Region};

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/dev/shm/dwcp".into());
    let region = Region::open(path.as_ref())?;
    let mut dp = region.attach_dataplane()?;
    let w = dp.take_stats_writer(0);
    loop {
        dp.heartbeat.beat();
        if let Some(w) = &w {
            w.heartbeat();
        }
        while let Some(r) = dp.commands.pop() {
            let _ = dp.events.push(&Event::Ack {
                cmd_seq: r.seq,
                status: if r.msg.is_ok() {
                    AckStatus::Ok
                } else {
                    AckStatus::Unsupported
                },
                detail: 0,
            });
            if let Ok(Command::CreateJob(spec)) = r.msg {
                let _ = dp.events.push(&Event::JobFinished {
                    job_id: spec.job_id,
                    outcome: JobOutcome::Completed,
                    bytes_done: spec.total_bytes,
                    error_code: 0,
                });
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
