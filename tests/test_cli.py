"""The `jaxdiff` command (the report framework behind `jaxdiff reproduce` is tested in
tests/test_reproduce.py)."""

import subprocess
import sys

import numpy as np
import pytest

from jaxdiff import cli


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
