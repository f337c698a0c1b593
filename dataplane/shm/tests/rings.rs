//! Ring, table and restart tests across threads and processes, on real mapped files.
//!
//! Child processes are this test binary re-executed with `DWCP_SHM_CHILD` set; the
//! `child_entry` test does the child's work and exits, every other test ignores it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dwcp_shm::{
    Command, Event, FlagEntry, FlagKind, Geometry, Region, Role, RolloutEntry, RolloutState,
    ShmError, Stat, TableContent,
};

fn small() -> Geometry {
    Geometry {
        cmd_slots: 64,
        evt_slots: 64,
        workers: 2,
        flag_entries: 16,
    }
}

fn region_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("region")
}

/// A child process killed and reaped when dropped (also when the test panics).
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Kid {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Kid {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

fn spawn_child(mode: &str, path: &Path, n: u64) -> Kid {
    Kid(Proc::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("DWCP_SHM_CHILD", format!("{mode}:{}:{n}", path.display()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap())
}

/// Child side: `consume` pops `n` commands checking order and echoes each as a Pong;
/// `produce` pushes Pongs with nonce = seq until `n`; `apply` counts each command in a
/// side file before committing it.
#[test]
fn child_entry() {
    let Ok(spec) = std::env::var("DWCP_SHM_CHILD") else {
        return;
    };
    let mut it = spec.splitn(3, ':');
    let (mode, path, n) = (
        it.next().unwrap().to_owned(),
        PathBuf::from(it.next().unwrap()),
        it.next().unwrap().parse::<u64>().unwrap(),
    );
    // Never outlive a parent that panicked: give up after 30 s.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(30));
        std::process::exit(2);
    });
    let region = Region::open(&path).unwrap();
    let mut dp = region.attach_dataplane().unwrap();
    match mode.as_str() {
        "consume" => {
            let mut expect = dp.commands.next_seq();
            while expect < n {
                let Some(r) = dp.commands.pop() else {
                    std::thread::yield_now();
                    continue;
                };
                assert_eq!(r.seq, expect);
                assert_eq!(r.msg, Ok(Command::Ping { nonce: expect }));
                while dp.events.push(&Event::Pong { nonce: expect }).is_err() {
                    std::thread::yield_now();
                }
                expect += 1;
            }
        }
        "produce" => {
            while dp.events.next_seq() < n {
                let nonce = dp.events.next_seq();
                if dp.events.push(&Event::Pong { nonce }).is_err() {
                    std::thread::yield_now();
                }
            }
        }
        "apply" => {
            let counts = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path.with_extension("counts"))
                .unwrap();
            let mut expect = dp.commands.next_seq();
            while expect < n {
                let Some(r) = dp.commands.next() else {
                    std::thread::yield_now();
                    continue;
                };
                assert_eq!(r.seq, expect);
                assert_eq!(r.msg, Ok(Command::Ping { nonce: expect }));
                // "Apply": bump this message's counter in the side file, then commit.
                use std::os::unix::fs::FileExt;
                let mut b = [0u8; 1];
                counts.read_exact_at(&mut b, expect).unwrap();
                counts.write_all_at(&[b[0] + 1], expect).unwrap();
                dp.commands.commit();
                expect += 1;
            }
        }
        m => panic!("unknown child mode {m}"),
    }
    std::process::exit(0);
}

#[test]
fn two_threads_every_message_once_in_order_both_rings() {
    let dir = tempfile::tempdir().unwrap();
    let region = Region::create_or_open(&region_path(&dir), small()).unwrap();
    let mut control = region.attach_control().unwrap();
    let mut dp = region.attach_dataplane().unwrap();
    const N: u64 = 200_000;
    let echo = std::thread::spawn(move || {
        let mut expect = 0;
        while expect < N {
            let Some(r) = dp.commands.pop() else {
                std::thread::yield_now();
                continue;
            };
            {
                assert_eq!(r.seq, expect);
                assert_eq!(r.msg, Ok(Command::Ping { nonce: expect }));
                while dp.events.push(&Event::Pong { nonce: expect }).is_err() {
                    std::hint::spin_loop();
                }
                expect += 1;
            }
        }
    });
    let mut sent = 0;
    let mut got = 0;
    while got < N {
        if sent < N
            && control
                .commands
                .push(&Command::Ping { nonce: sent })
                .is_ok()
        {
            sent += 1;
        }
        if let Some(r) = control.events.pop() {
            assert_eq!(r.seq, got);
            assert_eq!(r.msg, Ok(Event::Pong { nonce: got }));
            got += 1;
        }
    }
    echo.join().unwrap();
    assert!(control.events.pop().is_none());
    assert_eq!(region.command_positions(), (N, N));
    assert_eq!(region.event_positions(), (N, N));
}

#[test]
fn full_ring_refuses_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let region = Region::create_or_open(&region_path(&dir), small()).unwrap();
    let mut control = region.attach_control().unwrap();
    for i in 0..64 {
        control.commands.push(&Command::Ping { nonce: i }).unwrap();
    }
    let err = control
        .commands
        .push(&Command::Ping { nonce: 64 })
        .unwrap_err();
    assert_eq!(err.slots, 64);
    let mut dp = region.attach_dataplane().unwrap();
    assert_eq!(
        dp.commands.pop().unwrap().msg,
        Ok(Command::Ping { nonce: 0 })
    );
    control.commands.push(&Command::Ping { nonce: 64 }).unwrap();
    let rest: Vec<_> = std::iter::from_fn(|| dp.commands.pop()).collect();
    assert_eq!(rest.len(), 64);
    assert_eq!(rest.last().unwrap().msg, Ok(Command::Ping { nonce: 64 }));
}

