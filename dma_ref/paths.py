"""Where generated artefacts go: ``figures/`` at the repository root."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FIGURES = REPO_ROOT / "figures"


def save_figure(fig, name: str, *, dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``figures/<name>`` (name may contain sub-folders; .png default)."""
    path = FIGURES / name
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
