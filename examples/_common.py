"""Shared by the example scripts: the command line (`--tiny`, `--out`) and figure saving."""

from __future__ import annotations

import argparse
import pathlib


def parse(doc: str, default_out: str, argv=None, extra=None) -> argparse.Namespace:
    """`--tiny` (a seconds-sized run, used by the tests) and `--out` (the figure path)."""
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny run of seconds (the tests use it)")
    ap.add_argument("--out", default=f"examples-out/{default_out}", help="the figure (PNG)")
    if extra is not None:
        extra(ap)
    return ap.parse_args(argv)


def figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save(fig, out: str) -> str:
    import matplotlib.pyplot as plt

    path = pathlib.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"wrote {path}")
    return str(path)
