"""The report framework of `jaxdiff reproduce`: harness, criteria, writer, scoped settings.

The report is checked with stand-in experiments (fast, and one of them raises on purpose);
the real experiments run in tests/test_experiments_*.py.
"""

import json
import types

import jax
import matplotlib
import numpy as np
import pytest

from jaxdiff import cli, reproduce
from jaxdiff.reproduce import harness


def _fake_module(name, *, fail=False, holds=True):
    def main(out_dir, *, profile="quick", key=0):
        import matplotlib.pyplot as plt

        if fail:
            raise RuntimeError("deliberate failure")
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, 1])
        reproduce.save_figure(fig, out_dir, f"{name}.png", caption=f"A line [for {name}]")
        rows = [
            reproduce.make_row(
                f"{name}_a",
                "a claim | with a bar",
                1.0,
                np.float64(1.05 if holds else 1.5),
                figures=[f"{name}.png"],
                details={"x": np.arange(3)},
                criterion=reproduce.ratio(0.1),
            )
        ]
        reproduce.write_json(out_dir, name, rows)
        return rows

    return types.SimpleNamespace(main=main, __doc__=f"Stand-in {name}.\n\nMore text.")


@pytest.fixture
def fake_experiments(monkeypatch):
    names = reproduce.EXPERIMENTS[:3]
    modules = {
        names[0]: _fake_module(names[0]),
        names[1]: _fake_module(names[1], fail=True),
        names[2]: _fake_module(names[2], holds=False),
    }
    monkeypatch.setattr(harness, "load_experiment", lambda name: modules[name])
    return names


def test_report_rows_errors_meta_and_files(tmp_path, fake_experiments, capsys):
    a, bad, no = fake_experiments
    rc = cli.main(["reproduce", "--profile", "tiny", "--out", str(tmp_path), "--only", f"{no},{a},{bad}"])
    assert rc == 1  # an experiment raised: the report is still written, the exit code says so
    report = json.loads((tmp_path / "report.json").read_text())
    meta, rows = report["meta"], report["rows"]
    assert meta["profile"] == "tiny" and meta["experiments"] == [a, bad, no]
    assert meta["jax_version"] == jax.__version__ and meta["backend"] == jax.default_backend()
    assert {"jaxdiff_version", "git_commit", "device", "wall_s"} <= set(meta)
    # registry order, not the order of --only
    assert [r["experiment"] for r in rows] == [a, bad, no]
    assert rows[0]["holds"] is True and rows[2]["holds"] is False
    assert rows[0]["measured"] == 1.05 and rows[0]["details"]["x"] == [0, 1, 2]
    assert rows[0]["criterion"]["kind"] == "ratio" and rows[0]["criterion"]["tol"] == 0.1
    err = rows[1]
    assert err["holds"] is False and "RuntimeError: deliberate failure" in err["measured"]
    assert "Traceback" in err["error"] and err["claim"] == f"Stand-in {bad}."
    for r in rows:
        assert {"id", "claim", "predicted", "measured", "holds", "time_s"} <= set(r) and r["time_s"] >= 0
    md = (tmp_path / "report.md").read_text()
    assert "| experiment | claim | criterion (tolerance) | predicted | measured | holds | time (s) |" in md
    assert "\\|measured / predicted - 1\\| <= 0.1" in md  # the criterion next to the numbers
    assert "a claim \\| with a bar" in md  # a bar inside a cell is escaped
    assert md.count("| yes |") == 1 and md.count("| **no** |") == 1 and md.count("**ERROR**") == 1
    # the caption is under the figure and is its alt text (brackets made safe)
    assert f"![A line (for {a})]({a}.png)" in md and f"*A line [for {a}]*" in md
    assert "deliberate failure" in md and "**1 of 3 claims hold**" in md
    assert f"JAX {jax.__version__}" in md and "commit `" in md
    assert "1/3 claims hold" in capsys.readouterr().out


def test_report_all_hold_returns_zero(tmp_path, fake_experiments):
    a = fake_experiments[0]
    assert reproduce.run(profile="tiny", out=str(tmp_path), only=[a], progress=False) == 0
    assert json.loads((tmp_path / "report.json").read_text())["rows"][0]["holds"] is True


