"""The P1 experiments (and the collapse time) at the tiny profile: each one runs once (one
test per experiment, so `pytest -n 2` never runs one twice), writes its JSON and figures,
and its measurement points the way the theory says.

The checks read the numbers in each experiment's JSON, not only its `holds` verdict, and
compare them with the predictions at the tolerances stated here (set for the tiny sizes).
"""

import json

import numpy as np

from jaxdiff import reproduce


def _run(name, out):
    """Run one experiment at the tiny profile into `out`; check its JSON and figures."""
    module = reproduce.load_experiment(name)
    assert set(module.PROFILES) == {"tiny", "quick", "full"}
    assert set(module.PROFILES["tiny"]) == set(module.PROFILES["quick"]) == set(module.PROFILES["full"])
    rows = {r["id"]: r for r in module.main(out, profile="tiny", key=0)}
    saved = json.loads((out / f"{name}.json").read_text())
    assert saved["experiment"] == name
    assert [r["id"] for r in saved["rows"]] == list(rows)
    for r in rows.values():
        assert set(r) >= {"id", "claim", "predicted", "measured", "holds", "figures", "details"}
        assert isinstance(r["holds"], bool) and r["details"].get("criterion")
        assert r["figures"], f"{r['id']} has no figure"
        for fig in r["figures"]:
            assert (out / fig).stat().st_size > 5000, f"{fig} is missing or empty"
    return rows


def _fails(row, predicted):
    """The hook: the row's own measurement judged against a wrong prediction must say no."""
    return not reproduce.judge(row, predicted=predicted)


def test_support(tmp_path):
    rows = _run("support", tmp_path)
    assert all(r["holds"] for r in rows.values())
    landing = rows["support_landing"]
    for law, pi in landing["predicted"].items():
        assert (
            abs(sum(pi) - 1) < 1e-9
            and sum(landing["measured"][law]) == landing["details"]["config"]["n_samples"]
        )
    # wrong predictions: landing uniformly on the points (as from rho_T); pi with its largest
    # and smallest entries swapped
    uniform = {k: [1 / len(v)] * len(v) for k, v in landing["predicted"].items()}
    assert _fails(landing, uniform)
    swapped = {}
    for k, v in landing["predicted"].items():
        v = list(v)
        i, j = int(np.argmax(v)), int(np.argmin(v))
        v[i], v[j] = v[j], v[i]
        swapped[k] = v
    assert _fails(landing, swapped)
    # continuous data: the law reached from rho_T (h = 1) is the wrong prediction for both
    for name in ("support_continuous_sde", "support_continuous_flow"):
        r = rows[name]
        assert _fails(r, r["details"]["law_reached_from_rho_T"])
        # and nothing lands beyond the support's blur, where the start put mass
        share = r["details"]["share_beyond_support_plus_4_sigma"]
        assert share["sde"] == 0 and share["flow"] == 0 and share["start"] > 0.01


def test_explicit_solution(tmp_path):
    rows = _run("explicit_solution", tmp_path)
    paths = rows["explicit_bridge_paths"]["details"]
    assert np.abs(paths["z_mean"]).max() <= 4.5 and np.abs(paths["z_var"]).max() <= 4.5
    assert rows["explicit_ddpm_posterior"]["details"]["max_relative_difference"] < 1e-9
    exact = rows["explicit_ddpm_exact"]["details"]
    assert np.abs(exact["z_mean"]).max() <= 4.5 and np.abs(exact["z_var"]).max() <= 4.5
    assert abs(rows["explicit_ddim_order"]["measured"] + 1) <= 0.2
    assert abs(rows["explicit_ddpm_order"]["measured"] + 1) <= 0.25
    errs = rows["explicit_ddim_order"]["details"]["errors"]
    assert all(b < a for a, b in zip(errs, errs[1:]))  # more steps, smaller error


