"""The course's single source of truth: solved notebooks in, student notebooks out.

``course/source/NN_*.ipynb`` are the *solved* notebooks. Each exercise cell holds its solution
between two marker comments (the markers of nbgrader)::

    def row_mask(s, window):
        # bool [B, H, K, K]            <- outside the markers: in both copies
        ### BEGIN SOLUTION
        ...the solution...
        ### END SOLUTION

The student copy (``notebooks/NN_*.ipynb``, what the learners open and ``make notebooks`` runs)
is generated: every marked region becomes one line at the marker's indentation,
``raise NotImplementedError  # your code here``, unless the region holds its own stub as
``### STUB: <line>`` comments (Triton kernels need ``pass``: a compiled kernel cannot raise).
A markdown cell may mark a written answer the same way; it becomes ``*Your answer here.*``.
Outputs and execution counts are cleared; the bytes are a pure function of the source.

Command line (``python -m dma_ref.course``):

* ``build [NN ...]``   write the student notebooks of every (or the named) source notebook;
* ``check``            exit 1 if a committed student notebook differs from its generation, or a
                       source breaks the marker rules (the CI test does the same);
* ``init NN``          start the solved copy of ``notebooks/NN_*`` (a notebook not converted
                       yet): its stubs are wrapped in markers, to be replaced by the solutions;
* ``grade``            grade the solved copies (whole) and the student copies (their exercise
                       cells) with ``python -m dma_ref.grade``: full marks and zero, as CI does
                       (``--full``: the student copies whole too; ``--quick``: exercises only).

Tests reach a solution with :func:`solutions` (``solutions("02").row_mask``), so each solution
is written once, in its notebook.
"""

from .convert import init
from .extract import imports_of, solution_code, solutions, support_code
from .grading import exercise_pair, grade_check
from .markers import (
    BEGIN,
    CODE_STUB,
    END,
    MARKDOWN_STUB,
    SOURCE_DIR,
    STUB,
    STUDENT_DIR,
    TODO,
    MarkerError,
    build,
    defines,
    exercises,
    generate,
    has_solution,
    problems,
    render,
    source_notebook,
    source_notebooks,
    stale,
    strip_solutions,
    student_notebook,
)

__all__ = ["BEGIN", "CODE_STUB", "END", "MARKDOWN_STUB", "SOURCE_DIR", "STUB", "STUDENT_DIR",
           "TODO", "MarkerError", "build", "defines", "exercise_pair", "exercises", "generate",
           "grade_check", "has_solution", "imports_of", "init", "problems", "render",
           "solution_code", "solutions", "source_notebook", "source_notebooks", "stale",
           "strip_solutions", "student_notebook", "support_code"]
