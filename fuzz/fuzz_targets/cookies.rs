//! SERVER2's cookie openers: the operation grant (and the pending grant of a switch prompt,
//! which is the same sealed grant), the holder note and the nonce comparison. Any text must be
//! refused without a panic; text near a genuine cookie (the input spliced into one) must be
//! refused unless it is that cookie, byte for byte.
#![no_main]

use std::sync::OnceLock;

use handoff::grant::{Grant, GrantKey};
use handoff::{Audience, Issuer, Jti, Operation, OperationType, Subject, UnixTime};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    key: GrantKey,
    audience: Audience,
    sealed: String,
    holder: String,
    now: UnixTime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = GrantKey::from_bytes(&[7u8; 32]).expect("key");
        let audience = Audience::parse("https://partner.example").expect("aud");
        let now = UnixTime::from_secs(1_800_000_000);
        let kind = OperationType::parse("report.view").expect("type");
        let grant = Grant {
            aud: audience.clone(),
            sub: Subject::parse("p-fuzz").expect("sub"),
            handed_by: Issuer::parse("https://portal.example").expect("iss"),
            op: Operation::new(kind, []).expect("op"),
            iat: now,
            exp: now.plus(600),
            jti: Jti::parse("AAAAAAAAAAAAAAAAAAAAAA").expect("jti"),
            sid: None,
            token_iat: Some(now),
            name: Some("Fuzz Example".into()),
        };
        let sealed = key.seal(&grant).expect("seal");
        let holder = key.seal_holder(&grant);
        Fixture { key, audience, sealed, holder, now }
    })
}

/// `genuine` with the input's tail written over it at the offset its first byte picks.
fn spliced(genuine: &str, data: &[u8]) -> Option<String> {
    let (&at, patch) = data.split_first()?;
    let mut bytes = genuine.as_bytes().to_vec();
    let at = usize::from(at) % bytes.len();
    let end = (at + patch.len()).min(bytes.len());
    bytes.splice(at..end, patch.iter().copied());
    String::from_utf8(bytes).ok()
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = f.key.open(text, &f.audience, f.now);
        let _ = f.key.open_holder(text, f.now);
        let _ = f.key.same_secret(text, "AAAAAAAAAAAAAAAAAAAAAA");
    }
    if let Some(text) = spliced(&f.sealed, data) {
        let opened = f.key.open(&text, &f.audience, f.now);
        assert!(opened.is_err() || text == f.sealed, "a changed grant opened: {text}");
    }
    if let Some(text) = spliced(&f.holder, data) {
        let opened = f.key.open_holder(&text, f.now);
        assert!(opened.is_none() || text == f.holder, "a changed holder note opened: {text}");
    }
});
