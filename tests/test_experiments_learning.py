"""The learning area's experiment (gradients through a sampler) at the tiny profile."""

import json

from jaxdiff import reproduce


def test_optimise_sampler_tiny(tmp_path):
    rows = reproduce.load_experiment("optimise_sampler").main(tmp_path, profile="tiny", key=0)
    by_id = {r["id"]: r for r in rows}
    descent, grid = by_id["optimise_sampler/descent"], by_id["optimise_sampler/grid"]
    assert descent["holds"]
    # At this profile the descent (15 steps on 128 draws) can stop in a local optimum above the
    # grid search's best point (which lies at 1/rho = 0, the log-SNR grid); at the quick profile
    # it is within 10% of it. Here the row must at least report what its own criterion says of
    # its measurement.
    assert grid["holds"] == reproduce.judge(grid, predicted=grid["predicted"])
    # the direction of the result: descent lowers the held-out error, clearly
    assert descent["measured"] < 0.9 * descent["predicted"]
    # wrong predictions fail: descent halving the error; a grid optimum 20% lower
    assert not reproduce.judge(descent, predicted=0.5 * descent["measured"])
    assert not reproduce.judge(grid, predicted=0.8 * grid["predicted"])
    for r in rows:
        assert set(r) >= {"id", "claim", "predicted", "measured", "holds", "figures", "details", "criterion"}
        for f in r["figures"]:
            assert (tmp_path / f).stat().st_size > 10_000
    saved = json.loads((tmp_path / "optimise_sampler.json").read_text())
    assert [r["id"] for r in saved["rows"]] == [r["id"] for r in rows]
