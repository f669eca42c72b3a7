//! `handoff::ed25519` against ring, the oracle: every case must get ring's answer — checked
//! alone, checked in a batch of its own, and checked in a batch among genuine signatures (which
//! must all still hold).
//!
//! The corpus: Wycheproof's Ed25519 vectors (RFC 8032's among them), every small-order point
//! and every non-canonical encoding as key and as `R`, `s` at and past the group order,
//! signatures whose `R` carries a small-order component (made with the private key, which ring
//! refuses: it checks without the cofactor), and random mutations of genuine signatures, keys
//! and messages.

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use handoff::ed25519::{self, check_batch, prepare, Check, PublicKey};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

/// The group order ℓ, little-endian.
const ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

struct Case {
    name: String,
    key: Vec<u8>,
    message: Vec<u8>,
    signature: Vec<u8>,
}

fn ring_says(case: &Case) -> bool {
    UnparsedPublicKey::new(&ED25519, &case.key).verify(&case.message, &case.signature).is_ok()
}

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("small")
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

fn key_pair() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("key");
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key")
}

fn key_of(bytes: &[u8]) -> Option<PublicKey> {
    <[u8; 32]>::try_from(bytes).ok().map(PublicKey::new)
}

/// Every way our code can decide a case, each of which must be ring's answer.
fn check(case: &Case, genuine: &[Case]) {
    let expected = ring_says(case);
    let Some(key) = key_of(&case.key) else {
        // A JWKS key is always 32 bytes (keys.rs refuses any other length); ring refuses
        // every signature under a key of another length.
        assert!(!expected, "{}: ring accepted a key of {} bytes", case.name, case.key.len());
        return;
    };
    assert_eq!(
        ed25519::verify(&key, &case.message, &case.signature),
        expected,
        "{}: alone",
        case.name
    );
    let pending = match prepare(&key, &case.message, &case.signature) {
        Check::Decided(genuine) => {
            assert_eq!(genuine, expected, "{}: decided without a batch", case.name);
            return;
        }
        Check::Pending(p) => p,
    };
    assert_eq!(pending.check(), expected, "{}: pending, checked alone", case.name);
    assert_eq!(check_batch(std::slice::from_ref(&pending)), vec![expected], "{}", case.name);
    // Among genuine signatures, in the middle of the batch.
    let mut items: Vec<_> = genuine.iter().map(pending_of).collect();
    items.insert(items.len() / 2, pending);
    let results = check_batch(&items);
    let mut wanted = vec![true; genuine.len() + 1];
    wanted[genuine.len() / 2] = expected;
    assert_eq!(results, wanted, "{}: in a batch of genuine signatures", case.name);
}

fn pending_of(case: &Case) -> ed25519::Pending {
    let key = key_of(&case.key).expect("32 bytes");
    match prepare(&key, &case.message, &case.signature) {
        Check::Pending(p) => p,
        Check::Decided(_) => panic!("{}: a genuine signature is left pending", case.name),
    }
}

fn genuine_cases(n: usize) -> Vec<Case> {
    let pairs = [key_pair(), key_pair()];
    (0..n)
        .map(|i| {
            let pair = &pairs[i % 2];
            let message = format!("genuine message {i}").into_bytes();
            Case {
                name: format!("genuine {i}"),
                key: pair.public_key().as_ref().to_vec(),
                signature: pair.sign(&message).as_ref().to_vec(),
                message,
            }
        })
        .collect()
}

#[test]
fn wycheproof_and_rfc_8032_vectors() {
    let genuine = genuine_cases(7);
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519)
        .expect("Wycheproof's Ed25519 set");
    let mut count = 0;
    for group in &set.test_groups {
        for test in &group.tests {
            let case = Case {
                name: format!("wycheproof {} ({})", test.tc_id, test.comment),
                key: group.key.pk.to_vec(),
                message: test.msg.to_vec(),
                signature: test.sig.to_vec(),
            };
            // Wycheproof's own verdict: ring agrees with it on every Ed25519 vector.
            let valid = test.result == wycheproof::TestResult::Valid;
            assert_eq!(ring_says(&case), valid, "{}: ring disagrees with Wycheproof", case.name);
            check(&case, &genuine);
            count += 1;
        }
    }
    assert!(count > 100, "only {count} vectors");
}

