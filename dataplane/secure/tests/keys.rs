//! Key files: generation with strict modes, loading that refuses loose permissions and bad
//! content, and public keys that match their private halves.

use std::os::unix::fs::PermissionsExt;

use dwcp_secure::{
    KeyError, generate_keypair, load_private_key, load_psk, load_public_key, public_path,
    write_keypair, write_psk,
};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn keypair_files_round_trip_with_strict_modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.key");
    let kp = generate_keypair().expect("keygen");
    write_keypair(&path, &kp).expect("write");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&public_path(&path)), 0o644);
    let loaded = load_private_key(&path).expect("load");
    assert_eq!(
        loaded.public, kp.public,
        "public key derived from the private file"
    );
    assert_eq!(
        load_public_key(&public_path(&path)).expect("pub"),
        kp.public
    );
    // Debug output never shows the private key
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(!format!("{loaded:?}").contains(text.trim()));
    // never overwritten
    let again = write_keypair(&path, &generate_keypair().expect("keygen"));
    assert!(matches!(again, Err(KeyError::Io { .. })), "{again:?}");
    assert_eq!(load_private_key(&path).expect("load").public, kp.public);
}

#[test]
fn loose_permissions_are_refused_with_a_typed_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.key");
    write_keypair(&path, &generate_keypair().expect("keygen")).expect("write");
    for m in [0o640, 0o604, 0o660, 0o644, 0o602] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).expect("chmod");
        match load_private_key(&path) {
            Err(KeyError::InsecurePermissions { mode, .. }) => assert_eq!(mode, m),
            other => panic!("mode {m:o} accepted: {other:?}"),
        }
    }
    let e = load_private_key(&path).expect_err("loose");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    load_private_key(&path).expect("0400 is strict enough");

    let psk = dir.path().join("psk");
    write_psk(&psk).expect("psk");
    assert_eq!(mode(&psk), 0o600);
    load_psk(&psk).expect("load psk");
    std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(matches!(
        load_psk(&psk),
        Err(KeyError::InsecurePermissions { .. })
    ));
}

#[test]
fn malformed_key_files_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.key");
    for text in ["", "abcd", &"zz".repeat(32), &"00".repeat(33)] {
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(
            matches!(load_private_key(&path), Err(KeyError::Format { .. })),
            "{text:?} accepted"
        );
    }
    assert!(matches!(
        load_private_key(&dir.path().join("missing")),
        Err(KeyError::Io { .. })
    ));
}
