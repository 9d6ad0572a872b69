r"""`jaxdiff reproduce`: run the seed papers' experiments and write a report.

Each claim of the theory (../shared/THEORY.md) is one script in the `experiments` package.
A script exposes

    PROFILES = {"tiny": {...}, "quick": {...}, "full": {...}}
    def main(out_dir, *, profile="quick", key=0, **sizes) -> list[dict]

and writes `<out_dir>/<name>.json` plus PNG figures. Each row it returns holds `id`,
`claim`, `predicted`, `measured`, `holds` (computed from a stated criterion), `figures`
(PNG file names relative to `out_dir`) and `details`.

`run` imports the experiments named in `EXPERIMENTS` (or the `only` subset), runs them one
after the other under a progress bar, turns an experiment that raises into a failed row
carrying the error text (the others still run) and writes `report.md` (a table, then the
figures) and `report.json` (the list of rows, each with the experiment's name and time).

Where the scripts live: a wheel carries them as `jaxdiff/_experiments` (pyproject's
force-include); an editable install or a source checkout has them at the repository root,
`<repo>/experiments`. Either way they are imported under the one name
`jaxdiff._experiments`, so `run` finds the same modules in both layouts.

The helpers `make_row`, `write_json`, `save_figure`, `fit_power_law`, `chi_square_test`
and `standalone` are shared by the scripts (they are not on any numerical path, so they use
NumPy freely).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import pathlib
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

# Every experiment of the report, in the order of the report (P1, then P2, then beyond).
EXPERIMENTS: tuple[str, ...] = (
    "support",
    "explicit_solution",
    "memorisation",
    "loss_minimiser",
    "collapse_time",
    "li_yau",
    "lp_stability",
    "concentration",
    "generalisation",
    "optimise_sampler",
)

PROFILE_NAMES = ("tiny", "quick", "full")
_PACKAGE = "jaxdiff._experiments"
_REQUIRED = ("id", "claim", "predicted", "measured", "holds")


# ---------------------------------------------------------------------------------------
# Finding and loading the experiment scripts
# ---------------------------------------------------------------------------------------


def experiments_dir() -> pathlib.Path:
    """The folder holding the experiment scripts: next to the package (a wheel install),
    else at the repository root (an editable install or a checkout)."""
    here = pathlib.Path(__file__).resolve().parent
    for candidate in (here / "_experiments", here.parent.parent / "experiments"):
        if (candidate / "__init__.py").is_file():
            return candidate
    raise FileNotFoundError(
        "cannot find the experiment scripts: looked for "
        f"{here / '_experiments'} (a wheel install) and {here.parent.parent / 'experiments'} (a checkout)"
    )


def _experiments_package():
    if _PACKAGE in sys.modules:
        return sys.modules[_PACKAGE]
    try:  # a wheel ships them inside the package
        return importlib.import_module(_PACKAGE)
    except ModuleNotFoundError:
        pass
    folder = experiments_dir()
    spec = importlib.util.spec_from_file_location(
        _PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def load_experiment(name: str):
    """Import the experiment script `name` (one of `EXPERIMENTS`)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"`name` must be one of {', '.join(EXPERIMENTS)}; got {name!r}")
    _experiments_package()
    return importlib.import_module(f"{_PACKAGE}.{name}")


def _parse_only(only: str | Sequence[str] | None) -> list[str]:
    if only is None:
        return list(EXPERIMENTS)
    names = [n.strip() for n in only.split(",")] if isinstance(only, str) else [str(n).strip() for n in only]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown or not names:
        raise ValueError(
            f"`only` must name experiments among {', '.join(EXPERIMENTS)}; "
            f"got {', '.join(unknown) or 'nothing'}"
        )
    return [n for n in EXPERIMENTS if n in names]