def test_run_leaves_global_settings_as_found(tmp_path, fake_experiments):
    """`run` switches on double precision and the Agg backend for its own duration only."""
    import matplotlib.pyplot as plt

    a = fake_experiments[0]
    before_x64 = jax.config.read("jax_enable_x64")
    plt.switch_backend("svg")  # a non-default backend the run must give back
    try:
        jax.config.update("jax_enable_x64", False)
        seen = {}

        def loader(name):
            module = _fake_module(name)
            main = module.main

            def spy(out_dir, **kw):
                seen["x64"] = jax.config.read("jax_enable_x64")
                seen["backend"] = matplotlib.get_backend().lower()
                return main(out_dir, **kw)

            return types.SimpleNamespace(main=spy, __doc__=module.__doc__)

        assert reproduce.run(profile="tiny", out=str(tmp_path), only=[a], progress=False, loader=loader) == 0
        assert seen == {"x64": True, "backend": "agg"}
        assert jax.config.read("jax_enable_x64") is False
        assert matplotlib.get_backend() == "svg"
    finally:
        jax.config.update("jax_enable_x64", before_x64)
        plt.switch_backend("agg")


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["reproduce", "--only", "nonsense", "--out", str(tmp_path)])
    assert e.value.code == 2 and "`only` must name experiments" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--profile", "huge"])
    with pytest.raises(ValueError, match="`profile`"):
        reproduce.run(profile="huge", out=str(tmp_path))
    with pytest.raises(ValueError, match="`name`"):
        reproduce.load_experiment("nonsense")
    with pytest.raises(ValueError, match="unknown size"):
        reproduce.profile_sizes({"tiny": {"n": 1}}, "tiny", {"m": 2})
    with pytest.raises(ValueError, match="criterion"):
        reproduce.make_row("x", "claim", 1.0, 1.0)


def test_registry_finds_every_script():
    folder = reproduce.experiments_dir()
    assert (folder / "__init__.py").is_file()
    for name in reproduce.EXPERIMENTS:
        assert (folder / f"{name}.py").is_file(), name
    module = reproduce.load_experiment("collapse_time")
    assert module.__name__ == "jaxdiff._experiments.collapse_time"


def test_criteria_hold_and_fail():
    j = reproduce.judge
    assert j(reproduce.ratio(0.1), [1.0, 2.0], [1.05, 1.9]) and not j(
        reproduce.ratio(0.1), [1.0, 2.0], [1.05, 2.3]
    )
    assert j(reproduce.close(0.01), 0.5, 0.505) and not j(reproduce.close(0.01), 0.5, 0.52)
    assert j(reproduce.at_most(0.0), [1.0, 1.0], [0.3, 1.0]) and not j(reproduce.at_most(0.0), 1.0, 1.01)
    assert j(reproduce.at_least(0.1), 1.0, 0.95) and not j(reproduce.at_least(0.0), 1.0, 0.95)
    assert not j(reproduce.ratio(0.1), 1.0, float("nan")) and not j(reproduce.at_most(), 1.0, "nan")
    assert j(reproduce.chi_square(0.01), [0.25, 0.25, 0.5], [25, 25, 50])
    assert not j(reproduce.chi_square(0.01), [1 / 3, 1 / 3, 1 / 3], [100, 100, 400])
    both = reproduce.all_of(a=reproduce.ratio(0.1), b=reproduce.at_most())
    row = reproduce.make_row("r", "claim", {"a": 1.0, "b": 2.0}, {"a": 1.02, "b": 1.5}, criterion=both)
    assert row["holds"] and row["details"]["criterion"] == both["text"]
    # the hook: the same measurement judged against a wrong prediction
    assert not j(row, predicted={"a": 1.2, "b": 2.0}) and not j(row, predicted={"a": 1.0, "b": 1.4})
    # an explicit `holds` is combined with the criterion (both must be true)
    assert not reproduce.make_row("r", "c", 1.0, 1.0, False, criterion=reproduce.ratio(0.1))["holds"]


def test_statistics_helpers():
    # counts equal to expectations: statistic 0, p = 1; a gross misfit: p tiny
    stat, p, dof = reproduce.chi_square_test([25, 25, 50], [0.25, 0.25, 0.5])
    assert stat == 0 and p == pytest.approx(1.0) and dof == 2
    # chi2(2) survival function is exp(-x/2): check the p-value against it
    stat, p, dof = reproduce.chi_square_test([30, 20, 50], [0.25, 0.25, 0.5])
    assert dof == 2 and stat == pytest.approx(2.0) and p == pytest.approx(np.exp(-1.0))
    # expected counts 192, 4, 2, 2: the three small cells are pooled into one of 8
    stat, _, dof = reproduce.chi_square_test([190, 6, 2, 2], [0.96, 0.02, 0.01, 0.01])
    assert dof == 1 and stat == pytest.approx(2**2 / 192 + 2**2 / 8)
    p_fit, c_fit = reproduce.fit_power_law([1, 2, 4, 8], [3.0, 1.5, 0.75, 0.375])
    assert p_fit == pytest.approx(-1.0) and c_fit == pytest.approx(3.0)
    # Richardson: f(h) = 2 + 3 h^2 at h = 0.2, 0.1 extrapolates to 2 exactly
    value, err = reproduce.richardson([2 + 3 * 0.04, 2 + 3 * 0.01], [0.2, 0.1], 2)
    assert value == pytest.approx(2.0) and err == pytest.approx(0.03)
    assert reproduce.spearman([1, 2, 3], [10, 30, 20]) == pytest.approx(0.5)
