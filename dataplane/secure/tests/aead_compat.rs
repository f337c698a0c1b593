//! The frame AEAD (ring) against an independent implementation of the same algorithms (the
//! RustCrypto crates it replaced): the same key, nonce, header and payload give the same
//! ciphertext and tag, each opens the other's frames, and a flipped bit or a wrong header is
//! refused. So SEALED frames on the wire are unchanged by the switch.

use aes_gcm::Aes128Gcm;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use dwcp_proto::TAG_LEN;
use dwcp_secure::Suite;
use dwcp_secure::aead::Cipher;

/// xorshift bytes.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn reference_seal(
    suite: Suite,
    key: &[u8],
    nonce: &[u8; 12],
    aad: &[u8],
    buf: &mut [u8],
) -> [u8; TAG_LEN] {
    let n = nonce.into();
    let tag = match suite {
        Suite::Aes128Gcm => Aes128Gcm::new_from_slice(&key[..16])
            .unwrap()
            .encrypt_in_place_detached(n, aad, buf),
        Suite::ChaCha20Poly1305 => ChaCha20Poly1305::new_from_slice(&key[..32])
            .unwrap()
            .encrypt_in_place_detached(n, aad, buf),
    }
    .unwrap();
    tag.into()
}

#[test]
fn ring_and_the_reference_agree_byte_for_byte() {
    for suite in [Suite::Aes128Gcm, Suite::ChaCha20Poly1305] {
        for (i, len) in [0usize, 1, 15, 16, 17, 1420, 1436, 8000, 8952]
            .into_iter()
            .enumerate()
        {
            let seed = i as u64 + 1;
            let key = bytes(seed, 32);
            let aad = bytes(seed + 100, 48);
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(&bytes(seed + 200, 12));
            let plain = bytes(seed + 300, len);
            let cipher = Cipher::new(suite, &key).expect("key");

            let mut ours = plain.clone();
            let tag = cipher.seal(&nonce, &aad, &mut ours);
            let mut theirs = plain.clone();
            let ref_tag = reference_seal(suite, &key, &nonce, &aad, &mut theirs);
            assert_eq!(ours, theirs, "{suite:?} {len}: ciphertext");
            assert_eq!(tag, ref_tag, "{suite:?} {len}: tag");

            // ours opens what the reference sealed
            let mut buf = theirs.clone();
            cipher.open(&nonce, &aad, &mut buf, &ref_tag).expect("open");
            assert_eq!(buf, plain);
            // tampering is refused
            if len > 0 {
                let mut bad = theirs.clone();
                bad[len / 2] ^= 0x10;
                assert!(cipher.open(&nonce, &aad, &mut bad, &ref_tag).is_err());
            }
            let mut bad_aad = aad.clone();
            bad_aad[3] ^= 1;
            let mut buf = theirs.clone();
            assert!(cipher.open(&nonce, &bad_aad, &mut buf, &ref_tag).is_err());
            let mut bad_tag = ref_tag;
            bad_tag[0] ^= 1;
            let mut buf = theirs;
            assert!(cipher.open(&nonce, &aad, &mut buf, &bad_tag).is_err());
        }
    }
}