#[test]
fn two_processes_every_message_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = region_path(&dir);
    let region = Region::create_or_open(&path, small()).unwrap();
    let mut control = region.attach_control().unwrap();
    const N: u64 = 200_000;
    let mut child = spawn_child("consume", &path, N);
    let (mut sent, mut got) = (0, 0);
    // A hang guard, not a speed target: on a loaded 2-core machine this takes 10-20 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < N {
        assert!(Instant::now() < deadline, "timed out at {got}");
        if sent < N
            && control
                .commands
                .push(&Command::Ping { nonce: sent })
                .is_ok()
        {
            sent += 1;
        }
        if let Some(r) = control.events.pop() {
            assert_eq!(r.seq, got);
            assert_eq!(r.msg, Ok(Event::Pong { nonce: got }));
            got += 1;
        }
    }
    assert!(child.wait().unwrap().success());
    assert!(control.events.pop().is_none());
}

#[test]
fn producer_process_killed_and_restarted_during_traffic_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = region_path(&dir);
    let region = Region::create_or_open(&path, small()).unwrap();
    let mut control = region.attach_control().unwrap();
    const N: u64 = 60_000;
    let epoch0 = region.side_status(Role::Dataplane).epoch;
    let mut got = 0;
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < N {
        let mut child = spawn_child("produce", &path, N);
        // Let it run for a stretch of messages, then kill it mid-traffic.
        let stop_at = got + 10_000 + kills * 3_917;
        while got < N.min(stop_at) {
            assert!(Instant::now() < deadline, "timed out at {got}");
            if let Some(r) = control.events.pop() {
                assert_eq!(r.seq, got);
                assert_eq!(r.msg, Ok(Event::Pong { nonce: got }));
                got += 1;
            } else if child.try_wait().unwrap().is_none() {
                std::thread::yield_now();
            } else {
                // Finished; drain what it left.
                while let Some(r) = control.events.pop() {
                    assert_eq!(r.msg, Ok(Event::Pong { nonce: got }));
                    got += 1;
                }
                break;
            }
        }
        if got < N {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(kills >= 3, "only {kills} restarts");
    assert_eq!(
        region.side_status(Role::Dataplane).epoch,
        epoch0 + kills + 1
    );
    assert!(control.events.pop().is_none());
}

#[test]
fn consumer_process_killed_and_restarted_resumes_from_stored_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = region_path(&dir);
    let region = Region::create_or_open(&path, small()).unwrap();
    let mut control = region.attach_control().unwrap();
    const N: u64 = 40_000;
    let counts = std::fs::File::create(path.with_extension("counts")).unwrap();
    counts.set_len(N).unwrap();
    let mut sent = 0;
    let mut kills = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut child = spawn_child("apply", &path, N);
        let target = (region.command_positions().1 + 10_000).min(N);
        loop {
            assert!(Instant::now() < deadline, "timed out");
            if sent < N
                && control
                    .commands
                    .push(&Command::Ping { nonce: sent })
                    .is_ok()
            {
                sent += 1;
            }
            if region.command_positions().1 >= target {
                break;
            }
        }
        if target >= N {
            assert!(child.wait().unwrap().success());
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    let counts = std::fs::read(path.with_extension("counts")).unwrap();
    assert!(kills >= 3);
    assert!(counts.iter().all(|&c| c >= 1), "a message was lost");
    // A kill between "apply" and "commit" re-delivers that one message to the next consumer
    // (same seq, so consumers dedupe by seq); anything else would be a bug.
    let twice = counts.iter().filter(|&&c| c == 2).count() as u64;
    assert!(counts.iter().all(|&c| c <= 2));
    assert!(twice <= kills, "{twice} redeliveries for {kills} kills");
    assert_eq!(region.command_positions(), (N, N));
}

#[test]
fn clean_detach_and_reattach_mid_stream_is_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let region = Region::create_or_open(&region_path(&dir), small()).unwrap();
    let mut control = region.attach_control().unwrap();
    const N: u64 = 100_000;
    let r2 = region.clone();
    let consumer = std::thread::spawn(move || {
        let mut seen = Vec::with_capacity(N as usize);
        let mut i = 0u64;
        while (seen.len() as u64) < N {
            // Re-attach every few thousand messages: a restart of the consuming side.
            let mut dp = loop {
                match r2.attach_dataplane() {
                    Ok(d) => break d,
                    Err(ShmError::RoleBusy { .. }) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            };
            let quota = 3_000 + (i % 5) * 1_000;
            let mut taken = 0;
            while taken < quota && (seen.len() as u64) < N {
                if let Some(r) = dp.commands.pop() {
                    let Ok(Command::Ping { nonce }) = r.msg else {
                        panic!("bad message")
                    };
                    seen.push(nonce);
                    taken += 1;
                }
            }
            i += 1;
        }
        seen
    });
    let mut sent = 0;
    while sent < N {
        if control
            .commands
            .push(&Command::Ping { nonce: sent })
            .is_ok()
        {
            sent += 1;
        }
    }
    let seen = consumer.join().unwrap();
    assert_eq!(seen, (0..N).collect::<Vec<_>>());
}

#[test]
fn second_live_attach_is_refused_and_released_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let region = Region::create_or_open(&region_path(&dir), small()).unwrap();
    let c = region.attach_control().unwrap();
    assert!(matches!(
        region.attach_control(),
        Err(ShmError::RoleBusy {
            role: Role::Control,
            ..
        })
    ));
    let status = region.side_status(Role::Control);
    assert_eq!(status.pid, u64::from(std::process::id()));
    assert!(status.alive);
    drop(c);
    assert_eq!(region.side_status(Role::Control).pid, 0);
    region.attach_control().unwrap();
}

