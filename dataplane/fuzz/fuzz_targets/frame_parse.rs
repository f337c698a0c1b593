//! Fuzz target: every DWCP parser and payload decoder on arbitrary bytes.
//!
//! Checks that nothing panics and that whatever is accepted is canonical: re-encoding a parsed
//! header, frame or payload gives back exactly the input bytes. A second pass repairs the CRC
//! trailer of the input so the fuzzer also reaches the header rules and payload decoders
//! behind the checksum.
#![no_main]

use dwcp_proto::{
    FrameType, HEADER_LEN, Header, Payload, Trailer, build_frame, frame_crc, parse_frame,
    parse_frame_unverified,
};
use libfuzzer_sys::fuzz_target;

fn check_frame(data: &[u8]) {
    if let Ok(h) = Header::parse(data) {
        assert_eq!(
            &h.to_bytes()[..],
            &data[..HEADER_LEN],
            "header not canonical"
        );
    }
    match parse_frame(data) {
        Ok(f) => {
            let mut out = vec![0u8; data.len()];
            let n = build_frame(&f.header, f.payload, &mut out).expect("accepted frame rebuilds");
            assert_eq!(&out[..n], data, "frame not canonical");
            check_payload(f.header.frame_type, f.payload);
        }
        Err(e) => {
            let _ = (e.reason().index(), e.to_string());
        }
    }
    if let Ok(u) = parse_frame_unverified(data) {
        let mut v = u.header.to_bytes().to_vec();
        v.extend_from_slice(u.payload);
        match u.trailer {
            Trailer::Crc32c(c) => v.extend_from_slice(&c.to_be_bytes()),
            Trailer::Tag(t) => v.extend_from_slice(t),
        }
        assert_eq!(v, data, "unverified frame not canonical");
        let _ = u.header.aead_nonce();
    }
}

fn check_payload(ft: FrameType, buf: &[u8]) {
    match Payload::decode(ft, buf) {
        Ok(p) => {
            assert_eq!(p.frame_type(), ft);
            let mut out = vec![0u8; p.encoded_len()];
            let n = p.encode(&mut out).expect("decoded payload encodes");
            assert_eq!(&out[..n], buf, "{ft:?} payload not canonical");
            assert_eq!(Payload::decode(ft, &out[..n]).as_ref(), Ok(&p));
        }
        Err(e) => {
            let _ = (e.reason().index(), e.to_string());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check_frame(data);
    // Every typed decoder on the raw input.
    for ft in FrameType::ALL {
        check_payload(ft, data);
    }
    // Same input with a correct CRC trailer.
    if data.len() >= HEADER_LEN + 4 {
        let mut fixed = data.to_vec();
        let n = fixed.len();
        let crc = frame_crc(&fixed[..HEADER_LEN], &fixed[HEADER_LEN..n - 4]);
        fixed[n - 4..].copy_from_slice(&crc.to_be_bytes());
        check_frame(&fixed);
    }
});
