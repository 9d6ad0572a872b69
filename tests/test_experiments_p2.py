"""The P2 experiments (Li–Yau, L^p stability, concentration, generalisation) at the "tiny"
profile: each runs once per module (a fixture), writes its JSON and PNGs, and its measured
numbers point the way the theory says, within the tolerances stated below.

These check directions at a size of seconds; the experiments' own `holds` criteria (in their
JSON) are what the report uses at the quick and full sizes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxdiff.reproduce import judge, load_experiment


def _run(name, tmp_path_factory):
    out = tmp_path_factory.mktemp(name)
    rows = load_experiment(name).main(out, profile="tiny", key=0)
    return out, rows, json.loads((out / f"{name}.json").read_text())


def _by_id(rows):
    return {r["id"]: r for r in rows}


def _check_files(out, rows, name):
    assert (out / f"{name}.json").is_file()
    figures = {f for r in rows for f in r["figures"]}
    assert figures, "every claim needs a figure"
    for f in figures:
        path = out / f
        assert path.is_file() and path.stat().st_size > 10_000, f"missing or empty figure {f}"
    for r in rows:
        assert set(r) >= {"id", "claim", "predicted", "measured", "holds", "figures", "details"}


@pytest.fixture(scope="module")
def li_yau(tmp_path_factory):
    return _run("li_yau", tmp_path_factory)


@pytest.fixture(scope="module")
def lp_stability(tmp_path_factory):
    return _run("lp_stability", tmp_path_factory)


@pytest.fixture(scope="module")
def concentration(tmp_path_factory):
    return _run("concentration", tmp_path_factory)


@pytest.fixture(scope="module")
def generalisation(tmp_path_factory):
    return _run("generalisation", tmp_path_factory)


def test_li_yau(li_yau):
    out, rows, data = li_yau
    _check_files(out, rows, "li_yau")
    r = _by_id(rows)
    assert all(row["holds"] for row in rows)
    pw = r["li_yau_heat_pointwise"]
    # sharpness on non-mixture starts: a bound with its constant 20% smaller (q >= 0.2) fails,
    # and so it does for the OU analogue and on the grid
    assert _fails(pw, indicators=[0.2, 0.2])
    assert pw["measured"]["indicators"][0] < 0.05
    assert _fails(r["li_yau_ou"], value=[0.2] * len(r["li_yau_ou"]["predicted"]))
    assert _fails(r["li_yau_grid"], value=[0.2] * len(r["li_yau_grid"]["predicted"]))
    # wrong formulas: the bump's q = eps^2/(sigma^2 + eps^2) off by 20%; de Bruijn off by 20%
    eq = r["li_yau_equality"]
    assert _fails(eq, bumps=_scaled(eq["predicted"]["bumps"], 1.2))
    db = r["de_bruijn"]
    assert _fails(db, quadrature=_scaled(db["predicted"]["quadrature"], 1.2))
    assert _fails(db, grid=_scaled(db["predicted"]["grid"], 0.8))


def _fails(row, **wrong):
    """The hook: the row's own measurement judged against a wrong prediction (some parts
    replaced) must say no."""
    predicted = row["predicted"]
    if isinstance(predicted, dict):
        predicted = {**predicted, **wrong}
    else:
        predicted = wrong["value"]
    return not judge(row, predicted=predicted)


def _scaled(values, factor):
    return list(np.asarray(values, float) * factor)


def test_lp_stability(lp_stability):
    out, rows, _ = lp_stability
    _check_files(out, rows, "lp_stability")
    r = _by_id(rows)
    assert all(row["holds"] for row in rows)
    # the ODE's growth is sharp for Dirac data: exponent (d/2)(1 - 1/p), d = 1, within 10%
    exps = r["lp_ode_bound"]["details"]["fitted_exponents"]
    for p, want in (("2", 0.25), ("4", 0.375), ("inf", 0.5)):
        assert abs(exps[f"d=1,p={p}"] / want - 1) <= 0.1
    # and the SDE's growth exceeds the ODE bound (its larger exponent is needed)
    assert r["lp_sde_bound"]["details"]["max_sde_ratio_over_ode_bound"] > 1.2
    # wrong predictions fail: constants 20% off, exponents 10% off, the ODE exponent for the SDE
    eq = r["lp_ode_bound"]["predicted"]["Dirac: equality"]
    for wrong in (
        _scaled(eq, 1.2),
        _scaled(eq, 0.8),
        list(np.asarray(eq) ** 1.1),
        list(np.asarray(eq) ** (1 / 1.1)),
    ):
        assert _fails(r["lp_ode_bound"], **{"Dirac: equality": wrong})
    sde = r["lp_sde_bound"]["predicted"]
    for f in (1.2, 0.8):
        assert _fails(
            r["lp_sde_bound"], **{"Dirac: Brownian bridge": _scaled(sde["Dirac: Brownian bridge"], f)}
        )
    assert _fails(r["lp_sde_bound"], bound=list(np.sqrt(sde["bound"])))
    for name in ("kl_contraction_sde", "relative_entropy_ode"):
        closed = r[name]["predicted"]["Dirac: closed form"]
        for f in (1.2, 0.8):
            assert _fails(r[name], **{"Dirac: closed form": _scaled(closed, f)})
    assert _fails(
        r["relative_entropy_ode"], constant=_scaled(r["relative_entropy_ode"]["predicted"]["constant"], 1.2)
    )
    # a KL that grew along the SDE would fail the monotone part
    mono = r["kl_contraction_sde"]["measured"]["non-increasing"]
    assert _fails(r["kl_contraction_sde"], **{"non-increasing": _scaled(mono, 0.7)})


def test_concentration(concentration):
    out, rows, _ = concentration
    _check_files(out, rows, "concentration")
    r = _by_id(rows)
    assert all(row["holds"] for row in rows)
    rate = r["concentration_rate"]
    # wrong predictions: exponent off by 0.1, prefactor 20% low
    for e in (0.9, 1.1):
        assert _fails(rate, exponent=[e, e])
    assert _fails(rate, prefactor=_scaled(rate["predicted"]["prefactor"], 0.8))
    wrong = r["concentration_wrong_init"]
    closed = wrong["predicted"]["closed form"]
    assert _fails(wrong, **{"closed form": _scaled(closed, 1.2)})
    assert _fails(wrong, **{"closed form": _scaled(closed, 0.8)})
    # a bound without its entropy term is too small somewhere: the row sees it
    slack = wrong["details"]["bound_slack_min_over_t"]
    assert min(slack.values()) > 1.0
    assert _fails(wrong, bound=_scaled(wrong["predicted"]["bound"], 1 / min(slack.values()) * 0.8))


def test_generalisation(generalisation):
    out, rows, _ = generalisation
    _check_files(out, rows, "generalisation")
    r = _by_id(rows)
    # the frontier row is a result at this size (networks trained for a few hundred steps may
    # not beat the exact-score family yet); its verdict must be its criterion's
    assert all(row["holds"] for row in rows if row["id"] != "network_generalises")
    mem = r["exact_score_memorises"]
    # a copy fraction 20% above the measured one (or more than all samples) cannot be met
    assert _fails(mem, **{"copy fraction": _scaled(mem["measured"]["copy fraction"], 1.2)})
    # the network beyond the exact-score frontier: a frontier 20% closer to the true law than the
    # measured one, or the network's own distance reduced by 20%, fails
    gen = r["network_generalises"]
    assert gen["holds"] == all(m <= p for p, m in zip(gen["predicted"], gen["measured"]))
    assert _fails(gen, value=_scaled(gen["measured"], 0.8))
    train = r["training_approaches_memorisation"]
    assert _fails(train, value=_scaled(train["measured"], 0.8))


@pytest.fixture(scope="module")
def stopping_time(tmp_path_factory):
    return _run("stopping_time", tmp_path_factory)


def test_stopping_time(stopping_time):
    out, rows, _ = stopping_time
    _check_files(out, rows, "stopping_time")
    r = _by_id(rows)
    assert all(row["holds"] for row in rows)
    stop = r["stopping_time_guidance"]
    best = np.array(stop["predicted"]["best stop"])
    ns = np.array(stop["details"]["ns"], float)
    # wrong formulas: the plain KDE rule (Silverman's bandwidth, t = h^2 / 2, ignoring the OU
    # shrinkage), and the prediction off by a factor 1.5 either way
    silverman = 0.5 * (1.06 * np.sqrt(stop["details"]["true_variance"]) * ns ** (-0.2)) ** 2
    for wrong in (silverman, 1.5 * best, best / 1.5):
        assert _fails(stop, **{"best stop": list(wrong)})
    kl = r["ou_entropy_decay"]
    # the decay rate off by 0.1 in the exponent fails on the equality case
    t = np.array(kl["details"]["times"])
    k0 = kl["details"]["kl_0"][kl["details"]["laws"][0]]
    assert _fails(kl, equality=list(np.exp(-2.1 * t) * k0))
    assert _fails(kl, bound=_scaled(kl["predicted"]["bound"], 0.8))


@pytest.fixture(scope="module")
def stopping_time_score_error(tmp_path_factory):
    return _run("stopping_time_score_error", tmp_path_factory)


def test_stopping_time_score_error(stopping_time_score_error):
    out, rows, _ = stopping_time_score_error
    _check_files(out, rows, "stopping_time_score_error")
    (row,) = rows
    assert row["holds"]
    cases = row["details"]["cases"]
    # the score error is a real one: zero for the exact score, growing with h
    for n in row["details"]["ns"]:
        errors = [c["score_error"] for c in cases if c["n"] == n]
        assert errors[0] < 1e-9 and np.all(np.diff(errors) > 0) and errors[-1] > 0.2
    pred = row["predicted"]
    # a best stop that ignores the score error: no shift, and the exact score's stop above h_c
    exact = {c["n"]: c["predicted"] for c in cases if c["fraction"] == 0}
    assert _fails(row, **{"shift by the score error": [0.0] * len(pred["shift by the score error"])})
    assert _fails(row, **{"last stop": [exact[c["n"]] for c in cases if not c["below_threshold"]]})
    # the shift and the threshold off by 20% either way; the exact score's stop (a flat
    # minimum, as in the stopping_time row) off by a factor 1.5
    for part, factors in (
        ("shift by the score error", (1.2, 0.8)),
        ("threshold", (1.2, 0.8)),
        ("best stop, exact score", (1.5, 1 / 1.5)),
    ):
        for f in factors:
            assert _fails(row, **{part: _scaled(pred[part], f)}), (part, f)


def test_stopping_time_closed_forms():
    module = load_experiment("stopping_time_score_error")
    # the slope of the closed-form error at t = 0 against a central difference of the error
    for n, h in ((32, 0.1), (128, 0.25), (512, 0.4)):
        eps = 1e-6
        fd = (module.mise(2 * eps, n, h) - module.mise(0.0, n, h)) / (2 * eps)
        fd2 = (module.mise(eps, n, h) - module.mise(0.0, n, h)) / eps
        assert module.mise_slope_at_zero(n, h) == pytest.approx(2 * fd2 - fd, rel=1e-5)
    # with h = 0 the error is the exact score's; above the threshold the best stop is the last
    # one, below it later than the last
    n = 128
    h_c = module.predicted_threshold(n)
    assert module.mise_slope_at_zero(n, h_c) == pytest.approx(0.0, abs=1e-9)
    lo, hi = 1e-4, 0.2
    assert module.predicted_stop(n, 1.05 * h_c, lo, hi) == pytest.approx(lo)
    assert module.predicted_stop(n, 0.95 * h_c, lo, hi) > 2 * lo


@pytest.mark.parametrize(
    "name",
    [
        "li_yau",
        "lp_stability",
        "concentration",
        "generalisation",
        "stopping_time",
        "stopping_time_score_error",
    ],
)
def test_sizes_are_checked(name, tmp_path):
    module = load_experiment(name)
    assert set(module.PROFILES) == {"tiny", "quick", "full"}
    with pytest.raises(ValueError, match="profile"):
        module.main(tmp_path, profile="huge")
    with pytest.raises(ValueError, match="unknown size"):
        module.main(tmp_path, profile="tiny", no_such_size=3)
