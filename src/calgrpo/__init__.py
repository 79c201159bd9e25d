"""calgrpo: calibrated multi-attempt GRPO, trained and evaluated on Verification@K.

The package is laid out one concept per module:

- :mod:`calgrpo.algorithms` -- the pure maths (attempt-level advantages, the policy loss).
- :mod:`calgrpo.toys` -- small exactly-solvable environments that prove the estimator unbiased.
- :mod:`calgrpo.cli` -- the ``calgrpo`` command.
"""

__version__ = "0.1.0"
