//! jsonwebtoken's cryptography, backed by ring.
//!
//! jsonwebtoken ≥ 10 delegates every signature to a process-wide `CryptoProvider`. The product
//! allows exactly one crypto implementation, ring, so this module provides that provider and
//! installs it before any token is signed or verified ([`install`]). With no other backend
//! compiled in (jsonwebtoken's `aws_lc_rs` and `rust_crypto` features stay off), a token can only
//! ever be checked by ring.
//!
//! Every algorithm jsonwebtoken names can be verified (the verifier pins EdDSA before this code
//! runs). Signing is EdDSA only, unless the `danger-test-signers` feature adds HMAC, ECDSA and
//! RSA signers: the attack tests forge tokens with them through the very stack an attacker would
//! use. No server enables that feature.

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair};
use ring::{digest, hmac};

/// The ring-backed provider. Installed by [`install`].
pub static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    jwk_utils: JwkUtils {
        extract_rsa_public_key_components: rsa_components,
        extract_ec_public_key_coordinates: ec_coordinates,
        compute_digest,
    },
};

/// Makes ring jsonwebtoken's crypto provider for this process. Idempotent.
///
/// # Errors
///
/// Fails when some other provider was installed first: tokens would then be checked by code
/// this crate does not vouch for, so callers must refuse to start.
pub fn install() -> Result<(), ForeignProvider> {
    match RING_PROVIDER.install_default() {
        Ok(()) => Ok(()),
        Err(existing) if std::ptr::eq(existing, &RING_PROVIDER) => Ok(()),
        Err(_) => Err(ForeignProvider),
    }
}

/// Another jsonwebtoken crypto provider was installed before ours.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("a jsonwebtoken crypto provider other than ring's is installed in this process")]
pub struct ForeignProvider;

fn new_signer(
    alg: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    match alg {
        Algorithm::EdDSA => {
            let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.inner())
                .map_err(|_| ErrorKind::InvalidEddsaKey)?;
            Ok(Box::new(EdDsaSigner(pair)))
        }
        _ => other_signer(alg, key),
    }
}

/// The product signs with Ed25519 only: any other algorithm is refused.
#[cfg(not(any(test, feature = "danger-test-signers")))]
fn other_signer(
    _: &Algorithm,
    _: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    Err(ErrorKind::InvalidAlgorithm.into())
}

#[cfg(any(test, feature = "danger-test-signers"))]
use danger::other_signer;

fn new_verifier(
    alg: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    // A key only ever verifies the family it was made for: this is what stops an HMAC check
    // keyed with a published public key ("algorithm confusion").
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier { alg: *alg, key: key.clone() }))
}

fn hmac_algorithm(alg: Algorithm) -> hmac::Algorithm {
    match alg {
        Algorithm::HS384 => hmac::HMAC_SHA384,
        Algorithm::HS512 => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    }
}

struct EdDsaSigner(sig::Ed25519KeyPair);

impl Signer<Vec<u8>> for EdDsaSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.0.sign(msg).as_ref().to_vec())
    }
}

impl JwtSigner for EdDsaSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

struct RingVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl RingVerifier {
    fn public_algorithm(&self) -> Option<&'static dyn sig::VerificationAlgorithm> {
        Some(match self.alg {
            Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
            Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
            Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
            Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
            Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
            Algorithm::EdDSA => &sig::ED25519,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => return None,
        })
    }

    fn rsa_parameters(&self) -> &'static sig::RsaParameters {
        match self.alg {
            Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
            Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
            Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
            _ => &sig::RSA_PKCS1_2048_8192_SHA256,
        }
    }
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let checked = match (self.key.kind(), self.public_algorithm()) {
            (DecodingKeyKind::SecretOrDer(secret), None) => {
                let key = hmac::Key::new(hmac_algorithm(self.alg), secret);
                hmac::verify(&key, msg, signature)
            }
            (DecodingKeyKind::SecretOrDer(public), Some(algorithm)) => {
                sig::UnparsedPublicKey::new(algorithm, public).verify(msg, signature)
            }
            (DecodingKeyKind::RsaModulusExponent { n, e }, Some(_)) => {
                sig::RsaPublicKeyComponents { n, e }.verify(self.rsa_parameters(), msg, signature)
            }
            (DecodingKeyKind::RsaModulusExponent { .. }, None) => Err(ring::error::Unspecified),
        };
        checked.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn rsa_components(der: &[u8]) -> jsonwebtoken::errors::Result<(Vec<u8>, Vec<u8>)> {
    let pair =
        sig::RsaKeyPair::from_der(der).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
    let public = pair.public();
    let components: sig::RsaPublicKeyComponents<Vec<u8>> = public.into();
    Ok((components.n, components.e))
}

fn ec_coordinates(
    pkcs8: &[u8],
    alg: Algorithm,
) -> jsonwebtoken::errors::Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    let (signing, curve, len) = match alg {
        Algorithm::ES256 => (&sig::ECDSA_P256_SHA256_FIXED_SIGNING, EllipticCurve::P256, 32),
        Algorithm::ES384 => (&sig::ECDSA_P384_SHA384_FIXED_SIGNING, EllipticCurve::P384, 48),
        _ => return Err(ErrorKind::InvalidEcdsaKey.into()),
    };
    let pair = sig::EcdsaKeyPair::from_pkcs8(signing, pkcs8, &SystemRandom::new())
        .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
    // An uncompressed SEC1 point: 0x04 || x || y.
    match pair.public_key().as_ref().split_first() {
        Some((4, xy)) if xy.len() == 2 * len => {
            let (x, y) = xy.split_at(len);
            Ok((curve, x.to_vec(), y.to_vec()))
        }
        _ => Err(ErrorKind::InvalidEcdsaKey.into()),
    }
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Vec<u8> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
    };
    digest::digest(algorithm, data).as_ref().to_vec()
}

