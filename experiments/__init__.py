"""The seed papers' claims as runnable experiments, one script per claim.

Contract (shared by every script here; `jaxdiff reproduce` relies on it):

* imports only the public API (`import jaxdiff as jd`, `jd.metrics`, `jd.pde`, `jd.nn`,
  `jd.data`, and the report helpers of `jaxdiff.reproduce`);
* a module-level `PROFILES = {"tiny": {...}, "quick": {...}, "full": {...}}` of sizes: tiny
  for tests (seconds), quick for a laptop CPU (about a minute), full for a GPU;
* `main(out_dir, *, profile="quick", key=0, **sizes) -> list[dict]` writes
  `<out_dir>/<name>.json` and PNG figures and returns rows `{"id", "claim", "predicted",
  "measured", "holds", "figures", "details"}`, `holds` computed from a stated criterion;
* runs stand-alone: `python experiments/<name>.py --out DIR [--profile quick|full]`.

`jaxdiff reproduce` imports this folder as `jaxdiff._experiments` (a wheel ships it there),
so scripts must not import each other by the name `experiments`.
"""
