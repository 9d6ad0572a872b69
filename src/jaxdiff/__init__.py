"""jaxdiff: a JAX-accelerated, differentiable simulator of score-based diffusion models.

Two views of one dynamics: particles (forward noising, reverse-time sampling) and densities
(the Fokker–Planck equation on a grid), with exact references wherever the mathematics
gives them. See README.md and ARCHITECTURE (shared/).
"""

# --- foundation (issue 3) -------------------------------------------------------------
from .distributions import (
    AbstractLaw as AbstractLaw,
    Gaussian as Gaussian,
    GaussianMixture as GaussianMixture,
    NoisedLaw as NoisedLaw,
    PointCloud as PointCloud,
    Posterior as Posterior,
)
from .processes import (
    OU as OU,
    VE as VE,
    VP as VP,
    AbstractProcess as AbstractProcess,
    CosineVP as CosineVP,
    SubVP as SubVP,
)
from .scores import AbstractScore as AbstractScore, ExactScore as ExactScore

# --- sampling (issue 4) ---------------------------------------------------------------

# --- learning (issue 5) ---------------------------------------------------------------

# --- density view (issue 6): jaxdiff.pde, imported lazily below ------------------------

# --- metrics --------------------------------------------------------------------------

__version__ = "0.1.0"


def __getattr__(name):  # lazy subpackages keep `import jaxdiff` fast
    import importlib

    if name in ("pde", "nn", "metrics", "data", "parallel"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'jaxdiff' has no attribute {name!r}")
