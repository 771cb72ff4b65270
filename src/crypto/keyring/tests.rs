// Compiled only under #[cfg(test)] (see the parent module).
use std::collections::HashSet;

use super::*;
use crate::crypto::cli;
use crate::crypto::kek::KekError;
use crate::crypto::testutil::{chmod, mode, TempDir};

const PAN: &str = "4111 1111 1111 1111";
const CARD: FieldClass = FieldClass::CardNumber;

fn kek() -> Kek {
    Kek::from_bytes(&[0x11; 32])
}

fn opts(soft_limit: u64, auto_rotate: bool, reserve_block: u64) -> KeyringOptions {
    KeyringOptions {
        soft_limit,
        auto_rotate,
        reserve_block,
        lock_wait: Duration::from_secs(2),
    }
}

fn new_ring(name: &str) -> (TempDir, PathBuf, Keyring) {
    let dir = TempDir::new(name);
    let path = dir.join("keyring.mgkr");
    let ring = Keyring::create(&path, &kek(), KeyringOptions::default()).unwrap();
    (dir, path, ring)
}

fn key_id_of(env: &str) -> &str {
    envelope::parse(env).unwrap().key_id()
}

fn ids_states(ring: &Keyring) -> Vec<(String, KeyState, bool)> {
    ring.keys()
        .into_iter()
        .map(|k| (k.id, k.state, k.current))
        .collect()
}

#[test]
fn create_then_load_round_trips() {
    let (_d, path, ring) = new_ring("create");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(ring.current_key_id().as_deref(), Some("k1"));
    let env = ring.seal(CARD, PAN).unwrap();
    assert_eq!(key_id_of(&env), "k1");
    let again = Keyring::load(&path, kek(), KeyringOptions::default()).unwrap();
    assert_eq!(&*again.open(CARD, &env).unwrap(), PAN);
    assert_eq!(
        again.blind_index(CARD, PAN).unwrap(),
        ring.blind_index(CARD, "4111111111111111").unwrap()
    );
    // No lock or temp file is left behind.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["keyring.mgkr"]);
    // The file holds no key material in the clear.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(FILE_PREFIX) && text.ends_with('\n'));
    let k1 = ring.read().slots[0].key.clone().unwrap();
    assert!(!text.contains(&hex::encode(k1.secret())));
    assert!(!text.contains("\"keys\""));
}

