"""Saving report figures with a one-line caption.

The caption travels inside the PNG (its `Description` text chunk), so a figure carries its own
caption wherever it is copied, and the report writer needs no other record of it.
"""

from __future__ import annotations

import pathlib


def save_figure(fig, out_dir, file_name: str, caption: str | None = None, *, tight: bool = True) -> str:
    """Save a matplotlib figure as `<out_dir>/<file_name>` with its one-line `caption`, close
    it and return the file name. Without a caption the figure's title stands in. `tight=False`
    keeps a layout the caller has already made (e.g. room for a legend below the axes)."""
    import matplotlib.pyplot as plt

    if caption is None:
        caption = fig.get_suptitle() or next((ax.get_title() for ax in fig.axes if ax.get_title()), "")
    if tight:
        fig.tight_layout()
    fig.savefig(
        pathlib.Path(out_dir) / file_name, dpi=110, metadata={"Description": " ".join(caption.split())}
    )
    plt.close(fig)
    return file_name


def read_caption(path) -> str:
    """The caption stored by `save_figure` in a PNG (empty when there is none)."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            return str(image.info.get("Description", ""))
    except Exception:  # a missing or foreign file has no caption; the report still lists it
        return ""
