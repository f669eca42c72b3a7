//! Ed25519 signature checks: ring's decision, computed faster.
//!
//! ring is the crypto of record. This module decides exactly what ring's
//! `signature::ED25519` verify decides — cofactorless (`R == [s]B - [k]A`, compared as
//! encodings), `s` below the group order, `R` as given — but computes it with
//! curve25519-dalek, whose vector backends (AVX2, chosen at run time) check a signature in
//! about two thirds of ring's time on the CPUs this product is measured on. Keys for which the
//! two libraries' point decoding could differ (a non-canonical encoding, a small-order or
//! mixed-order point, bytes that are not a point) never reach curve25519-dalek: they are
//! checked by ring itself. `tests/ed25519_differential.rs` holds the two to the same answer
//! over RFC 8032's and Wycheproof's vectors, small-order and non-canonical points and random
//! mutations.
//!
//! [`check_batch`] checks many signatures at once: one multiscalar multiplication for the
//! whole batch, each signature weighted by a fresh random odd 128-bit factor. When the batch
//! equation holds, every signature in it holds — with one limit, written out in
//! docs/security.md: two or more signatures whose `R` carries a small-order component, which
//! only the holder of the private key can make, can cancel out in the sum where ring refuses
//! each. When it fails, each signature is checked alone, so a bad one never refuses a good one.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint, VartimeEdwardsPrecomputation};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimePrecomputedMultiscalarMul};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{UnparsedPublicKey, ED25519};
use std::sync::OnceLock;

/// An Ed25519 public key, decoded once.
#[derive(Clone)]
pub struct PublicKey {
    bytes: [u8; 32],
    /// The point, when curve25519-dalek may check signatures for it: the encoding is
    /// canonical and the point has prime order. `None`: ring checks them.
    point: Option<EdwardsPoint>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("fast", &self.point.is_some()).finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Any 32 bytes (what a JWKS's `x` decodes to); a key that is not a usable point still
    /// gets ring's answer, which is "no" for every signature.
    pub fn new(bytes: [u8; 32]) -> Self {
        let point = CompressedEdwardsY(bytes)
            .decompress()
            .filter(|p| canonical_point(&bytes, p))
            .filter(|p| !p.is_small_order() && p.is_torsion_free());
        Self { bytes, point }
    }

    /// The 32 bytes of the key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Whether signatures under this key are checked by curve25519-dalek (else by ring).
    pub fn is_fast(&self) -> bool {
        self.point.is_some()
    }
}

/// Whether `signature` over `message` holds under `key`, as ring decides it.
pub fn verify(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    prepare(key, message, signature).decide()
}

/// A signature check, started.
// Made and taken apart once per token: boxing the large variant would cost an allocation on
// every handoff to save a move.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Check {
    /// Decided without a multiplication: a malformed signature, an `s` not below the group
    /// order, or a key ring checks.
    Decided(bool),
    /// The multiplication is left: alone ([`Pending::check`]) or in a batch ([`check_batch`]).
    Pending(Pending),
}

impl Check {
    /// The answer, the multiplication (if left) done alone.
    pub fn decide(self) -> bool {
        match self {
            Check::Decided(genuine) => genuine,
            Check::Pending(pending) => pending.check(),
        }
    }
}

/// Starts checking `signature` over `message` under `key`: the hashing and decoding done, the
/// curve arithmetic left.
pub fn prepare(key: &PublicKey, message: &[u8], signature: &[u8]) -> Check {
    let Some(a) = key.point else {
        return Check::Decided(ring_verify(key, message, signature));
    };
    let Ok(signature) = <&[u8; 64]>::try_from(signature) else {
        return Check::Decided(false);
    };
    let (r, s) = signature.split_at(32);
    let (Ok(r_bytes), Ok(s_bytes)) = (<[u8; 32]>::try_from(r), <[u8; 32]>::try_from(s)) else {
        return Check::Decided(false);
    };
    // ring refuses an `s` that is not below the group order.
    let Some(s) = Option::from(Scalar::from_canonical_bytes(s_bytes)) else {
        return Check::Decided(false);
    };
    let mut hash = digest::Context::new(&digest::SHA512);
    hash.update(&r_bytes);
    hash.update(&key.bytes);
    hash.update(message);
    let Ok(wide) = <[u8; 64]>::try_from(hash.finish().as_ref()) else {
        return Check::Decided(false);
    };
    let k = Scalar::from_bytes_mod_order_wide(&wide);
    Check::Pending(Pending { a, key: key.bytes, r_bytes, s, k })
}

