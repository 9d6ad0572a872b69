"""jaxdiff benchmarks: speed, memory and scale figures, each a ratio against a reference
measured in the same run, written as one JSON file and a readable table.

Run all of them with `python -m benchmarks [--quick | --full] [--out PATH]` (or
`jaxdiff bench ...`) from the repository root. Each module `benchmarks/bench_*.py` runs in
its own subprocess (a clean JAX: no leaked `jax_enable_x64`, device flags or memory) and
defines

    run(quick: bool) -> dict

returning `{"title": str, "rows": [row, ...], "notes": [str, ...], ...}`, where a row is
`row(case, value, unit, reference=..., ratio=..., target=">= 0.8", **extra)`: the figure,
the same-run reference figure, their ratio and the target the ratio must meet (`">= x"` or
`"<= x"`); `ok` is filled in from them. Anything else in the dict is kept in the JSON.

Timing (`measure`): candidates run interleaved, round after round, and each keeps its
fastest round. On a shared machine other processes only ever add time, so the minimum is
the stable statistic, and interleaving exposes a figure and its reference to the same
conditions. Both wall-clock and process CPU time are kept; ratios use wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["measure", "row", "meets", "machine", "run_python", "progress", "standalone"]


def _block(out):
    import jax

    return jax.block_until_ready(out)


def measure(
    cands: dict[str, Callable[[], Any]], *, rounds: int = 3, min_round_s: float = 0.05
) -> dict[str, dict[str, float]]:
    """Time zero-argument callables (each returns what to block on), interleaved.

    Each callable runs once to warm up (compile), then `rounds` rounds; in a round it runs
    `reps` times back to back, `reps` chosen from the warm-up so a round lasts at least
    `min_round_s`. Returns `{name: {"wall_s", "cpu_s", "reps"}}`, per call, fastest round.
    """
    reps = {}
    for name, f in cands.items():
        _block(f())  # compile
        t0 = time.perf_counter()
        _block(f())
        dt = time.perf_counter() - t0
        reps[name] = max(1, min(1000, int(min_round_s / max(dt, 1e-9)) + 1))
    best = {name: {"wall_s": float("inf"), "cpu_s": float("inf"), "reps": reps[name]} for name in cands}
    for _ in range(rounds):
        for name, f in cands.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(reps[name]):
                out = f()
            _block(out)
            wall = (time.perf_counter() - t0) / reps[name]
            cpu = (time.process_time() - c0) / reps[name]
            best[name]["wall_s"] = min(best[name]["wall_s"], wall)
            best[name]["cpu_s"] = min(best[name]["cpu_s"], cpu)
    return best


def meets(ratio: float | None, target: str | None) -> bool | None:
    """Whether `ratio` meets a target written `">= x"` or `"<= x"` (None if either is None)."""
    if ratio is None or target is None:
        return None
    op, _, bound = target.strip().partition(" ")
    bound = float(bound)
    if op == ">=":
        return bool(ratio >= bound)
    if op == "<=":
        return bool(ratio <= bound)
    raise ValueError(f"`target` must read '>= x' or '<= x', got {target!r}")


def row(case: str, value: float, unit: str, *, reference: float | None = None, ratio: float | None = None,
        target: str | None = None, **extra) -> dict:
    """One benchmark figure; see the module docstring."""
    r = {"case": case, "value": value, "unit": unit, "reference": reference, "ratio": ratio, "target": target,
         "ok": meets(ratio, target)}
    r.update(extra)
    return r


def machine() -> dict:
    """What ran the benchmark: versions, backend, devices, cores and load."""
    import jax

    info = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        info["cpu_model"] = next(
            ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        info["cpu_model"] = platform.processor()
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def run_python(code: str, *, env: dict | None = None, timeout: float = 600.0) -> dict:
    """Run `code` in a fresh Python; it must print one JSON object as its last stdout line."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=full_env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"subprocess failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def progress(iterable, desc: str, total: int | None = None):
    """A tqdm bar on stderr (benchmarks are long work)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, file=sys.stderr)


def standalone(run: Callable[..., dict], name: str, doc: str, argv: list[str] | None = None,
               after: Callable[[dict, str], None] | None = None) -> dict:
    """`python -m benchmarks.bench_<name> [--full] [--out PATH]`: run one module, write its
    JSON (default `bench-out/<name>.json`), print its rows; `after(result, out)` adds files."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full sizes (default: quick)")
    parser.add_argument("--out", default=os.path.join("bench-out", f"{name}.json"))
    args = parser.parse_args(argv)
    res = run(quick=not args.full)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    if after is not None:
        after(res, args.out)
    for r in res.get("rows", []):
        ratio = "" if r.get("ratio") is None else f"  ratio {r['ratio']:.3g}"
        met = "met" if r.get("ok") else "NOT met"
        target = "" if r.get("target") is None else f" (target {r['target']}: {met})"
        print(f"{r['case']}: {r['value']:.4g} {r['unit']}{ratio}{target}")
    print("\n".join(res.get("notes", [])))
    print(f"wrote {args.out}")
    return res
