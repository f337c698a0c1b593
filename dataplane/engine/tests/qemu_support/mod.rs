//! Shared by the QEMU migration test and the QEMU benchmark: a tiny guest assembled here, a
//! QMP client, and a QEMU process running in a network namespace.
//!
//! The guest is a flat multiboot image (QEMU's `-kernel` loads it at 1 MiB and enters it in
//! 32-bit protected mode). It fills `[data_start, data_end)` once with a deterministic mix of
//! zero, pseudo-random (xorshift32) and address-valued 64 KiB regions, writes
//! [`FILL_DONE`] at [`MARK_ADDR`], then loops forever dirtying one word per page of a hot
//! 1 MiB region and incrementing the pass counter at [`COUNTER_ADDR`]. Progress is read with
//! the HMP `xp` command; the data region can be checked with [`expected_data`].
//!
//! Not a general-purpose QEMU wrapper: only what the test and the benchmark need.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Guest-physical address of the pass counter.
pub const COUNTER_ADDR: u32 = 0x0020_0000;
/// Guest-physical address of the fill-done marker.
pub const MARK_ADDR: u32 = 0x0020_0004;
/// Marker value once the data region is filled.
pub const FILL_DONE: u32 = 0x600D_F111;
/// Hot region dirtied on every pass.
pub const HOT: (u32, u32) = (0x0030_0000, 0x0040_0000);
/// Start of the data region.
pub const DATA_START: u32 = 0x0100_0000;

const LOAD: u32 = 0x0010_0000;
const SEED: u32 = 0x1234_5678;

/// The guest image for a data region `[DATA_START, data_end)`.
pub fn guest_image(data_end: u32) -> Vec<u8> {
    assert!(data_end > DATA_START && data_end.is_multiple_of(4));
    let mut c: Vec<u8> = Vec::new();
    let d = |c: &mut Vec<u8>, v: u32| c.extend_from_slice(&v.to_le_bytes());
    c.push(0xFA); // cli
    c.push(0xBC); // mov esp, 0x90000
    d(&mut c, 0x0009_0000);
    c.push(0xBF); // mov edi, DATA_START
    d(&mut c, DATA_START);
    c.push(0xB8); // mov eax, SEED
    d(&mut c, SEED);
    let fill = c.len();
    c.extend_from_slice(&[0x89, 0xF9]); // mov ecx, edi
    c.extend_from_slice(&[0xC1, 0xE9, 0x10]); // shr ecx, 16
    c.extend_from_slice(&[0x83, 0xE1, 0x03]); // and ecx, 3
    c.extend_from_slice(&[0x74, 0]); // jz next (zero region)
    let jz = c.len();
    c.extend_from_slice(&[0x83, 0xF9, 0x03]); // cmp ecx, 3
    c.extend_from_slice(&[0x74, 0]); // je addr
    let je = c.len();
    // xorshift32: x ^= x << 13; x ^= x >> 17; x ^= x << 5
    c.extend_from_slice(&[0x89, 0xC2, 0xC1, 0xE2, 13, 0x31, 0xD0]);
    c.extend_from_slice(&[0x89, 0xC2, 0xC1, 0xEA, 17, 0x31, 0xD0]);
    c.extend_from_slice(&[0x89, 0xC2, 0xC1, 0xE2, 5, 0x31, 0xD0]);
    c.extend_from_slice(&[0x89, 0x07]); // mov [edi], eax
    c.extend_from_slice(&[0xEB, 0]); // jmp next
    let jn = c.len();
    let addr = c.len();
    c.extend_from_slice(&[0x89, 0x3F]); // mov [edi], edi
    let next = c.len();
    c.extend_from_slice(&[0x83, 0xC7, 0x04]); // add edi, 4
    c.extend_from_slice(&[0x81, 0xFF]); // cmp edi, data_end
    d(&mut c, data_end);
    let back = fill as i64 - (c.len() as i64 + 2);
    c.extend_from_slice(&[0x72, back as i8 as u8]); // jb fill
    c[jz - 1] = (next - jz) as u8;
    c[je - 1] = (addr - je) as u8;
    c[jn - 1] = (next - jn) as u8;
    c.extend_from_slice(&[0xC7, 0x05]); // mov dword [MARK], FILL_DONE
    d(&mut c, MARK_ADDR);
    d(&mut c, FILL_DONE);
    c.extend_from_slice(&[0x31, 0xDB]); // xor ebx, ebx
    let outer = c.len();
    c.push(0xBF); // mov edi, HOT.0
    d(&mut c, HOT.0);
    let inner = c.len();
    c.extend_from_slice(&[0x89, 0x1F]); // mov [edi], ebx
    c.extend_from_slice(&[0x81, 0xC7]); // add edi, 4096
    d(&mut c, 0x1000);
    c.extend_from_slice(&[0x81, 0xFF]); // cmp edi, HOT.1
    d(&mut c, HOT.1);
    let back = inner as i64 - (c.len() as i64 + 2);
    c.extend_from_slice(&[0x72, back as i8 as u8]); // jb inner
    c.push(0x43); // inc ebx
    c.extend_from_slice(&[0x89, 0x1D]); // mov [COUNTER], ebx
    d(&mut c, COUNTER_ADDR);
    let back = outer as i64 - (c.len() as i64 + 2);
    c.extend_from_slice(&[0xEB, back as i8 as u8]); // jmp outer

    // Multiboot header with the address fields (flag bit 16): a flat image, no ELF.
    let magic: u32 = 0x1BAD_B002;
    let flags: u32 = 1 << 16;
    let mut img = Vec::new();
    for v in [
        magic,
        flags,
        0u32.wrapping_sub(magic.wrapping_add(flags)),
        LOAD,      // header_addr
        LOAD,      // load_addr
        0,         // load_end_addr: whole file
        0,         // bss_end_addr: none
        LOAD + 32, // entry
    ] {
        img.extend_from_slice(&v.to_le_bytes());
    }
    img.extend_from_slice(&c);
    img
}

