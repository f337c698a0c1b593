//! Compiles the C XDP program (xdp/dwcp_xdp.c) into `$OUT_DIR/dwcp_xdp.o` with clang, so the
//! crate can embed it with `include_bytes!`. Fails with an explanation when clang or the
//! libbpf headers are missing (install them with scripts/setup.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "xdp/dwcp_xdp.c";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=DWCP_CLANG");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = std::env::var("DWCP_CLANG").unwrap_or_else(|_| "clang".to_string());

    // The multiarch include directory holds <asm/types.h>, which <linux/bpf.h> needs.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = format!("/usr/include/{arch}-linux-gnu");

    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        fail(
            "the libbpf headers (/usr/include/bpf/bpf_helpers.h) are missing; \
             install them with `apt-get install libbpf-dev` (or run scripts/setup.sh)",
        );
    }

    let obj = out_dir.join("dwcp_xdp.o");
    let output = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", SOURCE, "-o"])
        .arg(&obj)
        .output();
    match output {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fail(&format!(
            "`{clang}` was not found: the XDP program is C compiled with clang for the bpf \
             target. Install clang, llvm and libbpf-dev (`apt-get install clang llvm \
             libbpf-dev`, or run scripts/setup.sh), or point DWCP_CLANG at a clang binary"
        )),
        Err(e) => fail(&format!("could not run `{clang}`: {e}")),
        Ok(out) if !out.status.success() => fail(&format!(
            "`{clang}` failed to compile {SOURCE} ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
        Ok(_) => {}
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: dwcp-ebpf build: {msg}");
    panic!("dwcp-ebpf build: {msg}");
}
