//! The `Authorization` header parser and the `b64token` check agree with a
//! reference written from RFC 6750's grammar, and never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|value: &[u8]| scopegate::fuzzing::authorization(value));
