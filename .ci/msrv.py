#!/usr/bin/env python3
"""The declared MSRV (Cargo.toml's rust-version) against every dependency's.

Walks the normal and build dependencies of scopegate with all features (not
the dev-dependencies: users do not build those), and fails if one declares a
rust-version newer than ours. Our own code is held to it by clippy's
`incompatible_msrv` lint, which the clippy steps run with -D warnings. (This
machine has one toolchain and can fetch no other, so an older compiler
cannot build it here.)

    python3 .ci/msrv.py
"""
import json
import subprocess
import sys


def version(text):
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.loads(
    subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--all-features", "--locked"]
    )
)
packages = {p["id"]: p for p in meta["packages"]}
root = next(p for p in meta["packages"] if p["name"] == "scopegate")
ours = root.get("rust_version")
if not ours:
    sys.exit("Cargo.toml declares no rust-version")

nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
seen, todo = set(), [root["id"]]
while todo:
    node = nodes[todo.pop()]
    for dep in node["deps"]:
        kinds = {k["kind"] for k in dep["dep_kinds"]}
        if node["id"] == root["id"] and kinds <= {"dev"}:
            continue
        if dep["pkg"] not in seen:
            seen.add(dep["pkg"])
            todo.append(dep["pkg"])

newer, highest = [], ("", "0")
for pkg_id in seen:
    pkg = packages[pkg_id]
    declared = pkg.get("rust_version")
    if not declared:
        continue
    if version(declared) > version(highest[1]):
        highest = (f"{pkg['name']} {pkg['version']}", declared)
    if version(declared) > version(ours):
        newer.append(f"{pkg['name']} {pkg['version']} needs {declared}")

print(f"rust-version {ours}; {len(seen)} dependencies, the highest rust-version {highest[1]} ({highest[0]})")
if newer:
    sys.exit("dependencies newer than our rust-version:\n  " + "\n  ".join(sorted(newer)))
