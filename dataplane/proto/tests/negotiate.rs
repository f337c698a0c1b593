//! Version and capability negotiation.

use dwcp_proto::*;
use proptest::prelude::*;

fn v3(max_streams: u16, max_payload: u32, chunk: u32) -> Hello {
    Hello::new(max_streams, max_payload, chunk)
}

fn v1_only() -> Hello {
    let mut h = Hello::new(1, 1400, 1400);
    h.versions = VersionSet::V1;
    h.capabilities = Capabilities::EMPTY;
    h
}

#[test]
fn two_v3_endpoints_get_v3_with_common_caps_and_min_limits() {
    let mut a = v3(16, 8952, 8192);
    let mut b = v3(4, 60_000, 32_768);
    b.capabilities = Capabilities::DELTA | Capabilities::MULTISTREAM | Capabilities::SEALED;
    a.capabilities = Capabilities::ALL;
    let s = negotiate(&a, &b).unwrap();
    assert_eq!(s.version, Version::V3);
    assert_eq!(
        s.capabilities,
        Capabilities::DELTA | Capabilities::MULTISTREAM | Capabilities::SEALED
    );
    assert_eq!(
        (s.max_streams, s.max_payload, s.chunk_size),
        (4, 8952, 8192)
    );
    assert!(s.codec_allowed(Codec::HdeContainer));
    assert!(!s.codec_allowed(Codec::Zstd));
    assert_eq!(negotiate(&b, &a).unwrap(), s);
}

#[test]
fn v3_endpoint_talks_v1_to_a_v1_peer() {
    let a = v3(16, 8952, 8192);
    let b = v1_only();
    let s = negotiate(&a, &b).unwrap();
    assert_eq!(s.version, Version::V1);
    assert_eq!(s.capabilities, Capabilities::EMPTY);
    assert_eq!(s.max_streams, 1);
    assert_eq!((s.max_payload, s.chunk_size), (1400, 1400));
    for c in Codec::ALL {
        assert_eq!(s.codec_allowed(c), c == Codec::Raw);
    }
    assert_eq!(negotiate(&b, &a).unwrap(), s);
}

#[test]
fn v1_peer_offering_capabilities_still_gets_none() {
    let mut b = v1_only();
    b.capabilities = Capabilities::ALL;
    let s = negotiate(&v3(8, 9000, 9000), &b).unwrap();
    assert_eq!(s.version, Version::V1);
    assert!(s.capabilities.is_empty());
}

#[test]
fn no_multistream_means_one_stream() {
    let mut b = v3(8, 9000, 9000);
    b.capabilities.remove(Capabilities::MULTISTREAM);
    let s = negotiate(&v3(8, 9000, 9000), &b).unwrap();
    assert_eq!(s.max_streams, 1);
}

#[test]
fn unknown_version_and_capability_bits_are_ignored() {
    let mut a = v3(2, 9000, 9000);
    a.versions = VersionSet::from_bits_retain(VersionSet::ALL.bits() | 1 << 5);
    a.capabilities = Capabilities::from_bits_retain(0xFFFF);
    let mut b = a.clone();
    b.versions = VersionSet::from_bits_retain(VersionSet::V3.bits() | 1 << 5);
    let s = negotiate(&a, &b).unwrap();
    assert_eq!(s.version, Version::V3);
    assert_eq!(s.capabilities, Capabilities::ALL);
}

#[test]
fn no_common_version_is_an_error() {
    let mut a = v3(2, 9000, 9000);
    a.versions = VersionSet::V3;
    let e = negotiate(&a, &v1_only()).unwrap_err();
    assert_eq!(
        e,
        NegotiateError::NoCommonVersion {
            local: VersionSet::V3,
            remote: VersionSet::V1
        }
    );
    let mut future = v3(2, 9000, 9000);
    future.versions = VersionSet::from_bits_retain(1 << 4);
    assert!(matches!(
        negotiate(&a, &future),
        Err(NegotiateError::NoCommonVersion { .. })
    ));
}

#[test]
fn invalid_hello_is_an_error() {
    let mut bad = v3(2, 9000, 9000);
    bad.chunk_size = 0;
    assert!(matches!(
        negotiate(&v3(2, 9000, 9000), &bad),
        Err(NegotiateError::InvalidHello { side: "remote", .. })
    ));
}

#[test]
fn session_admits_only_negotiated_frames() {
    let s = negotiate(&v3(4, 9000, 8192), &v3(4, 9000, 8192)).unwrap();
    assert!(s.capabilities.contains(Capabilities::SEALED));
    let mut h = Header::new(Version::V3, FrameType::Data);
    h.flags = Flags::SEALED;
    h.stream_id = 3;
    h.codec = Codec::Zstd;
    h.payload_len = 9000;
    assert_eq!(s.admits(&h), Ok(()));
    h.payload_len = 9001;
    assert_eq!(s.admits(&h), Err(DropReason::AboveNegotiatedLimit));
    h.payload_len = 10;
    h.stream_id = 4;
    assert_eq!(s.admits(&h), Err(DropReason::NotNegotiated));
    h.stream_id = 0;
    h.flags = Flags::EMPTY;
    assert_eq!(s.admits(&h), Err(DropReason::Unauthenticated));
    h.flags = Flags::SEALED;
    h.version = Version::V1;
    assert_eq!(s.admits(&h), Err(DropReason::NotNegotiated));
    let hello = Header::new(Version::V3, FrameType::Hello);
    assert_eq!(s.admits(&hello), Err(DropReason::NotNegotiated));

    let v1 = negotiate(&v3(4, 9000, 8192), &v1_only()).unwrap();
    let mut d = Header::new(Version::V1, FrameType::Data);
    d.payload_len = 1400;
    assert_eq!(v1.admits(&d), Ok(()));
    d.flags = Flags::SEALED;
    assert_eq!(v1.admits(&d), Err(DropReason::NotNegotiated));
}

fn arb_hello() -> impl Strategy<Value = Hello> {
    (
        any::<u16>(),
        any::<u16>(),
        1..=u16::MAX,
        1..=MAX_PAYLOAD as u32,
        any::<u32>(),
    )
        .prop_map(|(v, c, ms, mp, chunk)| {
            let mut h = Hello::new(ms, mp, chunk % mp + 1);
            h.versions = VersionSet::from_bits_retain(v);
            h.capabilities = Capabilities::from_bits_retain(c);
            h
        })
}

proptest! {
    #[test]
    fn negotiation_is_symmetric_and_within_both_offers(a in arb_hello(), b in arb_hello()) {
        let ab = negotiate(&a, &b).ok();
        prop_assert_eq!(ab, negotiate(&b, &a).ok());
        if let Some(s) = ab {
            prop_assert!(a.versions.supports(s.version) && b.versions.supports(s.version));
            prop_assert!(a.capabilities.contains(s.capabilities));
            prop_assert!(b.capabilities.contains(s.capabilities));
            prop_assert!(Capabilities::ALL.contains(s.capabilities));
            prop_assert!(s.max_streams >= 1 && s.max_streams <= a.max_streams.min(b.max_streams));
            prop_assert!(s.chunk_size <= s.max_payload);
            if s.version == Version::V1 {
                prop_assert!(s.capabilities.is_empty());
                prop_assert_eq!(s.max_streams, 1);
            }
        }
    }
}
