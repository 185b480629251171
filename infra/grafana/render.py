"""Draws the dashboard's layout from embedworker.json (panel grid, titles, units, queries) into
embedworker.png, for the docs: a picture of what Grafana shows, without data.

    .venv/bin/python infra/grafana/render.py
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen
from matplotlib.patches import FancyBboxPatch  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    board = json.loads((HERE / "embedworker.json").read_text())
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    fig, ax = plt.subplots(figsize=(16, rows * 0.42))
    fig.patch.set_facecolor("#111217")
    ax.set_xlim(0, 24)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    for p in board["panels"]:
        g = p["gridPos"]
        ax.add_patch(FancyBboxPatch((g["x"] + 0.15, g["y"] + 0.15), g["w"] - 0.3, g["h"] - 0.3,
                                    boxstyle="round,pad=0,rounding_size=0.15", fc="#181b1f", ec="#2c3235"))
        ax.text(g["x"] + 0.4, g["y"] + 0.7, p["title"], color="#d8d9da", fontsize=9, weight="bold", va="center")
        ax.text(g["x"] + g["w"] - 0.4, g["y"] + 0.7, p["fieldConfig"]["defaults"]["unit"], color="#8e8e8e",
                fontsize=7, ha="right", va="center")
        y = g["y"] + 1.5
        for t in p["targets"]:
            legend = t["legendFormat"]
            lines = textwrap.wrap(t["expr"], width=int(g["w"] * 5.2)) or [""]
            ax.text(g["x"] + 0.4, y, f"● {legend}", color="#73bf69", fontsize=7, va="top")
            ax.text(g["x"] + 0.4, y + 0.55, "\n".join(lines[:3]), color="#9fa7b3", fontsize=6, va="top",
                    family="monospace")
            y += 0.75 + 0.42 * min(3, len(lines))
    ax.set_title(f"Grafana dashboard '{board['title']}' ({len(board['panels'])} panels): layout and queries "
                 "rendered from infra/grafana/embedworker.json (no data)", color="#d8d9da", fontsize=10)
    fig.tight_layout()
    out = HERE / "embedworker.png"
    fig.savefig(out, dpi=90, facecolor=fig.get_facecolor())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
