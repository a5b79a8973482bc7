"""``python -m dma_ref.course``: build, check, init, grade (see the package docstring)."""

from __future__ import annotations

import argparse
import sys

from ..paths import REPO_ROOT
from . import __doc__ as DOC
from .convert import init
from .grading import grade_check
from .markers import TODO, build, problems, source_notebooks, stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dma_ref.course",
                                     description=DOC.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write notebooks/ from course/source/")
    b.add_argument("names", nargs="*", help="only notebooks whose name contains one of these")
    sub.add_parser("check", help="fail if notebooks/ is out of date or a source is malformed")
    i = sub.add_parser("init", help="start the solved copy of a notebook not converted yet")
    i.add_argument("number", help="the notebook's number, e.g. 06")
    g = sub.add_parser("grade", help="grade the solved (full marks) and student (0) copies")
    g.add_argument("names", nargs="*")
    g.add_argument("--full", action="store_true", help="the student notebooks whole too")
    g.add_argument("--quick", action="store_true", help="the exercise notebooks only, both copies")
    args = parser.parse_args(argv)

    if args.command == "build":
        changed = build(args.names or None)
        print(f"{len(changed)} student notebook(s) written" +
              "".join(f"\n  {p.relative_to(REPO_ROOT)}" for p in changed))
        return 0
    if args.command == "check":
        bad = [p for src in source_notebooks() for p in problems(src)]
        bad += [f"notebooks/{name} differs from its generation: run python -m dma_ref.course build"
                for name in stale()]
        print("\n".join(bad) if bad else f"{len(source_notebooks())} solved notebooks, all in sync")
        return 1 if bad else 0
    if args.command == "init":
        dest = init(args.number)
        print(f"wrote {dest.relative_to(REPO_ROOT)}: put each solution in place of '{TODO}'")
        return 0
    result = grade_check(args.names or None, solved="exercises" if args.quick else "full",
                         student="full" if args.full else "exercises")
    ok = True
    for name, (solved, student, total) in result.items():
        flag = "ok" if solved == total and student == 0 else "WRONG"
        ok &= flag == "ok"
        print(f"{name}: solved {solved}/{total}, student {student}/{total}  {flag}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
