"""The `jaxdiff` command: `reproduce`, `sample`, `train`, `bench`.

This file parses arguments and dispatches; the verbs import what they need when they run.
The report's work lives in `jaxdiff.reproduce`.

* `jaxdiff reproduce [--profile tiny|quick|full] [--out DIR] [--only NAMES]`: run the seed
  papers' experiments, write `DIR/report.md` and `DIR/report.json`.
* `jaxdiff sample (--law NAME | --checkpoint FILE) [--n N] [--out FILE.npy|.csv] [--plot FILE.png]`:
  draw samples from a named toy law with its exact score (point-cloud toys memorise their
  points, as the theory says) or from a network trained by `jaxdiff train`.
* `jaxdiff train DATA(.npy|.csv) [--out FILE] [--steps K]`: fit a score network to data
  (standardised: the checkpoint stores the affine map and `sample` undoes it).

Strategy objects are chosen here by name (the command line has only strings); the library
itself takes the objects.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from .data import TOY_LAWS, load_table as load_data

CHECKPOINT_FORMAT = "jaxdiff-cli-score-v1"
SAMPLE_SUFFIXES = (".npy", ".csv")
SAMPLERS = ("reverse-sde", "probability-flow", "ddpm", "ddim", "exact")
SAMPLERS += ("unipc", "ipndm", "lms", "deis", "dpm-solver-3m", "adaptive-sde")  # few-step samplers
PROCESSES = ("ou", "vp")


def _reproduce(args) -> int:
    from .reproduce import run

    return run(profile=args.profile, out=args.out, only=args.only)


# ---------------------------------------------------------------------------------------
# sample
# ---------------------------------------------------------------------------------------


def toy_law(name: str, *, key=None, n_points: int = 512):
    """The exact law behind a toy name: `jaxdiff.data.toy_law`, with the option's name in errors."""
    from .data import toy_law as make

    try:
        return make(name, key=key, n_points=n_points)
    except ValueError as e:
        raise ValueError(str(e).replace("`name`", "`--law`")) from None


def guided_toy_score(law, process, y, guidance, sampler_name):
    """Classifier-free guidance of a mixture toy toward component `y` (each component of
    `ring8`/`grid25` is a class): `(guided score, exact conditional law)`."""
    import jaxdiff as jd

    if y is None:
        raise ValueError("`--guidance` needs `--class`: the class to guide toward")
    if not isinstance(law, jd.GaussianMixture) or law.n_components < 2:
        raise ValueError("`--class` needs a toy with classes (one per mixture component): ring8 or grid25")
    if sampler_name == "exact":
        raise ValueError("guided sampling needs a score-based `--sampler` (the exact one ignores the score)")
    import jax.numpy as jnp

    labelled = jd.Labelled(law, jnp.arange(law.n_components))
    score = jd.guide(jd.LabelledExactScore(process, labelled), y, 1.0 if guidance is None else guidance)
    return score, labelled.condition(y)


def _sampler(name: str, law=None):
    import jaxdiff as jd

    if name == "exact":
        if law is None:
            raise ValueError("`--sampler exact` needs an exact law (`--law`), not a checkpoint")
        return jd.ExactSampler(law)
    table = {
        "reverse-sde": jd.ReverseSDE,
        "probability-flow": jd.ProbabilityFlow,
        "ddpm": jd.DDPM,
        "ddim": jd.DDIM,
        "unipc": jd.UniPC,
        "ipndm": jd.IPNDM,
        "lms": jd.LMS,
        "deis": jd.DEIS,
        "dpm-solver-3m": lambda: jd.DPMSolverPP(3),
        "adaptive-sde": jd.AdaptiveSDE,
    }
    if name not in table:
        raise ValueError(f"`--sampler` must be one of {', '.join(SAMPLERS)}; got {name!r}")
    return table[name]()


def _process(name: str):
    import jaxdiff as jd

    if name == "ou":
        return jd.OU()
    if name == "vp":
        return jd.VP()
    raise ValueError(f"`--process` must be one of {', '.join(PROCESSES)}; got {name!r}")


