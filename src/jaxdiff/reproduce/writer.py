"""The report: run metadata, `report.json` (`{"meta": ..., "rows": [...]}`) and `report.md`."""

from __future__ import annotations

import datetime
import json
import pathlib
import platform
import subprocess

from .figures import read_caption
from .rows import _plain


def _git_commit() -> str:
    here = pathlib.Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        commit = out.stdout.strip()
        if out.returncode != 0 or not commit:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def run_metadata(*, profile: str, key: int, wall_s: float, experiments) -> dict:
    """What a reader needs to place the numbers: versions, commit, device, profile, time."""
    import jax

    import jaxdiff

    devices = jax.devices()
    return {
        "jaxdiff_version": jaxdiff.__version__,
        "git_commit": _git_commit(),
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "device": f"{len(devices)} x {devices[0].device_kind}" if devices else "none",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "profile": profile,
        "key": key,
        "experiments": list(experiments),
        "wall_s": round(float(wall_s), 1),
        "finished_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
    }


def _number(x) -> str:
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _cell(value, limit: int = 6) -> str:
    """A table cell: numbers to 4 significant digits, long lists shortened."""
    if isinstance(value, dict):
        text = "; ".join(f"{k}: {_cell(v, limit)}" for k, v in value.items())
    elif isinstance(value, list):
        flat = value
        while flat and all(isinstance(v, list) for v in flat):
            flat = [u for v in flat for u in v]
        shown = [_number(v) if not isinstance(v, (list, dict)) else _cell(v, limit) for v in flat[:limit]]
        text = "[" + ", ".join(shown) + (f", ... ({len(flat)} values)" if len(flat) > limit else "") + "]"
    else:
        text = _number(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _criterion_cell(row) -> str:
    crit = row.get("criterion")
    if crit:
        return _cell(crit["text"])
    return _cell(row.get("details", {}).get("criterion", "(stated in the experiment's JSON)"))


def write_report(out_dir, rows: list[dict], *, meta: dict) -> None:
    """Write `report.json` (`{"meta": ..., "rows": [...]}`) and `report.md`: the metadata,
    one table row per claim (criterion and tolerance next to prediction and measurement),
    errors, then each figure with a one-line caption."""
    out_dir = pathlib.Path(out_dir)
    (out_dir / "report.json").write_text(json.dumps(_plain({"meta": meta, "rows": rows}), indent=2))
    n_hold = sum(bool(r["holds"]) for r in rows)
    lines = [
        "# jaxdiff: reproduction report",
        "",
        f"**{n_hold} of {len(rows)} claims hold** (profile `{meta['profile']}`, "
        f"wall time {meta['wall_s']:.0f} s).",
        "",
        f"- jaxdiff {meta['jaxdiff_version']}, commit `{meta['git_commit']}`",
        f"- JAX {meta['jax_version']}, backend `{meta['backend']}`, device {meta['device']}",
        f"- Python {meta['python']} on {meta['platform']}",
        f"- profile `{meta['profile']}`, seed {meta['key']}, finished {meta['finished_utc']} UTC, "
        f"wall time {meta['wall_s']:.1f} s",
        "",
        "A row holds when its measurement meets its criterion against the prediction; the "
        "criteria and their derivations are in the project's docs (`docs/theory.md`, "
        "`docs/reproduce.md`). Every number is in `report.json`, with each experiment's "
        "details in `<experiment>.json`.",
        "",
        "| experiment | claim | criterion (tolerance) | predicted | measured | holds | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    previous = None
    for r in rows:
        verdict = "yes" if r["holds"] else ("**ERROR**" if r.get("error") else "**no**")
        first = r["experiment"] != previous  # an experiment's time is shown once, on its first row
        previous = r["experiment"]
        seconds = f"{r['time_s']:.1f}" if first else ""
        lines.append(
            f"| {r['experiment'] if first else ''} | {_cell(r['claim'])} | {_criterion_cell(r)} "
            f"| {_cell(r['predicted'])} | {_cell(r['measured'])} | {verdict} | {seconds} |"
        )
    errors = [r for r in rows if r.get("error")]
    if errors:
        lines += ["", "## Errors", ""]
        for r in errors:
            lines += [f"### {r['experiment']}", "", "```", r["error"].rstrip(), "```", ""]
    lines += ["", "## Figures", ""]
    seen = set()
    for r in rows:
        for fig in r.get("figures", []):
            if fig in seen:
                continue
            seen.add(fig)
            caption = read_caption(out_dir / fig) or r["claim"]
            alt = caption.replace("[", "(").replace("]", ")")
            lines += [f"### {r['experiment']}", "", f"![{alt}]({fig})", "", f"*{caption}*", ""]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
