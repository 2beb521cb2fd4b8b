#!/usr/bin/env python3
"""Turns criterion's estimates into BENCHMARKS.md's tables, ratios and plots.

    cargo bench --features jwt --bench hot_path && cargo bench --bench scaling
    pip install matplotlib            # for the plots
    python3 benches/report.py         # prints Markdown; writes benches/plots/*.png

Reads $CARGO_TARGET_DIR/criterion (default target/criterion). Every number is
a criterion median from the last run; ratios are computed from medians of the
same run.

On a noisy machine, run the hot path several times with criterion baselines
and name them:

    for r in r1 r2 r3; do cargo bench --features jwt --bench hot_path -- --save-baseline $r; done
    python3 benches/report.py r1 r2 r3

The hot-path tables then show the median over the runs of each benchmark's
median, and each target's ratio run by run (each from one run's medians),
with the median of those ratios. Scaling always reads the last run.
"""

import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRITERION = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "criterion"
PLOTS = ROOT / "benches" / "plots"
RUNS = sys.argv[1:] or ["new"]


def median(group: str, bench: str, run: str = "new") -> float:
    """Median in nanoseconds of one benchmark in one run (criterion baseline)."""
    path = CRITERION / group / bench / run / "estimates.json"
    try:
        return json.loads(path.read_text())["median"]["point_estimate"]
    except FileNotFoundError:
        sys.exit(f"missing {path}: run `cargo bench --bench hot_path` and `--bench scaling` first")


def ns(value: float) -> str:
    return f"{value / 1000:.2f} µs" if value >= 10_000 else f"{value:.0f} ns"


