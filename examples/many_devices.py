"""Many devices: split a sampling batch over several devices and get the one-device answer.

JAX on a CPU can pretend to have several devices (`XLA_FLAGS=--xla_force_host_platform_device_count=N`),
which must be set before JAX starts; this script therefore runs its work in a child Python with
the flag set. There `jd.parallel.sharded_sample` splits the batch over a mesh of all devices;
sample `i` uses `fold_in(key, i)` wherever it runs, so the result equals one-device sampling.
The figure colours each sample by the device that computed it. On a real multi-GPU machine,
leave out the flag: the same code uses the GPUs.

    python examples/many_devices.py [--devices 4] [--tiny] [--out examples-out/many_devices.png]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from _common import figure, parse, save


def child(n: int, steps: int, out: str) -> None:
    import jax
    import jax.numpy as jnp

    import jaxdiff as jd

    law = jd.GaussianMixture(jnp.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0]]), 0.3)
    process = jd.OU()
    score = jd.ExactScore(process, law)
    key = jax.random.PRNGKey(0)
    mesh = jd.parallel.device_mesh()
    xs = jd.parallel.sharded_sample(key, score, process, (n, 2), mesh=mesh, steps=steps)
    owner = np.zeros(n, int)  # which device holds each row
    for i, shard in enumerate(xs.addressable_shards):
        owner[shard.index[0]] = i
    one = jd.sample(key, score, process, (n, 2), steps=steps)
    np.save(out, np.asarray(jd.parallel.gather(xs)))
    diff = float(jnp.max(jnp.abs(jnp.asarray(jd.parallel.gather(xs)) - one)) / jnp.max(jnp.abs(one)))
    print(json.dumps({"devices": len(jax.devices()), "owner": owner.tolist(), "rel_diff": diff}))


def main(argv=None) -> str:
    def extra(ap):
        ap.add_argument("--devices", type=int, default=4)
        ap.add_argument("--child", nargs=3, help=argparse_hidden())

    args = parse(__doc__, "many_devices.png", argv, extra)
    if args.child:
        return child(int(args.child[0]), int(args.child[1]), args.child[2])
    n, steps = (8 * args.devices, 10) if args.tiny else (1024 * args.devices, 100)
    samples = os.path.join(tempfile.mkdtemp(), "samples.npy")  # the child's result
    env = dict(
        os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices}", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(n), str(steps), samples],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the child run failed:\n{proc.stderr[-3000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    xs, owner = np.load(samples), np.asarray(info["owner"])

    fig, ax = figure(figsize=(5.5, 5))
    for d in range(info["devices"]):
        ax.scatter(*xs[owner == d].T, s=3, label=f"device {d}")
    ax.set(
        aspect="equal",
        title=f"{n} samples on {info['devices']} devices\n"
        f"largest difference to 1 device: {info['rel_diff']:.1e} (relative)",
    )
    ax.legend(markerscale=4, fontsize=8)
    return save(fig, args.out)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
