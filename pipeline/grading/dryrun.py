"""The files a dry run leaves for people: the inputs it rejected, and prompts exactly as the model would see them.

A forecast's counts say nothing a rubric designer can read; these files do. They go under
`OUT/dry_run/` so that a dry run never overwrites the rejects of a real run in the same folder.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

from pipeline.grading.grader import grade_scopes
from pipeline.grading.prompting import PromptSet
from pipeline.inputs.rejects import reject_line
from pipeline.models.transcript import Reject, Transcript
from pipeline.rubric.model import Rubric

DRY_RUN_DIR = "dry_run"
PROMPT_SAMPLE = 5
"""Transcripts whose prompts a dry run writes unless asked for all: enough to read, few enough to find."""
REJECTS_SHOWN = 5
"""Rejects listed on the console; the file has them all."""


def prompt_file_name(index: int, transcript_id: str) -> str:
    """`00001_<id>.txt`: the input order, then the id with anything a file name should not hold replaced."""
    safe = re.sub(r"[^\w.-]", "_", transcript_id)[:60].lstrip(".") or "_"
    return f"{index:05d}_{safe}.txt"


class DryRunFiles:
    """Writes OUT/dry_run/rejects.jsonl and OUT/dry_run/prompts/*.txt while the forecast streams the inputs."""

    def __init__(self, out_dir: Path, *, rubric: Rubric, prompts: PromptSet, per_criterion: bool, compact: bool,
                 sample: int | None) -> None:
        self.folder = out_dir / DRY_RUN_DIR
        self.rejects_jsonl = self.folder / "rejects.jsonl"
        self.prompts_dir = self.folder / "prompts"
        self.first_rejects: list[Reject] = []
        self.rejected = 0
        self.prompts_written = 0
        self._rubric, self._prompts, self._compact = rubric, prompts, compact
        self._scopes = grade_scopes(rubric, per_criterion)
        self._sample = sample
        self._rejects: IO[str] | None = None

    def __enter__(self) -> DryRunFiles:
        shutil.rmtree(self.prompts_dir, ignore_errors=True)  # an older sample would pass for this one
        self.prompts_dir.mkdir(parents=True)
        self._rejects = self.rejects_jsonl.open("w", encoding="utf-8")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._rejects is not None:
            self._rejects.close()

    def record(self, items: Iterable[Transcript | Reject]) -> Iterator[Transcript | Reject]:
        """Pass `items` on unchanged, writing each reject and the prompts of the sampled transcripts."""
        for item in items:
            if isinstance(item, Reject):
                self._write_reject(item)
            elif self._sample is None or self.prompts_written < self._sample:
                self._write_prompts(item)
            yield item

    def _write_reject(self, reject: Reject) -> None:
        assert self._rejects is not None, "record() outside the with block"
        self._rejects.write(reject_line(reject))
        self.rejected += 1
        if len(self.first_rejects) < REJECTS_SHOWN:
            self.first_rejects.append(reject)

    def _write_prompts(self, transcript: Transcript) -> None:
        parts = []
        for scope, criteria in self._scopes:
            for message in self._prompts.messages(self._rubric, criteria, transcript, compact=self._compact):
                parts.append(f"===== {scope} · {message['role']} =====\n{message['content']}")
        self.prompts_written += 1
        path = self.prompts_dir / prompt_file_name(self.prompts_written, transcript.id)
        path.write_text("\n".join(parts), encoding="utf-8")
