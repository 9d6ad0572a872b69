"""The `jaxdiff` command: `reproduce`, `sample`, `train`, `bench`.

This package parses arguments and dispatches; the verbs import what they need when they run.
`sample.py` and `train.py` hold those two verbs (and `load_score`), `common.py` what they
share; the report's work lives in `jaxdiff.reproduce`.

* `jaxdiff reproduce [--profile tiny|quick|full] [--out DIR] [--only NAMES]`: run the seed
  papers' experiments, write `DIR/report.md` and `DIR/report.json`.
* `jaxdiff sample (--law NAME | --checkpoint FILE) [--n N] [--out FILE.npy|.csv] [--plot FILE.png]
  [--class Y [--guidance W]]`: draw samples from a named toy law with its exact score
  (point-cloud toys memorise their points, as the theory says) or from a network trained by
  `jaxdiff train`; with `--class`, a class of a mixture toy or of a class-conditional
  checkpoint, with classifier-free guidance.
* `jaxdiff train DATA(.npy|.csv) [--labels FILE | --label-column K] [--out FILE] [--steps K]`: fit
  a score network to data (standardised: the checkpoint stores the affine map and `sample`
  undoes it); with labels, one class-conditional network trained with label dropout.

Strategy objects are chosen here by name (the command line has only strings); the library
itself takes the objects.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from ..data import TOY_LAWS
from .common import PROCESSES as PROCESSES, SAMPLERS as SAMPLERS
from .sample import (
    SAMPLE_SUFFIXES as SAMPLE_SUFFIXES,
    checkpoint_score as checkpoint_score,
    guided_toy_score as guided_toy_score,
    sample_command,
    toy_law as toy_law,
)
from .train import (
    CHECKPOINT_FORMAT as CHECKPOINT_FORMAT,
    load_data as load_data,
    load_labels as load_labels,
    load_score as load_score,
    split_label_column as split_label_column,
    train_command,
)


def _reproduce(args) -> int:
    from ..reproduce import run

    return run(profile=args.profile, out=args.out, only=args.only)


# ---------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxdiff", description="Differentiable simulator of score-based diffusion models."
    )
    from .. import __version__

    p.add_argument("--version", action="version", version=f"jaxdiff {__version__}")
    sub = p.add_subparsers(dest="verb", required=True)

    r = sub.add_parser("reproduce", help="run the seed papers' experiments and write report.md / report.json")
    r.add_argument(
        "--profile",
        choices=["tiny", "quick", "full"],
        default="quick",
        help="quick (default): minutes on a laptop CPU; full: a GPU; tiny: seconds, a smoke test",
    )
    r.add_argument("--out", default="reproduce-out", help="output folder (default: ./reproduce-out)")
    r.add_argument("--only", default=None, help="comma-separated experiment names to run (default: all)")
    r.set_defaults(func=_reproduce)

    s = sub.add_parser("sample", help="draw samples from a toy law (exact score) or a trained checkpoint")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--law", choices=TOY_LAWS, help="a named toy law (point-cloud toys: the exact empirical score)"
    )
    src.add_argument(
        "--checkpoint", help="a network checkpoint written by `jaxdiff train` (conditional: see --class)"
    )
    s.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    s.add_argument(
        "--out", default="samples.npy",
        help="samples file of shape (n, d): .npy, or .csv for comma-separated text (default samples.npy)",
    )
    s.add_argument("--plot", default=None, help="scatter plot PNG (default: the samples file with .png)")
    s.add_argument("--sampler", choices=SAMPLERS, default="reverse-sde", help="reverse-time sampler")
    s.add_argument("--steps", type=int, default=200, help="grid steps (log-SNR grid, default 200)")
    s.add_argument(
        "--t-end", type=float, default=None, help="stopping time t_end > 0 (default 1e-3 T of the process)"
    )
    s.add_argument(
        "--process", choices=PROCESSES, default="ou", help="forward process for --law (default ou)"
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--class", dest="class_", type=int, default=None,
                   help="sample class y with classifier-free guidance (ring8/grid25: a mixture component; "
                        "a class-conditional checkpoint: a label it was trained with)")
    s.add_argument("--guidance", type=float, default=None,
                   help="guidance scale: 0 unconditional, 1 conditional (default), > 1 amplified")
    s.set_defaults(func=sample_command)

    t = sub.add_parser("train", help="train a score network on a data file and write a checkpoint")
    t.add_argument("data", help="training data: .npy (N, d) array or .csv table of numbers")
    lab = t.add_mutually_exclusive_group()
    lab.add_argument(
        "--labels", default=None,
        help="class labels, one integer per data row (.npy, or .csv/.txt, one per line): "
        "trains a class-conditional model",
    )
    lab.add_argument(
        "--label-column", type=int, default=None,
        help="the column of the data table that holds the class labels (from 0; negative: from the end)",
    )
    t.add_argument(
        "--label-dropout", type=float, default=None,
        help="with labels: the share of examples trained with the null label, the unconditional "
        "branch (default 0.1)",
    )
    t.add_argument("--out", default="model.jdckpt", help="checkpoint file (default model.jdckpt)")
    t.add_argument("--steps", type=int, default=5000, help="optimisation steps (default 5000)")
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--width", type=int, default=128, help="MLP hidden width (default 128)")
    t.add_argument("--depth", type=int, default=3, help="residual blocks (default 3)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--process", choices=PROCESSES, default="ou", help="forward process (default ou)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=train_command)

    b = sub.add_parser(
        "bench", help="run the benchmark suite (repository root) and write bench-out/benchmarks.json"
    )
    mode = b.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, minutes on a CPU (default)")
    mode.add_argument("--full", action="store_true", help="the whole size sweep (long)")
    b.add_argument(
        "--out", default="bench-out/benchmarks.json", help="JSON path, or a folder for benchmarks.json"
    )
    b.add_argument(
        "--only", default=None, help="comma-separated benchmark names (score, compile, scale, ...)"
    )
    b.set_defaults(func=_bench)
    return p


def _bench(args) -> int:
    """`jaxdiff bench`: the `benchmarks/` suite of a source checkout (`python -m benchmarks`)."""
    for root in (pathlib.Path.cwd(), pathlib.Path(__file__).resolve().parents[3]):
        if (root / "benchmarks" / "__main__.py").is_file():
            sys.path.insert(0, str(root))
            break
    else:
        raise ValueError(
            "the benchmarks live in the source checkout: run `jaxdiff bench` from the repository root"
        )
    from benchmarks.__main__ import main as bench_main

    only = ["--only", args.only] if args.only else []
    return bench_main(["--full" if args.full else "--quick", "--out", args.out, *only])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as e:  # bad input: one line, the argument named, no traceback
        parser.exit(2, f"jaxdiff {args.verb}: error: {e}\n")