def main() -> None:
    def h(name: str) -> float:
        """The median over the runs of one benchmark's median."""
        return statistics.median(median("hot_path", name, run) for run in RUNS)

    floor_parts = ["floor_parse_header", "floor_sha256", "floor_moka_get", "floor_extensions_insert"]

    def per_run(ratio) -> list[float]:
        """`ratio(m)` for each run, `m` reading that run's medians."""
        return [ratio(lambda name, run=run: median("hot_path", name, run)) for run in RUNS]

    def overhead(m) -> float:
        return m("stacked_hit") - m("bare")

    def floor_of(m) -> float:
        return sum(m(p) for p in floor_parts)

    bare = h("bare")
    floor = sum(h(p) for p in floor_parts)
    stacked = h("stacked_hit") - bare
    if len(RUNS) > 1:
        print(f"Medians over {len(RUNS)} runs ({', '.join(RUNS)}) of each benchmark's median.\n")

    print("### Hot path (`cargo bench --bench hot_path`)\n")
    print("| benchmark | median | over bare | over bare ÷ floor |")
    print("|---|---:|---:|---:|")
    for name in ["bare", "entitlement_hit", "scope_hit", "stacked_hit", "policy_hit_10_routes",
                 "policy_hit_200_routes", "stacked_miss_memory_store",
                 "reject_401_missing", "reject_401_unknown", "reject_403_scope", "reject_403_entitlement",
                 "peer_tower_http_bearer", "peer_jwt_hs256_verify", "peer_jwt_rs256_verify"]:
        value = h(name)
        over = value - bare
        if name == "bare" or name.startswith("peer_jwt"):
            print(f"| `{name}` | {ns(value)} | | |")
        else:
            print(f"| `{name}` | {ns(value)} | {ns(over)} | {over / floor:.2f} |")
    print()
    print("| floor part | median |")
    print("|---|---:|")
    for part in floor_parts:
        print(f"| `{part}` | {ns(h(part))} |")
    print(f"| **sum: the floor** | **{ns(floor)}** |")
    print()
    runs = " / ".join(RUNS)
    print(f"| target | each run ({runs}) | median | met |")
    print("|---|---:|---:|:---:|")
    rows = [
        ("stacked overhead ÷ floor ≤ 1.3", lambda m: overhead(m) / floor_of(m), 1.3),
        ("stacked overhead ÷ HS256 verify ≤ 1/8 (0.125)",
         lambda m: overhead(m) / m("peer_jwt_hs256_verify"), 1 / 8),
        ("stacked overhead ÷ RS256 verify ≤ 1/60 (0.0167)",
         lambda m: overhead(m) / m("peer_jwt_rs256_verify"), 1 / 60),
    ]
    for name in ["reject_401_missing", "reject_401_unknown", "reject_403_scope", "reject_403_entitlement"]:
        rows.append((f"`{name}` ÷ stacked hit", lambda m, name=name: m(name) / m("stacked_hit"), None))
    for label, ratio, limit in rows:
        values = per_run(ratio)
        middle = statistics.median(values)
        if limit is None:
            met = ""
        elif all(v <= limit for v in values):
            met = "yes"
        elif middle <= limit:
            met = "yes (median; not every run)"
        else:
            met = "**no**"
        each = " / ".join(f"{v:.3f}" for v in values)
        print(f"| {label} | {each} | {middle:.3f} | {met} |")

    sizes = [1, 10_000, 1_000_000]
    scale = {n: median("scaling_cached_credentials", str(n)) for n in sizes}
    plain = {n: median("scaling_cached_credentials", f"bare/{n}") for n in sizes}
    hot = {n: median("scaling_cached_credentials", f"hot_key/{n}") for n in sizes}
    moka = {n: median("scaling_cached_credentials", f"floor_moka_get/{n}") for n in sizes}
    over = {n: scale[n] - plain[n] for n in sizes}
    print("\n### Scaling (`cargo bench --bench scaling`)\n")
    print("| cached credentials | round-robin, stacked | ÷ at 1 | over bare, same requests | ÷ at 1 "
          "| one hot key | ÷ at 1 | bare moka get, round-robin | ÷ at 1 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        print(f"| {n:,} | {ns(scale[n])} | {scale[n] / scale[1]:.2f} | {ns(over[n])} | {over[n] / over[1]:.2f} "
              f"| {ns(hot[n])} | {hot[n] / hot[1]:.2f} | {ns(moka[n])} | {moka[n] / moka[1]:.2f} |")
    print()
    print("| scopes on the credential | requires the last one | requires all of them |")
    print("|---:|---:|---:|")
    for k in [1, 8, 64]:
        last = median("scaling_scopes_per_credential", f"last/{k}")
        every = median("scaling_scopes_per_credential", f"all_of/{k}")
        print(f"| {k} | {ns(last)} | {ns(every)} |")
    print()
    print("| threads | service | ns per request (wall) | requests/s | ÷ same service on 1 thread |")
    print("|---|---|---:|---:|---:|")
    rows = [("bare/1", "1", "bare"), ("bare/2", "2", "bare"), ("1", "1", "stacked hit, one gate"),
            ("2_one_key", "2, one shared key", "stacked hit, one gate"),
            ("2_own_keys", "2, a key each", "stacked hit, one gate")]
    for name, threads, service in rows:
        t = median("scaling_threads", name)
        one = median("scaling_threads", "bare/1" if service == "bare" else "1")
        print(f"| {threads} | {service} | {t:.0f} | {1e9 / t / 1e6:.2f} M | {one / t:.2f} |")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(no plots: pip install matplotlib)", file=sys.stderr)
        return
    PLOTS.mkdir(exist_ok=True)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(sizes, [scale[n] for n in sizes], "o-", label="scopegate stacked hit, round-robin")
    ax.plot(sizes, [hot[n] for n in sizes], "^-", label="scopegate stacked hit, one hot key")
    ax.plot(sizes, [moka[n] for n in sizes], "s--", label="bare moka get, round-robin")
    ax.set_xscale("log")
    ax.set_xlabel("cached credentials")
    ax.set_ylabel("median ns per request")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Hit cost against cache size")
    fig.tight_layout()
    fig.savefig(PLOTS / "hit_vs_cache_size.png", dpi=110)

    labels = ["scopegate\nstacked hit", "floor\n(sum of parts)", "tower-http\nbearer", "jsonwebtoken\nHS256", "jsonwebtoken\nRS256"]
    values = [stacked, floor, h("peer_tower_http_bearer") - bare, h("peer_jwt_hs256_verify"), h("peer_jwt_rs256_verify")]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bars = ax.bar(labels, values, color=["tab:blue", "tab:gray", "tab:green", "tab:orange", "tab:red"])
    ax.set_yscale("log")
    ax.set_ylabel("ns per request (log)")
    ax.set_title("Per-request overhead against peers")
    for bar, value in zip(bars, values):
        ax.annotate(ns(value), (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOTS / "overhead_vs_peers.png", dpi=110)
    print(f"\n(plots written to {PLOTS.relative_to(ROOT)}/)", file=sys.stderr)


if __name__ == "__main__":
    main()