# ---------------------------------------------------------------------------------------
# Helpers shared by the scripts
# ---------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-ready copy of `value`: arrays become lists, NumPy/JAX scalars become numbers,
    non-finite floats become strings (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy / jax arrays and scalars
        return _plain(value.tolist())
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


def make_row(
    id: str,
    claim: str,
    predicted,
    measured,
    holds,
    figures: Sequence[str] = (),
    details: dict | None = None,
) -> dict:
    """One report row. `holds` must come from a stated criterion (kept in `details`)."""
    return {
        "id": str(id),
        "claim": str(claim),
        "predicted": _plain(predicted),
        "measured": _plain(measured),
        "holds": bool(holds),
        "figures": [str(f) for f in figures],
        "details": _plain(details or {}),
    }


def write_json(out_dir, name: str, rows: list[dict], **extra) -> pathlib.Path:
    """Write `<out_dir>/<name>.json` with the rows and any extra (plain) data."""
    path = pathlib.Path(out_dir) / f"{name}.json"
    path.write_text(json.dumps(_plain({"experiment": name, "rows": rows, **extra}), indent=2))
    return path


def save_figure(fig, out_dir, file_name: str) -> str:
    """Save a matplotlib figure as `<out_dir>/<file_name>` and close it; return the name."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(pathlib.Path(out_dir) / file_name, dpi=110)
    plt.close(fig)
    return file_name


def fit_power_law(x, y) -> tuple[float, float]:
    """Least-squares fit of `log y = log c + p log x`; returns `(p, c)`."""
    import numpy as np

    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    p, logc = np.polyfit(lx, ly, 1)
    return float(p), float(np.exp(logc))


def chi_square_test(counts, probs) -> tuple[float, float, int]:
    """Pearson's chi-square goodness-of-fit test of `counts` against probabilities `probs`.

    Cells whose expected count is below 5 are pooled (the chi-square approximation needs
    it). Returns `(statistic, p_value, degrees_of_freedom)`.
    """
    import jax.scipy.special as jss
    import numpy as np

    counts = np.asarray(counts, float)
    probs = np.asarray(probs, float) / np.sum(probs)
    expected = counts.sum() * probs
    order = np.argsort(expected)
    obs_cells, exp_cells, o, e = [], [], 0.0, 0.0
    for i in order:  # pool the smallest cells until each pooled cell expects >= 5
        o, e = o + counts[i], e + expected[i]
        if e >= 5:
            obs_cells.append(o)
            exp_cells.append(e)
            o, e = 0.0, 0.0
    if e > 0 and exp_cells:
        obs_cells[-1] += o
        exp_cells[-1] += e
    obs, exp = np.array(obs_cells), np.array(exp_cells)
    dof = len(obs) - 1
    if dof < 1:
        return 0.0, 1.0, 0
    stat = float(np.sum((obs - exp) ** 2 / exp))
    # survival function of chi2(dof): the regularised upper incomplete gamma Q(dof/2, stat/2)
    p = float(jss.gammaincc(dof / 2.0, stat / 2.0))
    return stat, p, dof


def standalone(main: Callable[..., list[dict]], argv: Sequence[str] | None = None) -> int:
    """Command line of one script: `python experiments/<name>.py --out DIR [--profile P] [--key K]`."""
    import argparse

    p = argparse.ArgumentParser(description=(main.__module__ or "experiment"))
    p.add_argument("--out", default="reproduce-out", help="output folder")
    p.add_argument("--profile", choices=PROFILE_NAMES, default="quick")
    p.add_argument("--key", type=int, default=0, help="random seed")
    args = p.parse_args(argv)
    _configure()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = main(out, profile=args.profile, key=args.key)
    for r in rows:
        print(
            f"[{'holds' if r['holds'] else 'FAILS'}] {r['id']}: predicted {r['predicted']}, "
            f"measured {r['measured']}"
        )
    return 0


def profile_sizes(profiles: dict, profile: str, sizes: dict) -> dict:
    """The sizes of `profile` from a script's `PROFILES`, overridden by keyword `sizes`."""
    if profile not in profiles:
        raise ValueError(f"`profile` must be one of {', '.join(profiles)}; got {profile!r}")
    unknown = set(sizes) - set(profiles[profile])
    if unknown:
        raise ValueError(f"unknown size arguments {sorted(unknown)}; known: {sorted(profiles[profile])}")
    return {**profiles[profile], **sizes}


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------


def _configure():
    # The claims are identities and statistical tests; measure them in double precision.
    import jax
    import matplotlib

    jax.config.update("jax_enable_x64", True)
    matplotlib.use("Agg")


def _cell(value) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (list, dict)):
        text = json.dumps(value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(out_dir, rows: list[dict], *, profile: str, wall_s: float) -> None:
    """Write `report.json` (the rows) and `report.md` (a table, then the figures)."""
    out_dir = pathlib.Path(out_dir)
    (out_dir / "report.json").write_text(json.dumps(_plain(rows), indent=2))
    n_hold = sum(bool(r["holds"]) for r in rows)
    lines = [
        "# jaxdiff: reproduction report",
        "",
        f"Profile `{profile}`; {n_hold} of {len(rows)} claims hold; total wall time {wall_s:.0f} s.",
        "Each row's `holds` comes from the criterion in its experiment's JSON (`details`).",
        "",
        "| experiment | claim | predicted | measured | holds | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    previous = None
    for r in rows:
        verdict = "yes" if r["holds"] else ("**ERROR**" if r.get("error") else "**no**")
        first = r["experiment"] != previous  # an experiment's time is shown once, on its first row
        previous = r["experiment"]
        seconds = f"{r['time_s']:.1f}" if first else ""
        lines.append(
            f"| {r['experiment'] if first else ''} | {_cell(r['claim'])} | {_cell(r['predicted'])} "
            f"| {_cell(r['measured'])} | {verdict} | {seconds} |"
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
            lines += [f"### {r['experiment']}: {fig}", "", f"![{r['id']}]({fig})", ""]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")


def _error_row(name: str, exc: BaseException, module=None) -> dict:
    doc = (getattr(module, "__doc__", None) or "").strip().splitlines()
    row = make_row(
        id=name,
        claim=doc[0] if doc else f"experiment {name}",
        predicted="",
        measured=f"error: {type(exc).__name__}: {exc}",
        holds=False,
    )
    row["error"] = "".join(traceback.format_exception(exc))
    return row


def run_experiments(
    names: Sequence[str], out_dir, *, profile: str = "quick", key: int = 0, progress: bool = True
) -> list[dict]:
    """Run the named experiments into `out_dir`; every row gains `experiment` and `time_s`
    (the experiment's wall time). An experiment that raises becomes one failed row."""
    from tqdm.auto import tqdm

    rows: list[dict] = []
    bar = tqdm(list(names), desc="experiments", unit="exp", disable=not progress)
    for name in bar:
        bar.set_description(f"experiment {name}")
        start = time.perf_counter()
        module = None
        try:
            module = load_experiment(name)
            got = module.main(out_dir, profile=profile, key=key)
            missing = [r for r in got if not all(k in r for k in _REQUIRED)]
            if not got or missing:
                raise ValueError(f"{name}.main returned {len(got)} rows, {len(missing)} without {_REQUIRED}")
        except Exception as exc:  # one broken experiment must not abort the report
            got = [_error_row(name, exc, module)]
        elapsed = time.perf_counter() - start
        for r in got:
            r.setdefault("figures", [])
            r.setdefault("details", {})
            r["experiment"], r["time_s"] = name, elapsed
        rows += got
        bar.write(f"{name}: {sum(bool(r['holds']) for r in got)}/{len(got)} hold ({elapsed:.1f} s)")
    return rows


def run(
    profile: str = "quick",
    out: str = "reproduce-out",
    only: str | Sequence[str] | None = None,
    *,
    key: int = 0,
    progress: bool = True,
) -> int:
    """Run the experiments (all, or the comma-separated `only`) at `profile` and write
    `out/report.md` and `out/report.json`. Returns 0, or 1 when an experiment raised (a claim
    that does not hold is a result, not an error)."""
    if profile not in PROFILE_NAMES:
        raise ValueError(f"`profile` must be one of {', '.join(PROFILE_NAMES)}; got {profile!r}")
    names = _parse_only(only)
    _configure()
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = run_experiments(names, out_dir, profile=profile, key=key, progress=progress)
    wall = time.perf_counter() - start
    write_report(out_dir, rows, profile=profile, wall_s=wall)
    n_hold = sum(bool(r["holds"]) for r in rows)
    print(
        f"{n_hold}/{len(rows)} claims hold; wrote {out_dir / 'report.md'} and {out_dir / 'report.json'} "
        f"in {wall:.0f} s"
    )
    return 1 if any(r.get("error") for r in rows) else 0
