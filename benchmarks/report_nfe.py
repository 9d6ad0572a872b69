"""`python -m benchmarks.report_nfe [JSON ...] [--md PATH] [--png PATH]`

Writes the few-step page's error-vs-NFE tables (a Markdown file the page includes) and its
figure from the JSON of `python -m benchmarks.bench_nfe` (one file, or several written with
`--problems`; their tables are merged). Default input: `benchmarks/results/nfe.json`, the
committed run. Nothing in the tables is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "nfe.json"
DEFAULT_MD = ROOT / "benchmarks" / "results" / "few-step-table.md"
DEFAULT_PNG = ROOT / "docs" / "img" / "few-step-nfe.png"


def load(paths) -> dict:
    """Merge the runs: tables concatenated, the other sections kept from the first that has them."""
    out = {"table": [], "rows": [], "references": {}, "stochastic": None}
    for p in paths:
        res = json.loads(pathlib.Path(p).read_text())
        out["table"] += res.get("table", [])
        out["rows"] += res.get("rows", [])
        out["references"].update(res.get("references", {}))
        out["stochastic"] = out["stochastic"] or res.get("stochastic")
    return out


def _fmt(v):
    return "" if v is None else f"{v:.3g}"


def markdown(res: dict) -> str:
    lines = []
    problems = list(dict.fromkeys(r["problem"] for r in res["table"]))
    for p in problems:
        rows = [r for r in res["table"] if r["problem"] == p]
        nfes = sorted({r["nfe_budget"] for r in rows})
        ref = res["references"].get(p, {})
        lines += [
            f"**{p}** (RMS endpoint error over {ref.get('n', '?')} trajectories; reference "
            f"{ref.get('ref_steps', '?')}-step Heun, which differs from the doubled-step solve by "
            f"{_fmt(ref.get('ref_vs_double_rms'))})",
            "",
            "| sampler | grid | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
            "|---|---|" + "---|" * len(nfes),
        ]
        combos = list(dict.fromkeys((r["sampler"], r["grid"]) for r in rows))
        for s, g in combos:
            cells = []
            for n in nfes:
                hit = [r for r in rows if (r["sampler"], r["grid"], r["nfe_budget"]) == (s, g, n)]
                cells.append(_fmt(hit[0]["error"]) if hit else "")
            lines.append(f"| {s} | {g} | " + " | ".join(cells) + " |")
        tuned = [r for r in rows if r["grid"] == "tuned"]
        if tuned:
            lines += [
                "",
                "Tuning time (`tune_grid`, wall clock on the benchmark machine): "
                + ", ".join(f"{r['sampler']} NFE {r['nfe_budget']}: {r['tune_s']:.0f} s" for r in tuned),
            ]
        lines.append("")
    st = res.get("stochastic")
    if st:
        lines += [
            f"**Stochastic samplers on ring2d** (sliced W2 to {st['n']} exact samples at `t_end`; "
            f"two exact sample sets differ by {_fmt(st['floor_sw2'])})",
            "",
            "| sampler | setting | NFE per sample (mean / max) | sliced W2 |",
            "|---|---|---|---|",
        ]
        for r in st["fixed"]:
            lines.append(f"| ReverseSDE (EDMGrid(7)) | {r['nfe']} steps | {r['nfe']} | {_fmt(r['sw2'])} |")
        for r in st["adaptive"]:
            lines.append(
                f"| AdaptiveSDE | rtol = atol = {r['rtol']} | {r['nfe_mean']:.0f} / {r['nfe_max']} | "
                f"{_fmt(r['sw2'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def figure(res: dict, path: pathlib.Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in res["table"]))
    fig, axes = plt.subplots(1, len(problems), figsize=(5.2 * len(problems), 4.2), squeeze=False)
    samplers = list(dict.fromkeys(r["sampler"] for r in res["table"]))
    colours = {s: f"C{i}" for i, s in enumerate(samplers)}
    styles = {"EDMGrid(7)": "-", "LogSNRGrid": ":", "tuned": "--"}
    for ax, p in zip(axes[0], problems):
        rows = [r for r in res["table"] if r["problem"] == p]
        for s, g in dict.fromkeys((r["sampler"], r["grid"]) for r in rows):
            pts = sorted((r["nfe_budget"], r["error"]) for r in rows if (r["sampler"], r["grid"]) == (s, g))
            marker = "o" if g == "tuned" else None
            ax.loglog(*zip(*pts), styles.get(g, "-"), color=colours[s], marker=marker, label=f"{s}, {g}")
        nfes = sorted({r["nfe_budget"] for r in rows})
        ax.set_xticks(nfes)
        ax.set_xticks([], minor=True)
        ax.set_xticklabels([str(n) for n in nfes])
        ax.set_title(p)
        ax.set_xlabel("NFE budget (with the final denoiser step)")
        ax.set_ylabel("RMS endpoint error")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()  # the first problem has every sampler
    fig.legend(handles, labels, fontsize=7, loc="center right")
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("json", nargs="*", default=[str(DEFAULT_JSON)])
    ap.add_argument("--md", default=str(DEFAULT_MD))
    ap.add_argument("--png", default=str(DEFAULT_PNG))
    ap.add_argument("--merged", default=None, help="also write the merged JSON here")
    args = ap.parse_args(argv)
    res = load(args.json)
    if args.merged:
        pathlib.Path(args.merged).write_text(json.dumps(res, indent=1))
    pathlib.Path(args.md).write_text(markdown(res))
    figure(res, pathlib.Path(args.png))
    print(f"wrote {args.md} and {args.png}")


if __name__ == "__main__":
    main()
