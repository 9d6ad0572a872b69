"""Handwritten digits with the U-Net: train a small image score model and sample it.

The 8x8 digits bundled with scikit-learn (1797 images, no download; `pip install "jaxdiff[data]"`)
are scaled to `[-1, 1]`; a small `jd.nn.UNet` with the EDM parametrisation is trained by
denoising score matching, and DPM-Solver++ draws new digits in 30 steps. A few thousand steps
on a CPU give recognisable digits; a GPU makes the default size quick.

    python examples/digits_unet.py [--steps 4000] [--base 32] [--tiny] [--out examples-out/digits_unet.png]
"""

from __future__ import annotations

import jax
import numpy as np
from _common import figure, parse, save

import jaxdiff as jd


def _args(ap):
    ap.add_argument("--steps", type=int, default=4000, help="training steps")
    ap.add_argument("--base", type=int, default=32, help="U-Net channels at the finest level")


def main(argv=None) -> str:
    args = parse(__doc__, "digits_unet.png", argv, _args)
    steps, base, n, sample_steps = (2, 8, 4, 3) if args.tiny else (args.steps, args.base, 36, 30)
    data = jd.data.digits()  # (1797, 1, 8, 8) in [-1, 1]
    process = jd.VP()
    net = jd.nn.UNet(1, key=jax.random.PRNGKey(0), base=base)
    score = jd.NetworkScore(net, process, jd.EDMParam(sigma_data=0.5))
    score = jd.train(
        score,
        process,
        data,
        key=jax.random.PRNGKey(1),
        steps=steps,
        batch_size=128,
        loss=jd.DSMLoss(jd.EDMWeighting(0.5), jd.LogNormalTime()),
        progress=not args.tiny,
    )
    x = jd.sample(
        jax.random.PRNGKey(2),
        score,
        process,
        (n, 1, 8, 8),
        sampler=jd.DPMSolverPP(),
        steps=sample_steps,
        denoise=True,
    )
    x = np.clip(np.asarray(x), -1, 1)

    cols = int(np.ceil(np.sqrt(n)))
    fig, axes = figure(cols, cols, figsize=(1.2 * cols, 1.2 * cols))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, img in zip(np.ravel(axes), x):
        ax.imshow(img[0], cmap="gray_r", vmin=-1, vmax=1)
    fig.suptitle(f"U-Net (base {base}), {steps} training steps", fontsize=9)
    return save(fig, args.out)


if __name__ == "__main__":
    main()
