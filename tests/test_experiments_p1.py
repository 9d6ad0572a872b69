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


def test_support(tmp_path):
    rows = _run("support", tmp_path)
    contain, landing = rows["support_containment"], rows["support_landing"]
    laws = contain["details"]["initial_laws"]
    # every landing point within the Gaussian tail radius of a data point; the start was not
    assert all(r["max_distance"] <= contain["details"]["radius"] for r in laws)
    assert all(r["share_of_initial_within_radius"] < 0.5 for r in laws)
    # chi-square: consistent with pi_i, inconsistent with the uniform 1/N
    assert all(r["p_value"] > 0.005 for r in laws)
    assert all(r["p_uniform"] < 1e-3 for r in laws)
    for r in laws:
        assert abs(sum(r["pi"]) - 1) < 1e-9 and sum(r["counts"]) == landing["details"]["config"]["n_samples"]
    assert contain["holds"] and landing["holds"]


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
    cases = rows["collapse_time_trend"]["details"]["cases"]
    for c in cases:
        # t_C recomputed here from Biroli et al.'s formula (s = 1)
        t_c = 0.5 * np.log1p(1 / (c["N"] ** (2 / c["d"]) - 1))
        assert abs(t_c - c["t_C"]) < 1e-12
        assert 0.5 <= c["t_star"] / t_c <= 2.0, c
    # more points collapse later (smaller t*) at fixed d
    for d in {c["d"] for c in cases}:
        ts = [c["t_star"] for c in sorted(cases, key=lambda c: c["N"]) if c["d"] == d]
        assert all(b < a for a, b in zip(ts, ts[1:]))
    ratio = np.array(rows["collapse_time_paths"]["details"]["ratio"])
    assert np.all((ratio >= 0.5) & (ratio <= 2.0))
