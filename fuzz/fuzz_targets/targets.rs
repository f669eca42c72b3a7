//! Any text as SERVER1's targets file: must never panic, only accept or explain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server1::targets::Targets;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Targets::parse(text);
    }
});