/// The encodings of every small-order point, canonical and not: each torsion point's own, with
/// the sign bit flipped, and `y + p` where that still fits in 255 bits.
fn small_order_encodings() -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for t in EIGHT_TORSION.iter() {
        let bytes = t.compress().0;
        out.push(bytes);
        let mut flipped = bytes;
        flipped[31] ^= 0x80;
        out.push(flipped);
    }
    out.extend(non_canonical_encodings());
    out
}

/// Every encoding whose `y` is p or above (p + 0 … p + 18, both signs) and the sign bit set
/// on y = 1 and y = p − 1, whether or not it is a point.
fn non_canonical_encodings() -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for low in 0xedu8..=0xff {
        for sign in [0u8, 0x80] {
            let mut y = [0xffu8; 32];
            y[0] = low;
            y[31] = 0x7f | sign;
            out.push(y);
        }
    }
    // y = 19 + p does not fit; y + p for y < 19 is the list above (p + y, low byte 0xed + y).
    let mut one = [0u8; 32];
    one[0] = 1;
    one[31] = 0x80;
    out.push(one);
    let mut minus_one = [0xffu8; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0xff;
    out.push(minus_one);
    out
}

fn scalar_bytes(n: u64) -> [u8; 32] {
    Scalar::from(n).to_bytes()
}

#[test]
fn small_order_and_non_canonical_points_as_key_and_as_r() {
    let genuine = genuine_cases(5);
    let pair = key_pair();
    let good_key = pair.public_key().as_ref().to_vec();
    let mut cases = Vec::new();
    let points = small_order_encodings();
    for (i, a) in points.iter().enumerate() {
        for (j, r) in points.iter().enumerate() {
            for s in [scalar_bytes(0), scalar_bytes(1), scalar_bytes(8)] {
                let mut signature = r.to_vec();
                signature.extend_from_slice(&s);
                for message in [&b""[..], b"handoff"] {
                    cases.push(Case {
                        name: format!("small-order key {i}, R {j}, s {}", s[0]),
                        key: a.to_vec(),
                        message: message.to_vec(),
                        signature: signature.clone(),
                    });
                }
            }
        }
        // A genuine signature's s and message with the odd R, under a genuine key.
        let message = b"handoff".to_vec();
        let mut signature = pair.sign(&message).as_ref().to_vec();
        signature[..32].copy_from_slice(a);
        cases.push(Case {
            name: format!("genuine key, R replaced by {i}"),
            key: good_key.clone(),
            message,
            signature,
        });
    }
    let accepted_by_ring = cases.iter().filter(|c| ring_says(c)).count();
    // The corpus reaches the cases where a cofactorless check does accept small-order keys.
    assert!(accepted_by_ring > 0, "no small-order case was accepted by ring: a weak corpus");
    for case in &cases {
        check(case, &genuine);
    }
}

/// Signs with a known secret scalar `a`, the nonce's point given by the caller: how the
/// private key's holder can make a signature ring refuses and a cofactored check accepts.
fn sign_with_nonce_point(a: &Scalar, r_point: &EdwardsPoint, r: &Scalar, message: &[u8]) -> Case {
    let key = (ED25519_BASEPOINT_POINT * a).compress().0;
    let r_bytes = r_point.compress().0;
    let mut hash = digest::Context::new(&digest::SHA512);
    hash.update(&r_bytes);
    hash.update(&key);
    hash.update(message);
    let wide: [u8; 64] = hash.finish().as_ref().try_into().expect("64 bytes");
    let k = Scalar::from_bytes_mod_order_wide(&wide);
    let s = r + k * a;
    let mut signature = r_bytes.to_vec();
    signature.extend_from_slice(&s.to_bytes());
    Case { name: String::new(), key: key.to_vec(), message: message.to_vec(), signature }
}

