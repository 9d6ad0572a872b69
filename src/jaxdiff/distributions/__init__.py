"""Exact data laws, closed under Gaussian noising.

* `PointCloud(points)`: the empirical measure of `N` points, streamed in chunks.
* `GaussianMixture(means, stds, weights)` (isotropic components) or with `covs=` (full
  covariances, possibly singular).
* `Gaussian(mean, cov)`, `cov` possibly singular: data on an affine subspace.

Each law has `law.noised(process, t)` (a `NoisedLaw`: score, log-density, samples,
posterior, denoiser) and the same quantities at explicit `(alpha, sigma)` as `*_at`
methods (`base.py`). The point-cloud kernel lives in `kernel.py`.
"""

from .base import AbstractLaw as AbstractLaw, NoisedLaw as NoisedLaw, Posterior as Posterior
from .gaussian import Gaussian as Gaussian
from .mixture import GaussianMixture as GaussianMixture
from .point_cloud import PointCloud as PointCloud
