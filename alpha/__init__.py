"""alpha: human-in-the-loop active learning for images.

`alpha/` computes; `flows/` orchestrates with Prefect. Nothing in this package imports Prefect.
"""

__version__ = "0.1.0"
