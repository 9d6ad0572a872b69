"""The conditional area's experiment (what CFG samples, in the density view) at the tiny profile."""

import matplotlib

from jaxdiff import reproduce

matplotlib.use("Agg")


def test_guidance_density_tiny(tmp_path):
    rows = reproduce.load_experiment("guidance_density").main(tmp_path, profile="tiny", key=0)
    by_id = {r["id"].split("/")[1]: r for r in rows}
    assert set(by_id) == {"exact", "not_tilted", "sde_vs_ode", "overshoot"}
    assert all(r["holds"] for r in rows)
    for f in rows[0]["figures"]:
        assert (tmp_path / f).stat().st_size > 10_000
    j = reproduce.judge
    # wrong predictions turn each row to "no":
    # "CFG samples the tilted law": the scale > 1 distances against the scale-1 tolerance
    exact, not_tilted = by_id["exact"], by_id["not_tilted"]
    n = len(exact["measured"])
    assert not j(exact, measured=(not_tilted["measured"] * n)[:n])
    # "CFG is exact at scale 1" judged against the wrong law (the tilted law at scale > 1)
    assert not j(not_tilted, measured=exact["measured"][: len(not_tilted["measured"])])
    # "the SDE and ODE agree at scale > 1"
    sde = by_id["sde_vs_ode"]
    swapped = {"above_1": sde["measured"]["at_most_1"], "at_most_1": sde["measured"]["above_1"]}
    assert not j(sde, measured=swapped)
    # "CFG stops short of the tilt": predicting a mean beyond the measured one
    over = by_id["overshoot"]
    assert not j(over, predicted=[m + 0.1 for m in over["measured"]])