/// Signers for the algorithms the product never signs with (HMAC, ECDSA, RSA): the attack
/// tests forge tokens with them through the very stack an attacker would use. Compiled only
/// with the `danger-test-signers` feature, which no server enables.
#[cfg(any(test, feature = "danger-test-signers"))]
mod danger {
    use jsonwebtoken::crypto::JwtSigner;
    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::signature::{self, Signer};
    use jsonwebtoken::{Algorithm, EncodingKey};
    use ring::hmac;
    use ring::rand::SystemRandom;
    use ring::signature as sig;

    use super::hmac_algorithm;

    pub(super) fn other_signer(
        alg: &Algorithm,
        key: &EncodingKey,
    ) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
        let rng = SystemRandom::new();
        let signer: Box<dyn JwtSigner> = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Box::new(HmacSigner {
                alg: *alg,
                key: hmac::Key::new(hmac_algorithm(*alg), key.inner()),
            }),
            Algorithm::ES256 | Algorithm::ES384 => {
                let signing = if *alg == Algorithm::ES256 {
                    &sig::ECDSA_P256_SHA256_FIXED_SIGNING
                } else {
                    &sig::ECDSA_P384_SHA384_FIXED_SIGNING
                };
                let pair = sig::EcdsaKeyPair::from_pkcs8(signing, key.inner(), &rng)
                    .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
                Box::new(EcdsaSigner { alg: *alg, pair, rng })
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => {
                let pair = sig::RsaKeyPair::from_der(key.inner())
                    .or_else(|_| sig::RsaKeyPair::from_pkcs8(key.inner()))
                    .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
                Box::new(RsaSigner { alg: *alg, pair, rng })
            }
            Algorithm::EdDSA => return Err(ErrorKind::InvalidAlgorithm.into()),
        };
        Ok(signer)
    }

    struct HmacSigner {
        alg: Algorithm,
        key: hmac::Key,
    }

    impl Signer<Vec<u8>> for HmacSigner {
        fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
            Ok(hmac::sign(&self.key, msg).as_ref().to_vec())
        }
    }

    impl JwtSigner for HmacSigner {
        fn algorithm(&self) -> Algorithm {
            self.alg
        }
    }

    struct EcdsaSigner {
        alg: Algorithm,
        pair: sig::EcdsaKeyPair,
        rng: SystemRandom,
    }

    impl Signer<Vec<u8>> for EcdsaSigner {
        fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
            let signature = self.pair.sign(&self.rng, msg).map_err(|_| signature::Error::new())?;
            Ok(signature.as_ref().to_vec())
        }
    }

    impl JwtSigner for EcdsaSigner {
        fn algorithm(&self) -> Algorithm {
            self.alg
        }
    }

    struct RsaSigner {
        alg: Algorithm,
        pair: sig::RsaKeyPair,
        rng: SystemRandom,
    }

    impl Signer<Vec<u8>> for RsaSigner {
        fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
            let padding: &'static dyn sig::RsaEncoding = match self.alg {
                Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
                Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
                Algorithm::PS256 => &sig::RSA_PSS_SHA256,
                Algorithm::PS384 => &sig::RSA_PSS_SHA384,
                Algorithm::PS512 => &sig::RSA_PSS_SHA512,
                _ => &sig::RSA_PKCS1_SHA256,
            };
            let mut out = vec![0; self.pair.public().modulus_len()];
            self.pair
                .sign(padding, &self.rng, msg, &mut out)
                .map_err(|_| signature::Error::new())?;
            Ok(out)
        }
    }

    impl JwtSigner for RsaSigner {
        fn algorithm(&self) -> Algorithm {
            self.alg
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, encode, Header, Validation};
    use serde_json::{json, Value};

    fn validation(alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v
    }

    #[test]
    fn hmac_round_trip_and_wrong_secret() {
        install().expect("ring provider");
        let claims = json!({"a": 1});
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let token =
                encode(&Header::new(alg), &claims, &EncodingKey::from_secret(b"k1")).expect("sign");
            let ok = decode::<Value>(&token, &DecodingKey::from_secret(b"k1"), &validation(alg));
            assert!(ok.is_ok(), "{alg:?}");
            let bad = decode::<Value>(&token, &DecodingKey::from_secret(b"k2"), &validation(alg));
            assert_eq!(bad.unwrap_err().kind(), &ErrorKind::InvalidSignature);
        }
    }

    #[test]
    fn ecdsa_round_trip() {
        install().expect("ring provider");
        let rng = SystemRandom::new();
        let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate");
        let pair = sig::EcdsaKeyPair::from_pkcs8(
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .expect("parse");
        let token = encode(
            &Header::new(Algorithm::ES256),
            &json!({"a": 1}),
            &EncodingKey::from_ec_der(pkcs8.as_ref()),
        )
        .expect("sign");
        let key = DecodingKey::from_ec_der(pair.public_key().as_ref());
        assert!(decode::<Value>(&token, &key, &validation(Algorithm::ES256)).is_ok());
    }

    #[test]
    fn a_key_never_verifies_another_family() {
        install().expect("ring provider");
        let public = [7u8; 32];
        let token = encode(
            &Header::new(Algorithm::HS256),
            &json!({"a": 1}),
            &EncodingKey::from_secret(&public),
        )
        .expect("sign");
        // The Ed25519 public key bytes used as an HMAC secret must not verify anything.
        let ed_key = DecodingKey::from_ed_der(&public);
        let err = decode::<Value>(&token, &ed_key, &validation(Algorithm::HS256)).unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::InvalidKeyFormat);
    }
}
