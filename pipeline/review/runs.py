"""A run folder opened for review: its rubric, its store, its chat text and its overview index."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import InputError
from pipeline.outputs.exports import load_decisions
from pipeline.review.chats import ChatSource
from pipeline.rubric.model import Criterion, Rubric
from pipeline.store.store import DB_NAME, Store

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.outputs.figures import RunFigures


class ReviewRun:
    """One run folder. Each request opens its own connection (`store()`): SQLite in WAL mode lets
    reviewers, `kefu grade` and `kefu export` read and write the same store at once."""

    def __init__(self, folder: Path) -> None:
        if not (folder / DB_NAME).is_file():
            raise InputError(str(folder), f"not a run folder: no {DB_NAME} in it")
        self.folder = folder
        with self.store() as store:
            run = store.last_run()
        if run is None:
            raise InputError(str(folder), "no run has been recorded in this folder")
        self.rubric = Rubric.model_validate(json.loads(run["settings"])["rubric"])
        self.rubric_hash = self.rubric.content_hash
        self.model = str(run["model"])
        self.criteria: dict[str, Criterion] = {c.id: c for c in self.rubric.criteria()}
        self.chats = ChatSource(folder)
        self._index: tuple[tuple[int, str], RunFigures, RunFigures] | None = None
        """(store stamp, the table without decisions, with them)."""
        self._index_lock = threading.Lock()

    @contextmanager
    def store(self) -> Iterator[Store]:
        """A connection of this request's own."""
        with Store.open(self.folder) as store:
            yield store

    def warm_up(self) -> None:
        """What the first pages would wait for, done ahead: the overview's table, the first input file's line index."""
        self.overview_index()
        with self.store() as store:
            first = next(store.iter_transcript_rows(), None)
        if first is not None:
            self.chats.transcript(first.id, first.source)

    def overview_index(self) -> pd.DataFrame:
        """The overview's table of final scores (`RunFigures.rows`), current with the store."""
        from pipeline.outputs.figures import read_figures, with_decisions  # pandas: loaded with the first overview

        with self.store() as store, self._index_lock:
            stamp = (store.changes(), store.decisions_stamp())
            if self._index is None or self._index[0] != stamp:
                base = self._index[1] if self._index is not None and self._index[0][0] == stamp[0] else None
                if base is None:
                    base = read_figures(store, self.rubric)
                self._index = (stamp, base, with_decisions(base, self.rubric, load_decisions(store)))
            return self._index[2].rows
