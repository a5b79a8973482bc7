"""Exercise checkers for the notebooks: one module per notebook (``dma_ref.check.nb02`` ...).

Every checker takes the learner's function, runs it on random inputs drawn from one seed
(``seed=``, reported in every verdict; see ``core``) against the package's reference and returns
a :class:`Result` (truthy when solved) after printing a short verdict. ``strict=True`` raises
``AssertionError`` instead, which the tests use to prove that each checker fails on the unsolved
stub. A stub that raises ``NotImplementedError`` counts as unsolved. Each checker is worth the
points its ``@exercise(points=n)`` declares; ``python -m dma_ref.grade`` collects them.
"""

from .core import Result, exercise, run_checks

__all__ = ["Result", "exercise", "run_checks"]
