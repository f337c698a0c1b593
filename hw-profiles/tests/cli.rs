//! The `dwcp-hw` binary: show, detect --out, validate (good and bad files, exit codes).

use std::process::Command;

fn dwcp_hw() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dwcp-hw"))
}

#[test]
fn show_prints_the_embedded_default() {
    let out = dwcp_hw().arg("show").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        dwcp_hw_profiles::Profile::from_str(&text).unwrap(),
        dwcp_hw_profiles::Profile::embedded_default()
    );
}

#[test]
fn detect_writes_a_profile_that_validates() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.toml");
    let out = dwcp_hw()
        .args(["detect", "--out"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = dwcp_hw().arg("validate").arg(&f).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("is valid for this host"), "{stdout}");
}

#[test]
fn validate_reports_problems_with_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    let text = dwcp_hw_profiles::schema::EMBEDDED_DEFAULT_TOML
        .replace("ring_size = 2048", "ring_size = 1000")
        .replace("worker_cores = [0]", "worker_cores = [4000]");
    std::fs::write(&f, text).unwrap();
    let out = dwcp_hw().arg("validate").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rings.ring_size: 1000 is not a power of two"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cpu.worker_cores: core 4000 is not online"),
        "{stdout}"
    );

    std::fs::write(&f, "name = \"x\"\nbogus = 1\n").unwrap();
    let out = dwcp_hw().arg("validate").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("bogus"));
}
