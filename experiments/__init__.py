"""The seed papers' claims as runnable experiments, one script per claim.

Contract (shared by every script here; `jaxdiff reproduce` relies on it):

* imports only the public API (`import jaxdiff as jd`, `jd.metrics`, `jd.pde`, `jd.nn`,
  `jd.data`, and the report helpers of `jaxdiff.reproduce`);
* a module-level `PROFILES = {"tiny": {...}, "quick": {...}, "full": {...}}` of sizes: tiny
  for tests (seconds), quick for a laptop CPU (about a minute), full for a GPU;
* `main(out_dir, *, profile="quick", key=0, **sizes) -> list[dict]` writes
  `<out_dir>/<name>.json` and PNG figures (`save_figure(..., caption=...)`) and returns rows
  built by `make_row(..., criterion=...)`: numeric `predicted` and `measured`, and a
  criterion (`ratio`, `close`, `at_most`, `at_least`, `chi_square`, `all_of`) whose verdict
  is `holds`, so that `judge(row, predicted=wrong)` shows the row able to fail;
* scripts that train networks pass every training setting explicitly (the library's
  defaults may change);
* runs stand-alone: `python experiments/<name>.py --out DIR [--profile quick|full]`.

Register a new script with one line in `jaxdiff/reproduce/registry.py`. `jaxdiff reproduce`
imports this folder as `jaxdiff._experiments` (a wheel ships it there), so scripts must not
import each other by the name `experiments`. The claims and criteria are written up in
`docs/theory.md`.
"""
