r"""Generalisation comes from the imperfect score: novelty against fidelity (P1, P2; docs/theory.md).

The exact empirical score of `N` training points is the unique minimiser of the DSM loss and
memorises: stopped at `t_end -> 0` its reverse samples are copies of training points (P1c).
A trained network only approximates that score; the approximation error is what lets it
produce new points (generative capacity) at the price of reproducing the training set less
faithfully (imitation fidelity), the trade-off of P2's abstract.

Measured here, for 2-D toys (a circle; two moons and the 8x8 digits in the full profile),
training sets of `N` points (nested: the first `N` of one pool), small residual MLPs
(`jd.nn.MLP`, `jd.NetworkScore`, `jd.train`) of several widths, checkpointed after several
numbers of training steps, and samples (`jd.sample`, reverse SDE, Tweedie's last step)
stopped at several `t_end`:

* **novelty**: the share of samples that are not copies by the ratio test (that of
  `jd.metrics.copy_fraction`, from `jd.metrics.nearest_neighbours`), and the median
  nearest-neighbour distance to the training set relative to the training set's own spacing
  (median nearest-neighbour distance);
* **imitation error**: sliced W2 between the samples and the training set;
* **fidelity to the true law**: sliced W2 to fresh samples of the true law (held-out digits),
  and for the circle the mean distance to the circle;
* **the memorising end point**: the exact empirical score (`jd.ExactScore` of the
  `PointCloud`) run the same way, and at its memorisation scale `sigma(t_end) = spacing/20`.

Claims checked: the exact score's samples are copies at that scale; along `t_end` novelty
and the fidelity error rise together (the trade-off curve), for the exact score and the
networks alike; at the same small `t_end` the networks produce new points where the exact
score copies; longer training lowers the networks' novelty (they approach the memorising
minimiser of the loss).

Training sets of every `N` are tiled to the largest `N` (each point repeated equally often:
the same empirical law), so one compiled training step and one compiled sampler serve all `N`.

Run: `python experiments/generalisation.py --out DIR [--profile quick|full]`.
"""

from __future__ import annotations

import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdiff as jd
from jaxdiff.reproduce import (
    all_of,
    at_least,
    at_most,
    make_row,
    profile_sizes,
    save_figure,
    standalone,
    write_json,
)

