"""`jaxdiff train`: fit a score network to a data file and write a checkpoint; `load_score`
reads it back.

With class labels (`--labels FILE`, or `--label-column K` of the data table) the network is
class-conditional: one MLP with a label embedding, trained with label dropout so that it has
a conditional and an unconditional branch (Ho & Salimans, "Classifier-Free Diffusion
Guidance", 2022, arXiv:2207.12598); `jaxdiff sample --class` guides with it.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from ..data import load_table as load_data
from .common import check_out, process_by_name

CHECKPOINT_FORMAT = "jaxdiff-cli-score-v1"
LABEL_SUFFIXES = (".npy", ".csv", ".txt")


def _check_labels(labels: np.ndarray, n_rows: int, where) -> np.ndarray:
    """Integer-valued, non-negative, one per data row, at least two classes; `where(i)` names
    entry `i` in the messages. Returns int64 labels."""
    if labels.shape != (n_rows,):
        raise ValueError(
            f"`--labels` holds {labels.shape[0]} labels, the data {n_rows} rows: give one label per row"
        )
    bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
    if bad.size:
        raise ValueError(
            f"`--labels` must be integer class indices: {where(bad[0])} holds {labels[bad[0]]:g}"
        )
    neg = np.flatnonzero(labels < 0)
    if neg.size:
        raise ValueError(
            f"`--labels` must be class indices 0, 1, 2, ...: {where(neg[0])} holds {int(labels[neg[0]])}"
        )
    labels = labels.astype(np.int64)
    classes = np.unique(labels)
    if classes.size < 2:
        raise ValueError(
            f"`--labels` holds only class {classes[0]}: a class-conditional model needs at least 2 classes "
            "(train without `--labels` for an unconditional one)"
        )
    # a class without examples would get an untrained branch that `sample --class` draws from
    empty = np.setdiff1d(np.arange(classes[-1] + 1), classes)
    if empty.size:
        shown = ", ".join(str(c) for c in empty[:5]) + (", ..." if empty.size > 5 else "")
        raise ValueError(
            f"`--labels` has no example of class {shown} below its largest class {classes[-1]}: "
            "number the classes 0, 1, ..., K-1 without gaps"
        )
    return labels


def load_labels(path, n_rows: int) -> np.ndarray:
    """Class labels for `n_rows` data rows from a `.npy` array, or a `.csv`/`.txt` file of one
    integer per row (a first row without a number is a header)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"`--labels` file {path} does not exist")
    if path.suffix not in LABEL_SUFFIXES:
        raise ValueError(f"`--labels` must be a .npy, .csv or .txt file, got {path.name}")
    if path.suffix == ".npy":
        raw = np.load(path, allow_pickle=False)
        if raw.ndim == 2 and raw.shape[1] == 1:
            raw = raw[:, 0]
        if raw.ndim != 1 or not (np.issubdtype(raw.dtype, np.number) or raw.dtype == bool):
            raise ValueError(f"`--labels` must hold a 1-D array of integers, got {raw.dtype} {raw.shape}")
        return _check_labels(raw.astype(np.float64), n_rows, lambda i: f"entry {i}")
    values, lines = [], []
    for no, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip().strip(",").strip()
        if not text:
            continue
        try:
            values.append(float(text))
        except ValueError:
            if not values and no == 1 and not any(c.isdigit() for c in text):
                continue  # a header
            raise ValueError(
                f"`--labels` {path.name}, line {no}: {text!r} is not an integer (one label per row)"
            ) from None
        lines.append(no)
    return _check_labels(np.asarray(values), n_rows, lambda i: f"line {lines[i]}")


def split_label_column(data: np.ndarray, column: int) -> tuple[np.ndarray, np.ndarray]:
    """`(data without the column, the column as labels)`; `column` counts from 0, a negative one
    from the end."""
    d = data.shape[1]
    if d < 2:
        raise ValueError(
            "`--label-column` needs a data table with at least 2 columns: the labels and the data"
        )
    if not -d <= column < d:
        raise ValueError(f"`--label-column` must be in 0..{d - 1} (or -{d}..-1 from the end), got {column}")
    labels = _check_labels(data[:, column], data.shape[0], lambda i: f"data row {i + 1}")
    return np.delete(data, column, axis=1), labels


