//! A disk migration job through the control ring: this test acts as the control process,
//! the real `dwcp daemon` runs the source side, a real `dwcp migrate recv` the destination
//! (UDP backend on loopback, no privileges). Checks the progress events (round, bytes,
//! dirty bytes), `JobFinished{Completed}`, the wire bytes in the worker statistics, and the
//! destination image.

use std::process::{Child, Command as Proc, Stdio};
use std::time::{Duration, Instant};

use dwcp_shm::{Command, Event, Geometry, JobKind, JobOutcome, JobSpec, Region, Stat};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn dwcp() -> Proc {
    Proc::new(env!("CARGO_BIN_EXE_dwcp"))
}

fn port_base() -> u16 {
    40_000 + (std::process::id() % 2000) as u16 * 4
}

fn spawn(cmd: &mut Proc) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start dwcp")
}

fn image(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|i| {
            if (i / 4096) % 4 == 0 {
                0
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"abcdefgh"[(x % 8) as usize]
            }
        })
        .collect()
}

fn stop(mut c: Child) {
    let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if c.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn disk_job_through_the_control_ring_migrates_and_reports_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let shm = dir.path().join("region");
    let objects = dir.path().join("objects");
    let dst = dir.path().join("dst");
    std::fs::create_dir_all(&objects).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    let data = image(6 << 20);
    std::fs::write(objects.join("77"), &data).unwrap();
    let dst_img = dst.join("vm.img");
    let p = port_base();
    let region = Region::create_or_open(&shm, Geometry::default()).unwrap();
    let mut ctl = region.attach_control().unwrap();

    let recv = spawn(
        dwcp()
            .args([
                "migrate",
                "recv",
                "--iface",
                "lo",
                "--backend",
                "udp",
                "--core",
                "1",
            ])
            .args(["--timeout", "20"])
            .arg("--local")
            .arg(format!("127.0.0.1:{}", p + 1))
            .arg("--peer")
            .arg(format!("127.0.0.1:{p}"))
            .arg(&dst_img),
    );
    let daemon = spawn(
        dwcp()
            .arg("daemon")
            .arg("--shm")
            .arg(&shm)
            .arg("--objects")
            .arg(&objects)
            .args(["--iface", "lo", "--backend", "udp", "--core", "0"])
            .arg("--local")
            .arg(format!("127.0.0.1:{p}"))
            .args(["--timeout", "20"])
            .env("RUST_LOG", "info"),
    );
    ctl.commands
        .push(&Command::CreateJob(JobSpec {
            job_id: 9001,
            kind: JobKind::Disk,
            object_id: 77,
            total_bytes: data.len() as u64,
            peer_ipv4: u32::from(std::net::Ipv4Addr::LOCALHOST),
            peer_port: p + 1,
            max_rounds: 4,
        }))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(18);
    let mut seen = Vec::new();
    let finished = loop {
        while let Some(r) = ctl.events.pop() {
            let ev = r.msg.expect("event decodes");
            seen.push(ev);
            if let Event::JobFinished { .. } = ev {
                break;
            }
        }
        if let Some(Event::JobFinished { .. }) = seen.last() {
            break *seen.last().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no JobFinished; events: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    stop(daemon);
    stop(recv);
    let Event::JobFinished {
        job_id,
        outcome,
        bytes_done,
        error_code,
    } = finished
    else {
        unreachable!()
    };
    assert_eq!(
        (job_id, outcome, error_code),
        (9001, JobOutcome::Completed, 0),
        "{seen:?}"
    );
    assert_eq!(bytes_done, data.len() as u64);
    let rounds: Vec<u32> = seen
        .iter()
        .filter_map(|e| match e {
            Event::JobProgress {
                job_id: 9001,
                round,
                ..
            } => Some(*round),
            _ => None,
        })
        .collect();
    // Not being written, the image converges after round 1: a final round 2.
    assert!(rounds.contains(&1) && rounds.contains(&2), "{seen:?}");
    let first_round_dirty = seen.iter().find_map(|e| match e {
        Event::JobProgress {
            round: 1,
            dirty_bytes,
            bytes_total,
            ..
        } if *dirty_bytes > 0 => Some((*dirty_bytes, *bytes_total)),
        _ => None,
    });
    // Round 1 skips the zero quarter of the image.
    assert_eq!(
        first_round_dirty,
        Some((data.len() as u64 * 3 / 4, data.len() as u64))
    );
    let tx = region
        .stats_reader()
        .snapshot(0)
        .expect("worker 0 stats")
        .get(Stat::TxBytes);
    assert!(tx > 0 && tx < data.len() as u64, "wire bytes {tx}");
    assert_eq!(std::fs::read(&dst_img).unwrap(), data);
}
