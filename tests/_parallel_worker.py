"""Worker for tests/test_parallel.py and tests/test_distributed.py (run as a subprocess).

It must be a separate process: the device count (`XLA_FLAGS`) and `jax.distributed` are
fixed when JAX starts. It prints one JSON line `RESULT {...}` with what the tests check;
the comparisons against the one-device computation happen here, on the same process.
"""

import json
import sys

from jaxdiff import parallel as par

MULTI = par.initialize()  # from JAXDIFF_* variables when the distributed test starts us

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxdiff as jd  # noqa: E402


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def shard_rows(x) -> list[int]:
    """Rows held by each of this process's devices."""
    return sorted(int(s.data.shape[0]) for s in x.addressable_shards)


def main(mode: str):
    out = {"process_index": jax.process_index(), "process_count": jax.process_count(),
           "n_devices": len(jax.devices()), "n_local": len(jax.local_devices()), "multi": MULTI}
    mesh = par.device_mesh()
    process = jd.OU()
    pts = jax.random.normal(jax.random.PRNGKey(0), (300, 2), jnp.float32)
    law = jd.PointCloud(pts)
    score = jd.ExactScore(process, law)
    key = jax.random.PRNGKey(1)
    n = 8 * mesh.size

    # Reverse-SDE sampling with the exact score: sharded vs the plain one-device call.
    xs = par.sharded_sample(key, score, process, (n, 2), mesh=mesh, steps=12)
    ref = jd.sample(key, score, process, (n, 2), steps=12)  # ordinary jit: one local device
    out["sample_rel"] = rel(par.gather(xs), ref)
    out["sample_rows"] = shard_rows(xs)
    out["sample_spec"] = list(xs.sharding.spec)
    out["sample_head"] = np.asarray(par.gather(xs))[:3].tolist()

    if mode == "devices":
        # the exact ancestral sampler (Gumbel-max streamed draws) and a wrong initialisation
        sampler = jd.ExactSampler(law)
        ex = par.sharded_sample(key, None, process, (n, 2), mesh=mesh, sampler=sampler, steps=4)
        out["exact_rel"] = rel(ex, jd.sample(key, None, process, (n, 2), sampler=sampler, steps=4))
        x_init = 3.0 + jax.random.normal(jax.random.PRNGKey(5), (n, 2), jnp.float32)
        wi = par.sharded_sample(key, score, process, (n, 2), mesh=mesh, steps=6, x_init=x_init)
        out["x_init_rel"] = rel(wi, jd.sample(key, score, process, (n, 2), steps=6, x_init=x_init))
        # the exact score and the forward noising, batch-sharded
        q = jax.random.normal(jax.random.PRNGKey(2), (n, 2), jnp.float32)
        t = jnp.float32(0.3)
        s = par.sharded_vmap(score, mesh=mesh, in_axes=(None, 0))(t, q)
        out["score_rel"] = rel(s, jax.vmap(score, in_axes=(None, 0))(t, q))
        out["score_rows"] = shard_rows(s)
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
        noise = lambda k, x0: process.sample_marginal(k, t, x0)
        fw = par.sharded_vmap(noise, mesh=mesh)(keys, q)
        out["noise_rel"] = rel(fw, jax.vmap(noise)(keys, q))
        # gradients through the sharded sampler with a checkpointed adjoint
        def grad_of(draw):
            return jax.grad(lambda te: jnp.mean(draw(te) ** 2))(jnp.float32(0.01))

        kw = dict(sampler=jd.DDIM(), steps=9)
        g_sh = grad_of(lambda te: par.sharded_sample(key, score, process, (n, 2), mesh=mesh, t_end=te,
                                                     adjoint=jd.CheckpointAdjoint(checkpoints=3), **kw))
        g_one = grad_of(lambda te: jd.sample(key, score, process, (n, 2), t_end=te, **kw))
        out["adjoint_grad_rel"] = rel(g_sh, g_one)
        # a batch that does not split evenly is refused with a clear message
        try:
            par.sharded_sample(key, score, process, (n + 1, 2), mesh=mesh, steps=2)
            out["indivisible_error"] = None
        except ValueError as e:
            out["indivisible_error"] = str(e)
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
