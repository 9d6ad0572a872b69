"""What the verbs of the command line share: strategy objects chosen by name (the command line
has only strings; the library itself takes the objects) and the check of output paths."""

from __future__ import annotations

import pathlib

SAMPLERS = ("reverse-sde", "probability-flow", "ddpm", "ddim", "exact")
SAMPLERS += ("unipc", "ipndm", "lms", "deis", "dpm-solver-3m", "adaptive-sde")  # few-step samplers
PROCESSES = ("ou", "vp")


def sampler_by_name(name: str, law=None):
    """The sampler named `name`; `exact` needs the exact law."""
    import jaxdiff as jd

    if name == "exact":
        if law is None:
            raise ValueError("`--sampler exact` needs an exact law (`--law`), not a checkpoint")
        return jd.ExactSampler(law)
    table = {
        "reverse-sde": jd.ReverseSDE,
        "probability-flow": jd.ProbabilityFlow,
        "ddpm": jd.DDPM,
        "ddim": jd.DDIM,
        "unipc": jd.UniPC,
        "ipndm": jd.IPNDM,
        "lms": jd.LMS,
        "deis": jd.DEIS,
        "dpm-solver-3m": lambda: jd.DPMSolverPP(3),
        "adaptive-sde": jd.AdaptiveSDE,
    }
    if name not in table:
        raise ValueError(f"`--sampler` must be one of {', '.join(SAMPLERS)}; got {name!r}")
    return table[name]()


def process_by_name(name: str):
    """The forward process named `name` (`ou` or `vp`)."""
    import jaxdiff as jd

    if name == "ou":
        return jd.OU()
    if name == "vp":
        return jd.VP()
    raise ValueError(f"`--process` must be one of {', '.join(PROCESSES)}; got {name!r}")


def check_out(path, what: str, suffixes=None) -> pathlib.Path:
    """Refuse, before any work, an output path that cannot be written as a file."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise ValueError(f"`{what}` {path} is a directory: give a file name inside it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"`{what}` {path} lies inside {parent}, which is a file, not a folder")
            break
    if suffixes is not None and path.suffix not in suffixes:
        ends = " or ".join(suffixes)
        raise ValueError(f"`{what}` must end in {ends} (the format written), got {path.name}")
    return path