#[test]
fn header_mismatches_are_typed_errors() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let path = region_path(&dir);
    drop(Region::create_or_open(&path, small()).unwrap());
    // Same file, different geometry requested.
    assert!(matches!(
        Region::create_or_open(&path, Geometry::default()),
        Err(ShmError::GeometryMismatch { .. })
    ));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // ABI version word (byte 8).
    f.write_all_at(&2u64.to_le_bytes(), 8).unwrap();
    assert!(matches!(
        Region::open(&path),
        Err(ShmError::AbiMismatch {
            found: 2,
            expected: 1,
            ..
        })
    ));
    f.write_all_at(&1u64.to_le_bytes(), 8).unwrap();
    // Layout size word (byte 16).
    f.write_all_at(&12345u64.to_le_bytes(), 16).unwrap();
    assert!(matches!(
        Region::open(&path),
        Err(ShmError::LayoutMismatch {
            field: "layout_size",
            ..
        })
    ));
    // Magic (byte 0).
    f.write_all_at(&0x1234u64.to_le_bytes(), 0).unwrap();
    assert!(matches!(
        Region::open(&path),
        Err(ShmError::BadMagic { found: 0x1234, .. })
    ));
    // A file whose creator never wrote the magic.
    let p2 = dir.path().join("blank");
    std::fs::File::create(&p2).unwrap().set_len(8192).unwrap();
    assert!(matches!(
        Region::open(&p2),
        Err(ShmError::NotInitialized { .. })
    ));
}

fn content_for(g: u64) -> TableContent {
    // Every field is a function of `g`, so a torn copy mixes values and is detectable.
    TableContent {
        rollout: RolloutEntry {
            state: RolloutState::Running,
            stage: (g % 5) as u32,
            pct_bp: (g % 10_001) as u32,
        },
        flags: (0..(g % 16) as usize)
            .map(|i| FlagEntry {
                name: format!("f{i}-{}", g % 1000),
                kind: if g.is_multiple_of(2) {
                    FlagKind::Bool
                } else {
                    FlagKind::Percent
                },
                enabled: g.is_multiple_of(3),
                pct_bp: (g % 10_001) as u16,
                changed_generation: g,
            })
            .collect(),
    }
}