def load_score(path):
    """Read a checkpoint written by `jaxdiff train`: `(score, meta)`; the meta holds the
    architecture, the process and the data standardisation (`shift`, `scale`)."""
    import jax

    import jaxdiff as jd

    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"`--checkpoint` {path} does not exist")
    meta = jd.training.read_checkpoint_meta(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"`--checkpoint` {path} was not written by `jaxdiff train` (format {meta.get('format')!r})"
        )
    model = jd.nn.MLP(meta["dim"], key=jax.random.PRNGKey(0), width=meta["width"], depth=meta["depth"])
    params = {"eps": lambda: jd.EpsParam(), "edm": lambda: jd.EDMParam(sigma_data=float(meta["sigma_data"]))}
    if meta.get("parametrisation") not in params:
        kind = meta.get("parametrisation")
        raise ValueError(f"`--checkpoint` {path} has an unknown parametrisation {kind!r}")
    skeleton = jd.NetworkScore(model, _process(meta["process"]), params[meta["parametrisation"]]())
    return jd.load_checkpoint(path, skeleton), meta


def _check_out(path, what: str, suffixes=None) -> pathlib.Path:
    """Refuse, before any work, an output path that cannot be written as a file."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise ValueError(f"`{what}` {path} is a directory: give a file name inside it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"`{what}` {path} lies inside {parent}, which is a file, not a folder")
            break
    if suffixes is not None and path.suffix not in suffixes:
        ends = " or ".join(suffixes)
        raise ValueError(f"`{what}` must end in {ends} (the format written), got {path.name}")
    return path


def _sample(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxdiff as jd

    if (args.law is None) == (args.checkpoint is None):
        raise ValueError("give exactly one of `--law NAME` and `--checkpoint FILE`")
    if args.n < 1 or args.steps < 1 or (args.t_end is not None and not args.t_end > 0):
        raise ValueError(
            f"`--n` and `--steps` must be positive and `--t-end` > 0, got {args.n}, {args.steps}, "
            f"{args.t_end}"
        )
    out = _check_out(args.out, "--out", SAMPLE_SUFFIXES)
    plot = _check_out(args.plot if args.plot else out.with_suffix(".png"), "--plot")
    key = jax.random.PRNGKey(args.seed)
    shift, scale, reference = 0.0, 1.0, None
    if args.law is not None:
        law = toy_law(args.law, key=jax.random.fold_in(key, 1))
        process = _process(args.process)
        score = jd.ExactScore(process, law)
        sampler = _sampler(args.sampler, law)
        if args.class_ is not None or args.guidance is not None:
            score, law = guided_toy_score(law, process, args.class_, args.guidance, args.sampler)
        reference = (
            np.asarray(law.points)
            if isinstance(law, jd.PointCloud)
            else np.asarray(law.sample(jax.random.fold_in(key, 2), min(args.n, 2000)))
        )
        ref_label = (
            "training points (exact score memorises them)"
            if isinstance(law, jd.PointCloud)
            else "draws of the exact law"
        )
        title = f"{args.law}: exact score, {args.sampler}"
        if args.class_ is not None:
            title += f", class {args.class_}, guidance {1.0 if args.guidance is None else args.guidance}"
    else:
        if args.class_ is not None or args.guidance is not None:
            raise ValueError(
                "`--class`/`--guidance` need a class-conditional checkpoint; `jaxdiff train` writes "
                "unconditional ones (no class labels, no unconditional branch to guide against)"
            )
        score, meta = load_score(args.checkpoint)
        process = score.process
        sampler = _sampler(args.sampler)
        shift, scale = np.asarray(meta["shift"]), float(meta["scale"])
        ref_label, title = None, f"{pathlib.Path(args.checkpoint).name}: network score, {args.sampler}"
    # the project-wide default stopping time: 1e-3 T
    t_end = jnp.asarray(1e-3 * process.T if args.t_end is None else args.t_end)
    x = jd.sample(
        jax.random.fold_in(key, 3),
        score,
        process,
        (args.n, _score_dim(score)),
        sampler=sampler,
        steps=args.steps,
        t_end=t_end,
        grid=jd.LogSNRGrid(),
    )
    x = np.asarray(x) * scale + shift
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        np.savetxt(out, x, delimiter=",")
    else:
        np.save(out, x)
    plot.parent.mkdir(parents=True, exist_ok=True)
    _scatter(x, plot, title, reference, ref_label)
    print(f"wrote {out} ({x.shape[0]} samples of dimension {x.shape[1]}) and {plot}")
    return 0


def _score_dim(score) -> int:
    from .conditional import ClassifierFreeGuidance

    if isinstance(score, ClassifierFreeGuidance):
        return _score_dim(score.conditional)
    law = getattr(score, "law", None)
    if law is not None:
        return law.dim
    return score.model.dim


def _scatter(x, path, title, reference=None, ref_label=None):
    """A scatter plot of the first two coordinates (a histogram for one coordinate); for
    d > 2 the title says which coordinates are shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = x.shape[1]
    fig, ax = plt.subplots(figsize=(5, 5))
    if d == 1:
        if reference is not None:
            ax.hist(reference[:, 0], bins=60, density=True, histtype="step", color="k", label=ref_label)
        ax.hist(x[:, 0], bins=60, density=True, alpha=0.5, label="samples")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("density")
    else:
        if reference is not None:
            ax.scatter(reference[:, 0], reference[:, 1], s=8, c="k", marker="x", alpha=0.5, label=ref_label)
        ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.5, label="samples")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.set_aspect("equal", adjustable="datalim")
        if d > 2:
            title = f"{title}\ncoordinates 1 and 2 of {d}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------


