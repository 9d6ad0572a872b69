"""`jaxdiff reproduce`: placeholder until the experiments land (issue 7)."""

from __future__ import annotations

import json
import pathlib


def run(profile: str = "quick", out: str = "reproduce-out", only: str | None = None) -> int:
    import jax
    import jax.numpy as jnp

    import jaxdiff as jd

    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    # What exists today: the exact laws. Check Tweedie's identity on a point cloud.
    pts = jax.random.normal(jax.random.PRNGKey(0), (256, 2))
    score = jd.ExactScore(jd.OU(), jd.PointCloud(pts))
    x = jnp.array([0.3, -0.2])
    t = jnp.array(0.1)
    err = float(jnp.max(jnp.abs(score.denoise(t, x) - (x + jd.OU().sigma2(t) * score(t, x)) / jd.OU().alpha(t))))
    rows = [{"id": "tweedie", "claim": "Tweedie denoiser = (x + sigma^2 score)/alpha", "predicted": 0.0,
             "measured": err, "holds": err < 1e-5}]
    (out_dir / "report.json").write_text(json.dumps(rows, indent=2))
    (out_dir / "report.md").write_text("# jaxdiff report\n\nThe experiments of the seed papers are coming.\n")
    print(f"wrote {out_dir / 'report.md'} and {out_dir / 'report.json'}")
    return 0
