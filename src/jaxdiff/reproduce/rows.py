"""Report rows and their criteria.

A row states a claim, a prediction, a measurement and a criterion; `holds` is the criterion
applied to the two numbers. Because the criterion is data (a small dict), anyone can ask what
the verdict would have been for a different prediction: `judge(row, predicted=wrong)`. That is
the hook through which every row is shown able to fail (a constant off by 20%, an exponent off
by 0.1, a wrong formula must turn it to "no").

Criteria (elementwise over lists; every element must pass; a non-finite number fails):

* `ratio(tol)`: `|measured / predicted - 1| <= tol`;
* `close(tol)`: `|measured - predicted| <= tol`;
* `at_most(tol)`: `measured <= predicted + tol` (an upper bound);
* `at_least(tol)`: `measured >= predicted - tol` (a lower bound);
* `converging(tol)`: over entries ordered by a growing parameter (a dimension), the ratio
  `measured / predicted` tends to 1: `|ratio - 1|` at the last entry is `<= tol` and no
  larger than at the first;
* `chi_square(level)`: counts `measured` against probabilities `predicted`, p-value `> level`;
* `all_of(**parts)`: `predicted` and `measured` are dicts with the same keys, each part
  judged by its own criterion.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .stats import chi_square_test


def _plain(value: Any) -> Any:
    """JSON-ready copy of `value`: arrays become lists, NumPy/JAX scalars become numbers,
    non-finite floats become strings (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (np.ndarray, np.generic)) or type(value).__module__.startswith("jax"):
        return _plain(np.asarray(value).tolist())
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


# --- criteria ---------------------------------------------------------------------------


def _criterion(kind: str, tol, text: str) -> dict:
    # `tol` is one number, or one per entry (e.g. each entry's own grid-refinement error)
    tol = float(tol) if np.ndim(tol) == 0 else [float(t) for t in np.ravel(tol)]
    return {"kind": kind, "tol": tol, "text": text}


def _show(tol) -> str:
    return f"{tol:g}" if np.ndim(tol) == 0 else f"a tolerance per entry (largest {np.max(tol):.3g})"


def ratio(tol, text: str = "") -> dict:
    """`|measured / predicted - 1| <= tol` for every element (`tol` one number or one per
    element, as for `close`, `at_most` and `at_least`)."""
    return _criterion("ratio", tol, text or f"|measured / predicted - 1| <= {_show(tol)}")


def close(tol, text: str = "") -> dict:
    """`|measured - predicted| <= tol` for every element."""
    return _criterion("close", tol, text or f"|measured - predicted| <= {_show(tol)}")


def at_most(tol=0.0, text: str = "") -> dict:
    """`measured <= predicted + tol` for every element (the prediction is an upper bound)."""
    return _criterion("at_most", tol, text or f"measured <= predicted + {_show(tol)}")


def at_least(tol=0.0, text: str = "") -> dict:
    """`measured >= predicted - tol` for every element (the prediction is a lower bound)."""
    return _criterion("at_least", tol, text or f"measured >= predicted - {_show(tol)}")


def converging(tol: float, text: str = "") -> dict:
    """`|measured / predicted - 1|` is `<= tol` at the last entry and no larger than at the
    first (entries ordered by a growing parameter, e.g. the dimension)."""
    return _criterion(
        "converging",
        tol,
        text or f"|measured / predicted - 1| shrinks along the sequence and ends <= {tol:g}",
    )


def chi_square(level: float, text: str = "") -> dict:
    """Pearson's chi-square test of counts `measured` against probabilities `predicted`
    (cells expecting fewer than 5 pooled): the p-value must exceed `level`."""
    return _criterion("chi_square", level, text or f"chi-square p-value > {level:g}")


def all_of(text: str = "", **parts: dict) -> dict:
    """Several criteria at once; `predicted` and `measured` are dicts keyed like `parts`."""
    text = text or "; ".join(f"{k}: {c['text']}" for k, c in parts.items())
    return {"kind": "all", "tol": None, "text": text, "parts": parts}


