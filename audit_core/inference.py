"""Result blocks computed across attacks once scores are final.

Copyright-holder mode (suspects + reference) adds per-image flags and a set-level test here.
"""

from __future__ import annotations

from typing import Any


def extend_results(runner, results: dict[str, Any], csv_rows: list[list[Any]]) -> list[str]:
    """Add blocks to ``results`` and columns to ``csv_rows``; return the extra column names."""
    return []
