//! Introspection answers (RFC 7662): a grant only from an active answer for
//! this audience; never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|answer: &[u8]| scopegate::fuzzing::introspection_answer(answer));