fn random_scalar(rng: &mut Rng) -> Scalar {
    let wide: [u8; 64] = rng.bytes(64).try_into().expect("64 bytes");
    Scalar::from_bytes_mod_order_wide(&wide)
}

#[test]
fn mixed_order_r_non_canonical_s_and_keys_with_torsion() {
    let genuine = genuine_cases(6);
    let mut rng = Rng(0x5eed_0001);
    for i in 0..40 {
        let a = random_scalar(&mut rng);
        let r = random_scalar(&mut rng);
        let message = rng.bytes(i);
        // The honest signature, made from scalars: ring accepts it.
        let honest = sign_with_nonce_point(&a, &(ED25519_BASEPOINT_POINT * r), &r, &message);
        assert!(ring_says(&honest), "the scalar-made signature is genuine");
        check(&Case { name: format!("scalar-made {i}"), ..honest }, &genuine);
        for (t, torsion) in EIGHT_TORSION.iter().enumerate().skip(1) {
            // R = rB + T: ring refuses (no cofactor), so must we, in a batch too.
            let r_point = ED25519_BASEPOINT_POINT * r + torsion;
            let mixed = sign_with_nonce_point(&a, &r_point, &r, &message);
            check(&Case { name: format!("mixed-order R {i}/{t}"), ..mixed }, &genuine);
            // A key with a small-order component: ring's answer, whatever it is.
            let key = (ED25519_BASEPOINT_POINT * a + torsion).compress().0;
            let honest = sign_with_nonce_point(&a, &(ED25519_BASEPOINT_POINT * r), &r, &message);
            let mut signature = honest.signature.clone();
            let mut hash = digest::Context::new(&digest::SHA512);
            hash.update(&signature[..32]);
            hash.update(&key);
            hash.update(&message);
            let wide: [u8; 64] = hash.finish().as_ref().try_into().expect("64 bytes");
            let s = r + Scalar::from_bytes_mod_order_wide(&wide) * a;
            signature[32..].copy_from_slice(&s.to_bytes());
            let case = Case {
                name: format!("mixed-order key {i}/{t}"),
                key: key.to_vec(),
                message: message.clone(),
                signature,
            };
            check(&case, &genuine);
        }
        // s + ℓ, s + 2ℓ …: the same scalar, not its canonical encoding; and s = ℓ itself.
        let honest = sign_with_nonce_point(&a, &(ED25519_BASEPOINT_POINT * r), &r, &message);
        let s = Scalar::from_canonical_bytes(honest.signature[32..].try_into().expect("32"));
        let s = Option::<Scalar>::from(s).expect("canonical");
        let with_s = |name: String, s_bytes: &[u8; 32]| {
            let mut signature = honest.signature.clone();
            signature[32..].copy_from_slice(s_bytes);
            Case { name, key: honest.key.clone(), message: message.clone(), signature }
        };
        for multiple in 1..=15u8 {
            if let Some(bytes) = add_multiple_of_order(&s.to_bytes(), multiple) {
                let case = with_s(format!("s + {multiple}ℓ ({i})"), &bytes);
                assert!(!ring_says(&case), "ring refuses a non-canonical s");
                check(&case, &genuine);
            }
        }
        check(&with_s(format!("s = ℓ ({i})"), &ORDER), &genuine);
    }
}

/// `s + multiple·ℓ` as 32 little-endian bytes, if it fits in 256 bits.
fn add_multiple_of_order(s: &[u8; 32], multiple: u8) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(s[i]) + u16::from(ORDER[i]) * u16::from(multiple) + carry;
        out[i] = sum.to_le_bytes()[0];
        carry = sum >> 8;
    }
    (carry == 0).then_some(out)
}