/// An Ed25519 check with only the curve arithmetic left, under a key curve25519-dalek may
/// check (canonical, prime order).
#[derive(Clone)]
pub struct Pending {
    a: EdwardsPoint,
    key: [u8; 32],
    r_bytes: [u8; 32],
    s: Scalar,
    k: Scalar,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl Pending {
    /// Ring's decision: `R == [s]B − [k]A`, compared as encodings.
    pub fn check(&self) -> bool {
        let minus_a = -self.a;
        let r = EdwardsPoint::vartime_double_scalar_mul_basepoint(&self.k, &minus_a, &self.s);
        r.compress().0 == self.r_bytes
    }
}

/// What checks a [`Pending`] signature for a verifier: alone, or together with others that
/// arrive at the same time. Whatever it does, its answer must be [`Pending::check`]'s.
pub trait SignatureChecker {
    /// Whether the signature holds.
    fn check(&self, pending: Pending) -> impl std::future::Future<Output = bool> + Send;
}

/// Checks one at a time, at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Alone;

impl SignatureChecker for Alone {
    async fn check(&self, pending: Pending) -> bool {
        pending.check()
    }
}

/// Checks every item; `result[i]` is [`Pending::check`]'s answer on `items[i]`, but for the
/// limit in the module documentation. One multiscalar multiplication when all hold; when not,
/// the items are checked one by one.
pub fn check_batch(items: &[Pending]) -> Vec<bool> {
    if items.len() < 2 {
        return items.iter().map(Pending::check).collect();
    }
    // ring compares R as bytes with a canonical encoding: an R that is no point, or not the
    // one encoding of its point, never holds. The rest go in the batch.
    let mut results = vec![false; items.len()];
    let mut batch: Vec<(usize, EdwardsPoint)> = Vec::with_capacity(items.len());
    for (n, item) in items.iter().enumerate() {
        if let Some(r) = CompressedEdwardsY(item.r_bytes).decompress() {
            if canonical_encoding(&item.r_bytes) {
                batch.push((n, r));
            }
        }
    }
    if batch.len() >= 2 && batch_holds(items, &batch) {
        for (n, _) in &batch {
            results[*n] = true;
        }
    } else {
        for (n, _) in &batch {
            results[*n] = items[*n].check();
        }
    }
    results
}

/// `(Σ zᵢsᵢ)B − Σ (zᵢkᵢ)Aᵢ − Σ zᵢRᵢ = 0` for random odd 128-bit `zᵢ`.
fn batch_holds(items: &[Pending], batch: &[(usize, EdwardsPoint)]) -> bool {
    let mut random = vec![0u8; 16 * batch.len()];
    if SystemRandom::new().fill(&mut random).is_err() {
        return false;
    }
    let z: Vec<Scalar> = random
        .chunks_exact(16)
        .map(|c| {
            let mut b = [0u8; 16];
            b.copy_from_slice(c);
            Scalar::from(u128::from_le_bytes(b) | 1)
        })
        .collect();
    let mut b_coefficient = Scalar::ZERO;
    // Keys are few (usually one): their coefficients are summed per key.
    let mut keys: Vec<(&[u8; 32], EdwardsPoint, Scalar)> = Vec::new();
    for ((n, _), z) in batch.iter().zip(&z) {
        let item = &items[*n];
        b_coefficient += z * item.s;
        match keys.iter_mut().find(|(bytes, _, _)| *bytes == &item.key) {
            Some((_, _, c)) => *c -= z * item.k,
            None => keys.push((&item.key, item.a, -(z * item.k))),
        }
    }
    // −zᵢRᵢ as zᵢ(−Rᵢ): a scalar is taken mod ℓ, which keeps the B and A terms (prime order)
    // but not the factor on an R's small-order part, which must stay the odd zᵢ itself.
    let scalars = keys.iter().map(|(_, _, c)| *c).chain(z.iter().copied()).collect::<Vec<_>>();
    let points = keys.iter().map(|(_, a, _)| *a).chain(batch.iter().map(|(_, r)| -r));
    basepoint_table().vartime_mixed_multiscalar_mul([b_coefficient], scalars, points).is_identity()
}

fn basepoint_table() -> &'static VartimeEdwardsPrecomputation {
    static TABLE: OnceLock<VartimeEdwardsPrecomputation> = OnceLock::new();
    TABLE.get_or_init(|| VartimeEdwardsPrecomputation::new([ED25519_BASEPOINT_POINT]))
}

