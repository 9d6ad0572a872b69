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


def test_train_then_sample_checkpoint(tmp_path, capsys):
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
    with pytest.raises(SystemExit):  # an unconditional checkpoint has no classes to guide toward
        cli.main(["sample", "--checkpoint", str(ckpt), "--class", "1", "--out", str(out)])
    assert "need a class-conditional checkpoint" in capsys.readouterr().err


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
    capsys.readouterr()
    for argv, msg in (
        (["--class", "8"], "`--class` must be in 0..7 (the toy has 8 classes), got 8"),
        (["--class", "1", "--guidance", "nan"], "`--guidance` must be a finite number"),
    ):
        with pytest.raises(SystemExit):
            cli.main(["sample", "--law", "ring8", "--out", str(tmp_path / "x.npy"), *argv])
        assert msg in capsys.readouterr().err


def _csv(tmp_path, text):
    path = tmp_path / "d.csv"
    path.write_text(text)
    return path


def test_csv_rows_header_and_line_numbers(tmp_path):
    import warnings

    np.testing.assert_array_equal(cli.load_data(_csv(tmp_path, "a,b\n1,2\n3,4\n")), [[1, 2], [3, 4]])
    # a first row that is partly numeric is a malformed row, not a header
    with pytest.raises(ValueError, match="line 1, column 2: 'x' is not a number"):
        cli.load_data(_csv(tmp_path, "1,x\n2,3\n4,5\n"))
    with pytest.raises(ValueError, match="line 3 has 1 values, line 2 has 2"):
        cli.load_data(_csv(tmp_path, "a,b\n1,2\n3\n4,5\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy warning before the error
        for text in ("", "a,b\n"):
            with pytest.raises(ValueError, match="no rows of numbers"):
                cli.load_data(_csv(tmp_path, text))
    assert cli.build_parser().parse_args(["sample", "--law", "ring8"]).t_end is None  # 1e-3 T


def test_output_paths_are_refused_before_any_work(tmp_path, capsys):
    data = tmp_path / "d.npy"
    np.save(data, np.random.default_rng(0).normal(size=(8, 2)))
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file" / "m.ckpt", tmp_path):  # inside a regular file; a directory
        with pytest.raises(SystemExit) as e:  # 10^9 steps: the check must come before training
            cli.main(["train", str(data), "--out", str(out), "--steps", "1000000000"])
        assert e.value.code == 2 and "`--out`" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sample", "--law", "ring8", "--out", str(tmp_path / "x.txt")])
    assert "must end in .npy or .csv" in capsys.readouterr().err


@pytest.mark.slow
def test_sample_writes_csv_and_plots_one_and_three_dimensions(tmp_path, monkeypatch):
    import matplotlib.figure

    rng = np.random.default_rng(0)
    titles = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: (titles.append(fig.axes[0].get_title()), save(fig, *a, **k)))
    for d in (1, 3):
        data = tmp_path / f"d{d}.npy"
        np.save(data, rng.normal(size=(32, d)))
        ckpt = tmp_path / f"m{d}.ckpt"
        args = ["--steps", "2", "--width", "8", "--depth", "0", "--batch-size", "8"]
        assert cli.main(["train", str(data), "--out", str(ckpt), *args]) == 0
        out = tmp_path / f"x{d}.csv"
        sample = ["sample", "--checkpoint", str(ckpt), "--n", "20", "--steps", "5", "--out", str(out)]
        assert cli.main(sample) == 0
        x = np.loadtxt(out, delimiter=",", ndmin=2)
        assert x.shape == (20, d) and out.with_suffix(".png").is_file()
    assert "coordinates" not in titles[0] and "coordinates 1 and 2 of 3" in titles[1]


# ---- class-conditional checkpoints ------------------------------------------------------


def _two_classes(tmp_path, n=400):
    """Two well-separated classes: N((-2, 0), 0.3^2 I) and N((2, 0), 0.3^2 I)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    means = np.array([[-2.0, 0.0], [2.0, 0.0]])
    np.save(tmp_path / "d.npy", means[y] + 0.3 * rng.normal(size=(n, 2)))
    (tmp_path / "y.csv").write_text("label\n" + "\n".join(map(str, y)) + "\n")
    return tmp_path / "d.npy", tmp_path / "y.csv", means


def test_train_conditional_then_sample_a_class_with_guidance(tmp_path, capsys, monkeypatch):
    data, labels, means = _two_classes(tmp_path)
    ckpt = tmp_path / "c.ckpt"
    train = ["train", str(data), "--labels", str(labels), "--out", str(ckpt), "--steps", "300"]
    assert cli.main([*train, "--width", "32", "--depth", "1", "--batch-size", "128"]) == 0
    score, meta = cli.load_score(ckpt)
    assert meta["conditional"] and meta["n_classes"] == 2 and score.n_classes == 2
    assert meta["label_dropout"] == 0.1 and sum(meta["class_counts"]) == 400
    titles = []
    scatter = cli.sample._scatter
    record = lambda x, path, title, *a: (titles.append(title), scatter(x, path, title, *a))  # noqa: E731
    monkeypatch.setattr(cli.sample, "_scatter", record)
    share = {}
    for y, w in ((0, "2.0"), (1, "1.0"), (1, "0.0")):
        out = tmp_path / f"s{y}{w}.npy"
        argv = ["sample", "--checkpoint", str(ckpt), "--class", str(y), "--guidance", w, "--out", str(out)]
        assert cli.main([*argv, "--n", "200", "--steps", "30", "--sampler", "ddim"]) == 0
        nearest = np.argmin(np.linalg.norm(np.load(out)[:, None] - means[None], axis=-1), axis=1)
        share[y, w] = float(np.mean(nearest == y))
    # guided (w = 2) and conditional (w = 1): the samples lie in the class asked for (measured
    # 1.0 and 0.99); w = 0 is the unconditional law, both classes (data: 55% class 1; measured 0.64)
    assert share[0, "2.0"] >= 0.9 and share[1, "1.0"] >= 0.9
    assert 0.2 < share[1, "0.0"] < 0.8
    assert "class 0, guidance 2" in titles[0] and "class 1, guidance 0" in titles[2]
    # bad input: a class outside 0..1, guidance without a class
    capsys.readouterr()
    for argv, msg in (
        (["--class", "2"], "`--class` must be in 0..1"),
        (["--class", "-1"], "`--class` must be in 0..1"),
        (["--guidance", "2.0"], "`--guidance` needs `--class`"),
    ):
        with pytest.raises(SystemExit):
            cli.main(["sample", "--checkpoint", str(ckpt), "--out", str(tmp_path / "x.npy"), *argv])
        assert msg in capsys.readouterr().err


def test_train_label_files_and_their_errors(tmp_path, capsys):
    data, labels, _ = _two_classes(tmp_path, n=8)
    y = np.loadtxt(labels, skiprows=1, dtype=int)
    np.testing.assert_array_equal(cli.load_labels(labels, 8), y)
    np.save(tmp_path / "y.npy", y[:, None])  # an (N, 1) array is one label per row too
    np.testing.assert_array_equal(cli.load_labels(tmp_path / "y.npy", 8), y)
    table = np.column_stack([np.load(data), y])  # labels as the last column of the table
    rest, lab = cli.split_label_column(table, -1)
    np.testing.assert_array_equal(lab, y)
    np.testing.assert_array_equal(rest, np.load(data))

    def fails(argv, msg):
        with pytest.raises(SystemExit) as e:  # before any training: 10^9 steps would never end
            cli.main(["train", str(data), "--steps", "1000000000", "--out", str(tmp_path / "m"), *argv])
        assert e.value.code == 2 and msg in capsys.readouterr().err, msg

    def text(body):
        (tmp_path / "l.txt").write_text(body)
        return ["--labels", str(tmp_path / "l.txt")]

    fails(["--labels", str(tmp_path / "none.txt")], "does not exist")
    fails(text("0\n1\n" * 3), "holds 6 labels, the data 8 rows")
    fails(text("0\n1\n1.5\n" + "0\n" * 5), "line 3 holds 1.5")
    fails(text("0\n1\nx\n" + "0\n" * 5), "line 3: 'x' is not an integer")
    fails(text("0\n1\n-1\n" + "0\n" * 5), "line 3 holds -1")
    fails(text("2\n" * 8), "only class 2: a class-conditional model needs at least 2 classes")
    fails(text("0\n2\n" * 4), "no example of class 1 below its largest class 2")
    fails(text("1\n2\n" * 4), "no example of class 0 below its largest class 2")
    fails(["--label-dropout", "0.2"], "`--label-dropout` needs class labels")
    fails([*text("0\n1\n" * 4), "--label-dropout", "0"], "`--label-dropout` must lie in (0, 1)")
    fails(["--label-column", "2"], "`--label-column` must be in 0..1")
