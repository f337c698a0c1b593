//! The libc calls the region needs: CLOCK_MONOTONIC / CLOCK_REALTIME readings (system-wide,
//! so comparable between processes), a liveness probe for a PID, and a futex wait/wake on a
//! shared word (the ring doorbell: a consumer sleeps until the producer moves `head`).
//!
//! Does nothing else; every unsafe block here is a plain FFI call whose result is either
//! checked or, for the futex, needs no check because callers re-test their condition.
#![allow(unsafe_code)]

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call; the clock ids
    // used are always supported on Linux, and the return value is checked.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// CLOCK_MONOTONIC in nanoseconds. The same clock for every process on the host, so a
/// heartbeat written by one process can be aged by another.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// True if a process with this PID exists in our PID namespace (including zombies).
pub fn pid_alive(pid: u64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the PID exists and we may
    // signal it. No memory is passed.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This process's PID.
pub fn own_pid() -> u64 {
    u64::from(std::process::id())
}

/// Address of the low 32 bits of a 64-bit word: what a futex on that word compares.
fn low_half(word: &std::sync::atomic::AtomicU64) -> *const u32 {
    let p = word.as_ptr().cast::<u32>().cast_const();
    if cfg!(target_endian = "little") {
        p
    } else {
        p.wrapping_add(1)
    }
}

/// Sleeps until `word`'s low 32 bits differ from `expected_low`, a [`futex_wake`] on the same
/// word (from any process mapping it), a signal, or `timeout`. Returns at once if the value
/// already differs. Spurious returns are allowed: callers re-check their condition.
pub(crate) fn futex_wait(
    word: &std::sync::atomic::AtomicU64,
    expected_low: u32,
    timeout: std::time::Duration,
) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the address is 4-byte aligned (it is the low half of an 8-byte aligned atomic
    // word that lives as long as `word` is borrowed, i.e. for the whole call); FUTEX_WAIT
    // (not the private variant, because the word is in a MAP_SHARED mapping used by two
    // processes) only reads it atomically in the kernel; `ts` is a valid relative timeout.
    // Every outcome (woken, EAGAIN, ETIMEDOUT, EINTR) is fine: the caller re-checks.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            low_half(word),
            libc::FUTEX_WAIT,
            expected_low,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes every thread (in any process) sleeping in [`futex_wait`] on `word`.
pub(crate) fn futex_wake(word: &std::sync::atomic::AtomicU64) {
    // SAFETY: FUTEX_WAKE only uses the address as a key (aligned low half of a live atomic
    // word); it neither reads nor writes memory through it. The result (number woken) is not
    // needed.
    unsafe {
        libc::syscall(libc::SYS_futex, low_half(word), libc::FUTEX_WAKE, i32::MAX);
    }
}
