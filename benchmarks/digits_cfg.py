"""Class-conditional U-Net on the scikit-learn digits, sampled with classifier-free guidance.

`python -m benchmarks.digits_cfg [--steps K] [--base B] [--per-class M] [--out DIR]` (heavy: a training
run; not part of `python -m benchmarks`). One `UNet(1, n_classes=10)` is trained with
`train(..., labels=..., label_dropout=0.1)` (VP process, the default EDM preconditioning and
loss, Adam, EMA), then
sampled for every class at guidance scales 0, 1, 2, 4 (DDIM, 50 steps). A logistic regression
trained on real digits (scikit-learn, 1500 training images; its accuracy on the 297 held-out
real images is reported as `classifier_test_accuracy`) labels the samples:

* `accuracy` = share of samples the classifier assigns to the class they were guided toward;
* `diversity` = mean pairwise L2 distance between samples of one class, averaged over
  classes, divided by the same quantity for the real digits (1: as diverse as the data).

Writes `DIR/digits_cfg.json` and `DIR/digits_cfg.png` (one panel per scale; rows = classes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdiff as jd

SCALES = (0.0, 1.0, 2.0, 4.0)


def _diversity(x, labels):
    out = []
    for c in range(10):
        xc = x[labels == c].reshape(int(np.sum(labels == c)), -1)
        d = np.sqrt(np.maximum(((xc[:, None] - xc[None]) ** 2).sum(-1), 0))
        n = xc.shape[0]
        out.append(d.sum() / (n * (n - 1)))
    return float(np.mean(out))


def run(steps: int, per_class: int, out: str, seed: int = 0, base: int = 32) -> dict:
    from sklearn.linear_model import LogisticRegression

    images, labels = jd.data.digits(return_labels=True)
    images, labels = np.asarray(images), np.asarray(labels)
    flat = images.reshape(len(images), -1)
    clf = LogisticRegression(max_iter=3000).fit(flat[:1500], labels[:1500])
    clf_acc = float(clf.score(flat[1500:], labels[1500:]))

    key = jax.random.PRNGKey(seed)
    process = jd.VP()
    model = jd.nn.UNet(1, key=key, base=base, mults=(1, 2), n_classes=10)
    score = jd.ConditionalNetworkScore(model, process)
    t0 = time.perf_counter()
    score, log = jd.train(
        score,
        jnp.asarray(images),
        process,
        key=jax.random.fold_in(key, 1),
        steps=steps,
        batch_size=128,
        labels=labels,
        label_dropout=0.1,
        optimizer=optax.adam(2e-3),
        ema=0.999,
        return_log=True,
        progress=False,
    )
    train_s = time.perf_counter() - t0
    print(
        f"trained {steps} steps in {train_s:.0f} s, last loss {np.mean(log.loss[-100:]):.4g}", file=sys.stderr
    )

    real_div = _diversity(flat, labels)
    results, grids = [], {}
    for w in SCALES:
        xs = []
        for c in range(10):
            k = jax.random.fold_in(jax.random.PRNGKey(seed + 7), c)
            x = jd.sample(
                k, jd.guide(score, c, w), process, (per_class, 1, 8, 8), sampler=jd.DDIM(), steps=50
            )
            xs.append(np.asarray(x))
        xs = np.stack(xs)  # (10, m, 1, 8, 8)
        target = np.repeat(np.arange(10), per_class)
        flat_s = np.clip(xs.reshape(10 * per_class, -1), -1, 1)
        acc = float(np.mean(clf.predict(flat_s) == target))
        div = _diversity(flat_s, target) / real_div
        results.append(dict(scale=w, accuracy=acc, diversity=div))
        grids[w] = xs
        print(f"scale {w}: accuracy {acc:.3f}, diversity {div:.3f}", file=sys.stderr, flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(8, per_class)
    fig, axes = plt.subplots(1, len(SCALES), figsize=(3.2 * len(SCALES), 4.2))
    for ax, w, r in zip(axes, SCALES, results):
        tile = np.clip(grids[w][:, :cols, 0], -1, 1)  # (10, cols, 8, 8)
        # one background pixel around each digit, so neighbours do not run together
        tile = np.pad(tile, ((0, 0), (0, 0), (0, 1), (0, 1)), constant_values=-1.0)
        img = np.concatenate([np.concatenate(list(row), axis=1) for row in tile], axis=0)
        ax.imshow(img, cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(f"scale {w:g}: acc {r['accuracy']:.2f}, div {r['diversity']:.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks(np.arange(10) * 9 + 3.5, [str(c) for c in range(10)])
        ax.set_ylabel("class")
    fig.tight_layout()
    os.makedirs(out, exist_ok=True)
    fig.savefig(os.path.join(out, "digits_cfg.png"), dpi=110)
    res = dict(
        benchmark="digits_cfg",
        steps=steps,
        base=base,
        batch_size=128,
        per_class=per_class,
        train_seconds=train_s,
        final_loss=float(np.mean(log.loss[-100:])),
        classifier_test_accuracy=clf_acc,
        real_diversity=real_div,
        results=results,
    )
    with open(os.path.join(out, "digits_cfg.json"), "w") as f:
        json.dump(res, f, indent=1)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--base", type=int, default=32, help="U-Net base width")
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--out", default="bench-out")
    a = p.parse_args(argv)
    print(json.dumps(run(a.steps, a.per_class, a.out, base=a.base), indent=1))


if __name__ == "__main__":
    main()
