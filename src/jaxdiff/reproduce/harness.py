"""Finding, loading and running the experiment scripts.

Where the scripts live: a wheel carries them as `jaxdiff/_experiments` (pyproject's
force-include); an editable install or a source checkout has them at the repository root,
`<repo>/experiments`. Either way they are imported under the one name
`jaxdiff._experiments`, so `run` finds the same modules in both layouts.
"""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import sys
import time
import traceback
from collections.abc import Callable, Sequence

from . import registry
from .rows import make_row
from .settings import report_settings
from .writer import run_metadata, write_report

PROFILE_NAMES = ("tiny", "quick", "full")
_PACKAGE = "jaxdiff._experiments"
_REQUIRED = ("id", "claim", "predicted", "measured", "holds")


def experiments_dir() -> pathlib.Path:
    """The folder holding the experiment scripts: next to the package (a wheel install),
    else at the repository root (an editable install or a checkout)."""
    package = pathlib.Path(__file__).resolve().parent.parent
    for candidate in (package / "_experiments", package.parent.parent / "experiments"):
        if (candidate / "__init__.py").is_file():
            return candidate
    raise FileNotFoundError(
        "cannot find the experiment scripts: looked for "
        f"{package / '_experiments'} (a wheel install) and {package.parent.parent / 'experiments'} "
        "(a checkout)"
    )


def _experiments_package():
    # The scripts are a plain folder in a checkout; register it once under the package's
    # name so `importlib` finds `jaxdiff._experiments.<name>` in both layouts.
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
    if name not in registry.EXPERIMENTS:
        raise ValueError(f"`name` must be one of {', '.join(registry.EXPERIMENTS)}; got {name!r}")
    _experiments_package()
    return importlib.import_module(f"{_PACKAGE}.{name}")


def _parse_only(only: str | Sequence[str] | None) -> list[str]:
    names_all = registry.EXPERIMENTS
    if only is None:
        return list(names_all)
    names = [n.strip() for n in only.split(",")] if isinstance(only, str) else [str(n).strip() for n in only]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in names_all]
    if unknown or not names:
        raise ValueError(
            f"`only` must name experiments among {', '.join(names_all)}; "
            f"got {', '.join(unknown) or 'nothing'}"
        )
    return [n for n in names_all if n in names]


def profile_sizes(profiles: dict, profile: str, sizes: dict) -> dict:
    """The sizes of `profile` from a script's `PROFILES`, overridden by keyword `sizes`."""
    if profile not in profiles:
        raise ValueError(f"`profile` must be one of {', '.join(profiles)}; got {profile!r}")
    unknown = set(sizes) - set(profiles[profile])
    if unknown:
        raise ValueError(f"unknown size arguments {sorted(unknown)}; known: {sorted(profiles[profile])}")
    return {**profiles[profile], **sizes}


def _error_row(name: str, exc: BaseException, module=None) -> dict:
    doc = (getattr(module, "__doc__", None) or "").strip().splitlines()
    row = make_row(
        id=name,
        claim=doc[0] if doc else f"experiment {name}",
        predicted="",
        measured=f"error: {type(exc).__name__}: {exc}",
        holds=False,
        details={"criterion": "the experiment must run"},
    )
    row["error"] = "".join(traceback.format_exception(exc))
    return row


def run_experiments(
    names: Sequence[str],
    out_dir,
    *,
    profile: str = "quick",
    key: int = 0,
    progress: bool = True,
    loader: Callable[[str], object] | None = None,
) -> list[dict]:
    """Run the named experiments into `out_dir`; every row gains `experiment` and `time_s`
    (the experiment's wall time). An experiment that raises becomes one failed row.
    `loader` (default `load_experiment`) maps a name to a module with `main`."""
    from tqdm.auto import tqdm

    loader = load_experiment if loader is None else loader
    rows: list[dict] = []
    bar = tqdm(list(names), desc="experiments", unit="exp", disable=not progress)
    for name in bar:
        bar.set_description(f"experiment {name}")
        start = time.perf_counter()
        module = None
        try:
            module = loader(name)
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
            r.setdefault("criterion", None)
            r["experiment"], r["time_s"] = name, elapsed
        rows += got
        if progress:
            bar.write(f"{name}: {sum(bool(r['holds']) for r in got)}/{len(got)} hold ({elapsed:.1f} s)")
    return rows


def run(
    profile: str = "quick",
    out: str = "reproduce-out",
    only: str | Sequence[str] | None = None,
    *,
    key: int = 0,
    progress: bool = True,
    loader: Callable[[str], object] | None = None,
) -> int:
    """Run the experiments (all, or the comma-separated `only`) at `profile` and write
    `out/report.md` and `out/report.json`. Returns 0, or 1 when an experiment raised (a claim
    that does not hold is a result, not an error). Double precision and the Agg backend
    are switched on for the run only (`report_settings`)."""
    if profile not in PROFILE_NAMES:
        raise ValueError(f"`profile` must be one of {', '.join(PROFILE_NAMES)}; got {profile!r}")
    names = _parse_only(only)
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with report_settings():
        start = time.perf_counter()
        rows = run_experiments(names, out_dir, profile=profile, key=key, progress=progress, loader=loader)
        wall = time.perf_counter() - start
        meta = run_metadata(profile=profile, key=key, wall_s=wall, experiments=names)
        write_report(out_dir, rows, meta=meta)
    n_hold = sum(bool(r["holds"]) for r in rows)
    print(
        f"{n_hold}/{len(rows)} claims hold; wrote {out_dir / 'report.md'} and {out_dir / 'report.json'} "
        f"in {wall:.0f} s"
    )
    return 1 if any(r.get("error") for r in rows) else 0


def standalone(main: Callable[..., list[dict]], argv: Sequence[str] | None = None) -> int:
    """Command line of one script: `python experiments/<name>.py --out DIR [--profile P] [--key K]`."""
    import argparse

    p = argparse.ArgumentParser(description=(main.__module__ or "experiment"))
    p.add_argument("--out", default="reproduce-out", help="output folder")
    p.add_argument("--profile", choices=PROFILE_NAMES, default="quick")
    p.add_argument("--key", type=int, default=0, help="random seed")
    args = p.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with report_settings():
        rows = main(out, profile=args.profile, key=args.key)
    for r in rows:
        verdict = "holds" if r["holds"] else "FAILS"
        print(f"[{verdict}] {r['id']}: predicted {r['predicted']}, measured {r['measured']}")
    return 0
