//! Privileged validation of the lab and its WAN emulator against their configuration:
//! RTT with ping, loss with 20 000 UDP datagrams, bottleneck rate with iperf3 UDP, and
//! leak-free teardown / cleanup. The tests share one lock so their timing is not disturbed
//! by each other.

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use dwcp_bench::validate;
use dwcp_bench::{Impairment, Lab, LabOptions, WanOptions};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wan(tag: &str, imp: Impairment) -> Lab {
    let mut o = WanOptions::symmetric(imp);
    o.lab.tag = tag.into();
    Lab::wan(o).expect("build WAN lab")
}

#[test]
fn rtt_matches_configured_delay() {
    if !dwcp_netns::privileged_test_guard("rtt_matches_configured_delay") {
        return;
    }
    let _g = serial();
    let lab = wan(
        "rtt",
        Impairment {
            delay: Duration::from_millis(25),
            ..Default::default()
        },
    );
    let rtt = validate::measure_rtt(&lab, 30, Duration::from_millis(20)).unwrap();
    eprintln!("{rtt:?}");
    assert_eq!(rtt.received, rtt.sent, "no loss configured");
    // The delay line can only be late, never early.
    assert!(rtt.min_ms >= 50.0, "{rtt:?}");
    // Within 2 % of 50 ms (1 ms: wake-up latency plus the two stacks).
    assert!(rtt.median_ms <= 51.0, "{rtt:?}");

    // The same lab without delay is fast: the 50 ms above come from the emulator.
    let direct = Lab::direct(LabOptions {
        tag: "rtt0".into(),
        ..Default::default()
    })
    .unwrap();
    let d = validate::measure_rtt(&direct, 5, Duration::from_millis(20)).unwrap();
    assert!(d.median_ms < 5.0, "{d:?}");
}

#[test]
fn loss_matches_configured_ratio() {
    if !dwcp_netns::privileged_test_guard("loss_matches_configured_ratio") {
        return;
    }
    let _g = serial();
    let lab = wan(
        "loss",
        Impairment {
            delay: Duration::from_millis(5),
            loss: 0.01,
            ..Default::default()
        },
    );
    let n = 20_000u64;
    let st = validate::measure_loss(&lab, n, 10_000).unwrap();
    let (ab, _) = lab.counters().unwrap();
    eprintln!("{st:?} loss {:.4}\n{ab:?}", st.loss());
    // Binomial(20000, 0.01): sd = 0.0704 %; accept 4.5 sd either side.
    let sd = (0.01f64 * 0.99 / n as f64).sqrt();
    assert!((st.loss() - 0.01).abs() <= 4.5 * sd, "loss {} ", st.loss());
    // Every datagram the receiver missed was dropped by the emulator's loss stage (the end
    // markers also cross it, hence >=): nothing else lost frames.
    assert!(ab.dropped_loss >= n - st.received, "{ab:?}");
    assert!(ab.dropped_loss <= n - st.received + 50, "{ab:?}");
    assert_eq!(
        ab.dropped_queue + ab.dropped_overflow + ab.dropped_socket + ab.tx_errors,
        0
    );
    assert_eq!((st.duplicates, st.reordered, st.damaged), (0, 0, 0));
}

#[test]
fn bottleneck_holds_200_mbit() {
    if !dwcp_netns::privileged_test_guard("bottleneck_holds_200_mbit") {
        return;
    }
    let _g = serial();
    let lab = wan(
        "rate",
        Impairment {
            delay: Duration::from_millis(25),
            rate_bps: Some(200_000_000),
            ..Default::default()
        },
    );
    let r = validate::measure_rate(&lab, 300_000_000, 1400, 3).unwrap();
    let (ab, _) = lab.counters().unwrap();
    eprintln!("{r:?}\n{ab:?}");
    let mbit = r.frame_bps / 1e6;
    assert!((194.0..=206.0).contains(&mbit), "{mbit} Mbit/s of frames");
    // The excess was tail-dropped at the bottleneck queue, not elsewhere.
    assert!(ab.dropped_queue > 10_000, "{ab:?}");
    assert_eq!(
        ab.dropped_overflow + ab.dropped_oversize + ab.dropped_socket + ab.tx_errors,
        0,
        "{ab:?}"
    );
    // Frames left the delay line close to their release time (~17 kpps at 25 ms).
    assert!(ab.mean_late() < Duration::from_micros(500), "{ab:?}");
}

#[test]
fn lab_is_leak_free_and_cleanup_removes_leftovers() {
    if !dwcp_netns::privileged_test_guard("lab_is_leak_free_and_cleanup_removes_leftovers") {
        return;
    }
    let _g = serial();
    let lab = wan("leak", Impairment::default());
    let names: Vec<String> = [lab.a(), lab.r().unwrap(), lab.b()]
        .iter()
        .map(|n| n.name().to_string())
        .collect();
    assert!(lab.emulator().unwrap().is_running());
    let list = netns_list();
    for n in &names {
        assert!(list.contains(n.as_str()));
    }
    drop(lab);
    let list = netns_list();
    for n in &names {
        assert!(!list.contains(n.as_str()), "{n} left behind");
    }

    // A leftover of a dead process, with a process still running inside it.
    let stale = "dwcp-999999999-0-stale";
    let _ = Command::new("ip")
        .args(["netns", "del", stale])
        .stderr(std::process::Stdio::null())
        .status();
    assert!(
        Command::new("ip")
            .args(["netns", "add", stale])
            .status()
            .unwrap()
            .success()
    );
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", stale, "sleep", "60"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let report = dwcp_bench::cleanup_stale().unwrap();
    assert!(report.namespaces.iter().any(|n| n == stale), "{report:?}");
    assert!(
        report.killed.iter().any(|(pid, _)| *pid == sleeper.id()),
        "{report:?}"
    );
    let status = sleeper.wait().unwrap();
    assert!(!status.success(), "sleep was killed");
    assert!(!netns_list().contains(stale));
}