#[test]
fn create_never_overwrites() {
    let (_d, path, ring) = new_ring("no-overwrite");
    let before = std::fs::read(&path).unwrap();
    let e = Keyring::create(&path, &kek(), KeyringOptions::default()).unwrap_err();
    assert!(matches!(e, KeyringError::AlreadyExists { .. }), "{e}");
    assert!(matches!(
        cli::init(&path, &kek()),
        Err(KeyringError::AlreadyExists { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    drop(ring);
}

#[test]
fn wrong_kek_is_refused_with_a_clear_message() {
    let (_d, path, _ring) = new_ring("wrong-kek");
    let e = Keyring::load(
        &path,
        Kek::from_bytes(&[0x12; 32]),
        KeyringOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, KeyringError::WrongKekOrDamaged { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "wrong key-encryption key or damaged keyring {}",
            path.display()
        )
    );
}

#[test]
fn missing_file_and_missing_kek_are_refused() {
    let dir = TempDir::new("missing");
    let path = dir.join("nothing.mgkr");
    let e = Keyring::load(&path, kek(), KeyringOptions::default()).unwrap_err();
    assert!(matches!(e, KeyringError::NotFound { .. }));
    assert!(e.to_string().contains("maskgate keys init"));
    let e = Kek::from_env("MASKGATE_TEST_KEK_THAT_IS_NOT_SET").unwrap_err();
    assert!(matches!(e, KekError::EnvMissing { .. }));
    let e = Kek::from_file(&dir.join("no-kek")).unwrap_err();
    assert!(matches!(e, KekError::FileMissing { .. }));
    let e = Keyring::load(dir.path(), kek(), KeyringOptions::default()).unwrap_err();
    assert!(matches!(e, KeyringError::NotAFile { .. }), "{e}");
}

#[test]
fn group_or_world_access_is_refused() {
    let (_d, path, _ring) = new_ring("perms");
    for m in [0o644, 0o640, 0o604, 0o660, 0o606, 0o610] {
        chmod(&path, m);
        let e = Keyring::load(&path, kek(), KeyringOptions::default()).unwrap_err();
        assert!(
            matches!(e, KeyringError::PermissionsTooOpen { mode, .. } if mode == m),
            "{m:o}: {e}"
        );
        assert!(e
            .to_string()
            .contains(&format!("`chmod 600 {}`", path.display())));
    }
    chmod(&path, 0o400);
    Keyring::load(&path, kek(), KeyringOptions::default()).unwrap();
    chmod(&path, 0o600);
    Keyring::load(&path, kek(), KeyringOptions::default()).unwrap();
}

#[test]
fn damaged_files_are_refused() {
    let (_d, path, _ring) = new_ring("damaged");
    let good = std::fs::read(&path).unwrap();
    let load = || Keyring::load(&path, kek(), KeyringOptions::default());
    let write = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        chmod(&path, 0o600);
    };
    // Every single-character change in the base64 body fails authentication.
    for i in FILE_PREFIX.len()..good.len() - 1 {
        let mut b = good.clone();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        write(&b);
        let e = load().unwrap_err();
        assert!(
            matches!(
                e,
                KeyringError::WrongKekOrDamaged { .. } | KeyringError::Damaged { .. }
            ),
            "{i}: {e}"
        );
    }
    // Truncated at every length.
    for len in 0..good.len() {
        write(&good[..len]);
        assert!(load().is_err(), "{len}");
    }
    for bad in [&b""[..], b"garbage\n", b"mgkr2.AAAA\n", b"mgkr1.!!!\n"] {
        write(bad);
        assert!(matches!(load(), Err(KeyringError::Damaged { .. })));
    }
    let mut extra = good.clone();
    extra.extend_from_slice(b"x\n");
    write(&extra);
    assert!(load().is_err());
    write(&good);
    load().unwrap();
}

#[test]
fn authentic_but_inconsistent_contents_are_refused() {
    let (_d, path, _ring) = new_ring("inconsistent");
    let k = kek();
    let rewrite = |f: &dyn Fn(&mut serde_json::Value)| {
        let ring = read_file(&path, &k).unwrap();
        let bytes = seal_file(&ring, &k, &SystemRandom::new()).unwrap();
        // Decrypt, edit the JSON, encrypt again under the right KEK.
        let text = std::str::from_utf8(&bytes).unwrap();
        let body = text.strip_prefix(FILE_PREFIX).unwrap().trim_end();
        let mut buf = URL_SAFE_NO_PAD.decode(body).unwrap();
        let (nonce, rest) = buf.split_at_mut(NONCE_LEN);
        let n = rest.len() - TAG_LEN;
        let (ct, tag) = rest.split_at_mut(n);
        let c = Aes256Gcm::new(k.bytes().into());
        c.decrypt_in_place_detached(Nonce::from_slice(nonce), FILE_AAD, ct, Tag::from_slice(tag))
            .unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(ct).unwrap();
        f(&mut v);
        let mut json = serde_json::to_vec(&v).unwrap();
        let tag = c
            .encrypt_in_place_detached(Nonce::from_slice(&[9; 12]), FILE_AAD, &mut json)
            .unwrap();
        let mut all = vec![9u8; 12];
        all.extend_from_slice(&json);
        all.extend_from_slice(&tag);
        let out = format!("{FILE_PREFIX}{}\n", URL_SAFE_NO_PAD.encode(all));
        std::fs::write(&path, out).unwrap();
        chmod(&path, 0o600);
        Keyring::load(&path, k.clone(), KeyringOptions::default())
    };
    let good = std::fs::read(&path).unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("format", Box::new(|v| v["format"] = 2.into())),
        ("unknown field", Box::new(|v| v["extra"] = 1.into())),
        (
            "unknown key field",
            Box::new(|v| v["keys"][0]["x"] = 1.into()),
        ),
        ("id", Box::new(|v| v["keys"][0]["id"] = "k2".into())),
        ("state", Box::new(|v| v["keys"][0]["state"] = "gone".into())),
        ("no keys", Box::new(|v| v["keys"] = serde_json::json!([]))),
        (
            "secret",
            Box::new(|v| v["keys"][0]["secret"] = "abcd".into()),
        ),
        (
            "no secret",
            Box::new(|v| {
                v["keys"][0].as_object_mut().unwrap().remove("secret");
            }),
        ),
        (
            "destroyed with secret",
            Box::new(|v| v["keys"][0]["state"] = "destroyed".into()),
        ),
        ("keyring id", Box::new(|v| v["keyring_id"] = "xyz".into())),
    ];
    for (what, f) in cases {
        let e = rewrite(&*f).unwrap_err();
        assert!(matches!(e, KeyringError::Damaged { .. }), "{what}: {e}");
        std::fs::write(&path, &good).unwrap();
        chmod(&path, 0o600);
    }
    rewrite(&|_| {}).unwrap();
}

#[test]
fn rotation_retirement_and_rewrap() {
    let (_d, path, ring) = new_ring("rotate");
    let old = ring.seal(CARD, PAN).unwrap();
    assert_eq!(key_id_of(&old), "k1");
    let info = ring.rotate().unwrap();
    assert_eq!(
        (info.id.as_str(), info.state, info.current),
        ("k2", KeyState::Active, true)
    );
    let new = ring.seal(CARD, "5500 0000 0000 0004").unwrap();
    assert_eq!(key_id_of(&new), "k2");
    assert_eq!(&*ring.open(CARD, &old).unwrap(), PAN);
    assert_eq!(&*ring.open(CARD, &new).unwrap(), "5500 0000 0000 0004");

    // Rewrap moves k1 envelopes to k2; one already under k2 is unchanged.
    let moved = ring.rewrap(CARD, &old).unwrap();
    assert_eq!(key_id_of(&moved), "k2");
    assert_eq!(&*ring.open(CARD, &moved).unwrap(), PAN);
    assert_eq!(ring.rewrap(CARD, &new).unwrap(), new);
    // Rewrap checks integrity and class like open.
    assert!(matches!(
        ring.rewrap(FieldClass::BankAccount, &old),
        Err(EnvelopeError::Integrity)
    ));

    ring.retire("k1").unwrap();
    assert!(matches!(
        ring.open(CARD, &old),
        Err(EnvelopeError::KeyRetired)
    ));
    assert!(matches!(
        ring.rewrap(CARD, &old),
        Err(EnvelopeError::KeyRetired)
    ));
    assert_eq!(&*ring.open(CARD, &new).unwrap(), "5500 0000 0000 0004");
    assert_eq!(&*ring.open(CARD, &moved).unwrap(), PAN);

    // The rewriter's view: retired → unknown key, tampered → integrity.
    let opener: &dyn EnvelopeOpener = &ring;
    assert_eq!(opener.open(CARD, &old, None), Err(OpenError::UnknownKey));
    assert_eq!(
        opener
            .open(CARD, &moved, None)
            .as_deref()
            .map(|s| s.as_str()),
        Ok(PAN)
    );
    let tampered = moved.replacen(".1111.", ".1112.", 1);
    assert_eq!(
        opener.open(CARD, &tampered, None),
        Err(OpenError::Integrity)
    );
    assert_eq!(
        opener.open(FieldClass::Ssn, &moved, None),
        Err(OpenError::Integrity)
    );
    assert_eq!(
        opener.open(CARD, "mg1.k9.1111.AAAA", None),
        Err(OpenError::Integrity)
    );
    let unknown = moved.replacen("mg1.k2.", "mg1.k9.", 1);
    assert_eq!(
        opener.open(CARD, &unknown, None),
        Err(OpenError::UnknownKey)
    );

    // And all of it survived in the file.
    let again = Keyring::load(&path, kek(), KeyringOptions::default()).unwrap();
    assert_eq!(
        ids_states(&again),
        [
            ("k1".into(), KeyState::Retired, false),
            ("k2".into(), KeyState::Active, true)
        ]
    );
    assert!(matches!(
        again.open(CARD, &old),
        Err(EnvelopeError::KeyRetired)
    ));
    assert_eq!(&*again.open(CARD, &moved).unwrap(), PAN);
}

#[test]
fn retire_refuses_the_current_and_only_active_key() {
    let (_d, _path, ring) = new_ring("retire-only");
    let e = ring.retire("k1").unwrap_err();
    assert!(
        matches!(e, KeyringError::CurrentKey { ref id } if id == "k1"),
        "{e}"
    );
    assert!(e.to_string().contains("maskgate keys rotate"));
    assert!(matches!(
        ring.retire("k7"),
        Err(KeyringError::UnknownKeyId { .. })
    ));
    ring.rotate().unwrap();
    assert!(matches!(
        ring.retire("k2"),
        Err(KeyringError::CurrentKey { .. })
    ));
    ring.retire("k1").unwrap();
    // Retiring twice is not a transition.
    assert!(matches!(
        ring.retire("k1"),
        Err(KeyringError::Transition { .. })
    ));
}

#[test]
fn lifecycle_transitions_are_checked() {
    use KeyState::*;
    let all = [PreActive, Active, Retired, Compromised, Destroyed];
    let allowed: HashSet<(KeyState, KeyState)> = [
        (PreActive, Active),
        (Active, Retired),
        (PreActive, Compromised),
        (Active, Compromised),
        (Retired, Compromised),
        (Retired, Destroyed),
        (Compromised, Destroyed),
    ]
    .into_iter()
    .collect();
    for a in all {
        for b in all {
            assert_eq!(a.can_become(b), allowed.contains(&(a, b)), "{a} → {b}");
        }
    }

    let (_d, path, ring) = new_ring("lifecycle");
    let e1 = ring.seal(CARD, PAN).unwrap();
    // A pre-active key opens but does not seal.
    let pre = ring.add_pre_active().unwrap();
    assert_eq!(
        (pre.id.as_str(), pre.state, pre.current),
        ("k2", PreActive, false)
    );
    assert_eq!(key_id_of(&ring.seal(CARD, PAN).unwrap()), "k1");
    assert!(matches!(
        ring.destroy("k1"),
        Err(KeyringError::Transition { .. })
    ));
    ring.activate("k2").unwrap();
    let e2 = ring.seal(CARD, PAN).unwrap();
    assert_eq!(key_id_of(&e2), "k2");
    // Compromised: nothing under it opens, not even for rewrap.
    ring.compromise("k1").unwrap();
    assert!(matches!(
        ring.open(CARD, &e1),
        Err(EnvelopeError::KeyCompromised)
    ));
    assert!(matches!(
        ring.rewrap(CARD, &e1),
        Err(EnvelopeError::KeyCompromised)
    ));
    ring.destroy("k1").unwrap();
    assert!(matches!(
        ring.open(CARD, &e1),
        Err(EnvelopeError::KeyDestroyed)
    ));
    // Destroyed keys lose their bytes in the file, keep their record.
    let again = Keyring::load(&path, kek(), KeyringOptions::default()).unwrap();
    assert!(again.read().slots[0].key.is_none());
    assert_eq!(ids_states(&again)[0], ("k1".into(), Destroyed, false));
    assert!(matches!(
        again.open(CARD, &e1),
        Err(EnvelopeError::KeyDestroyed)
    ));
    assert_eq!(&*again.open(CARD, &e2).unwrap(), PAN);
    // Compromising the current key leaves no active key: sealing says so.
    again.compromise("k2").unwrap();
    assert!(matches!(
        again.seal(CARD, PAN),
        Err(EnvelopeError::NoActiveKey)
    ));
    again.rotate().unwrap();
    assert_eq!(key_id_of(&again.seal(CARD, PAN).unwrap()), "k3");
}

#[test]
fn counts_persist_across_reload_in_reserved_blocks() {
    let dir = TempDir::new("counts");
    let path = dir.join("k.mgkr");
    drop(Keyring::create(&path, &kek(), opts(1 << 31, true, 4)).unwrap());
    let ring = Keyring::load(&path, kek(), opts(1 << 31, true, 4)).unwrap();
    for _ in 0..5 {
        ring.seal(CARD, PAN).unwrap();
    }
    assert_eq!(ring.keys()[0].encryptions, 5);
    // Reloaded without a flush: resumes from the reservation (8 ≥ 5).
    let after_crash = Keyring::load(&path, kek(), opts(1 << 31, true, 4)).unwrap();
    assert_eq!(after_crash.keys()[0].encryptions, 8);
    drop(after_crash);
    // A clean shutdown writes the exact count back.
    ring.flush().unwrap();
    let clean = Keyring::load(&path, kek(), opts(1 << 31, true, 4)).unwrap();
    assert_eq!(clean.keys()[0].encryptions, 5);
    clean.seal(CARD, PAN).unwrap();
    assert_eq!(clean.keys()[0].encryptions, 6);
    // Refused values do not use up counts.
    assert!(clean.seal(CARD, "12").is_err());
    assert_eq!(clean.keys()[0].encryptions, 6);
    assert_eq!(cli::list(&path, &kek()).unwrap()[0].encryptions, 9);
}

#[test]
fn default_reservation_is_one_write_per_block() {
    let (_d, path, ring) = new_ring("block");
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    ring.seal(CARD, PAN).unwrap();
    let text = std::fs::read(&path).unwrap();
    for _ in 0..200 {
        ring.seal(CARD, PAN).unwrap();
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        text,
        "no write inside a block"
    );
    assert!(std::fs::metadata(&path).unwrap().modified().unwrap() >= before);
    let again = Keyring::load(&path, kek(), KeyringOptions::default()).unwrap();
    assert_eq!(again.keys()[0].encryptions, DEFAULT_RESERVE_BLOCK);
}

#[test]
fn auto_rotation_at_the_soft_limit() {
    let dir = TempDir::new("auto");
    let path = dir.join("k.mgkr");
    let ring = Keyring::create(&path, &kek(), opts(10, true, 3)).unwrap();
    let envs: Vec<String> = (0..25).map(|_| ring.seal(CARD, PAN).unwrap()).collect();
    let ids: Vec<&str> = envs.iter().map(|e| key_id_of(e)).collect();
    assert_eq!(ids[..10], ["k1"; 10]);
    assert_eq!(ids[10..20], ["k2"; 10]);
    assert_eq!(ids[20..], ["k3"; 5]);
    for e in &envs {
        assert_eq!(&*ring.open(CARD, e).unwrap(), PAN);
    }
    let keys = Keyring::load(&path, kek(), opts(10, true, 3))
        .unwrap()
        .keys();
    assert_eq!(
        keys.iter()
            .map(|k| (k.id.as_str(), k.state, k.encryptions, k.current))
            .collect::<Vec<_>>(),
        [
            ("k1", KeyState::Active, 10, false),
            ("k2", KeyState::Active, 10, false),
            ("k3", KeyState::Active, 6, true),
        ]
    );
}

#[test]
fn refusal_at_the_soft_limit_without_auto_rotation() {
    let dir = TempDir::new("refuse");
    let path = dir.join("k.mgkr");
    let ring = Keyring::create(&path, &kek(), opts(10, false, 4)).unwrap();
    for _ in 0..10 {
        ring.seal(CARD, PAN).unwrap();
    }
    let e = ring.seal(CARD, PAN).unwrap_err();
    assert!(
        matches!(e, EnvelopeError::EncryptionLimitReached { ref key_id } if key_id == "k1"),
        "{e}"
    );
    assert!(e.to_string().contains("maskgate keys rotate"));
    // Still refused after a restart: the count was persisted.
    let again = Keyring::load(&path, kek(), opts(10, false, 4)).unwrap();
    assert!(matches!(
        again.seal(CARD, PAN),
        Err(EnvelopeError::EncryptionLimitReached { .. })
    ));
    // An operator's rotation unblocks it.
    cli::rotate(&path, &kek()).unwrap();
    again.reload().unwrap();
    assert_eq!(key_id_of(&again.seal(CARD, PAN).unwrap()), "k2");
}

#[test]
fn bad_options_are_refused() {
    let dir = TempDir::new("opts");
    let path = dir.join("k.mgkr");
    for o in [
        opts(0, true, 1),
        opts(HARD_LIMIT + 1, true, 1),
        opts(10, true, 0),
    ] {
        assert!(matches!(
            Keyring::create(&path, &kek(), o),
            Err(KeyringError::BadOptions { .. })
        ));
    }
    assert!(!path.exists());
}

#[test]
fn many_threads_seal_with_distinct_nonces_and_exact_counts() {
    let dir = TempDir::new("threads");
    let path = dir.join("k.mgkr");
    let ring = Arc::new(Keyring::create(&path, &kek(), opts(1 << 31, true, 64)).unwrap());
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let ring = Arc::clone(&ring);
            std::thread::spawn(move || {
                (0..500)
                    .map(|i| {
                        let pt = format!("4111 1111 {t:04} {i:04}");
                        let env = ring.seal(CARD, &pt).unwrap();
                        assert_eq!(*ring.open(CARD, &env).unwrap(), pt);
                        env
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut nonces = HashSet::new();
    for h in handles {
        for env in h.join().unwrap() {
            let body = URL_SAFE_NO_PAD
                .decode(env.rsplit('.').next().unwrap())
                .unwrap();
            assert!(nonces.insert(body[..NONCE_LEN].to_vec()));
        }
    }
    assert_eq!(nonces.len(), 4000);
    assert_eq!(ring.keys()[0].encryptions, 4000);
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn keyring_is_send_and_sync() {
    assert_send_sync::<Keyring>();
    assert_send_sync::<Arc<dyn EnvelopeOpener>>();
    let (_d, _p, ring) = new_ring("dyn");
    let opener: Arc<dyn EnvelopeOpener> = Arc::new(ring);
    let _ = opener.open(CARD, "x", None);
}

#[test]
fn two_processes_share_one_file_without_undoing_each_other() {
    let dir = TempDir::new("shared");
    let path = dir.join("k.mgkr");
    drop(Keyring::create(&path, &kek(), opts(1 << 31, true, 2)).unwrap());
    let gateway = Keyring::load(&path, kek(), opts(1 << 31, true, 2)).unwrap();
    let other = Keyring::load(&path, kek(), opts(1 << 31, true, 2)).unwrap();
    let a1 = gateway.seal(CARD, PAN).unwrap(); // reserves [0, 2)
    let b1 = other.seal(CARD, PAN).unwrap(); // must skip past the gateway's block
    gateway.seal(CARD, PAN).unwrap();
    other.seal(CARD, PAN).unwrap();
    // Each sees the other's reservations: the file's count covers all four.
    let listed = cli::list(&path, &kek()).unwrap();
    assert!(listed[0].encryptions >= 4, "{listed:?}");

    // The operator rotates and retires through the CLI while both run.
    cli::rotate(&path, &kek()).unwrap();
    // The gateway's next reservation merges the file instead of overwriting it.
    let a3 = gateway.seal(CARD, PAN).unwrap();
    assert_eq!(key_id_of(&a3), "k2");
    let listed = cli::list(&path, &kek()).unwrap();
    assert_eq!(listed.len(), 2);
    // Rewrap the old envelopes, then retire k1 from the CLI.
    let a1m = gateway.rewrap(CARD, &a1).unwrap();
    assert_eq!(key_id_of(&a1m), "k2");
    // `other` has not learned of k2 yet: k1 is still its current key, so
    // rewrap leaves the envelope as it is until it reloads.
    assert_eq!(other.rewrap(CARD, &b1).unwrap(), b1);
    other.reload().unwrap();
    let b1m = other.rewrap(CARD, &b1).unwrap();
    assert_eq!(key_id_of(&b1m), "k2");
    cli::retire(&path, &kek(), "k1").unwrap();
    gateway.reload().unwrap();
    other.reload().unwrap();
    for ring in [&gateway, &other] {
        assert!(matches!(
            ring.open(CARD, &a1),
            Err(EnvelopeError::KeyRetired)
        ));
        assert_eq!(&*ring.open(CARD, &a1m).unwrap(), PAN);
        assert_eq!(&*ring.open(CARD, &b1m).unwrap(), PAN);
    }
    // A later write by `other` (which had k1 active in memory) keeps k1 retired.
    other.flush().unwrap();
    let fresh = Keyring::load(&path, kek(), KeyringOptions::default()).unwrap();
    assert_eq!(fresh.keys()[0].state, KeyState::Retired);
}

#[test]
fn nonce_ranges_of_two_processes_never_overlap() {
    // Each process's counts are disjoint, so the file's count is an upper
    // bound of the encryptions all processes did under the key.
    let dir = TempDir::new("disjoint");
    let path = dir.join("k.mgkr");
    drop(Keyring::create(&path, &kek(), opts(1 << 31, true, 3)).unwrap());
    let a = Keyring::load(&path, kek(), opts(1 << 31, true, 3)).unwrap();
    let b = Keyring::load(&path, kek(), opts(1 << 31, true, 3)).unwrap();
    let mut taken = HashSet::new();
    for round in 0..20 {
        for ring in [&a, &b] {
            ring.seal(CARD, PAN).unwrap();
            let slot = ring.read().slots[0].clone();
            let used = slot.counter.used.load(Ordering::Acquire);
            // `used` is the count just taken (1-based); no one else took it.
            assert!(
                taken.insert(used),
                "round {round}: count {used} taken twice"
            );
        }
    }
    a.flush().unwrap();
    b.flush().unwrap();
    let max = *taken.iter().max().unwrap();
    let listed = cli::list(&path, &kek()).unwrap();
    assert!(listed[0].encryptions >= max);
}

#[test]
fn a_stale_lock_is_reported_not_ignored() {
    let dir = TempDir::new("lock");
    let path = dir.join("k.mgkr");
    let ring = Keyring::create(&path, &kek(), opts(1 << 31, true, 1)).unwrap();
    let lock = FileLock::path_for(&path);
    std::fs::write(&lock, "12345\n").unwrap();
    let o = KeyringOptions {
        lock_wait: Duration::from_millis(50),
        ..opts(1 << 31, true, 1)
    };
    let blocked = Keyring::load(&path, kek(), o).unwrap();
    let e = blocked.seal(CARD, PAN).unwrap_err();
    assert!(
        matches!(&e, EnvelopeError::Keyring(k) if matches!(**k, KeyringError::Locked { .. })),
        "{e}"
    );
    assert!(e.to_string().contains(&lock.display().to_string()));
    std::fs::remove_file(&lock).unwrap();
    blocked.seal(CARD, PAN).unwrap();
    drop(ring);
}

#[test]
fn a_different_keyring_at_the_path_is_not_merged() {
    let dir = TempDir::new("replaced");
    let path = dir.join("k.mgkr");
    let ring = Keyring::create(&path, &kek(), opts(1 << 31, true, 1)).unwrap();
    ring.seal(CARD, PAN).unwrap();
    std::fs::remove_file(&path).unwrap();
    drop(Keyring::create(&path, &kek(), KeyringOptions::default()).unwrap());
    let e = ring.seal(CARD, PAN).unwrap_err();
    assert!(
        matches!(&e, EnvelopeError::Keyring(k) if matches!(**k, KeyringError::Replaced { .. })),
        "{e}"
    );
}

#[test]
fn cli_functions() {
    let dir = TempDir::new("cli");
    let path = dir.join("keyring.mgkr");
    let k = kek();
    let said = cli::init(&path, &k).unwrap();
    assert!(
        said.contains("k1") && said.contains(&path.display().to_string()),
        "{said}"
    );
    assert_eq!(mode(&path), 0o600);
    let said = cli::rotate(&path, &k).unwrap();
    assert!(
        said.starts_with("k2 is now the key for new writes; k1 still decrypts"),
        "{said}"
    );
    let e = cli::retire(&path, &k, "k2").unwrap_err();
    assert!(matches!(e, KeyringError::CurrentKey { .. }));
    cli::retire(&path, &k, "k1").unwrap();
    let keys = cli::list(&path, &k).unwrap();
    assert_eq!(
        keys.iter()
            .map(|i| (i.id.as_str(), i.state, i.current))
            .collect::<Vec<_>>(),
        [
            ("k1", KeyState::Retired, false),
            ("k2", KeyState::Active, true)
        ]
    );
    let table = cli::format_list(&keys);
    assert!(table.starts_with("id"));
    assert!(
        table.contains("retired") && table.contains("(new writes)"),
        "{table}"
    );
    assert!(matches!(
        cli::list(&path, &Kek::from_bytes(&[0; 32])),
        Err(KeyringError::WrongKekOrDamaged { .. })
    ));
    chmod(&path, 0o644);
    assert!(matches!(
        cli::rotate(&path, &k),
        Err(KeyringError::PermissionsTooOpen { .. })
    ));
}

#[test]
fn rfc3339_dates() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
}

/// Every key-holding type, formatted with `{:?}`, shows no key byte, and no
/// error message does either.
#[test]
fn debug_output_never_holds_key_bytes() {
    let (_d, path, ring) = new_ring("debug");
    ring.rotate().unwrap();
    let env = ring.seal(CARD, PAN).unwrap();
    let mut secrets: Vec<Vec<u8>> = vec![kek().bytes().to_vec()];
    {
        let r = ring.read();
        secrets.push(r.index.secret().to_vec());
        for s in &r.slots {
            secrets.push(s.key.as_ref().unwrap().secret().to_vec());
        }
    }
    let r = ring.read();
    let mut shown = vec![
        format!("{ring:?}"),
        format!("{ring:#?}"),
        format!("{:?}", kek()),
        format!("{:?}", r.index),
        format!("{:?}", r.slots[0].key),
        format!("{:?}", r.slots[0].counter),
        format!("{:?}", ring.keys()),
        format!("{:?}", envelope::parse(&env).unwrap()),
        format!(
            "{:?}",
            Keyring::load(&path, Kek::from_bytes(&[1; 32]), KeyringOptions::default()).unwrap_err()
        ),
    ];
    drop(r);
    shown.push(format!(
        "{:?}",
        ring.open(FieldClass::Ssn, &env).unwrap_err()
    ));
    let all = shown.join("\n");
    for s in &secrets {
        let lower = hex::encode(s);
        let forms = [
            lower.clone(),
            lower.to_uppercase(),
            URL_SAFE_NO_PAD.encode(s),
            base64::engine::general_purpose::STANDARD.encode(s),
            format!("{:?}", &s[..8]).trim_end_matches(']').to_owned(),
        ];
        for f in forms {
            // Any 8-byte window of a key, in any of these spellings.
            assert!(!all.contains(&f), "key material in Debug output:\n{all}");
        }
        for w in s.windows(6) {
            assert!(!all.contains(&hex::encode(w)), "{all}");
        }
    }
    assert!(all.contains("k1") && all.contains("k2"));
    assert!(!all.contains(PAN) && !all.contains("4111111111111111"));
}

#[test]
fn golden_keyring_file_still_loads() {
    #[derive(serde::Deserialize)]
    struct Golden {
        kek_hex: String,
        keys: Vec<(String, String)>,
        envelopes: Vec<(String, String, String)>,
        blind_index: (String, String, String),
    }
    let g: Golden =
        serde_json::from_str(include_str!("../../../tests/data/crypto/keyring_v1.json")).unwrap();
    let dir = TempDir::new("golden");
    let path = dir.join("keyring.mgkr");
    std::fs::write(
        &path,
        include_bytes!("../../../tests/data/crypto/keyring_v1.mgkr"),
    )
    .unwrap();
    chmod(&path, 0o600);
    let kek = Kek::parse(&g.kek_hex, "test".into()).unwrap();
    let ring = Keyring::load(&path, kek, KeyringOptions::default()).unwrap();
    let states: Vec<(String, String)> = ring
        .keys()
        .into_iter()
        .map(|k| (k.id, k.state.name().to_owned()))
        .collect();
    assert_eq!(states, g.keys);
    for (class, env, want) in &g.envelopes {
        let class = FieldClass::from_name(class).unwrap();
        match ring.open(class, env) {
            Ok(pt) => assert_eq!(&*pt, want),
            Err(e) => assert_eq!(&e.to_string(), want),
        }
    }
    let (class, value, want) = &g.blind_index;
    assert_eq!(
        &ring
            .blind_index(FieldClass::from_name(class).unwrap(), value)
            .unwrap(),
        want
    );
}

/// Writes `tests/data/crypto/keyring_v1.{mgkr,json}` (run by hand when the
/// format version changes: `MASKGATE_WRITE_GOLDEN=<dir> cargo test -- --ignored write_golden`).
#[test]
#[ignore]
fn write_golden_keyring() {
    let Ok(out) = std::env::var("MASKGATE_WRITE_GOLDEN") else {
        return;
    };
    let out = PathBuf::from(out);
    let dir = TempDir::new("write-golden");
    let path = dir.join("keyring.mgkr");
    let kek_hex = "6b656b2d666f722d7468652d676f6c64656e2d6b657972696e672d66696c6521";
    let kek = Kek::parse(kek_hex, "test".into()).unwrap();
    let ring = Keyring::create(&path, &kek, KeyringOptions::default()).unwrap();
    let e1 = ring.seal(CARD, PAN).unwrap();
    ring.rotate().unwrap();
    let e2 = ring.seal(CARD, "5500-0000-0000-0004").unwrap();
    let e1m = ring.rewrap(CARD, &e1).unwrap();
    let e3 = ring.seal(FieldClass::BankAccount, "000123456789").unwrap();
    ring.add_pre_active().unwrap();
    ring.retire("k1").unwrap();
    ring.flush().unwrap();
    let bidx = ring.blind_index(CARD, PAN).unwrap();
    let keys: Vec<(String, String)> = ring
        .keys()
        .into_iter()
        .map(|k| (k.id, k.state.name().to_owned()))
        .collect();
    let json = serde_json::json!({
        "comment": "keyring_v1.mgkr is a format-1 keyring under kek_hex; written by keyring::tests::write_golden_keyring",
        "kek_hex": kek_hex,
        "keys": keys,
        "envelopes": [
            ["card_number", e1, "envelope key is retired"],
            ["card_number", e2, "5500-0000-0000-0004"],
            ["card_number", e1m, PAN],
            ["bank_account", e3, "000123456789"],
        ],
        "blind_index": ["card_number", PAN, bidx],
    });
    std::fs::copy(&path, out.join("keyring_v1.mgkr")).unwrap();
    std::fs::write(
        out.join("keyring_v1.json"),
        serde_json::to_string_pretty(&json).unwrap() + "\n",
    )
    .unwrap();
}
