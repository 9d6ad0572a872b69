"""Flow matching on the 2-D ring of 8 Gaussians: learned vs exact velocity, OT vs
independent coupling, and one round of reflow.

The data law is `GaussianMixture` with 8 equal components on the circle of radius 4, each
of standard deviation 0.3, left unnormalised; the process is `LinearInterpolant()`. A
velocity-parametrised residual MLP (`VelocityParam(sigma_data=<data std>)`) is trained with
`jd.train` and `FlowMatchingLoss` (Adam 1e-3; EMA 0.99 in the quick mode, 0.999 in full; the
OT coupling's entropic regularisation 0.05 of the mean cost in quick mode, 0.01 in full).

Rows (every figure from one run; the machine is shared, so only ratios within the run
are compared):

* `sw2_nfe50_learned`: sliced W2 (256 directions) between `n` samples of the learned flow
  (Heun, 25 uniform steps = 50 velocity evaluations, from exactly N(0, I) at T = 1 to
  t = 1e-3) and `n` fresh samples of the law; reference: the exact-velocity flow
  (`ExactVelocity`) with the same solver, steps and noise. Target ratio <= 1.5.
* `curvature_*`: mean path curvature (Liu et al. 2023's straightness)
  `E int |v(t, x_t) - (x_end - x_start)/(t_end - T)|^2 dt` along Heun trajectories of 50
  steps, from finite differences of the trajectory, for the independent and OT-coupled
  models (reference: the exact velocity of the independent coupling).
* `sw2_nfe1_*`: sliced W2 to the law after one Euler step from T (NFE 1), for the
  independent model, the OT model (ratio independent/OT) and the reflowed model (ratio
  before/after; target >= 5).

`python benchmarks/bench_flow.py [--full] [--out bench-out/flow.json]`
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import machine, row  # noqa: E402

SIZES = {
    True: dict(
        n=5000,
        steps=3000,
        ot_steps=3000,
        batch=256,
        reflow_pairs=20000,
        reflow_steps=20000,
        ema=0.99,
        ot_epsilon=0.05,
    ),
    False: dict(
        n=20000,
        steps=20000,
        ot_steps=20000,
        batch=512,
        reflow_pairs=100000,
        reflow_steps=20000,
        ema=0.999,
        ot_epsilon=0.01,
    ),
}


def ring(jd):
    ang = jnp.arange(8) * 2 * jnp.pi / 8
    return jd.GaussianMixture(4.0 * jnp.stack([jnp.cos(ang), jnp.sin(ang)], 1), 0.3 * jnp.ones(8))


def run(quick: bool = True) -> dict:
    import diffrax
    import optax

    import jaxdiff as jd
    from jaxdiff.nn import MLP

    cfg = SIZES[bool(quick)]
    law, proc = ring(jd), jd.LinearInterpolant()
    key = jax.random.PRNGKey(0)
    k_model, k_train, k_ot, k_reflow, k_eval = jax.random.split(key, 5)
    n = cfg["n"]
    y = law.sample(jax.random.fold_in(k_eval, 1), n)
    sd = float(jnp.sqrt(jnp.mean(jnp.diag(law.covariance()))))
    k_sw = jax.random.fold_in(k_eval, 2)
    sw = lambda x: float(jd.metrics.sliced_wasserstein(x, y, key=k_sw))
    floor = sw(law.sample(jax.random.fold_in(k_eval, 3), n))
    z = proc.prior_sample(jax.random.fold_in(k_eval, 4), (n, 2))
    timings = {}

    def flow(score, solver, steps, trajectory=False):
        return jd.sample(k_eval, score, proc, (n, 2), sampler=jd.ProbabilityFlow(solver), steps=steps,
                         grid=jd.UniformGrid(), x_init=z, trajectory=trajectory)  # fmt: skip

    def curvature(score):
        ts, xs = flow(score, diffrax.Heun(), 50, trajectory=True)
        chord = jnp.diff(xs, axis=0) / jnp.diff(ts)[:, None, None]  # each step's mean velocity
        straight = (xs[-1] - xs[0]) / (ts[-1] - ts[0])
        return float(jnp.sum(jnp.mean(jnp.sum((chord - straight) ** 2, -1), 1) * jnp.abs(jnp.diff(ts))))

    def train(loss, steps, k, init=None, data=law):
        net = init if init is not None else jd.NetworkScore(MLP(2, key=k_model), proc, jd.VelocityParam(sd))
        t0 = time.perf_counter()
        out = jd.train(net, proc, data, key=k, steps=steps, batch_size=cfg["batch"], loss=loss,
                       optimizer=optax.adam(1e-3), ema=cfg["ema"], progress=False)  # fmt: skip
        return out, time.perf_counter() - t0

    exact = jd.ExactVelocity(proc, law)
    indep, timings["train_independent_s"] = train(jd.FlowMatchingLoss(), cfg["steps"], k_train)
    ot_loss = jd.FlowMatchingLoss(coupling=jd.OTCoupling(cfg["ot_epsilon"]))
    ot, timings["train_ot_s"] = train(ot_loss, cfg["ot_steps"], k_ot)
    t0 = time.perf_counter()
    reflowed = jd.reflow(
        k_reflow,
        indep,
        proc,
        (cfg["reflow_pairs"], 2),
        steps=cfg["reflow_steps"],
        batch_size=cfg["batch"],
        flow_steps=50,
        optimizer=optax.adam(1e-3),
        ema=cfg["ema"],
        progress=False,
    )
    timings["reflow_s"] = time.perf_counter() - t0  # fmt: skip

    sw50 = {name: sw(flow(s, diffrax.Heun(), 25)) for name, s in (("exact", exact), ("learned", indep))}
    curv = {name: curvature(s) for name, s in (("exact", exact), ("independent", indep), ("ot", ot))}
    models = (("exact", exact), ("independent", indep), ("ot", ot), ("reflow", reflowed))
    sw1 = {name: sw(flow(s, diffrax.Euler(), 1)) for name, s in models}

    rows = [
        row("sw2_nfe50_learned", sw50["learned"], "sliced W2", reference=sw50["exact"],
            ratio=sw50["learned"] / sw50["exact"], target="<= 1.5", noise_floor=floor),
        row("curvature_independent", curv["independent"], "mean |v - chord|^2 dt", reference=curv["exact"],
            ratio=curv["independent"] / curv["exact"]),
        row("curvature_ot", curv["ot"], "mean |v - chord|^2 dt", reference=curv["independent"],
            ratio=curv["independent"] / curv["ot"], target=">= 1"),
        row("sw2_nfe1_independent", sw1["independent"], "sliced W2", reference=sw1["exact"],
            ratio=sw1["independent"] / sw1["exact"]),
        row("sw2_nfe1_ot", sw1["ot"], "sliced W2", reference=sw1["independent"],
            ratio=sw1["independent"] / sw1["ot"], target=">= 1"),
        row("sw2_nfe1_reflow", sw1["reflow"], "sliced W2", reference=sw1["independent"],
            ratio=sw1["independent"] / sw1["reflow"], target=">= 5"),
    ]  # fmt: skip
    return dict(
        title="Flow matching on the ring of 8 Gaussians (LinearInterpolant)",
        benchmark="flow",
        quick=quick,
        sizes=cfg,
        machine=machine(),
        rows=rows,
        timings_s=timings,
        notes=[
            f"two-sample noise floor of sliced W2 at n = {n}: {floor:.4g}",
            "ratios: sw2/curvature of the learned model over the reference (NFE 50); "
            "independent over OT or reflow (NFE 1 and curvature; larger is better)",
        ],
    )


def main(argv=None) -> dict:
    from benchmarks import standalone

    return standalone(run, "flow", __doc__, argv)


if __name__ == "__main__":
    main()
