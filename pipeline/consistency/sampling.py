"""Seeded, stratified random samples of a run's chats for people to label.

Allocation is proportional to each group's size, rounded by largest remainder (ties by group name), so
the sample is close to self-weighting and each group's part is a simple random sample of that group:
what prediction-powered means (`pipeline.agreement.ppi`) need. The same seed and run give the same sample.
The sample file says what it was stratified by in a first comment line, so that `kefu summary
--sample-ids` can weight the strata by their share of the run (`pipeline.agreement.ppi.stratified_mean`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

_HEADER = "# kefu sample: strata={by} seed={seed}"
_HEADER_RE = re.compile(r"^# kefu sample: strata=(\w+)")


def allocate(sizes: Mapping[str, int], n: int) -> dict[str, int]:
    """How many chats to draw from each group: proportional, largest remainder, never more than the group."""
    total = sum(sizes.values())
    n = min(n, total)
    if not total:
        return dict.fromkeys(sizes, 0)
    quotas = {g: n * size / total for g, size in sizes.items()}
    counts = {g: int(q) for g, q in quotas.items()}
    by_remainder = sorted(sizes, key=lambda g: (-(quotas[g] - counts[g]), g))
    for g in by_remainder[: n - sum(counts.values())]:
        counts[g] += 1
    return counts


def draw_sample(groups: Mapping[str, str | None], n: int, seed: int) -> list[str]:
    """`n` transcript ids (all of them when there are fewer), stratified by group; sorted."""
    members: dict[str, list[str]] = {}
    for tid, group in groups.items():
        members.setdefault("" if group is None else f"={group}", []).append(tid)
    counts = allocate({g: len(ids) for g, ids in members.items()}, n)
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for g in sorted(members):
        ids = sorted(members[g])
        chosen += [ids[i] for i in rng.choice(len(ids), counts[g], replace=False)]
    return sorted(chosen)


def sample_text(ids: Iterable[str], by: str, seed: int) -> str:
    """The sample file: a comment line naming the strata, then one id a line (id readers skip "# " lines)."""
    return _HEADER.format(by=by, seed=seed) + "\n" + "".join(f"{t}\n" for t in ids)


def sample_strata(text: str) -> str | None:
    """What a sample file's chats were stratified by; None for a list of ids without the header (taken as a
    simple random sample)."""
    match = _HEADER_RE.match(text)
    return match[1] if match else None
