"""The learning area's experiment (gradients through a sampler) at the tiny profile."""

import json

import matplotlib

from jaxdiff import reproduce

matplotlib.use("Agg")


def test_optimise_sampler_tiny(tmp_path):
    rows = reproduce.load_experiment("optimise_sampler").main(tmp_path, profile="tiny", key=0)
    by_id = {r["id"]: r for r in rows}
    descent, grid = by_id["optimise_sampler/descent"], by_id["optimise_sampler/grid"]
    d = descent["details"]
    # the direction of the result: descent lowers the held-out error, clearly
    assert d["error_after"] < 0.9 * d["error_defaults"]
    assert descent["holds"]
    # and lands near the best point of the independent grid search
    assert grid["measured"] < 1.25
    for r in rows:
        assert set(r) >= {"id", "claim", "predicted", "measured", "holds", "figures", "details"}
        assert r["details"]["criterion"]
        for f in r["figures"]:
            assert (tmp_path / f).stat().st_size > 10_000
    saved = json.loads((tmp_path / "optimise_sampler.json").read_text())
    assert [r["id"] for r in saved["rows"]] == [r["id"] for r in rows]
