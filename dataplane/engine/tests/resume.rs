//! Kill-and-resume of real `dwcp` processes: the receiver is SIGKILLed mid-transfer, then
//! both sides are started again; the object must arrive byte-identical, the durable part must
//! not be sent again, and nothing may appear under the destination name before verification.
//!
//! Runs over loopback with the UDP backend, so it needs no privileges.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn dwcp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dwcp"))
}

fn recv(dest: &Path, port: u16) -> Child {
    dwcp()
        .args([
            "--json",
            "recv",
            "--iface",
            "lo",
            "--backend",
            "udp",
            "--timeout",
            "60",
        ])
        .arg("--local")
        .arg(format!("127.0.0.1:{}", port + 1))
        .arg("--peer")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--core")
        .arg("1")
        .arg(dest)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start dwcp recv")
}

fn send(src: &Path, port: u16) -> Child {
    dwcp()
        .args([
            "--json",
            "send",
            "--iface",
            "lo",
            "--backend",
            "udp",
            "--timeout",
            "60",
        ])
        .arg("--local")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--peer")
        .arg(format!("127.0.0.1:{}", port + 1))
        .arg(src)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start dwcp send")
}

fn json_of(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "dwcp exited with {}", out.status);
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

fn journal_bytes(journal: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(journal) else {
        return 0;
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|x| x.parse::<u64>().ok());
            Some(it.next()??.abs_diff(it.next()??))
        })
        .sum()
}

#[test]
fn receiver_killed_mid_transfer_resumes_without_resending_durable_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let dest = dir.path().join("dest");
    let journal = dir.path().join("dest.dwcp-journal");
    let size: u64 = 128 << 20;
    dwcp_engine::demo::write_demo_object(&src, size).unwrap();
    let port = 17470;

    // First attempt: kill the receiver once at least an eighth is durable.
    let mut r1 = recv(&dest, port);
    std::thread::sleep(Duration::from_millis(200));
    let mut s1 = send(&src, port);
    let t0 = Instant::now();
    while journal_bytes(&journal) < size / 8 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        assert!(r1.try_wait().unwrap().is_none(), "receiver ended early");
        std::thread::sleep(Duration::from_millis(2));
    }
    r1.kill().unwrap(); // SIGKILL
    r1.wait().unwrap();
    s1.kill().unwrap();
    s1.wait().unwrap();
    let durable = journal_bytes(&journal);
    assert!(durable >= size / 8 && durable < size, "durable {durable}");
    assert!(
        !dest.exists(),
        "partial object visible under its final name"
    );

    // Second attempt.
    let r2 = recv(&dest, port);
    std::thread::sleep(Duration::from_millis(200));
    let s2 = send(&src, port);
    let sent = json_of(s2);
    let got = json_of(r2);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&src).unwrap());
    assert!(got["chunks_resumed"].as_u64().unwrap() > 0, "{got}");
    assert!(
        sent["chunks_skipped_resume"].as_u64().unwrap() > 0,
        "{sent}"
    );
    let wire = sent["bytes_on_wire"].as_u64().unwrap();
    assert!(
        wire < size - durable / 2,
        "second run sent {wire} bytes although {durable} of {size} were durable"
    );
    assert!(!journal.exists(), "journal left after success");
}