def _floats(value) -> np.ndarray:
    # JSON keeps non-finite numbers as strings ("nan", "inf"); float() reads them back.
    return np.asarray([float(v) for v in np.ravel(np.asarray(value, dtype=object)).tolist()], float)


def judge(row_or_criterion: dict, predicted=None, measured=None) -> bool:
    """The verdict of a criterion. Given a row, its own criterion, prediction and
    measurement are used unless `predicted` or `measured` replace them (the hook that tests
    a wrong prediction); given a criterion, both numbers must be passed."""
    if "criterion" in row_or_criterion and "kind" not in row_or_criterion:
        row = row_or_criterion
        crit = row["criterion"]
        predicted = row["predicted"] if predicted is None else predicted
        measured = row["measured"] if measured is None else measured
    else:
        crit = row_or_criterion
    if crit is None:
        raise ValueError("`row` has no criterion to judge; build it with make_row(..., criterion=...)")
    kind = crit["kind"]
    if kind == "all":
        return all(judge(c, predicted[k], measured[k]) for k, c in crit["parts"].items())
    if kind == "chi_square":
        counts, probs = np.asarray(measured, float), np.asarray(predicted, float)
        if counts.shape != probs.shape or not np.all(np.isfinite(probs)) or np.any(probs < 0):
            return False
        return bool(chi_square_test(counts, probs)[1] > crit["tol"])
    p, m, tol = _floats(predicted), _floats(measured), np.asarray(crit["tol"], float)
    if p.size != m.size and p.size != 1:
        raise ValueError(f"`predicted` has {p.size} numbers and `measured` {m.size}; they must match")
    if np.any(np.isnan(p)) or not np.all(np.isfinite(m)):
        return False
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "ratio":
            ok = np.abs(m / p - 1.0) <= tol
        elif kind == "close":
            ok = np.abs(m - p) <= tol
        elif kind == "at_most":
            ok = m <= p + tol
        elif kind == "converging":
            gap = np.abs(m / p - 1.0)
            ok = np.array([gap[-1] <= float(tol) and gap[-1] <= gap[0]])
        elif kind == "at_least":
            ok = m >= p - tol
        else:
            raise ValueError(f"unknown criterion kind {kind!r}")
    return bool(np.all(ok))


# --- rows -------------------------------------------------------------------------------


def make_row(
    id: str,
    claim: str,
    predicted,
    measured,
    holds=None,
    figures: Sequence[str] = (),
    details: dict | None = None,
    *,
    criterion: dict | None = None,
) -> dict:
    """One report row. With a `criterion` (preferred), `holds` is the criterion's verdict on
    `predicted` and `measured` (and, when `holds` is also given, both must be true); without
    one, `holds` must come from a criterion stated in `details["criterion"]`."""
    if criterion is None and holds is None:
        raise ValueError("`make_row` needs a `criterion` (or an explicit `holds`); got neither")
    predicted, measured = _plain(predicted), _plain(measured)
    verdict = True if criterion is None else judge(criterion, predicted, measured)
    details = _plain(details or {})
    if criterion is not None:
        details.setdefault("criterion", criterion["text"])
    return {
        "id": str(id),
        "claim": str(claim),
        "predicted": predicted,
        "measured": measured,
        "holds": bool(verdict and (True if holds is None else bool(holds))),
        "criterion": _plain(criterion),
        "figures": [str(f) for f in figures],
        "details": details,
    }


def write_json(out_dir, name: str, rows: list[dict], **extra) -> pathlib.Path:
    """Write `<out_dir>/<name>.json` with the rows and any extra (plain) data."""
    path = pathlib.Path(out_dir) / f"{name}.json"
    path.write_text(json.dumps(_plain({"experiment": name, "rows": rows, **extra}), indent=2))
    return path
