"""Scoped settings for a report run: double precision and a non-interactive plotting backend.

`report_settings()` switches them on for the duration of a `with` block and restores what the
caller had afterwards, so running the report leaves `jax.config` and matplotlib as it found
them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

# Font sizes chosen so figures stay readable at the width report.md shows them.
FIGURE_STYLE = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "figure.dpi": 110,
}


@contextlib.contextmanager
def report_settings() -> Iterator[None]:
    """Run the enclosed block with `jax_enable_x64` on (the claims are identities and
    statistical tests, measured in double precision), matplotlib's Agg backend and the
    report's figure style; restore all three on exit, also when the block raises."""
    import jax
    import matplotlib
    import matplotlib.pyplot as plt

    x64 = bool(jax.config.read("jax_enable_x64"))
    # The backend as the caller left it; `None` when pyplot has not resolved one yet (then
    # there is nothing to switch back to and we only leave the rc entry as it was).
    backend = _current_backend(matplotlib)
    jax.config.update("jax_enable_x64", True)
    try:
        with matplotlib.rc_context(FIGURE_STYLE):
            if backend is None or backend.lower() != "agg":
                plt.switch_backend("Agg")
            try:
                yield
            finally:
                if backend is not None and backend.lower() != "agg":
                    plt.switch_backend(backend)
                elif backend is None:
                    _unresolve_backend(matplotlib)
    finally:
        jax.config.update("jax_enable_x64", x64)


def _current_backend(matplotlib) -> str | None:
    # Reading rcParams["backend"] would resolve (and so change) an unresolved backend.
    getter = getattr(matplotlib.rcParams, "_get_backend_or_none", None)
    return getter() if getter is not None else matplotlib.get_backend()


def _unresolve_backend(matplotlib) -> None:
    sentinel = getattr(matplotlib.rcsetup, "_auto_backend_sentinel", None)
    if sentinel is not None:
        dict.__setitem__(matplotlib.rcParams, "backend", sentinel)