def _labels_of(args, data):
    """`(data, labels or None, label dropout)` from the label options."""
    labels = None
    if args.label_column is not None:
        data, labels = split_label_column(data, args.label_column)
    elif args.labels is not None:
        labels = load_labels(args.labels, data.shape[0])
    if labels is None and args.label_dropout is not None:
        raise ValueError("`--label-dropout` needs class labels: `--labels FILE` or `--label-column K`")
    dropout = 0.1 if args.label_dropout is None else args.label_dropout
    if not 0 < dropout < 1:
        raise ValueError(
            "`--label-dropout` must lie in (0, 1): the share of examples that train the unconditional "
            f"branch guidance needs, got {dropout}"
        )
    return data, labels, dropout


def train_command(args) -> int:
    """`jaxdiff train`."""
    import jax
    import jax.numpy as jnp
    import optax

    import jaxdiff as jd

    data, labels, dropout = _labels_of(args, load_data(args.data))
    out = check_out(args.out, "--out")  # before training, not after
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
    process = process_by_name(args.process)
    dim = data.shape[1]
    n_classes = None if labels is None else int(labels.max()) + 1
    model = jd.nn.MLP(
        dim, key=jax.random.fold_in(key, 1), width=args.width, depth=args.depth, n_classes=n_classes
    )
    if labels is None:
        score, extra = jd.NetworkScore(model, process), {}
    else:
        score = jd.ConditionalNetworkScore(model, process, jd.EDMParam())
        extra = {"labels": labels, "label_dropout": dropout}
    trained = jd.train(
        score,
        x,
        process,
        key=jax.random.fold_in(key, 2),
        steps=args.steps,
        batch_size=args.batch_size,
        optimizer=optax.adam(args.lr),
        **extra,
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
        "conditional": labels is not None,
        "n_classes": n_classes,
    }
    if labels is not None:
        meta["label_dropout"] = dropout
        meta["class_counts"] = np.bincount(labels, minlength=n_classes).tolist()
    out = jd.save_checkpoint(out, trained, meta=meta)
    hint = f"jaxdiff sample --checkpoint {out}" + ("" if labels is None else " --class 0 --guidance 2.0")
    kind = "" if labels is None else f", {n_classes} classes"
    print(
        f"wrote {out} (trained {args.steps} steps on {data.shape[0]} points of dimension {dim}{kind}); "
        f"sample it with: {hint}"
    )
    print(json.dumps({k: v for k, v in meta.items() if k not in ("shift",)}))
    return 0


def load_score(path):
    """Read a checkpoint written by `jaxdiff train`: `(score, meta)`; the meta holds the
    architecture, the process, the data standardisation (`shift`, `scale`) and, for a
    class-conditional checkpoint, `n_classes` (the score is then a `ConditionalNetworkScore`)."""
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
    n_classes = meta.get("n_classes")  # absent in unconditional checkpoints of earlier versions
    if n_classes is not None and not (isinstance(n_classes, int) and n_classes >= 2):
        raise ValueError(f"`--checkpoint` {path} records an invalid number of classes {n_classes!r}")
    model = jd.nn.MLP(
        meta["dim"], key=jax.random.PRNGKey(0), width=meta["width"], depth=meta["depth"], n_classes=n_classes
    )
    params = {"eps": lambda: jd.EpsParam(), "edm": lambda: jd.EDMParam(sigma_data=float(meta["sigma_data"]))}
    if meta.get("parametrisation") not in params:
        kind = meta.get("parametrisation")
        raise ValueError(f"`--checkpoint` {path} has an unknown parametrisation {kind!r}")
    process, param = process_by_name(meta["process"]), params[meta["parametrisation"]]()
    if n_classes is None:
        skeleton = jd.NetworkScore(model, process, param)
    else:
        skeleton = jd.ConditionalNetworkScore(model, process, param)
    return jd.load_checkpoint(path, skeleton), meta
