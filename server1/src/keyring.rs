//! SERVER1's signing keys over time: generate, rotate, and which key signs and which are
//! published at any moment.
//!
//! The keys directory holds one PKCS#8 file per key and a manifest, `keys.json`, listing each key
//! with the moment it starts signing. Every state follows from the manifest and the clock, so
//! several SERVER1 replicas sharing the directory agree on the active key without talking:
//!
//! - **pending**: published in the JWKS, not signing yet (`activates_at` in the future), so every
//!   verifier's cache can see it before the first token it signs;
//! - **active**: the newest key whose `activates_at` has passed; it signs;
//! - **retiring**: replaced, still published until every token it signed has expired (the longest
//!   token lifetime plus a minute after it stopped signing);
//! - **retired**: no longer published.
//!
//! A directory with only `signing.pk8` and no manifest (as `keys generate` wrote before rotation
//! existed) is one key, active since the epoch.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use handoff::keys::KeyError;
use handoff::{PublicJwk, SigningKey, Ttl, UnixTime};
use serde::{Deserialize, Serialize};

/// The manifest's file name.
pub const MANIFEST: &str = "keys.json";
/// The single-key file of a directory without a manifest.
pub const LEGACY_KEY: &str = "signing.pk8";
/// How long a replaced key stays published: the longest token lifetime and a minute of leeway.
pub const RETIRE_AFTER_SECS: u64 = Ttl::MAX_SECS + 60;
/// Default pause between publishing a rotated key and signing with it: SERVER1 tells verifiers
/// to cache its JWKS for 300 s.
pub const DEFAULT_ROTATION_DELAY_SECS: u64 = 300;

/// One key in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The key id (RFC 7638 thumbprint).
    pub kid: String,
    /// Its file, relative to the keys directory.
    pub file: String,
    /// When it was made.
    pub created: u64,
    /// When it starts signing.
    pub activates_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    keys: Vec<Entry>,
}

/// Where a key is in its life at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published; signs from the given time.
    Pending {
        /// When it starts signing.
        until: UnixTime,
    },
    /// Signs.
    Active,
    /// Published until the given time, signs no more.
    Retiring {
        /// When it leaves the JWKS.
        until: UnixTime,
    },
    /// Neither signs nor is published.
    Retired,
}

impl KeyState {
    /// The state's name: pending, active, retiring or retired.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending { .. } => "pending",
            Self::Active => "active",
            Self::Retiring { .. } => "retiring",
            Self::Retired => "retired",
        }
    }

    fn published(&self) -> bool {
        !matches!(self, Self::Retired)
    }
}

/// The loaded keys, oldest activation first.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<(Entry, Arc<SigningKey>)>,
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> KeyError {
    KeyError::Io { action, path: path.display().to_string(), source }
}

