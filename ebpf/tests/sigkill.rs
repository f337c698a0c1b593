//! Privileged test: a process killed with SIGKILL while holding an attachment leaves no XDP
//! program on the interface and no program loaded in the kernel (the attachment is a BPF
//! link whose only reference is the process's file descriptor).
//!
//! The test re-runs this test binary as the child, selecting the ignored helper test
//! `sigkill_child_holds_attachment` and passing the namespace through the environment.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dwcp_ebpf::{AttachMode, ProgramConfig, XdpProgram};
use dwcp_netns::{IF_B, Netns, Pair, VethOptions};

const CHILD_NS: &str = "DWCP_XDP_SIGKILL_CHILD_NS";
const CHILD_MODE: &str = "DWCP_XDP_SIGKILL_CHILD_MODE";

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn link(ns: &Netns) -> String {
    let out = ns.ip(&["link", "show", "dev", IF_B]).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn program_loaded(id: u32) -> bool {
    aya::programs::loaded_programs().any(|p| p.is_ok_and(|p| p.id() == id))
}

fn kill_and_check(mode: AttachMode, tag: &str) {
    let pair = Pair::new(tag, VethOptions::default()).expect("lab");
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "sigkill_child_holds_attachment",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_NS, pair.b.name())
        .env(CHILD_MODE, mode.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let mut child = KillOnDrop(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let id: u32 = loop {
        let line = lines
            .next()
            .expect("child exited before attaching")
            .unwrap();
        // The harness prints "test <name> ... " on the same line first.
        if let Some((_, id)) = line.split_once("ATTACHED ") {
            break id.trim().parse().unwrap();
        }
    };
    let shown = link(&pair.b);
    assert!(
        shown.contains(&format!("prog/xdp id {id}")),
        "child's program {id} not on {IF_B}: {shown}"
    );
    assert!(program_loaded(id));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "child must die of SIGKILL"
    );

    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let shown = link(&pair.b);
        let gone = !shown.contains("prog/xdp") && !program_loaded(id);
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{mode}: program {id} still attached/loaded after SIGKILL: {shown}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_process_leaves_no_attachment() {
    if !dwcp_netns::privileged_test_guard("killed_process_leaves_no_attachment") {
        return;
    }
    kill_and_check(AttachMode::Native, "xkn");
    kill_and_check(AttachMode::Generic, "xkg");
}

#[test]
#[ignore = "helper: run as a child process by killed_process_leaves_no_attachment"]
fn sigkill_child_holds_attachment() {
    let Ok(ns) = std::env::var(CHILD_NS) else {
        eprintln!("helper only: killed_process_leaves_no_attachment runs it as a child");
        return;
    };
    let mode = match std::env::var(CHILD_MODE).as_deref() {
        Ok("generic") => AttachMode::Generic,
        _ => AttachMode::Native,
    };
    let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    let prog = XdpProgram::attach(IF_B, mode, &ProgramConfig::default()).unwrap();
    println!("ATTACHED {}", prog.program_id().unwrap());
    // Wait to be killed; give up after a while so an orphan cannot linger.
    std::thread::sleep(Duration::from_secs(30));
}
