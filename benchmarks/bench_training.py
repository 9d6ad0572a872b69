"""Training benchmark: steps per second of `jaxdiff.train` next to a plain Equinox + Optax
loop for the same network, loss, optimizer and batch, in the same process.

`run(quick=True) -> dict`; `python -m benchmarks.bench_training [--full] [--out PATH]` writes
JSON (default `bench-out/training.json`). Float32 (JAX's default), as a user would run it.

Cases: the residual MLP (`jd.nn.MLP(2, width=256)`, depth 3) on two moons with batch 512,
and the U-Net (`jd.nn.UNet(1)`, base 32, two levels) on the 8x8 digits with batch 128, both
under the VP process with the eps parametrisation and the sigma^2-weighted DSM loss (the
plain step computes exactly that loss, `|eps_hat - z|^2`, written the simplest way: one
`eqx.filter_jit` step per Python iteration). `jd.train` adds the EMA of the weights and a
host sync per chunk. Its default runs each chunk as one `lax.scan` for the MLP and one
dispatch per step for the U-Net (`fuse_steps`); the MLP is also timed with
`fuse_steps=False`. Each timing is the best of `repeats` runs after a warm-up that
compiles; the two sides are interleaved, in ABBA order, so that load from other processes
and drifts in the machine's speed hit both alike.
CPU figures from one run on one shared machine: read the ratio, not the absolute rates.
"""

from __future__ import annotations

import platform
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import jaxdiff as jd

T_MIN = 1e-3
# the loss the plain step writes by hand (train's own default is EDM's weighting and noise levels)
_LOSS = jd.DSMLoss(jd.SigmaSquaredWeighting(), jd.UniformTime(), T_MIN)


def _plain_step_fn(process, optimizer, batch_size):
    """The simplest Equinox + Optax DSM step (eps prediction, uniform t), for comparison."""

    def loss_fn(model, data, key):
        ki, kt, kz = jax.random.split(key, 3)
        x0 = data[jax.random.randint(ki, (batch_size,), 0, data.shape[0])]
        t = jax.random.uniform(kt, (batch_size,), minval=T_MIN, maxval=process.T)
        z = jax.random.normal(kz, x0.shape)
        bshape = (batch_size,) + (1,) * (x0.ndim - 1)
        xt = process.alpha(t).reshape(bshape) * x0 + process.sigma(t).reshape(bshape) * z
        eps_hat = jax.vmap(model)(-process.log_snr(t) / 8, xt)  # same conditioning as NetworkScore
        return jnp.mean(jnp.sum((eps_hat - z).reshape(batch_size, -1) ** 2, axis=1))

    @eqx.filter_jit
    def step(model, opt_state, data, key):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, data, key)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    return step


def _time_plain(step, model, optimizer, data, steps):
    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))
    key = jax.random.PRNGKey(1)
    start = time.perf_counter()
    for i in range(steps):
        model, opt_state, loss = step(model, opt_state, data, jax.random.fold_in(key, i))
    jax.block_until_ready(loss)
    return time.perf_counter() - start


def _time_jaxdiff(score, data, process, optimizer, batch_size, steps, fuse=None):
    start = time.perf_counter()
    out = jd.train(score, data, process, key=jax.random.PRNGKey(1), steps=steps, batch_size=batch_size,
                   optimizer=optimizer, loss=_LOSS, log_every=steps, progress=False, fuse_steps=fuse)
    jax.block_until_ready(eqx.filter(out, eqx.is_array))
    return time.perf_counter() - start


