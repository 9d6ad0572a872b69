"""`python -m benchmarks [--quick | --full] [--out PATH] [--only score,compile,...]`

Runs every `benchmarks/bench_*.py` module's `run(quick)` in its own subprocess, then
writes one JSON file (default `bench-out/benchmarks.json`) and the same figures as a
Markdown table next to it (`benchmarks.md`), and prints the table. A module that is
missing, fails or times out is recorded with the reason and skipped; the others still run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import os
import pathlib
import pkgutil
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPECTED = ("score", "sampling", "training", "pde", "compile", "scale")  # the core modules, in table order


def discover() -> list[str]:
    """Names of the `bench_*` modules present (without the prefix), in a stable order."""
    import benchmarks

    found = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(benchmarks.__path__)
                   if m.name.startswith("bench_"))  # fmt: skip
    return [n for n in EXPECTED if n in found] + [n for n in found if n not in EXPECTED]


def _child(name: str, quick: bool, out: str) -> int:
    """Subprocess entry: run one module and write its dict as JSON."""
    mod = importlib.import_module(f"benchmarks.bench_{name}")
    res = mod.run(quick=quick)
    with open(out, "w") as f:
        json.dump(res, f, indent=1, default=_jsonable)
    return 0


def _jsonable(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def run_module(name: str, quick: bool, timeout: float, tmpdir: pathlib.Path) -> dict:
    """Run one module in a subprocess; its stderr (progress bars) passes through."""
    out = tmpdir / f"{name}.json"
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    cmd = [sys.executable, "-m", "benchmarks", "--child", name, "--child-out", str(out),
           "--quick" if quick else "--full"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tail: list[bytes] = []

    def pump():  # echo progress to our stderr, keep the tail for the error report
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
            tail.append(chunk)
            del tail[:-50]

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        th.join(5)
        return {"skipped": f"timed out after {timeout:.0f} s", "wall_s": time.perf_counter() - t0}
    th.join(5)
    wall = time.perf_counter() - t0
    if rc != 0 or not out.exists():
        msg = b"".join(tail).decode(errors="replace").strip().splitlines()
        return {"skipped": f"failed (exit code {rc})", "error_tail": msg[-15:], "wall_s": wall}
    res = json.loads(out.read_text())
    if not isinstance(res, dict):
        res = {"result": res}
    res["wall_s"] = wall
    return res


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
            return str(v)
        return f"{v:.3g}"
    return str(v)


def _generic_rows(res, prefix: str = "") -> list[dict]:
    """Rows for a module that does not follow the `rows` schema: its numeric ratios."""
    rows = []
    if isinstance(res, list):  # e.g. a list of cases: label each by its "case" (or index)
        for i, v in enumerate(res):
            label = v.get("case", i) if isinstance(v, dict) else i
            rows += _generic_rows(v, f"{prefix}{label} / ")
    elif isinstance(res, dict):
        for k, v in res.items():
            path = f"{prefix}{k}"
            if isinstance(v, (dict, list)):
                rows += _generic_rows(v, path + " / ")
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and "ratio" in path.lower():
                rows.append({"case": path, "value": None, "unit": "", "ratio": v})
    return rows


def table(report: dict) -> str:
    """The whole report as Markdown."""
    m = report["machine"]
    lines = [
        f"# jaxdiff benchmarks ({report['mode']})",
        "",
        f"{report['started']}; {m.get('backend')} ({m.get('device_kind')}; {m.get('cpu_model', '')}, "
        f"{m.get('cpu_count')} cores, load {m.get('load_average', '?')}); jax {m.get('jax')}; "
        f"total {report['wall_s']:.0f} s",
        "",
        "| benchmark | case | figure | reference | ratio | target | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name, res in report["benchmarks"].items():
        if "skipped" in res:
            lines.append(f"| {name} | *skipped: {res['skipped']}* | | | | | |")
            continue
        rows = res.get("rows") if isinstance(res.get("rows"), list) else _generic_rows(res)
        for r in rows:
            unit = r.get("unit") or ""
            fig = f"{_fmt(r.get('value'))} {unit}".strip()
            ref = f"{_fmt(r.get('reference'))} {unit}".strip() if r.get("reference") is not None else ""
            lines.append(f"| {name} | {r.get('case', '')} | {fig} | {ref} | {_fmt(r.get('ratio'))} | "
                         f"{r.get('target') or ''} | {_fmt(r.get('ok'))} |")  # fmt: skip
        notes += [f"{name}: {n}" for n in res.get("notes", [])]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, a few minutes on a CPU (default)")
    mode.add_argument("--full", action="store_true", help="the whole size sweep (long)")
    ap.add_argument("--out", default="bench-out/benchmarks.json",
                    help="JSON path, or a folder for benchmarks.json (default: bench-out/benchmarks.json)")
    ap.add_argument("--only", default=None, help="comma-separated module names (score, compile, scale, ...)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per module (default 900 quick, 7200 full)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    quick = not args.full
    if args.child:
        return _child(args.child, quick, args.child_out)

    out = pathlib.Path(args.out)
    if out.suffix != ".json":
        out = out / "benchmarks.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    names = discover()
    if args.only:
        wanted = [n.strip().removeprefix("bench_") for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            ap.error(f"--only: no module benchmarks/bench_{unknown[0]}.py (have: {', '.join(names)})")
        names = wanted
    timeout = args.timeout or (900.0 if quick else 7200.0)

    from benchmarks import machine, progress

    report = {
        "schema": 1,
        "mode": "quick" if quick else "full",
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "benchmarks": {},
    }
    t0 = time.perf_counter()
    tmpdir = out.parent / ".bench-tmp"
    tmpdir.mkdir(exist_ok=True)
    for name in progress(names, "benchmarks"):
        report["benchmarks"][name] = run_module(name, quick, timeout, tmpdir)
    if not args.only:
        for name in EXPECTED:
            if name not in report["benchmarks"]:
                report["benchmarks"][name] = {"skipped": f"missing (no benchmarks/bench_{name}.py yet)"}
    report["wall_s"] = time.perf_counter() - t0
    report["targets"] = [
        {"benchmark": name, "case": r.get("case"), "ratio": r.get("ratio"), "target": r.get("target"),
         "ok": r.get("ok")}
        for name, res in report["benchmarks"].items() if isinstance(res.get("rows"), list)
        for r in res["rows"] if r.get("target")
    ]  # fmt: skip
    out.write_text(json.dumps(report, indent=1, default=_jsonable))
    md = table(report)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