#[test]
fn seqlock_table_is_never_torn() {
    let dir = tempfile::tempdir().unwrap();
    let region = Region::create_or_open(&region_path(&dir), small()).unwrap();
    let mut control = region.attach_control().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (reader, stop, reads) = (region.table_reader(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    let s = reader.read().unwrap();
                    if s.generation == 0 {
                        continue; // nothing published yet
                    }
                    // Generation g was published with content_for(g) below.
                    assert_eq!(
                        s.content,
                        content_for(s.generation),
                        "torn at {}",
                        s.generation
                    );
                    assert!(s.generation >= last);
                    last = s.generation;
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    let mut g = 0;
    while t0.elapsed() < Duration::from_millis(1500) || reads.load(Ordering::Relaxed) < 1000 {
        g = control
            .table
            .publish(&content_for(control.table.generation() + 1))
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(g > 1000);
    assert_eq!(region.table_reader().read().unwrap().generation, g);
}

#[test]
fn table_and_stats_survive_control_restart() {
    let dir = tempfile::tempdir().unwrap();
    let region = Region::create_or_open(&region_path(&dir), small()).unwrap();
    let mut c = region.attach_control().unwrap();
    let g1 = c.table.publish(&content_for(7)).unwrap();
    drop(c);
    let mut dp = region.attach_dataplane().unwrap();
    let w = dp.take_stats_writer(1).unwrap();
    assert!(dp.take_stats_writer(1).is_none());
    assert!(dp.take_stats_writer(2).is_none());
    w.add(Stat::RxFrames, 5);
    w.add(Stat::RxFrames, 2);
    w.set(Stat::LatencyP99Us, 900);
    let again = Region::open(&region_path(&dir)).unwrap();
    let mut c2 = again.attach_control().unwrap();
    assert_eq!(again.table_reader().read().unwrap().generation, g1);
    assert_eq!(c2.table.publish(&content_for(1)).unwrap(), g1 + 1);
    let s = again.stats_reader().snapshot(1).unwrap();
    assert_eq!(s.get(Stat::RxFrames), 7);
    assert_eq!(s.get(Stat::LatencyP99Us), 900);
    assert_eq!(dp.table.read().unwrap().generation, g1 + 1);
}

#[test]
fn uncommitted_reads_are_redelivered_to_the_next_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let region = Region::create_or_open(&region_path(&dir), small()).unwrap();
    let mut control = region.attach_control().unwrap();
    for i in 0..10 {
        control.commands.push(&Command::Ping { nonce: i }).unwrap();
    }
    let mut dp = region.attach_dataplane().unwrap();
    for _ in 0..3 {
        dp.commands.next().unwrap();
    }
    dp.commands.commit();
    for _ in 0..4 {
        dp.commands.next().unwrap();
    }
    assert_eq!(dp.commands.next_seq(), 7);
    assert_eq!(region.command_positions(), (10, 3));
    dp.commands.rewind();
    assert_eq!(dp.commands.next().unwrap().seq, 3);
    drop(dp); // "crash" with 3 and more read but not committed
    let mut dp = region.attach_dataplane().unwrap();
    let seqs: Vec<u64> = std::iter::from_fn(|| dp.commands.pop().map(|r| r.seq)).collect();
    assert_eq!(seqs, (3..10).collect::<Vec<_>>());
    // Committed slots are free for the producer again, uncommitted ones never were.
    for i in 10..74 {
        control.commands.push(&Command::Ping { nonce: i }).unwrap();
    }
    assert!(control.commands.push(&Command::Ping { nonce: 74 }).is_err());
}

/// The doorbell: a consumer sleeping in `wait` with a long timeout is woken by the push (from
/// another thread, through its own mapping of the file, as another process would), and `wait`
/// returns at once when a message is already there.
#[test]
fn consumer_wait_is_woken_by_push() {
    let dir = tempfile::tempdir().unwrap();
    let path = region_path(&dir);
    let region = Region::create_or_open(&path, small()).unwrap();
    let mut dp = region.attach_dataplane().unwrap();
    let pusher = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut control = Region::open(&path).unwrap().attach_control().unwrap();
            let mut woken = Vec::new();
            for nonce in 0..20u64 {
                std::thread::sleep(Duration::from_millis(20));
                woken.push(Instant::now());
                control.commands.push(&Command::Ping { nonce }).unwrap();
            }
            woken
        })
    };
    let mut got = 0u64;
    while got < 20 {
        let t = Instant::now();
        dp.commands.wait(Duration::from_secs(10));
        let woke = Instant::now();
        while let Some(r) = dp.commands.pop() {
            assert_eq!(r.msg.unwrap(), Command::Ping { nonce: got });
            got += 1;
        }
        assert!(
            woke.duration_since(t) < Duration::from_secs(5),
            "wait slept to its timeout: the push did not wake it"
        );
    }
    let pushed = pusher.join().unwrap();
    assert_eq!(pushed.len(), 20);
    // Already readable: no sleep at all (the pusher's side was released when it ended).
    let mut c2 = region.attach_control().unwrap();
    c2.commands.push(&Command::Ping { nonce: 99 }).unwrap();
    let t = Instant::now();
    dp.commands.wait(Duration::from_secs(10));
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(dp.commands.pop().is_some());
    // Nothing there: sleeps about the timeout.
    let t = Instant::now();
    dp.commands.wait(Duration::from_millis(30));
    assert!(
        t.elapsed() >= Duration::from_millis(25),
        "{:?}",
        t.elapsed()
    );
}
