#!/usr/bin/env bash
# Regenerates contacts.v1.rs from contacts.proto with tonic-prost-build, so
# that building the example needs no protoc. Needs protoc
# (apt-get install protobuf-compiler).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
cat > "$work/Cargo.toml" <<'TOML'
[package]
name = "regenerate-contacts"
version = "0.0.0"
edition = "2021"
publish = false
[build-dependencies]
tonic-prost-build = "0.14"
TOML
echo 'fn main() {}' > "$work/src/main.rs"
cat > "$work/build.rs" <<RS
fn main() {
    tonic_prost_build::configure()
        .out_dir("$here")
        .compile_protos(&["$here/contacts.proto"], &["$here"])
        .expect("protoc");
}
RS
cargo build --quiet --manifest-path "$work/Cargo.toml"
echo "wrote $here/contacts.v1.rs"
