"""Train a score on your own 2-D data from a CSV file and sample it.

Give a CSV of numbers with one point per row (`--csv my_points.csv`; a header line is skipped);
without one the script writes a two-moons CSV next to the figure and uses that. The data are
standardised, an MLP score is trained by denoising score matching, and the reverse SDE draws
new points, shown next to the data.

    python examples/train_csv.py [--csv FILE] [--steps 3000] [--tiny] [--out examples-out/train_csv.png]
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from _common import figure, parse, save

import jaxdiff as jd


def _args(ap):
    ap.add_argument("--csv", default=None, help="a CSV of 2-D points (default: write a two-moons CSV)")
    ap.add_argument("--steps", type=int, default=3000, help="training steps")


def main(argv=None) -> str:
    args = parse(__doc__, "train_csv.png", argv, _args)
    steps, width, n_samples = (30, 16, 64) if args.tiny else (args.steps, 128, 2000)
    csv = args.csv
    if csv is None:  # a demo file, so the script runs as it is
        csv = pathlib.Path(args.out).with_name("two_moons.csv")
        csv.parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(
            csv,
            np.asarray(jd.data.two_moons(jax.random.PRNGKey(0), 1000)),
            delimiter=",",
            header="x,y",
            comments="",
        )
    raw = np.genfromtxt(csv, delimiter=",", skip_header=1 if _has_header(csv) else 0)
    mean, std = raw.mean(0), raw.std(0)
    data = jnp.asarray((raw - mean) / std)  # standardised: the process's prior has unit scale

    process = jd.OU()
    net = jd.nn.MLP(data.shape[1], key=jax.random.PRNGKey(1), width=width)
    # EDM's preconditioning and loss weighting suit data of unit scale
    score = jd.NetworkScore(net, process, jd.EDMParam(sigma_data=1.0))
    loss = jd.DSMLoss(jd.EDMWeighting(1.0), jd.LogNormalTime())
    score, log = jd.train(
        score, process, data, key=jax.random.PRNGKey(2), steps=steps, batch_size=256, loss=loss,
        progress=False, return_log=True,
    )  # fmt: skip
    x = jd.sample(jax.random.PRNGKey(3), score, process, (n_samples, data.shape[1]), steps=200)
    x = np.asarray(x) * std + mean  # back to the data's units

    fig, (ax1, ax2) = figure(1, 2, figsize=(10, 4.2))
    ax1.plot(log.step, log.loss)
    ax1.set(xlabel="step", ylabel="denoising loss", title="training", yscale="log")
    ax2.scatter(*x[:, :2].T, s=3, label="samples")
    ax2.scatter(*raw[:, :2].T, s=3, c="k", alpha=0.3, label="data")
    ax2.set(title=f"{len(raw)} data points from {pathlib.Path(csv).name}")
    ax2.legend()
    return save(fig, args.out)


def _has_header(path) -> bool:
    first = pathlib.Path(path).read_text().splitlines()[0]
    try:
        [float(v) for v in first.split(",")]
        return False
    except ValueError:
        return True


if __name__ == "__main__":
    main()
