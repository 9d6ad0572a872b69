"""The `jaxdiff` command and the report framework of `jaxdiff reproduce`.

The report is checked with stand-in experiments (fast, and one of them raises on purpose);
the real experiments run in tests/test_experiments_*.py.
"""

import json
import subprocess
import sys
import types

import numpy as np
import pytest

from jaxdiff import cli, reproduce


def _fake_module(name, *, fail=False, holds=True):
    def main(out_dir, *, profile="quick", key=0):
        if fail:
            raise RuntimeError("deliberate failure")
        (out_dir / f"{name}.png").write_bytes(b"png")
        rows = [
            reproduce.make_row(
                f"{name}_a",
                "a claim | with a bar",
                1.0,
                np.float64(1.5),
                holds,
                [f"{name}.png"],
                {"criterion": "test", "x": np.arange(3)},
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
    monkeypatch.setattr(reproduce, "load_experiment", lambda name: modules[name])
    return names


def test_report_rows_errors_and_files(tmp_path, fake_experiments, capsys):
    a, bad, no = fake_experiments
    rc = cli.main(["reproduce", "--profile", "tiny", "--out", str(tmp_path), "--only", f"{no},{a},{bad}"])
    assert rc == 1  # an experiment raised: the report is still written, the exit code says so
    rows = json.loads((tmp_path / "report.json").read_text())
    # registry order, not the order of --only
    assert [r["experiment"] for r in rows] == [a, bad, no]
    assert rows[0]["holds"] is True and rows[2]["holds"] is False
    assert rows[0]["measured"] == 1.5 and rows[0]["details"]["x"] == [0, 1, 2]
    err = rows[1]
    assert err["holds"] is False and "RuntimeError: deliberate failure" in err["measured"]
    assert "Traceback" in err["error"] and err["claim"] == f"Stand-in {bad}."
    for r in rows:
        assert {"id", "claim", "predicted", "measured", "holds", "time_s"} <= set(r) and r["time_s"] >= 0
    md = (tmp_path / "report.md").read_text()
    assert "| experiment | claim | predicted | measured | holds | time (s) |" in md
    assert "a claim \\| with a bar" in md  # a bar inside a cell is escaped
    assert md.count("| yes |") == 1 and md.count("| **no** |") == 1 and md.count("**ERROR**") == 1
    assert f"![{a}_a]({a}.png)" in md and "deliberate failure" in md
    assert "1 of 3 claims hold" in md
    assert "1/3 claims hold" in capsys.readouterr().out


def test_report_all_hold_returns_zero(tmp_path, fake_experiments):
    a = fake_experiments[0]
    assert reproduce.run(profile="tiny", out=str(tmp_path), only=[a], progress=False) == 0
    assert json.loads((tmp_path / "report.json").read_text())[0]["holds"] is True


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


def test_registry_finds_every_p1_script():
    folder = reproduce.experiments_dir()
    assert (folder / "__init__.py").is_file()
    for name in ("support", "explicit_solution", "memorisation", "loss_minimiser", "collapse_time"):
        assert name in reproduce.EXPERIMENTS and (folder / f"{name}.py").is_file()
    module = reproduce.load_experiment("collapse_time")
    assert module.__name__ == "jaxdiff._experiments.collapse_time"


def test_chi_square_and_power_law_helpers():
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


def test_help_lists_verbs():
    out = subprocess.run(
        [sys.executable, "-m", "jaxdiff.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    for verb in ("reproduce", "sample", "train"):
        assert verb in out.stdout


def test_sample_toy_law(tmp_path):
    out = tmp_path / "s.npy"
    assert (
        cli.main(
            [
                "sample",
                "--law",
                "ring8",
                "--n",
                "400",
                "--steps",
                "40",
                "--out",
                str(out),
                "--sampler",
                "exact",
                "--t-end",
                "1e-3",
            ]
        )
        == 0
    )
    x = np.load(out)
    assert x.shape == (400, 2) and np.all(np.isfinite(x))
    assert out.with_suffix(".png").stat().st_size > 5000
    # ring8: eight N(m_k, 0.1^2 I) on the circle of radius 2; at t_end = 1e-3 the distance to
    # the nearest centre is Rayleigh with scale ~0.1 (mean 0.125); allow 6 standard errors
    a = 2 * np.pi * np.arange(8) / 8
    centres = 2 * np.stack([np.cos(a), np.sin(a)], 1)
    dist = np.min(np.linalg.norm(x[:, None] - centres[None], axis=-1), axis=1)
    sd = 0.1 * np.sqrt((4 - np.pi) / 2)
    assert abs(dist.mean() - 0.1 * np.sqrt(np.pi / 2)) < 6 * sd / np.sqrt(400) + 0.01
    # every centre is visited
    assert len(set(np.argmin(np.linalg.norm(x[:, None] - centres[None], axis=-1), axis=1))) == 8


def test_train_then_sample_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(64, 2)) * [2.0, 0.5] + [3.0, 1.0]
    csv = tmp_path / "d.csv"
    np.savetxt(csv, data, delimiter=",", header="a,b", comments="")
    ckpt = tmp_path / "m.ckpt"
    assert (
        cli.main(
            [
                "train",
                str(csv),
                "--out",
                str(ckpt),
                "--steps",
                "20",
                "--width",
                "8",
                "--depth",
                "0",
                "--batch-size",
                "16",
            ]
        )
        == 0
    )
    score, meta = cli.load_score(ckpt)
    # the standardisation stored is the data's own mean and overall spread
    np.testing.assert_allclose(meta["shift"], data.mean(0), rtol=1e-12)
    assert meta["scale"] == pytest.approx((data - data.mean(0)).std(), rel=1e-12)
    assert meta["dim"] == 2 and score.model.dim == 2
    out = tmp_path / "n.npy"
    assert (
        cli.main(
            [
                "sample",
                "--checkpoint",
                str(ckpt),
                "--n",
                "50",
                "--steps",
                "10",
                "--out",
                str(out),
                "--sampler",
                "ddpm",
            ]
        )
        == 0
    )
    x = np.load(out)
    assert x.shape == (50, 2) and np.all(np.isfinite(x))


def test_bad_files(tmp_path, capsys):
    bad = tmp_path / "d.txt"
    bad.write_text("1,2\n")
    with pytest.raises(SystemExit) as e:
        cli.main(["train", str(bad)])
    assert e.value.code == 2 and "`data` must be a .npy or .csv file" in capsys.readouterr().err
    nan = tmp_path / "n.npy"
    np.save(nan, np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        cli.load_data(nan)
    with pytest.raises(SystemExit):
        cli.main(["sample", "--checkpoint", str(tmp_path / "missing.ckpt")])
    with pytest.raises(SystemExit):
        cli.main(["sample", "--law", "ring8", "--sampler", "exact", "--n", "0"])
