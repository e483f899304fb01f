"""Why a statistic is undefined: the English sentences agreement.json records, each under an id.

agreement.json keeps the sentence (a file read by programs and engineers); the reports show the
message `why.<id>` of pipeline/report/templates/messages.yaml instead, in the reader's language, by
matching the sentence back to its template here (`reason_key`).
"""

from __future__ import annotations

import re
from functools import cache

REASONS: dict[str, str] = {
    "no_data": "no data",
    "no_pairs": "no transcript has both a judge and a human score",
    "one_pair": "only one transcript has both scores",
    "judge_constant": "the judge scores are all the same, so there is no ranking to correlate",
    "human_constant": "the human scores are all the same, so there is no ranking to correlate",
    "both_constant": "the judge and human scores are all the same, so there is no ranking to correlate",
    "one_level": "every score on both sides is the same level, so there is no variation to agree on",
    "icc_few": "fewer than three paired totals",
    "icc_constant": "every total is the same: no variance",
    "icc_nan": "pingouin returned NaN: too little variation between transcripts",
    "no_overlap": "no two raters scored the same transcript",
    "alt_few": "needs at least 3 annotators with {min_units}+ units; {n} had",
    "alt_rank": "the judge does not rank the chats like the annotators (Spearman {rho}, p {p})",
    "one_repeat": "one repeat per transcript: grade with --repeats 2 or more to measure it",
    "no_repeats": "no transcript has two scored repeats",
}
"""Reason id → its English sentence, {fields} filled in by `reason`."""


def reason(key: str, **fields: object) -> str:
    """The English sentence of reason `key`."""
    return REASONS[key].format(**fields)


@cache
def _patterns() -> list[tuple[str, re.Pattern[str]]]:
    out = []
    for key, template in REASONS.items():
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>.+?)", re.escape(template))
        out.append((key, re.compile(f"^{pattern}$")))
    return out


def reason_key(text: str) -> tuple[str, dict[str, str]] | None:
    """The id and fields a recorded sentence was made from; None for a sentence of no known template."""
    for key, pattern in _patterns():
        if match := pattern.match(text):
            return key, match.groupdict()
    return None