impl KeyRing {
    /// Loads every key the manifest lists (or the single legacy key).
    ///
    /// # Errors
    ///
    /// A missing or unreadable directory, manifest or key file, or a manifest that does not match
    /// its keys.
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        let manifest_path = dir.join(MANIFEST);
        let manifest = match std::fs::read(&manifest_path) {
            Ok(bytes) => serde_json::from_slice::<Manifest>(&bytes)
                .map_err(|e| KeyError::InvalidJwks(format!("{}: {e}", manifest_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SigningKey::load(&dir.join(LEGACY_KEY))?;
                let entry = Entry {
                    kid: key.kid().to_string(),
                    file: LEGACY_KEY.into(),
                    created: 0,
                    activates_at: 0,
                };
                return Ok(Self { keys: vec![(entry, Arc::new(key))] });
            }
            Err(e) => return Err(io_error("cannot read key manifest", &manifest_path, e)),
        };
        if manifest.keys.is_empty() {
            return Err(KeyError::InvalidJwks(format!("{} lists no key", manifest_path.display())));
        }
        let mut keys = Vec::new();
        for entry in manifest.keys {
            if entry.file.contains('/') || entry.file.contains("..") {
                return Err(KeyError::InvalidJwks(format!(
                    "key file name {:?} must be a plain file name",
                    entry.file
                )));
            }
            let key = SigningKey::load(&dir.join(&entry.file))?;
            if key.kid().as_str() != entry.kid {
                return Err(KeyError::InvalidJwks(format!(
                    "{} does not hold the key {}",
                    entry.file, entry.kid
                )));
            }
            keys.push((entry, Arc::new(key)));
        }
        keys.sort_by_key(|(e, _)| e.activates_at);
        Ok(Self { keys })
    }

    /// The index of the key that signs at `now`: the newest already activated, or — if every
    /// key is still pending — the first.
    pub(crate) fn active_index(&self, now: UnixTime) -> usize {
        self.keys.iter().rposition(|(e, _)| e.activates_at <= now.as_secs()).unwrap_or(0)
    }

    /// Every key, in manifest order (the order of [`KeyRing::active_index`]).
    pub(crate) fn signing_keys(&self) -> impl Iterator<Item = &Arc<SigningKey>> {
        self.keys.iter().map(|(_, key)| key)
    }

    /// The key that signs at `now`.
    pub fn active(&self, now: UnixTime) -> &Arc<SigningKey> {
        let i = self.active_index(now);
        // `load` refuses an empty manifest, so index `i` exists.
        &self.keys[i].1
    }

    /// Every key with its state at `now`.
    pub fn states(&self, now: UnixTime) -> Vec<(&Entry, KeyState)> {
        let active = self.active_index(now);
        self.keys
            .iter()
            .enumerate()
            .map(|(i, (entry, _))| {
                let state = if i == active {
                    KeyState::Active
                } else if i > active {
                    KeyState::Pending { until: UnixTime::from_secs(entry.activates_at) }
                } else {
                    // Replaced when the next key activated.
                    let replaced = self.keys[i + 1].0.activates_at;
                    let until = replaced.saturating_add(RETIRE_AFTER_SECS);
                    if now.as_secs() < until {
                        KeyState::Retiring { until: UnixTime::from_secs(until) }
                    } else {
                        KeyState::Retired
                    }
                };
                (entry, state)
            })
            .collect()
    }

    /// The manifest entry of the key that signs at `now`.
    pub fn active_entry(&self, now: UnixTime) -> &Entry {
        &self.keys[self.active_index(now)].0
    }

    /// The public keys to publish at `now`: pending, active and retiring.
    pub fn published(&self, now: UnixTime) -> Vec<PublicJwk> {
        let states = self.states(now);
        self.keys
            .iter()
            .zip(states)
            .filter(|(_, (_, state))| state.published())
            .map(|((_, key), _)| key.public_jwk())
            .collect()
    }
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), KeyError> {
    use std::io::Write as _;
    let path = dir.join(MANIFEST);
    let tmp = dir.join(format!("{MANIFEST}.{}.tmp", std::process::id()));
    let text =
        serde_json::to_vec_pretty(manifest).map_err(|e| KeyError::InvalidJwks(e.to_string()))?;
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error("cannot write key manifest", &tmp, e));
    }
    // A rename replaces the manifest in one step: readers see the old list or the new one.
    std::fs::rename(&tmp, &path).map_err(|e| io_error("cannot replace key manifest", &path, e))
}

/// Holds the keys directory's lock file exclusively: `generate` and `rotate` read, change and
/// write the manifest under it, so two at once (two operators, two replicas) cannot lose a key.
fn lock_dir(dir: &Path) -> Result<std::fs::File, KeyError> {
    let path = dir.join("keys.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error("cannot open the keys lock", &path, e))?;
    file.lock().map_err(|e| io_error("cannot lock the keys directory", &path, e))?;
    Ok(file)
}

fn read_manifest_or_legacy(dir: &Path) -> Result<Manifest, KeyError> {
    let path = dir.join(MANIFEST);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| KeyError::InvalidJwks(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let legacy = dir.join(LEGACY_KEY);
            if legacy.exists() {
                let key = SigningKey::load(&legacy)?;
                Ok(Manifest {
                    keys: vec![Entry {
                        kid: key.kid().to_string(),
                        file: LEGACY_KEY.into(),
                        created: 0,
                        activates_at: 0,
                    }],
                })
            } else {
                Ok(Manifest::default())
            }
        }
        Err(e) => Err(io_error("cannot read key manifest", &path, e)),
    }
}

fn new_key_file(dir: &Path, now: UnixTime) -> Result<(PathBuf, Entry), KeyError> {
    let key = SigningKey::generate()?;
    let file = format!("key-{}-{}.pk8", now.as_secs(), &key.kid().as_str()[..8]);
    let path = dir.join(&file);
    key.save(&path)?;
    Ok((
        path,
        Entry {
            kid: key.kid().to_string(),
            file,
            created: now.as_secs(),
            activates_at: now.as_secs(),
        },
    ))
}

/// `server1 keys generate`: the first key, active at once. Refuses when keys exist.
///
/// # Errors
///
/// When the directory already has keys or cannot be written.
pub fn generate(dir: &Path, now: UnixTime) -> Result<Entry, KeyError> {
    create_private_dir(dir)?;
    let _lock = lock_dir(dir)?;
    if !read_manifest_or_legacy(dir)?.keys.is_empty() {
        return Err(io_error(
            "refusing to generate over existing keys (use `server1 keys rotate`)",
            dir,
            std::io::ErrorKind::AlreadyExists.into(),
        ));
    }
    let (_, entry) = new_key_file(dir, now)?;
    write_manifest(dir, &Manifest { keys: vec![entry.clone()] })?;
    Ok(entry)
}

