"""Defaults benchmark: does `jd.train` with every default learn the 2-D ring of 8 Gaussians?

The law: eight N(m_k, 0.3^2 I) with the m_k equally spaced on the circle of radius 4, the
data NOT standardised (20000 draws). The score: `NetworkScore(MLP(2, key=...), VP())`,
trained by `train(..., steps=4000, batch_size=512)` with every other argument at its
default, then sampled (4000 samples, `t_end = 1e-3`, the default grid and step count) by the
probability flow and by the reverse SDE. For each sample: the within-mode RMS (distance to
the nearest mode, per coordinate; the law's own is 0.30) and the largest deviation of a
mode's share from 1/8. Targets: RMS within 0.30 +- 0.03 and shares within 0.02 of 1/8.
The same figures for the exact score and for the former defaults (eps parametrisation,
sigma^2 weighting, uniform times, Adam at 1e-3) are recorded next to them, as is the
relative score error at t = 1e-3 (RMS of s - s* over RMS of s*, at draws of X_t).

(Sliced W2 between two independent draws of 4000 points of this law is already about 0.2,
so it cannot resolve these differences and is not used.)

`python -m benchmarks.bench_defaults [--full] [--out PATH]`; `--full` runs three training
seeds instead of one and adds the digits U-Net (`digits_case`).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdiff as jd

RADIUS, STD, N_MODES = 4.0, 0.3, 8
STEPS, BATCH, N_SAMPLES, T_END = 4000, 512, 4000, 1e-3


def ring_law() -> jd.GaussianMixture:
    a = 2 * np.pi * np.arange(N_MODES) / N_MODES
    means = RADIUS * np.stack([np.cos(a), np.sin(a)], 1)
    return jd.GaussianMixture(jnp.asarray(means), jnp.full((N_MODES,), STD))


def mode_stats(x, means) -> tuple[float, float]:
    """(within-mode RMS per coordinate, largest |share - 1/K|) by nearest mode."""
    x, means = np.asarray(x, np.float64), np.asarray(means, np.float64)
    d2 = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    k = d2.argmin(1)
    rms = float(np.sqrt(d2[np.arange(len(x)), k].mean() / x.shape[1]))
    share = np.bincount(k, minlength=len(means)) / len(x)
    return rms, float(np.abs(share - 1 / len(means)).max())


def relative_score_error(score, exact, process, x0, key, t) -> float:
    xt = jax.vmap(lambda k, x: process.sample_marginal(k, t, x))(jax.random.split(key, x0.shape[0]), x0)
    s = jax.vmap(lambda x: score(t, x))(xt)
    e = jax.vmap(lambda x: exact(t, x))(xt)
    return float(jnp.sqrt(jnp.mean(jnp.sum((s - e) ** 2, -1)) / jnp.mean(jnp.sum(e**2, -1))))


def evaluate(score, law, process, key) -> dict:
    out = {}
    for name, sampler in (("probability_flow", jd.ProbabilityFlow()), ("reverse_sde", jd.ReverseSDE())):
        x = jd.sample(key, score, process, (N_SAMPLES, 2), sampler=sampler, t_end=T_END)
        out[name] = dict(zip(("rms", "max_share_dev"), mode_stats(x, law.means)))
    return out


def old_defaults(score, process):
    """The arguments that reproduce the former defaults."""
    return dict(
        score=jd.NetworkScore(score.model, process, jd.EpsParam()),
        loss=jd.DSMLoss(jd.SigmaSquaredWeighting(), jd.UniformTime(), 1e-3),
        optimizer=optax.adam(1e-3),
    )


def one_seed(seed: int) -> dict:
    law, process = ring_law(), jd.VP()
    data = law.sample(jax.random.PRNGKey(100 + seed), 20000)
    score = jd.NetworkScore(jd.nn.MLP(2, key=jax.random.PRNGKey(seed)), process)
    exact = jd.ExactScore(process, law)
    res = {"seed": seed}
    for name in ("new", "old"):
        kw = {} if name == "new" else old_defaults(score, process)
        s = kw.pop("score", score)
        t0 = time.perf_counter()
        trained = jd.train(
            s,
            data,
            process,
            key=jax.random.PRNGKey(1000 + seed),
            steps=STEPS,
            batch_size=BATCH,
            progress=False,
            **kw,
        )
        res[name] = evaluate(trained, law, process, jax.random.PRNGKey(3))
        res[name]["train_s"] = time.perf_counter() - t0
        res[name]["relative_score_error_t1e-3"] = relative_score_error(
            trained, exact, process, data[:2000], jax.random.PRNGKey(4), T_END
        )
        if name == "new":
            res[name]["sigma_data"] = float(trained.parametrisation.sigma_data)
    res["exact"] = evaluate(exact, law, process, jax.random.PRNGKey(3))
    return res


def digits_case(steps: int, n: int = 500) -> dict:
    """The 8x8 digits with `jd.nn.UNet(1, base=16)`, `steps` of batch 128, every default
    against the former ones. Figures of the samples (default sampler, `denoise=True`,
    clipped to [-1, 1]): the mean top probability of a logistic-regression classifier
    fitted to the digits (confidence) and the entropy of its predicted classes in nats
    (diversity; log 10 = 2.30 for even classes), and the mean distance to the nearest
    training image over that of held-out images (1 for samples as close as real ones)."""
    from sklearn.linear_model import LogisticRegression

    x, y = jd.data.digits(flatten=True, return_labels=True)
    x, y = np.asarray(x), np.asarray(y)
    train_x, held = x[:1500], x[1500:]
    clf = LogisticRegression(max_iter=2000).fit(train_x, y[:1500])

    def nn_dist(a):
        return float(np.mean(np.min(((a[:, None, :] - train_x[None]) ** 2).sum(-1), 1) ** 0.5))

    base = nn_dist(held)
    images = jnp.asarray(train_x.reshape(-1, 1, 8, 8))
    process = jd.VP()
    net = jd.nn.UNet(1, key=jax.random.PRNGKey(0), base=16)
    score = jd.NetworkScore(net, process)
    out = {"steps": steps, "n": n, "held_out_nn_distance": base}
    for name in ("new", "old"):
        kw = {} if name == "new" else old_defaults(score, process)
        s = kw.pop("score", score)
        t0 = time.perf_counter()
        trained = jd.train(s, images, process, key=jax.random.PRNGKey(1), steps=steps, batch_size=128,
                           progress=False, **kw)  # fmt: skip
        xs = jd.sample(jax.random.PRNGKey(2), trained, process, (n, 1, 8, 8), denoise=True)
        xs = np.clip(np.asarray(xs).reshape(n, 64), -1, 1)
        p = clf.predict_proba(xs)
        share = np.bincount(p.argmax(1), minlength=10) / n
        out[name] = {
            "confidence": float(p.max(1).mean()),
            "class_entropy": float(-(share[share > 0] * np.log(share[share > 0])).sum()),
            "nn_distance_ratio": nn_dist(xs) / base,
            "seconds": time.perf_counter() - t0,
        }
    return out


def run(quick: bool = True) -> dict:
    from benchmarks import row

    seeds = [0] if quick else [0, 1, 2]
    per_seed = [one_seed(s) for s in seeds]
    rows = []
    for r in per_seed:
        for who in ("new", "old", "exact"):
            for sampler in ("probability_flow", "reverse_sde"):
                rms, dev = r[who][sampler]["rms"], r[who][sampler]["max_share_dev"]
                tag = {"new": "defaults", "old": "former defaults", "exact": "exact score"}[who]
                target = "<= 0.03" if who == "new" else None
                rows.append(
                    row(
                        f"seed {r['seed']}, {tag}, {sampler}: |RMS - 0.30|",
                        abs(rms - STD),
                        "",
                        reference=STD,
                        ratio=abs(rms - STD),
                        target=target,
                        rms=rms,
                    )
                )
                rows.append(
                    row(
                        f"seed {r['seed']}, {tag}, {sampler}: max |share - 1/8|",
                        dev,
                        "",
                        ratio=dev,
                        target="<= 0.02" if who == "new" else None,
                    )
                )
        for who in ("new", "old"):
            e = r[who]["relative_score_error_t1e-3"]
            rows.append(row(f"seed {r['seed']}, {who} defaults: relative score error at t=1e-3", e, ""))
    digits = None
    if not quick:
        digits = digits_case(1000)
        for who in ("new", "old"):
            d = digits[who]
            tag = "defaults" if who == "new" else "former defaults"
            rows.append(row(f"digits U-Net, {tag}: classifier confidence", d["confidence"], ""))
            rows.append(row(f"digits U-Net, {tag}: predicted-class entropy (nats)", d["class_entropy"], ""))
            rows.append(row(f"digits U-Net, {tag}: nearest-neighbour distance / held-out's",
                            d["nn_distance_ratio"], ""))  # fmt: skip
    return {
        "digits": digits,
        "title": "Defaults: within-mode RMS and mode shares on the ring of 8 Gaussians (radius 4, std 0.3)",
        "quick": quick,
        "rows": rows,
        "seeds": per_seed,
        "notes": [
            "ratio of the |RMS - 0.30| rows is the deviation itself (target <= 0.03); shares: target <= 0.02",
            f"train(steps={STEPS}, batch_size={BATCH}); {N_SAMPLES} samples, t_end={T_END}, "
            "default grid and steps",
        ],
    }


def main(argv=None) -> dict:
    from benchmarks import standalone

    return standalone(run, "defaults", __doc__, argv)


if __name__ == "__main__":
    main()
