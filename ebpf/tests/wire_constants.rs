//! The XDP program's copy of the wire format (its `#define`s, accepted versions and frame
//! types in `xdp/dwcp_xdp.c`) against `dwcp_proto`, the one source of the wire format: a
//! change to either that the other does not follow fails here. Unprivileged (reads the C
//! source).

use std::collections::BTreeSet;

use dwcp_proto::{CRC_LEN, Flags, FrameType, HEADER_LEN, MAGIC, TAG_LEN, Version};

const SRC: &str = include_str!("../xdp/dwcp_xdp.c");

/// The value of `#define NAME value` (decimal or 0x hex).
fn define(name: &str) -> u64 {
    let line = SRC
        .lines()
        .find(|l| l.split_whitespace().take(2).eq(["#define", name]))
        .unwrap_or_else(|| panic!("no #define {name} in dwcp_xdp.c"));
    let v = line.split_whitespace().nth(2).expect("a value");
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).expect("hex"),
        None => v.parse().expect("decimal"),
    }
}

/// The body of the C function `name` (up to its closing brace at column 0).
fn function(name: &str) -> &'static str {
    let start = SRC
        .find(&format!("{name}("))
        .unwrap_or_else(|| panic!("no function {name}"));
    let end = SRC[start..].find("\n}").expect("end of function") + start;
    &SRC[start..end]
}

#[test]
fn header_constants_match_dwcp_proto() {
    assert_eq!(define("DWCP_HDR_LEN"), HEADER_LEN as u64);
    assert_eq!(define("DWCP_MAGIC"), u64::from(MAGIC));
    assert_eq!(define("DWCP_FLAG_SEALED"), u64::from(Flags::SEALED.bits()));
    assert_eq!(define("DWCP_FLAGS_KNOWN"), u64::from(Flags::ALL.bits()));
    assert_eq!(define("DWCP_CRC_LEN"), CRC_LEN as u64);
    assert_eq!(define("DWCP_TAG_LEN"), TAG_LEN as u64);
}

#[test]
fn accepted_frame_types_are_dwcp_proto_s() {
    let body = function("known_type");
    let cased: BTreeSet<u8> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("case 0x"))
        .map(|l| u8::from_str_radix(&l[..2], 16).expect("hex case"))
        .collect();
    let proto: BTreeSet<u8> = FrameType::ALL.iter().map(|t| t.as_u8()).collect();
    assert_eq!(cased, proto, "known_type() against FrameType::ALL");
}

#[test]
fn accepted_versions_are_dwcp_proto_s() {
    // `if (hdr[2] != 1 && hdr[2] != 3)`: the versions the program lets through.
    let line = SRC
        .lines()
        .find(|l| l.contains("hdr[2] !="))
        .expect("the version check");
    let versions: BTreeSet<u8> = line
        .split("hdr[2] != ")
        .skip(1)
        .map(|s| {
            s.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .expect("a version number")
        })
        .collect();
    let proto: BTreeSet<u8> = Version::ALL.iter().map(|v| *v as u8).collect();
    assert_eq!(
        versions, proto,
        "the XDP version check against Version::ALL"
    );
}