/// Writes the guest image into `dir`.
pub fn write_guest(dir: &Path, data_end: u32) -> PathBuf {
    let p = dir.join("guest.bin");
    std::fs::write(&p, guest_image(data_end)).expect("writing the guest image");
    p
}

/// What the guest leaves in `[DATA_START, data_end)` once its fill loop is done.
pub fn expected_data(data_end: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((data_end - DATA_START) as usize);
    let mut x = SEED;
    let mut a = DATA_START;
    while a < data_end {
        let w = match (a >> 16) & 3 {
            0 => 0,
            3 => a,
            _ => {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x
            }
        };
        out.extend_from_slice(&w.to_le_bytes());
        a += 4;
    }
    out
}

/// The QEMU binary, if installed.
pub fn qemu_binary() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/qemu-system-x86_64");
    p.exists().then_some(p)
}

/// A QMP connection.
pub struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Qmp {
    /// Connects (retrying while QEMU starts) and leaves capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Qmp {
        let start = Instant::now();
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < timeout => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("QMP socket {}: {e}", path.display()),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut q = Qmp {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let greeting = q.read();
        assert!(greeting.get("QMP").is_some(), "QMP greeting: {greeting}");
        q.cmd("qmp_capabilities", json!({}));
        q
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        let n = self.r.read_line(&mut line).expect("reading QMP");
        assert!(n > 0, "QMP connection closed");
        serde_json::from_str(&line).expect("QMP JSON")
    }

    /// Runs a command; returns its `return` value or its `error` (as `Err`).
    pub fn try_cmd(&mut self, name: &str, args: Value) -> Result<Value, Value> {
        let msg = json!({"execute": name, "arguments": args});
        writeln!(self.w, "{msg}").expect("writing QMP");
        loop {
            let v = self.read();
            if v.get("event").is_some() {
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            return Err(v.get("error").cloned().unwrap_or(v));
        }
    }

    /// Runs a command that must succeed.
    pub fn cmd(&mut self, name: &str, args: Value) -> Value {
        self.try_cmd(name, args.clone())
            .unwrap_or_else(|e| panic!("QMP {name} {args}: {e}"))
    }

    /// One guest-physical 32-bit word, through HMP `xp`.
    pub fn word(&mut self, addr: u32) -> u32 {
        let out = self.cmd(
            "human-monitor-command",
            json!({"command-line": format!("xp /1wx {addr:#x}")}),
        );
        let s = out.as_str().unwrap_or_default();
        let hex = s
            .split_whitespace()
            .nth(1)
            .and_then(|h| h.strip_prefix("0x"))
            .unwrap_or_else(|| panic!("unexpected xp output {s:?}"));
        u32::from_str_radix(hex, 16).expect("hex word")
    }

    /// `query-status` status string.
    pub fn status(&mut self) -> String {
        self.cmd("query-status", json!({}))["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Polls `query-migrate` until a final state; returns the last answer.
    pub fn wait_migration(&mut self, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let v = self.cmd("query-migrate", json!({}));
            let st = v["status"].as_str().unwrap_or_default();
            if matches!(st, "completed" | "failed" | "cancelled") || start.elapsed() > timeout {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A QEMU process; killed when dropped.
pub struct Vm {
    pub child: Child,
    pub qmp_path: PathBuf,
}

impl Vm {
    /// Starts QEMU (TCG, `mem_mib` RAM, the guest image) inside namespace `ns` (by name),
    /// with `extra` arguments (e.g. `-incoming`). stderr goes to `dir/<name>.log`.
    pub fn start(
        ns: &str,
        dir: &Path,
        name: &str,
        guest: &Path,
        mem_mib: u32,
        extra: &[&str],
    ) -> Vm {
        let qmp_path = dir.join(format!("{name}.qmp"));
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .arg(qemu_binary().expect("qemu-system-x86_64"))
            .args(["-machine", "pc,accel=tcg", "-cpu", "qemu64", "-m"])
            .arg(mem_mib.to_string())
            .args([
                "-nodefaults",
                "-display",
                "none",
                "-serial",
                "none",
                "-monitor",
                "none",
            ])
            .arg("-kernel")
            .arg(guest)
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = c.spawn().expect("starting qemu-system-x86_64");
        Vm { child, qmp_path }
    }

    /// QMP connection.
    pub fn qmp(&self) -> Qmp {
        Qmp::connect(&self.qmp_path, Duration::from_secs(10))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the guest has filled its data region and is counting passes.
pub fn wait_guest_ready(q: &mut Qmp, timeout: Duration) {
    let start = Instant::now();
    while q.word(MARK_ADDR) != FILL_DONE || q.word(COUNTER_ADDR) == 0 {
        assert!(
            start.elapsed() < timeout,
            "guest did not fill its memory in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed when dropped (the carriers).
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
