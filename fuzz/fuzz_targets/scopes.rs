//! Scope tokens and requirements (RFC 6749 §3.3): valid exactly when every
//! name is a `scope-token`; never a panic.
#![no_main]

use scopegate::scope::{Requirement, Scope, ScopeError};
use scopegate::ScopeSet;

/// `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// Whether `result`, for `names`, is what the grammar says. The registry
/// holds at most `MAX_SCOPES` names, and a long run fills it: past that, a
/// new valid name is `TooMany`, which a list reports if such a name comes
/// before its first invalid one.
fn agrees<T>(result: Result<T, ScopeError>, names: &[&str]) -> bool {
    let valid = names.iter().all(|n| is_scope_token(n));
    let valid_before_invalid = names.iter().take_while(|n| is_scope_token(n)).count() > 0;
    match result {
        Ok(_) => valid,
        Err(ScopeError::TooMany) => valid || valid_before_invalid,
        Err(ScopeError::Invalid(_)) => !valid,
        Err(_) => false,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let names: Vec<&str> = text.split('\n').collect();
    for name in &names {
        assert!(agrees(Scope::new(name), &[name]), "{name:?}");
    }
    assert!(agrees(ScopeSet::parse(&names), &names), "{names:?}");
    for requirement in [Requirement::all_of(&names), Requirement::any_of(&names)] {
        assert!(agrees(requirement, &names), "{names:?}");
    }
});