#[test]
fn random_mutations_of_genuine_signatures() {
    let genuine = genuine_cases(6);
    let pairs: Vec<Ed25519KeyPair> = (0..4).map(|_| key_pair()).collect();
    let seed = {
        let mut b = [0u8; 8];
        SystemRandom::new().fill(&mut b).expect("random");
        u64::from_le_bytes(b) | 1
    };
    let mut rng = Rng(seed);
    let mut accepted = 0;
    for i in 0..6000 {
        let pair = &pairs[rng.below(pairs.len())];
        let len = rng.below(300);
        let message = rng.bytes(len);
        let mut case = Case {
            name: format!("mutation {i} (seed {seed:#x})"),
            key: pair.public_key().as_ref().to_vec(),
            signature: pair.sign(&message).as_ref().to_vec(),
            message,
        };
        // Zero to three changes, anywhere.
        for _ in 0..rng.below(4) {
            match rng.below(7) {
                0 => {
                    let n = rng.below(64);
                    case.signature[n] ^= 1 << rng.below(8);
                }
                1 => {
                    let n = rng.below(32);
                    case.key[n] ^= 1 << rng.below(8);
                }
                2 if !case.message.is_empty() => {
                    let n = rng.below(case.message.len());
                    case.message[n] ^= 1 << rng.below(8);
                }
                3 => case.signature[63] |= 0xf0,
                4 => case.signature[31] ^= 0x80,
                5 => case.key[31] ^= 0x80,
                _ => case.message.push(0),
            }
        }
        if rng.below(20) == 0 {
            let cut = rng.below(64);
            case.signature.truncate(cut);
        } else if rng.below(20) == 0 {
            case.signature.push(0);
        }
        accepted += usize::from(ring_says(&case));
        check(&case, &genuine);
    }
    assert!(accepted > 1000, "the corpus keeps genuine cases too ({accepted})");
}

#[test]
fn batches_of_many_mixed_cases_answer_each_as_ring_does() {
    let pairs: Vec<Ed25519KeyPair> = (0..3).map(|_| key_pair()).collect();
    let mut rng = Rng(0x0bad_5eed);
    for round in 0..50 {
        let size = 2 + rng.below(63);
        let mut cases = Vec::new();
        for i in 0..size {
            let pair = &pairs[rng.below(pairs.len())];
            let len = rng.below(100);
            let message = rng.bytes(len);
            let mut signature = pair.sign(&message).as_ref().to_vec();
            if rng.below(8) == 0 {
                signature[rng.below(64)] ^= 1 << rng.below(8);
            }
            cases.push(Case {
                name: format!("round {round} item {i}"),
                key: pair.public_key().as_ref().to_vec(),
                message,
                signature,
            });
        }
        let keys: Vec<PublicKey> = cases.iter().map(|c| key_of(&c.key).expect("32")).collect();
        let mut items = Vec::new();
        let mut expected = Vec::new();
        for (case, key) in cases.iter().zip(&keys) {
            match prepare(key, &case.message, &case.signature) {
                Check::Decided(genuine) => assert_eq!(genuine, ring_says(case), "{}", case.name),
                Check::Pending(p) => {
                    items.push(p);
                    expected.push(ring_says(case));
                }
            }
        }
        assert_eq!(check_batch(&items), expected, "round {round}");
    }
}

#[test]
fn a_key_that_is_not_a_point_refuses_everything() {
    // y = 2 is not on the curve (its x² is not a square): no point, ring refuses all.
    let mut bytes = [0u8; 32];
    bytes[0] = 2;
    assert!(CompressedEdwardsY(bytes).decompress().is_none());
    let key = PublicKey::new(bytes);
    assert!(!key.is_fast());
    assert!(!ed25519::verify(&key, b"m", &[0u8; 64]));
}