def _case(name, model, data, batch_size, steps, repeats, stepwise: bool):
    process = jd.VP()
    optimizer = optax.adam(1e-3)
    score = jd.NetworkScore(model, process, jd.EpsParam())
    step = _plain_step_fn(process, optimizer, batch_size)
    # warm-up: compile both (jd.train caches its compiled chunk on the optimizer object)
    _time_plain(step, model, optimizer, data, 2)
    _time_jaxdiff(score, data, process, optimizer, batch_size, steps)
    if stepwise:
        _time_jaxdiff(score, data, process, optimizer, batch_size, steps, fuse=False)
    ours, plain, ours_stepwise = [], [], []
    for i in range(repeats):
        # ABBA order: whichever side runs first in a round (on a warmer or colder machine)
        # alternates, so a drift in the machine's speed cannot favour one side
        if i % 2 == 0:
            ours.append(_time_jaxdiff(score, data, process, optimizer, batch_size, steps))
            plain.append(_time_plain(step, model, optimizer, data, steps))
        else:
            plain.append(_time_plain(step, model, optimizer, data, steps))
            ours.append(_time_jaxdiff(score, data, process, optimizer, batch_size, steps))
        if stepwise:
            t = _time_jaxdiff(score, data, process, optimizer, batch_size, steps, fuse=False)
            ours_stepwise.append(t)
    rate_ours, rate_plain = steps / min(ours), steps / min(plain)
    n_params = sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_array)))
    out = {
        "case": name, "batch_size": batch_size, "steps_timed": steps, "repeats": repeats,
        "parameters": int(n_params),
        "jaxdiff_train_steps_per_s": rate_ours, "plain_eqx_optax_steps_per_s": rate_plain,
        "ratio_jaxdiff_over_plain": rate_ours / rate_plain,
        "all_seconds": {"jaxdiff": ours, "plain": plain},
    }
    if stepwise:
        out["jaxdiff_train_stepwise_steps_per_s"] = steps / min(ours_stepwise)
        out["ratio_stepwise_over_plain"] = out["jaxdiff_train_stepwise_steps_per_s"] / rate_plain
        out["all_seconds"]["jaxdiff_stepwise"] = ours_stepwise
    return out


def run(quick: bool = True) -> dict:
    """Both cases; `quick` keeps it to about a minute on a laptop CPU."""
    key = jax.random.PRNGKey(0)
    mlp_steps, unet_steps, repeats = (200, 20, 8) if quick else (2000, 200, 8)
    results = {
        "platform": platform.platform(), "device": str(jax.devices()[0]), "backend": jax.default_backend(),
        "jax": jax.__version__, "quick": quick, "cases": [],
    }
    moons = jd.data.two_moons(key, 8192)
    mlp = jd.nn.MLP(2, key=jax.random.PRNGKey(1), width=256)
    results["cases"].append(_case("MLP(width=256, depth=3), two moons", mlp, moons, 512, mlp_steps, repeats,
                                  stepwise=True))
    digits = jd.data.digits().astype(jnp.float32)
    unet = jd.nn.UNet(1, key=jax.random.PRNGKey(2))
    name = "UNet(base=32, mults=(1, 2)), digits 8x8"
    # fuse_steps=True (off by default for convolutional nets) is not timed for the U-Net: XLA:CPU
    # runs convolutions inside a loop about 40x slower (0.09 against 3.6 steps/s in one
    # measurement), which would take minutes here
    results["cases"].append(_case(name, unet, digits, 128, unet_steps, repeats, stepwise=False))
    results["title"] = "Training: jd.train step time vs a plain Equinox + Optax step (same net, loss, batch)"
    results["rows"] = _rows(results["cases"])
    results["notes"] = [
        "figure: jd.train ms per step (EMA and logging included); reference: the plain filter_jit step "
        "(ms); ratio = figure / reference, target <= 1.0; fastest of interleaved repeats",
    ]
    return results


def _rows(cases: list[dict]) -> list[dict]:
    from benchmarks import row

    out = []
    for c in cases:
        ours, plain = 1e3 / c["jaxdiff_train_steps_per_s"], 1e3 / c["plain_eqx_optax_steps_per_s"]
        out.append(row(f"{c['case']}, batch {c['batch_size']}", ours, "ms/step", reference=plain,
                       ratio=ours / plain, target="<= 1.0", parameters=c["parameters"]))  # fmt: skip
        if "jaxdiff_train_stepwise_steps_per_s" in c:
            step = 1e3 / c["jaxdiff_train_stepwise_steps_per_s"]
            out.append(row(f"{c['case']}, batch {c['batch_size']}, fuse_steps=False", step, "ms/step",
                           reference=plain, ratio=step / plain))  # fmt: skip
    return out


def main(argv=None) -> dict:
    from benchmarks import standalone

    return standalone(run, "training", __doc__, argv)

if __name__ == "__main__":
    main()
