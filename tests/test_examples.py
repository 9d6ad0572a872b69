"""Every script in examples/ runs at its tiny size (`--tiny`) and writes its figure."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
# the longest examples (each a training run or a sweep of samplers) run with `-m slow`
LONG = {"digits_unet", "samplers", "tune_sampler", "likelihood", "train_csv"}


def test_there_are_examples():
    assert len(SCRIPTS) >= 6


@pytest.mark.parametrize(
    "script",
    [pytest.param(p, marks=pytest.mark.slow) if p.stem in LONG else p for p in SCRIPTS],
    ids=lambda p: p.stem,
)
def test_example_writes_its_figure(script, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # as when the script runs: its folder is on the path
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location(f"_example_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    out = tmp_path / "figure.png"
    module.main(["--tiny", "--out", str(out)])
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, f"{script.name} wrote no figure"