def _train(args) -> int:
    import jax
    import jax.numpy as jnp
    import optax

    import jaxdiff as jd

    data = load_data(args.data)
    out = _check_out(args.out, "--out")  # before training, not after
    for name in ("steps", "batch_size", "width"):
        if getattr(args, name) < 1:
            raise ValueError(
                f"`--{name.replace('_', '-')}` must be a positive integer, got {getattr(args, name)}"
            )
    if args.depth < 0 or not args.lr > 0:
        raise ValueError(f"`--depth` must be >= 0 and `--lr` > 0, got {args.depth}, {args.lr}")
    # Standardise: the forward process's prior has unit scale; `sample` undoes the map.
    shift = data.mean(0)
    scale = float((data - shift).std()) or 1.0
    x = jnp.asarray((data - shift) / scale)
    key = jax.random.PRNGKey(args.seed)
    process = _process(args.process)
    dim = data.shape[1]
    score = jd.NetworkScore(
        jd.nn.MLP(dim, key=jax.random.fold_in(key, 1), width=args.width, depth=args.depth), process
    )
    trained = jd.train(
        score,
        x,
        process,
        key=jax.random.fold_in(key, 2),
        steps=args.steps,
        batch_size=args.batch_size,
        optimizer=optax.adam(args.lr),
    )
    meta = {
        "format": CHECKPOINT_FORMAT,
        "dim": dim,
        "width": args.width,
        "depth": args.depth,
        "process": args.process,
        "parametrisation": "edm",
        "sigma_data": float(trained.parametrisation.sigma_data),
        "shift": shift.tolist(),
        "scale": scale,
        "steps": args.steps,
        "n_data": int(data.shape[0]),
        "data": str(args.data),
    }
    out = jd.save_checkpoint(out, trained, meta=meta)
    print(
        f"wrote {out} (trained {args.steps} steps on {data.shape[0]} points of dimension {dim}); "
        f"sample it with: jaxdiff sample --checkpoint {out}"
    )
    print(json.dumps({k: v for k, v in meta.items() if k not in ("shift",)}))
    return 0


# ---------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxdiff", description="Differentiable simulator of score-based diffusion models."
    )
    from . import __version__

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
    src.add_argument("--checkpoint", help="a network checkpoint written by `jaxdiff train`")
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
                   help="sample class y (ring8/grid25: a mixture component) with classifier-free guidance")
    s.add_argument("--guidance", type=float, default=None,
                   help="guidance scale: 0 unconditional, 1 conditional (default), > 1 amplified")
    s.set_defaults(func=_sample)

    t = sub.add_parser("train", help="train a score network on a data file and write a checkpoint")
    t.add_argument("data", help="training data: .npy (N, d) array or .csv table of numbers")
    t.add_argument("--out", default="model.jdckpt", help="checkpoint file (default model.jdckpt)")
    t.add_argument("--steps", type=int, default=5000, help="optimisation steps (default 5000)")
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--width", type=int, default=128, help="MLP hidden width (default 128)")
    t.add_argument("--depth", type=int, default=3, help="residual blocks (default 3)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--process", choices=PROCESSES, default="ou", help="forward process (default ou)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_train)

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
    for root in (pathlib.Path.cwd(), pathlib.Path(__file__).resolve().parents[2]):
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


if __name__ == "__main__":
    sys.exit(main())