NAME = "generalisation"
PROFILES = {
    # datasets; ns: training-set sizes (each divides the largest); widths, depth: MLPs;
    # stages: cumulative training steps at which networks are evaluated; t_ends: stopping
    # times (all evaluated after the last stage; t_main after every stage); n: samples;
    # steps: sampler steps (geometric grid); batch: training batch size.
    "tiny": {
        "datasets": ("circle",),
        "ns": (8, 64),
        "widths": (32,),
        "depth": 2,
        "stages": (200, 1000),
        "t_ends": (1e-5, 1e-1),
        "t_main": 1e-5,
        "n": 256,
        "steps": 60,
        "batch": 128,
    },
    "quick": {
        "datasets": ("circle",),
        "ns": (8, 32, 128, 512),
        "widths": (32, 64),
        "depth": 2,
        "stages": (200, 700, 2000),
        "t_ends": (1e-5, 1e-3, 1e-2, 1e-1),
        "t_main": 1e-2,
        "n": 512,
        "steps": 100,
        "batch": 256,
    },
    "full": {
        "datasets": ("circle", "two_moons", "digits"),
        "ns": (8, 32, 128, 512, 1024),
        "widths": (64, 256),
        "depth": 3,
        "stages": (1000, 5000, 20000),
        "t_ends": (1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
        "t_main": 1e-2,
        "n": 4096,
        "steps": 500,
        "batch": 512,
    },
}
LOG_EVERY = 100  # stages are multiples of it, so every training chunk has the same length
RATIO = 1 / 3  # the ratio test of memorisation


def _dataset(name: str, key, n_max: int, n_ref: int):
    """`(pool of n_max training points, reference sample of the true law, distance to the
    manifold or None)`."""
    kp, kr = jax.random.split(key)
    if name == "circle":
        dist = lambda x: jnp.abs(jnp.linalg.norm(x, axis=1) - 1)
        return jd.data.circle(kp, n_max), jd.data.circle(kr, n_ref), dist
    if name == "two_moons":
        return jd.data.two_moons(kp, n_max), jd.data.two_moons(kr, n_ref), None
    if name == "digits":
        allx = jd.data.digits(flatten=True)
        perm = jax.random.permutation(kp, allx.shape[0])
        return allx[perm[:n_max]], allx[perm[n_max:]], None  # held-out digits as the true law
    raise ValueError(f"unknown dataset {name!r}")


@jax.jit
def _metric_arrays(x, padded, tiled, ref, key):
    """Copies by the ratio test, nearest-neighbour distances, SW2 to the training set and to
    the true law. `padded`: the training set followed by far-away dummy points (never a
    nearest neighbour); `tiled`: the training set repeated (the same empirical law). Both
    have the largest `N` rows, so this compiles once for every `N`."""
    d, _ = jd.metrics.nearest_neighbours(x, padded, 2)
    copies = d[:, 0] < RATIO * d[:, 1]
    return (
        jnp.mean(copies),
        jnp.median(d[:, 0]),
        jd.metrics.sliced_wasserstein(x, tiled, key=key),
        jd.metrics.sliced_wasserstein(x, ref, key=key),
    )


@jax.jit
def _spacing(padded, n):
    """Median distance from each of the first `n` training points to its nearest other one."""
    d, _ = jd.metrics.nearest_neighbours(padded, padded, 2)
    valid = jnp.arange(padded.shape[0]) < n
    return jnp.nanmedian(jnp.where(valid, d[:, 1], jnp.nan))


def _metrics(x, padded, tiled, ref, spacing, manifold, key) -> dict:
    """Novelty, imitation error and fidelity of the sample set `x` (module docstring)."""
    copy, nn, sw_train, sw_true = (float(v) for v in _metric_arrays(x, padded, tiled, ref, key))
    n = x.shape[0]
    novelty = 1.0 - copy
    out = {
        "novelty": novelty,
        # binomial standard error (at least that of one sample in n, so it never vanishes)
        "novelty_se": float(np.sqrt(max(novelty * (1 - novelty), 1.0 / n) / n)),
        "nn_over_spacing": nn / spacing,
        "sw_train": sw_train,
        "sw_true": sw_true,
    }
    if manifold is not None:
        out["dist_manifold"] = float(jnp.mean(manifold(x)))
    return out


def main(out_dir, *, profile: str = "quick", key: int = 0, **sizes) -> list[dict]:
    """Run the experiment; write `<out_dir>/generalisation.json` and PNGs; return the rows."""
    cfg = profile_sizes(PROFILES, profile, sizes)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as ckpt_dir:
        # float64 as under `jaxdiff reproduce`: the memorisation times (sigma ~ 1e-4) need it
        with jax.enable_x64(True):
            rows, details = _run(out, cfg, jax.random.PRNGKey(key), pathlib.Path(ckpt_dir))
    rows = [make_row(**r) for r in rows]
    write_json(out, NAME, rows, profile=profile, sizes=cfg, details=details)
    return rows


def _run(out, cfg, key, ckpt_dir):
    from tqdm.auto import tqdm

    process = jd.OU(T=3.0)  # alpha(3) = 0.05: the prior is close to rho_T, and fewer steps are spent far out
    ns = tuple(cfg["ns"])
    M = max(ns)
    if any(M % n for n in ns):
        raise ValueError(f"every training-set size must divide the largest, got {ns}")
    # Log-normal noise levels reach sigma ~ 1e-3: the networks see small times too.
    loss = jd.DSMLoss(time_sampler=jd.LogNormalTime(p_mean=-2.0, p_std=1.6), t_min=1e-5)
    optimizer = optax.adam(2e-3)  # one object: jd.train caches its compiled step on it
    grid = jd.GeometricGrid()
    t_eval = tuple(sorted(set(cfg["t_ends"]) | {cfg["t_main"]}))  # stopping times of the final models
    records = []  # one per (dataset, scorer, N, width, stage, t_end)
    total = len(cfg["datasets"]) * len(ns) * len(cfg["widths"]) * len(cfg["stages"])
    bar = tqdm(total=total, desc="generalisation: training", unit="stage", leave=False)
    for di, name in enumerate(cfg["datasets"]):
        kd = jax.random.fold_in(key, di)
        pool, ref, manifold = _dataset(name, kd, M, cfg["n"])
        dim = pool.shape[1]
        shape = (cfg["n"], dim)

        def evaluate(score, t_end, kind, **tags):
            x = jd.sample(
                jax.random.fold_in(kd, 7),
                score,
                process,
                shape,
                steps=cfg["steps"],
                t_end=jnp.asarray(t_end),
                grid=grid,
                denoise=True,
            )
            m = _metrics(x, padded, tiled, ref, spacing, manifold, jax.random.fold_in(kd, 8))
            records.append({"dataset": name, "kind": kind, "t_end": t_end, **tags, **m})
            return x

        samples = {}
        for N in ns:
            train = pool[:N]
            tiled = jnp.tile(train, (M // N, 1))  # same empirical law, same shape for every N
            far = 1e3 * (1.0 + jnp.arange(M - N, dtype=pool.dtype))[:, None] * jnp.ones((1, dim), pool.dtype)
            # training set + far dummies: nearest neighbours with one compile for every N
            padded = jnp.concatenate([train, far])
            spacing = float(_spacing(padded, N))
            exact = jd.ExactScore(process, jd.PointCloud(tiled))
            for t_end in t_eval:
                x = evaluate(exact, t_end, "exact", N=N)
                samples[name, "exact", N, t_end] = np.asarray(x)
            # the memorisation scale of this N: sigma(t_end) = spacing / 20 (OU: sigma^2 ~ 2 t)
            evaluate(exact, (spacing / 20) ** 2 / 2, "exact_memorisation", N=N)
            for width in cfg["widths"]:
                model = jd.nn.MLP(
                    dim, key=jax.random.fold_in(kd, 1000 + width), width=width, depth=cfg["depth"]
                )
                score0 = jd.NetworkScore(model, process, jd.EpsParam())
                ckpt = ckpt_dir / f"{name}_{N}_{width}.eqx"
                for si, stage in enumerate(cfg["stages"]):
                    # resumes from the previous stage's checkpoint (only the end of each call is saved)
                    trained = jd.train(
                        score0,
                        tiled,
                        process,
                        key=jax.random.fold_in(kd, 2000 + N),
                        steps=stage,
                        batch_size=cfg["batch"],
                        loss=loss,
                        optimizer=optimizer,
                        checkpoint=ckpt,
                        checkpoint_every=10**9,
                        log_every=LOG_EVERY,
                        progress=False,
                    )
                    last = si == len(cfg["stages"]) - 1
                    for t_end in t_eval if last else (cfg["t_main"],):
                        x = evaluate(trained, t_end, "network", N=N, width=width, stage=stage)
                        if last and width == max(cfg["widths"]):
                            samples[name, "network", N, t_end] = np.asarray(x)
                    bar.update(1)
        records_ds = [r for r in records if r["dataset"] == name]
        _figures(out, name, records_ds, samples, pool, ns, cfg)
    bar.close()
    return _rows(records, cfg), {"records": records}


def _fidelity_error(r) -> float:
    """Distance to the data manifold where it is known (the circle), else SW2 to the training set."""
    return r.get("dist_manifold", r["sw_train"])


def _rows(records, cfg) -> list[dict]:
    t_small, t_big = min(cfg["t_ends"]), max(cfg["t_ends"])
    last, first = max(cfg["stages"]), min(cfg["stages"])
    wmax = max(cfg["widths"])
    ex = [r for r in records if r["kind"] == "exact"]
    net = [r for r in records if r["kind"] == "network"]
    mem = [r for r in records if r["kind"] == "exact_memorisation"]

    def se(a, b):  # standard error of a difference of novelties (binomial)
        return float(np.hypot(a["novelty_se"], b["novelty_se"]))

    def case(r):
        return f"{r['dataset']} N={r['N']}"

    # 1. the memorising end point: samples on training points, copies (or far more copies than late)
    thresholds, copies, nn = [], [], []
    for r in mem:
        big = next(q for q in ex if q["dataset"] == r["dataset"] and q["N"] == r["N"] and q["t_end"] == t_big)
        thresholds.append(min(0.95, 1 - big["novelty"] + 3 * se(big, r)))
        copies.append(1 - r["novelty"])
        nn.append(r["nn_over_spacing"])
    rows = [
        {
            "id": "exact_score_memorises",
            "claim": "The exact empirical score memorises: stopped where sigma(t_end) is 1/20 of the "
            "training spacing, its samples are copies of training points",
            "predicted": {"NN distance / spacing": [0.01] * len(mem), "copy fraction": thresholds},
            "measured": {"NN distance / spacing": nn, "copy fraction": copies},
            "criterion": all_of(
                **{
                    "NN distance / spacing": at_most(0.0, "median NN distance <= 1% of the spacing"),
                    "copy fraction": at_least(
                        0.0, f"copy fraction >= 0.95, or above its value at t_end = {t_big:g} by 3 SE"
                    ),
                }
            ),
            "figures": ["generalisation_tradeoff.png", "generalisation_samples.png"],
            "details": {"cases": [case(r) for r in mem]},
        }
    ]

    # 2. the trade-off along t_end, for the trained networks: a later stop, more novelty and a
    # larger imitation error
    lo_n, hi_n, lo_e, hi_e, names = [], [], [], [], []
    for name in cfg["datasets"]:
        for N in cfg["ns"]:
            sel = [
                r
                for r in net
                if r["dataset"] == name and r["N"] == N and r["width"] == wmax and r["stage"] == last
            ]
            lo = next(r for r in sel if r["t_end"] == t_small)
            hi = next(r for r in sel if r["t_end"] == t_big)
            names.append(f"{name} N={N}")
            lo_n.append(min(0.99, lo["novelty"] + 3 * se(lo, hi)))
            hi_n.append(hi["novelty"])
            lo_e.append(_fidelity_error(lo))
            hi_e.append(_fidelity_error(hi))
    rows.append(
        {
            "id": "novelty_fidelity_tradeoff",
            "claim": "Trade-off between generative capacity and imitation fidelity for trained networks: a "
            f"later stop (t_end {t_small:g} -> {t_big:g}) gives more new points and a larger imitation error",
            "predicted": {"novelty": lo_n, "imitation error": lo_e},
            "measured": {"novelty": hi_n, "imitation error": hi_e},
            "criterion": all_of(
                novelty=at_least(0.0, "novelty at the late stop >= early novelty + 3 SE (or >= 0.99)"),
                **{"imitation error": at_least(0.0, "imitation error at the late stop >= at the early stop")},
            ),
            "figures": ["generalisation_tradeoff.png"],
            "details": {"curves": names, "width": wmax, "steps": last},
        }
    )

    # 3. beyond the frontier: at the novelty the network reaches, the exact score / KDE family
    # (the exact score stopped at any t_end) is farther from the true law than the network
    frontier, net_sw, labels = [], [], []
    for name in cfg["datasets"]:
        for N in cfg["ns"]:
            curve = sorted(
                (r for r in ex + mem if r["dataset"] == name and r["N"] == N), key=lambda r: r["novelty"]
            )
            nov = np.array([r["novelty"] for r in curve])
            sw = np.array([r["sw_true"] for r in curve])
            for r in net:
                if (
                    r["dataset"] == name
                    and r["N"] == N
                    and r["width"] == wmax
                    and r["stage"] == last
                    and r["t_end"] == t_small
                ):
                    # the frontier's distance to the true law at the network's novelty (the
                    # exact family's best distance among stops at least as novel)
                    more = sw[nov >= r["novelty"]]
                    frontier.append(float(more.min()) if more.size else float(sw[-1]))
                    net_sw.append(r["sw_true"])
                    labels.append(f"{name} N={N} t_end={r['t_end']:.2g}")
    rows.append(
        {
            "id": "network_generalises",
            "claim": "Generalisation comes from the imperfect score: a trained network's (novelty, distance "
            f"to the true law) at t_end = {t_small:g} is beyond the exact-score / KDE frontier",
            "predicted": frontier,
            "measured": net_sw,
            "criterion": at_most(
                0.0,
                "SW2(network samples, true law) <= the smallest SW2 of the exact score stopped at any t_end "
                "with at least the network's novelty",
            ),
            "figures": ["generalisation_tradeoff.png", "generalisation_samples.png"],
            "details": {"points": labels, "width": wmax, "steps": last},
        }
    )

    # 4. training drives the network towards the (memorising) minimiser of the loss
    before, after, tl = [], [], []
    for name in cfg["datasets"]:
        for N in cfg["ns"]:
            for width in cfg["widths"]:
                sel = {
                    r["stage"]: r
                    for r in net
                    if r["dataset"] == name
                    and r["N"] == N
                    and r["width"] == width
                    and r["t_end"] == cfg["t_main"]
                }
                before.append(sel[first]["novelty"] - 3 * se(sel[first], sel[last]))
                after.append(sel[last]["novelty"])
                tl.append(f"{name} N={N} width={width}")
    rows.append(
        {
            "id": "training_approaches_memorisation",
            "claim": "Longer training brings the network towards the loss minimiser, the exact score, which "
            f"memorises: novelty falls from {first} to {last} steps (t_end = {cfg['t_main']:g})",
            "predicted": before,
            "measured": after,
            "criterion": at_most(0.0, "novelty after training <= novelty before - 3 SE (binomial)"),
            "figures": ["generalisation_vs_n.png"],
            "details": {"cases": tl},
        }
    )
    return rows


def _figures(out, name, records, samples, pool, ns, cfg):
    import matplotlib.pyplot as plt  # the backend is the caller's (`report_settings` picks Agg)

    t_ends, last, wmax = cfg["t_ends"], max(cfg["stages"]), max(cfg["widths"])
    cmap = plt.get_cmap("viridis")
    colour = {N: cmap(i / max(1, len(ns) - 1)) for i, N in enumerate(ns)}
    suffix = "" if name == cfg["datasets"][0] else f"_{name}"
    err_label = (
        "mean distance to the circle (fidelity error)"
        if "dist_manifold" in records[0]
        else "SW2(samples, training set) (imitation error)"
    )

    fig, axs = plt.subplots(1, 2, figsize=(13, 5))
    for ax, (err, xlabel) in zip(
        axs, ((_fidelity_error, err_label), (lambda r: r["sw_true"], "SW2(samples, true law)"))
    ):
        for N in ns:
            for kind, style in (("exact", "*--"), ("network", "o-")):
                cur = sorted(
                    (
                        r
                        for r in records
                        if r["N"] == N
                        and r["kind"] == kind
                        and r.get("stage", last) == last
                        and r.get("width", wmax) == wmax
                    ),
                    key=lambda r: r["t_end"],
                )
                ax.plot(
                    [err(r) for r in cur],
                    [r["novelty"] for r in cur],
                    style,
                    color=colour[N],
                    ms=7,
                    label=f"N = {N}, {'exact empirical score' if kind == 'exact' else 'network'}",
                )
                if N == ns[-1]:  # label only the two ends of one curve: t_end runs along each curve
                    for r in (cur[0], cur[-1]):
                        ax.annotate(
                            f"t_end={r['t_end']:g}",
                            (err(r), r["novelty"]),
                            fontsize=7,
                            xytext=(4, -10),
                            textcoords="offset points",
                        )
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("novelty: share of samples that are not copies")
    handles, labels = axs[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(
        f"{name}: generative capacity vs fidelity along t_end (networks: width {wmax}, {last} steps)"
    )
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    save_figure(
        fig,
        out,
        f"generalisation_tradeoff{suffix}.png",
        tight=False,
        caption=f"{name}: novelty against imitation error (left) and distance to the true law (right) "
        "as t_end grows, for the exact empirical score and trained networks.",
    )

    fig, axs = plt.subplots(1, 4, figsize=(20, 4.6))
    t_main = cfg["t_main"]
    for w_i, width in enumerate(cfg["widths"]):
        sel = sorted(
            (
                r
                for r in records
                if r["kind"] == "network"
                and r["width"] == width
                and r["stage"] == last
                and r["t_end"] == t_main
            ),
            key=lambda r: r["N"],
        )
        for ax, k in zip(axs, ("novelty", "nn_over_spacing", "sw_true")):
            ax.plot(
                [r["N"] for r in sel],
                [r[k] for r in sel],
                "o-",
                color=f"C{w_i}",
                label=f"network, width {width}",
            )
        for N in ns:
            cur = sorted(
                (
                    r
                    for r in records
                    if r["kind"] == "network" and r["width"] == width and r["N"] == N and r["t_end"] == t_main
                ),
                key=lambda r: r["stage"],
            )
            axs[3].plot(
                [r["stage"] for r in cur],
                [r["novelty"] for r in cur],
                "o-" if w_i == 0 else "s--",
                color=colour[N],
                label=f"N = {N}, width {width}",
            )
    sel = sorted((r for r in records if r["kind"] == "exact" and r["t_end"] == t_main), key=lambda r: r["N"])
    for ax, k, lab in zip(
        axs,
        ("novelty", "nn_over_spacing", "sw_true"),
        ("novelty (share of non-copies)", "median NN distance / training spacing", "SW2(samples, true law)"),
    ):
        ax.plot([r["N"] for r in sel], [r[k] for r in sel], "k*--", ms=10, label="exact empirical score")
        ax.set_xscale("log")
        ax.set_xlabel("training-set size N")
        ax.set_ylabel(lab)
    axs[1].set_yscale("log")
    axs[2].set_yscale("log")
    axs[3].set_xscale("log")
    axs[3].set_xlabel("training steps")
    axs[3].set_ylabel("novelty (share of non-copies)")
    handles, labels = [], []
    for ax in axs:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"{name}: against N ({last} steps) and training steps, t_end = {t_main:g}")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    save_figure(
        fig,
        out,
        f"generalisation_vs_n{suffix}.png",
        tight=False,
        caption=f"{name}: novelty, nearest-neighbour distance and distance to the true law against N, and "
        "novelty against training steps.",
    )

    if pool.shape[1] == 2:  # samples next to the training set
        fig, axs = plt.subplots(2, len(ns), figsize=(3.2 * len(ns), 6.4), squeeze=False)
        for j, N in enumerate(ns):
            for i, kind in enumerate(("exact", "network")):
                ax = axs[i, j]
                x = samples[name, kind, N, min(t_ends)]
                ax.scatter(
                    pool[:N, 0],
                    pool[:N, 1],
                    s=30,
                    facecolors="none",
                    edgecolors="k",
                    lw=0.6,
                    label="training points",
                )
                ax.scatter(
                    x[:, 0],
                    x[:, 1],
                    s=3,
                    alpha=0.5,
                    color="C0" if kind == "network" else "C3",
                    label="samples",
                )
                ax.set_title(f"{kind}, N={N}, t_end={min(t_ends):g}", fontsize=8)
                ax.set_aspect("equal")
                ax.set_xlabel("x1")
                ax.set_ylabel("x2")
        axs[0, 0].legend(fontsize=7)
        save_figure(
            fig,
            out,
            f"generalisation_samples{suffix}.png",
            caption=f"{name}: samples of the exact empirical score and of a trained network next to the "
            "training points.",
        )


if __name__ == "__main__":
    raise SystemExit(standalone(main))
