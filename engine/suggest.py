"""One "did you mean" for every message that names something unknown.

Load time (flow keys, connectors, connections, mappings, vars) and template compilation
(filters, tests, names) word the same hint the same way: the closest of the names the
value could have been, compared without regard to case, so ``ERP`` finds ``erp``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(word: object, choices: Iterable[object]) -> str:
    """`` (did you mean 'x'?)`` when a choice is close to ``word`` (case aside), else ``""``.

    Words and choices are compared as text (YAML may have read a key as a number); the
    choice is shown as written. The answer does not depend on the order of ``choices``.
    """
    by_lower = {str(c).lower(): str(c) for c in sorted(map(str, choices), reverse=True)}
    close = difflib.get_close_matches(str(word).lower(), sorted(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
