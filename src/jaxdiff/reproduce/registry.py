"""The experiments of the report, in report order (paper 1, paper 2, then beyond).

To register a new script `experiments/<name>.py`, add `"<name>",` on a line of its own.
"""

EXPERIMENTS: tuple[str, ...] = (
    "support",
    "explicit_solution",
    "memorisation",
    "loss_minimiser",
    "collapse_time",
    "li_yau",
    "lp_stability",
    "concentration",
    "generalisation",
    "stopping_time",
    "stopping_time_score_error",
    "optimise_sampler",
    "guidance_density",
    "flow_equivalence",
)