def test_memorisation(tmp_path):
    rows = _run("memorisation", tmp_path)
    cases = rows["memorisation_copies"]["details"]["cases"]
    for c in cases:
        cf = np.array(c["copy_fraction_reverse"])
        assert cf[0] >= 0.9, c  # t_end -> 0: copies
        assert cf[-1] <= 0.5, c  # t_end = 1: mostly not copies
        # the reverse samples follow the KDE's copy curve (4 binomial SE + 0.03)
        kde = np.array(c["copy_fraction_kde"])
        n = rows["memorisation_copies"]["details"]["n_samples"]
        se = np.sqrt(np.clip(kde * (1 - kde), 1 / n, None) / n)
        assert np.all(np.abs(cf - kde) <= 4 * np.sqrt(2) * se + 0.03), c
        assert min(c["p_mmd"], c["p_log_kde"]) > 1e-3, c
    assert all(r["holds"] for r in rows.values())


def test_loss_minimiser(tmp_path):
    rows = _run("loss_minimiser", tmp_path)
    g = rows["loss_floor_gaussian"]["details"]
    assert abs(g["loss"] - g["floor"]) <= 4 * g["se"]
    # the closed-form floor, recomputed by quadrature of d c alpha^2 / (alpha^2 c + sigma^2)
    t = np.linspace(g["t_min"], g["T"], 200_001)
    a2 = np.exp(-2 * t)
    integrand = g["d"] * g["c"] * a2 / (a2 * g["c"] + 1 - a2)
    quad = np.sum((integrand[1:] + integrand[:-1]) / 2 * np.diff(t)) / (g["T"] - g["t_min"])
    assert abs(quad - g["floor"]) < 1e-8
    net = rows["loss_network_from_above"]["details"]
    excess, se = np.array(net["excess"]), np.array(net["excess_se"])
    assert np.all(excess >= -3 * se) and excess[-1] < 0.5 * excess[0]
    # the excess is the weighted score error (independent draws), as the decomposition says
    fisher, fisher_se = np.array(net["fisher"]), np.array(net["fisher_se"])
    assert np.all(np.abs(excess - fisher) <= 4 * np.hypot(se, fisher_se))
    assert rows["loss_unique_minimiser"]["holds"] and rows["loss_floor_point_cloud"]["holds"]


def test_collapse_time(tmp_path):
    rows = _run("collapse_time", tmp_path)
    assert all(r["holds"] for r in rows.values())
    trend = rows["collapse_time_trend"]
    d, n = np.array(trend["details"]["dims"], float), np.array(trend["details"]["N"], float)
    # t_C recomputed here from Biroli et al.'s formula
    t_c = 0.5 * np.log1p(1 / (n ** (2 / d) - 1))
    np.testing.assert_allclose(trend["predicted"], t_c, rtol=1e-12)
    # wrong formulas and constants fail: 0.5 N^(-2/d), no "-1", 20% off either way
    for wrong in (0.5 * n ** (-2 / d), 0.5 * np.log1p(n ** (-2 / d)), 1.2 * t_c, 0.8 * t_c):
        assert _fails(trend, list(wrong))
    paths = rows["collapse_time_paths"]
    assert _fails(paths, 1.2 * paths["predicted"]) and _fails(paths, 0.8 * paths["predicted"])
    assert _fails(paths, 0.5 * n[-1] ** (-2 / d[-1]))
    spec = rows["speciation_time"]
    lam = np.array(spec["details"]["Lambda"])
    np.testing.assert_allclose(spec["predicted"], 0.5 * np.log(lam), rtol=1e-12)
    for wrong in (np.log(lam), 1.2 * 0.5 * np.log(lam), 0.8 * 0.5 * np.log(lam), 0.5 * np.log(lam / 2)):
        assert _fails(spec, list(wrong))
    # speciation comes before collapse in the reverse dynamics: at a larger diffusion time
    assert min(spec["measured"][1:]) > max(trend["measured"])