/// `server1 keys rotate`: a new key, published at once, signing after `delay_secs`.
///
/// # Errors
///
/// When there are no keys yet, or the directory cannot be written.
pub fn rotate(dir: &Path, delay_secs: u64, now: UnixTime) -> Result<Entry, KeyError> {
    let _lock = lock_dir(dir)?;
    let mut manifest = read_manifest_or_legacy(dir)?;
    if manifest.keys.is_empty() {
        return Err(io_error(
            "no keys to rotate (run `server1 keys generate`)",
            dir,
            std::io::ErrorKind::NotFound.into(),
        ));
    }
    let (path, mut entry) = new_key_file(dir, now)?;
    entry.activates_at = now.as_secs().saturating_add(delay_secs);
    manifest.keys.push(entry.clone());
    if let Err(e) = write_manifest(dir, &manifest) {
        // Nothing half-done: without a manifest entry the new file must not linger.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(entry)
}

fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| io_error("cannot create keys directory", dir, e))
}

/// What identifies the manifest's current version (modification time, size and inode), to
/// notice rotations: a rename that lands within the file system's timestamp granularity still
/// changes the inode.
pub fn stamp(dir: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
    let meta = std::fs::metadata(dir.join(MANIFEST))
        .or_else(|_| std::fs::metadata(dir.join(LEGACY_KEY)))
        .ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, meta.len(), inode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn life_of_keys_across_two_rotations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = UnixTime::from_secs(1_000_000);
        let first = generate(dir.path(), t0).expect("generate");
        assert!(generate(dir.path(), t0).is_err(), "never over existing keys");
        let second = rotate(dir.path(), 300, t0.plus(100)).expect("rotate");
        let ring = KeyRing::load(dir.path()).expect("load");
        let kid = |k: &Arc<SigningKey>| k.kid().to_string();

        // Published at once, signing only after the delay.
        let at = t0.plus(101);
        assert_eq!(kid(ring.active(at)), first.kid);
        assert_eq!(ring.published(at).len(), 2);
        let states = ring.states(at);
        assert_eq!(states[1].1, KeyState::Pending { until: t0.plus(400) });

        let at = t0.plus(400);
        assert_eq!(kid(ring.active(at)), second.kid);
        assert_eq!(
            ring.states(at)[0].1,
            KeyState::Retiring { until: t0.plus(400 + RETIRE_AFTER_SECS) }
        );
        assert_eq!(
            ring.published(at).len(),
            2,
            "the old key stays published while its tokens live"
        );

        let at = t0.plus(400 + RETIRE_AFTER_SECS);
        assert_eq!(ring.states(at)[0].1, KeyState::Retired);
        assert_eq!(ring.published(at).len(), 1);

        let third = rotate(dir.path(), 0, at).expect("rotate again");
        let ring = KeyRing::load(dir.path()).expect("reload");
        assert_eq!(kid(ring.active(at)), third.kid);
        let names: Vec<_> = ring.states(at).iter().map(|(_, s)| s.name()).collect();
        assert_eq!(names, ["retired", "retiring", "active"]);
    }

    #[test]
    fn concurrent_rotations_lose_no_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        generate(dir.path(), UnixTime::from_secs(1)).expect("generate");
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    rotate(&d, 10, UnixTime::from_secs(2 + i)).expect("rotate")
                })
            })
            .collect();
        let added: Vec<Entry> = threads.into_iter().map(|t| t.join().expect("thread")).collect();
        let ring = KeyRing::load(dir.path()).expect("every listed key loads");
        for entry in added {
            assert!(
                ring.signing_keys().any(|k| k.kid().as_str() == entry.kid),
                "{} was lost",
                entry.kid
            );
        }
        assert_eq!(ring.states(UnixTime::from_secs(100)).len(), 5);
    }

    #[test]
    fn legacy_single_key_directories_still_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SigningKey::generate().expect("key");
        key.save(&dir.path().join(LEGACY_KEY)).expect("save");
        let ring = KeyRing::load(dir.path()).expect("load");
        assert_eq!(ring.active(UnixTime::from_secs(5)).kid(), key.kid());
        let next = rotate(dir.path(), 10, UnixTime::from_secs(100)).expect("rotate");
        let ring = KeyRing::load(dir.path()).expect("load");
        assert_eq!(ring.active(UnixTime::from_secs(105)).kid(), key.kid());
        assert_eq!(ring.active(UnixTime::from_secs(110)).kid().as_str(), next.kid);
    }

    #[test]
    fn bad_manifests_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(KeyRing::load(dir.path()).is_err(), "no keys at all");
        assert!(rotate(dir.path(), 0, UnixTime::from_secs(1)).is_err(), "nothing to rotate");
        generate(dir.path(), UnixTime::from_secs(1)).expect("generate");
        let manifest = dir.path().join(MANIFEST);
        let good = std::fs::read_to_string(&manifest).expect("read");
        for bad in [
            "not json".to_owned(),
            r#"{"keys":[]}"#.to_owned(),
            good.replace(".pk8", ".missing"),
            good.replacen("\"kid\": \"", "\"kid\": \"X", 1),
            good.replacen("\"file\": \"", "\"file\": \"../", 1),
        ] {
            std::fs::write(&manifest, &bad).expect("write");
            assert!(KeyRing::load(dir.path()).is_err(), "{bad}");
        }
    }
}
