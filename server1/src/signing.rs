//! The running server's view of the key ring: reloaded when the manifest changes (checked at
//! most once a second), so a `server1 keys rotate` takes effect without a restart, and every
//! replica sharing the directory switches keys at the same moment.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use handoff::keys::KeyError;
use handoff::{Issuer, Jwks, Minter, Ttl, UnixTime};

use crate::keyring::{self, KeyRing};
use crate::Config;

/// The loaded key ring and a minter per key.
#[derive(Debug)]
pub struct Loaded {
    ring: KeyRing,
    minters: Vec<Minter>,
    stamp: Option<(SystemTime, u64, u64)>,
}

impl Loaded {
    /// The minter of the key that signs at `now`.
    pub fn minter(&self, now: UnixTime) -> &Minter {
        // One minter per key of the ring, in the ring's order.
        &self.minters[self.ring.active_index(now)]
    }

    /// The JWKS to publish at `now`.
    pub fn jwks(&self, now: UnixTime) -> Jwks {
        Jwks { keys: self.ring.published(now) }
    }

    /// The key ring.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }
}

/// Keys as the server uses them.
#[derive(Debug)]
pub struct Keys {
    dir: PathBuf,
    issuer: Issuer,
    ttl: Ttl,
    loaded: RwLock<Arc<Loaded>>,
    checked: AtomicU64,
}

fn load(dir: &std::path::Path, issuer: &Issuer, ttl: Ttl) -> Result<Loaded, KeyError> {
    let stamp = keyring::stamp(dir);
    let ring = KeyRing::load(dir)?;
    let minters =
        ring.signing_keys().map(|key| Minter::new(key.clone(), issuer.clone(), ttl)).collect();
    Ok(Loaded { ring, minters, stamp })
}

impl Keys {
    /// Loads the key ring from the configured directory.
    ///
    /// # Errors
    ///
    /// As [`KeyRing::load`].
    pub fn load(config: &Config) -> Result<Self, KeyError> {
        let loaded = load(&config.keys_dir, &config.public_url, config.token_ttl)?;
        Ok(Self {
            dir: config.keys_dir.clone(),
            issuer: config.public_url.clone(),
            ttl: config.token_ttl,
            loaded: RwLock::new(Arc::new(loaded)),
            checked: AtomicU64::new(0),
        })
    }

    /// The issuer the keys sign for.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// The default token lifetime.
    pub fn ttl(&self) -> Ttl {
        self.ttl
    }

    /// The keys as of `now`, reloading first if the manifest changed since the last look (at
    /// most once a second). A manifest that fails to load leaves the current keys in place.
    pub fn current(&self, now: UnixTime) -> Arc<Loaded> {
        let current = self.loaded.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let second = now.as_secs();
        // The manifest is looked at (a `stat`) at most once a second: on the other mints this
        // is one relaxed load besides the read lock and the `Arc` clone above.
        if self.checked.load(Ordering::Relaxed) == second
            || self.checked.swap(second, Ordering::Relaxed) == second
        {
            return current;
        }
        if keyring::stamp(&self.dir) == current.stamp {
            return current;
        }
        match load(&self.dir, &self.issuer, self.ttl) {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                tracing::info!(
                    event = "keys.reloaded",
                    keys = fresh.minters.len(),
                    "signing keys reloaded"
                );
                *self.loaded.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    fresh.clone();
                fresh
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot reload signing keys; keeping the current ones");
                current
            }
        }
    }
}
