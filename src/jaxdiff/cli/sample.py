"""`jaxdiff sample`: samples of a named toy law with its exact score, or of a network written by
`jaxdiff train`; a class of a labelled toy or of a class-conditional checkpoint with
classifier-free guidance. Writes the samples and a scatter plot."""

from __future__ import annotations

import math
import pathlib

from .common import check_out, process_by_name, sampler_by_name
from .train import load_score

SAMPLE_SUFFIXES = (".npy", ".csv")
_NO_CLASS = "`--guidance` needs `--class`: the class to guide toward"


def toy_law(name: str, *, key=None, n_points: int = 512):
    """The exact law behind a toy name: `jaxdiff.data.toy_law`, with the option's name in errors."""
    from ..data import toy_law as make

    try:
        return make(name, key=key, n_points=n_points)
    except ValueError as e:
        raise ValueError(str(e).replace("`name`", "`--law`")) from None


def _check_class(y, n_classes: int, what: str) -> None:
    if not 0 <= y < n_classes:
        raise ValueError(f"`--class` must be in 0..{n_classes - 1} ({what} {n_classes} classes), got {y}")


def guided_toy_score(law, process, y, guidance, sampler_name):
    """Classifier-free guidance of a mixture toy toward component `y` (each component of
    `ring8`/`grid25` is a class): `(guided score, exact conditional law)`."""
    import jax.numpy as jnp

    import jaxdiff as jd

    if y is None:
        raise ValueError(_NO_CLASS)
    if not isinstance(law, jd.GaussianMixture) or law.n_components < 2:
        raise ValueError("`--class` needs a toy with classes (one per mixture component): ring8 or grid25")
    if sampler_name == "exact":
        raise ValueError("guided sampling needs a score-based `--sampler` (the exact one ignores the score)")
    _check_class(y, law.n_components, "the toy has")
    labelled = jd.Labelled(law, jnp.arange(law.n_components))
    score = jd.guide(jd.LabelledExactScore(process, labelled), y, 1.0 if guidance is None else guidance)
    return score, labelled.condition(y)


def checkpoint_score(path, y, guidance):
    """`(score, meta, title)` of a checkpoint: for a class-conditional one, guided toward class
    `y` with scale `guidance` (default 1: the conditional score), or without `y` its
    unconditional branch (the null label)."""
    import jaxdiff as jd

    score, meta = load_score(path)
    name = pathlib.Path(path).name
    if not isinstance(score, jd.ConditionalNetworkScore):
        if y is not None or guidance is not None:
            raise ValueError(
                f"`--class`/`--guidance` need a class-conditional checkpoint; {name} is unconditional (no "
                "class labels, no unconditional branch to guide against): train one with "
                "`jaxdiff train DATA --labels LABELS`"
            )
        return score, meta, f"{name}: network score"
    if y is None:
        if guidance is not None:
            raise ValueError(_NO_CLASS)
        return score.unconditional(), meta, f"{name}: unconditional (null label)"
    _check_class(y, score.n_classes, "the checkpoint has")
    w = 1.0 if guidance is None else guidance
    return jd.guide(score, y, w), meta, f"{name}: class {y}, guidance {w:g}"


def sample_command(args) -> int:
    """`jaxdiff sample`."""
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
    if args.guidance is not None and not math.isfinite(args.guidance):
        raise ValueError(f"`--guidance` must be a finite number, got {args.guidance}")
    out = check_out(args.out, "--out", SAMPLE_SUFFIXES)
    plot = check_out(args.plot if args.plot else out.with_suffix(".png"), "--plot")
    key = jax.random.PRNGKey(args.seed)
    shift, scale, reference = 0.0, 1.0, None
    if args.law is not None:
        law = toy_law(args.law, key=jax.random.fold_in(key, 1))
        process = process_by_name(args.process)
        score = jd.ExactScore(process, law)
        sampler = sampler_by_name(args.sampler, law)
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
        score, meta, title = checkpoint_score(args.checkpoint, args.class_, args.guidance)
        process = score.process
        sampler = sampler_by_name(args.sampler)
        shift, scale = np.asarray(meta["shift"]), float(meta["scale"])
        ref_label, title = None, f"{title}, {args.sampler}"
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
    from ..conditional import ClassifierFreeGuidance

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
