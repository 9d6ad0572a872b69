"""The `jaxdiff` command: `reproduce`, `sample`, `train`, `bench`.

Each verb's work lives in its own module; this file only parses arguments and dispatches,
so `jaxdiff --help` stays fast (JAX is imported by the verb, not here).
"""

from __future__ import annotations

import argparse
import sys


def _reproduce(args) -> int:
    from .reproduce import run

    return run(profile=args.profile, out=args.out, only=args.only)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxdiff", description="Differentiable simulator of score-based diffusion models.")
    sub = p.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("reproduce", help="run the seed papers' experiments and write report.md / report.json")
    r.add_argument("--profile", choices=["quick", "full"], default="quick", help="quick: minutes on a CPU; full: a GPU")
    r.add_argument("--out", default="reproduce-out", help="output folder (default: ./reproduce-out)")
    r.add_argument("--only", default=None, help="comma-separated experiment names to run")
    r.set_defaults(func=_reproduce)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
