"""The documentation builds and its code runs.

* `mkdocs build --strict` (warnings fail: broken links, pages missing from the nav, API
  directives that no longer resolve) into a temporary folder.
* Every ```python block of README.md and of each page under docs/ is executed, in the order a
  reader meets them: pages in the order of the site's nav (README first, pages outside the nav
  last), blocks top to bottom, one namespace per page, in a temporary working directory.
  ```bash / ```console / ```text blocks are not executed. A block right after a line
  `<!-- no-exec -->` is skipped (for code that needs hardware or a cluster).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import traceback

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
SKIP_MARK = "<!-- no-exec -->"


def _nav_pages(nav) -> list[str]:
    out = []
    for item in nav or []:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for v in item.values():
                out += _nav_pages(v) if isinstance(v, list) else [v] if isinstance(v, str) else []
    return out


def pages() -> list[pathlib.Path]:
    """README.md, then docs pages in nav order, then any page not in the nav (sorted)."""
    import yaml

    cfg = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    ordered = [DOCS / p for p in _nav_pages(cfg.get("nav")) if not p.startswith(("http:", "https:"))]
    rest = sorted(p for p in DOCS.rglob("*.md") if p not in ordered)
    return [ROOT / "README.md"] + [p for p in ordered if p.exists()] + rest


def python_blocks(text: str) -> list[tuple[int, str]]:
    """`(line number, code)` of each ```python block, dedented to its fence."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks, lang = m["indent"], m["ticks"], m["lang"].lower()
        skip = i > 0 and lines[i - 1].strip() == SKIP_MARK
        start, body, i = i + 1, [], i + 1
        while i < len(lines) and not (lines[i].startswith(indent + ticks[0] * len(ticks))
                                      and lines[i].strip().strip(ticks[0]) == ""):  # fmt: skip
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        if lang in ("python", "py", "python3") and not skip:
            blocks.append((start + 1, "\n".join(body) + "\n"))
    return blocks


def _id(p: pathlib.Path) -> str:
    return str(p.relative_to(ROOT))


@pytest.mark.parametrize("page", pages(), ids=_id)
def test_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files a snippet writes land in a temporary folder
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__docs__"}
    for n, (line, code) in enumerate(python_blocks(page.read_text()), start=1):
        try:
            exec(compile(code, f"{_id(page)}:block{n}", "exec"), namespace)
        except Exception:
            pytest.fail(
                f"{_id(page)}, python block {n} (line {line}) failed:\n{code}\n{traceback.format_exc()}",
                pytrace=False,
            )


def test_collector_finds_blocks():
    text = "x\n```python\na = 1\n```\n```bash\nexit 1\n```\n<!-- no-exec -->\n```python\nraise\n```\n" \
           "- item\n\n    ```python\n    b = 2\n    ```\n"  # fmt: skip
    assert python_blocks(text) == [(3, "a = 1\n"), (15, "b = 2\n")]


def test_mkdocs_build_strict(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "site" / "index.html").exists()


def test_version_is_one_and_documented(capsys):
    import tomllib

    import jaxdiff
    from jaxdiff import cli

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert jaxdiff.__version__ == version, "bump jaxdiff.__version__ together with pyproject.toml"
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"jaxdiff {version}"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and f"## [{version}]" in changelog


def test_benchmarks_page_is_generated_from_the_json(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import docs_tables

    expected = docs_tables.page(docs_tables.load(json_file=docs_tables.DEFAULT_JSON),
                                "benchmarks/results/quick.json")  # fmt: skip
    assert (DOCS / "benchmarks.md").read_text() == expected, "run `python -m benchmarks.docs_tables`"


def test_cli_page_names_every_flag():
    import argparse

    from jaxdiff import cli

    page = (DOCS / "api" / "cli.md").read_text()
    parser = cli.build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    flags = [(verb, opt) for verb, sub in verbs.items() for a in sub._actions for opt in a.option_strings]
    missing = [f"{v} {o}" for v, o in flags if o.startswith("--") and o != "--help" and o not in page]
    assert not missing, f"docs/api/cli.md does not mention: {missing}"


def test_readme_links_resolve():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    missing = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