/// Whether `bytes` is the one encoding of `point`.
fn canonical_point(bytes: &[u8; 32], point: &EdwardsPoint) -> bool {
    point.compress().0 == *bytes
}

/// Whether `bytes`, an encoding that decodes to a point, is that point's one encoding: `y`
/// below p = 2²⁵⁵ − 19, and no sign bit on x = 0 (the points with y = 1 and y = p − 1). The
/// same answer as [`canonical_point`] without the field inversion of a compression.
fn canonical_encoding(bytes: &[u8; 32]) -> bool {
    let sign = bytes[31] >> 7;
    let mut y = *bytes;
    y[31] &= 0x7f;
    let middle_all_ones = y[1..31].iter().all(|b| *b == 0xff);
    let below_p = !(y[31] == 0x7f && middle_all_ones && y[0] >= 0xed);
    let one = y[0] == 1 && y[1..].iter().all(|b| *b == 0);
    let minus_one = y[31] == 0x7f && middle_all_ones && y[0] == 0xec;
    below_p && !(sign == 1 && (one || minus_one))
}

fn ring_verify(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, &key.bytes).verify(message, signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn key_pair() -> Ed25519KeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key")
    }

    fn public(pair: &Ed25519KeyPair) -> PublicKey {
        PublicKey::new(pair.public_key().as_ref().try_into().expect("32 bytes"))
    }

    #[test]
    fn a_genuine_key_is_fast_and_its_signatures_hold() {
        let pair = key_pair();
        let key = public(&pair);
        assert!(key.is_fast());
        let sig = pair.sign(b"message");
        assert!(verify(&key, b"message", sig.as_ref()));
        assert!(!verify(&key, b"messagf", sig.as_ref()));
        assert!(!verify(&key, b"message", &sig.as_ref()[..63]));
    }

    #[test]
    fn a_batch_answers_each_item() {
        let pair = key_pair();
        let other = key_pair();
        let (key, other_key) = (public(&pair), public(&other));
        let messages: Vec<Vec<u8>> = (0..20u8).map(|n| vec![n; usize::from(n)]).collect();
        let mut sigs: Vec<Vec<u8>> = messages
            .iter()
            .enumerate()
            .map(|(n, m)| {
                if n.is_multiple_of(3) { other.sign(m) } else { pair.sign(m) }.as_ref().to_vec()
            })
            .collect();
        let keys = |n: usize| if n.is_multiple_of(3) { &other_key } else { &key };
        let batch = |sigs: &[Vec<u8>]| -> Vec<bool> {
            let items: Vec<Pending> = (0..sigs.len())
                .map(|n| match prepare(keys(n), &messages[n], &sigs[n]) {
                    Check::Pending(p) => p,
                    Check::Decided(_) => panic!("a well-formed signature is left pending"),
                })
                .collect();
            check_batch(&items)
        };
        assert_eq!(batch(&sigs), vec![true; 20]);
        sigs[7][40] ^= 1;
        sigs[12][3] ^= 0x80;
        let expected: Vec<bool> = (0..20).map(|n| n != 7 && n != 12).collect();
        assert_eq!(batch(&sigs), expected);
        assert_eq!(batch(&sigs[..1]), vec![true]);
        assert!(batch(&[]).is_empty());
    }
}
