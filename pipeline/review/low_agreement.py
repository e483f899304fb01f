"""Low-agreement criteria: the rubric criteria a check found the judge least reliable on, for a labelling queue.

They are the criteria the person creating the queue names, or else those whose verdict is below
"trusted" in the newest agreement.json (written by `kefu check`) for the same rubric (same content
hash) found in the run folder, in a folder inside it, or in a folder beside it. The file is read
through a small model of the two fields used here: `pipeline.review` may not import the checker
(`pipeline.consistency`), whose `CheckResult` the file holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

AGREEMENT_FILE = "agreement.json"
LOW_VERDICTS = ("not trusted", "review")
"""Verdicts below "trusted" (pipeline/consistency/results.py `VERDICT_RANK`)."""


class _CriterionVerdict(BaseModel):
    model_config = ConfigDict(extra="ignore")

    criterion_id: str
    verdict: str | None


class _AgreementFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    created_at: datetime
    rubric_hash: str
    criteria: list[_CriterionVerdict]


@dataclass(frozen=True)
class LowAgreement:
    """The criteria to label and where they come from."""

    criteria: list[str]
    source: Path | None
    """The agreement.json read; None when the person named the criteria (or nothing was found)."""


def low_agreement_criteria(folder: Path, rubric_hash: str, given: list[str], known: list[str]) -> LowAgreement:
    """The named criteria (those of the rubric, in rubric order), else the low-verdict ones of the newest
    agreement.json for this rubric near the run folder; `known` is the rubric's criterion ids in order."""
    if given:
        return LowAgreement([c for c in known if c in given], None)
    found = []
    for path in _candidates(folder):
        try:
            result = _AgreementFile.model_validate_json(path.read_bytes())
        except (OSError, ValidationError):
            continue  # not a check's result of this layout: not ours to judge
        if result.rubric_hash == rubric_hash:
            found.append((result.created_at, path, result))
    if not found:
        return LowAgreement([], None)
    _, path, result = max(found, key=lambda item: (item[0], str(item[1])))
    low = {c.criterion_id for c in result.criteria if c.verdict in LOW_VERDICTS}
    return LowAgreement([c for c in known if c in low], path)


def _candidates(folder: Path) -> list[Path]:
    """agreement.json in the run folder, in its sub-folders and in the folders beside it."""
    places = [folder, *_subfolders(folder), *_subfolders(folder.parent)]
    return [p / AGREEMENT_FILE for p in dict.fromkeys(places) if (p / AGREEMENT_FILE).is_file()]


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []
