r"""`jaxdiff reproduce`: run the seed papers' experiments and write a report.

Each claim is one script in the `experiments` package (the claims, their predictions and
criteria are written up in the project's `docs/theory.md`; how to run and read the report in
`docs/reproduce.md`). A script exposes

    PROFILES = {"tiny": {...}, "quick": {...}, "full": {...}}
    def main(out_dir, *, profile="quick", key=0, **sizes) -> list[dict]

and writes `<out_dir>/<name>.json` plus PNG figures. Each row it returns holds `id`,
`claim`, `predicted`, `measured`, `criterion`, `holds` (the criterion's verdict),
`figures` and `details` (see `make_row` and the criteria of `jaxdiff.reproduce.rows`).

The package's parts: `registry` (the list of experiments; registering one is one line),
`harness` (loading and running the scripts, the command line of one script), `rows` (rows
and criteria, `judge`), `stats` (tests and fits), `figures` (saving with captions), `writer`
(metadata, `report.json`, `report.md`) and `settings` (double precision and the plotting
backend, switched on for a run and restored after it).
"""

from .figures import read_caption as read_caption, save_figure as save_figure
from .harness import (
    PROFILE_NAMES as PROFILE_NAMES,
    experiments_dir as experiments_dir,
    load_experiment as load_experiment,
    profile_sizes as profile_sizes,
    run as run,
    run_experiments as run_experiments,
    standalone as standalone,
)
from .registry import EXPERIMENTS as EXPERIMENTS
from .rows import (
    all_of as all_of,
    at_least as at_least,
    at_most as at_most,
    chi_square as chi_square,
    close as close,
    converging as converging,
    judge as judge,
    make_row as make_row,
    ratio as ratio,
    write_json as write_json,
)
from .settings import report_settings as report_settings
from .stats import (
    chi_square_test as chi_square_test,
    fit_power_law as fit_power_law,
    richardson as richardson,
    spearman as spearman,
)
from .writer import run_metadata as run_metadata, write_report as write_report
