"""Build the website of the executed series: ``python scripts/build_site.py`` (``make site``).

Assembles ``build/site_src`` from the executed notebooks in ``executed/`` (``make notebooks``
writes them, outputs and figures included), ``README.md`` as the home page, ``course/`` and the
figures, then runs ``mkdocs build`` with ``mkdocs.yml`` into ``build/site``. Needs the ``site``
extra (mkdocs, mkdocs-material, mkdocs-jupyter).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "build" / "site_src"
EXECUTED = ROOT / "executed"


def assemble(executed: Path = EXECUTED, src: Path = SRC) -> list[Path]:
    """Copy the site's sources into ``src`` (emptied first); return the notebooks copied."""
    notebooks = sorted(executed.glob("*.ipynb"))
    if not notebooks:
        raise SystemExit(f"no executed notebook in {executed}: run `make notebooks` first")
    shutil.rmtree(src, ignore_errors=True)
    (src / "notebooks").mkdir(parents=True)
    for nb in notebooks:
        shutil.copy2(nb, src / "notebooks" / nb.name)
    shutil.copy2(ROOT / "README.md", src / "index.md")
    shutil.copytree(ROOT / "course", src / "course")
    shutil.copytree(ROOT / "figures", src / "figures",
                    ignore=shutil.ignore_patterns("*.json", "*.csv", "*.md", "*.pt"))
    return notebooks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assemble-only", action="store_true", help="do not run mkdocs")
    args = parser.parse_args(argv)
    notebooks = assemble()
    print(f"{len(notebooks)} executed notebooks -> {SRC.relative_to(ROOT)}")
    if args.assemble_only:
        return 0
    cmd = [sys.executable, "-m", "mkdocs", "build", "--clean", "-f", str(ROOT / "mkdocs.yml")]
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
