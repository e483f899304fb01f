"""Conversation ids of one run: the duplicate check, over a compact table of id digests."""

from __future__ import annotations

from array import array
from hashlib import blake2b

from pipeline.inputs.limits import id_problem
from pipeline.models.transcript import Reject


class RunIds:
    """Every conversation id a run has read, and the files they came from."""

    def __init__(self) -> None:
        self._seen = _SeenIds()
        self._sources: list[str] = []

    def add_file(self, source: str) -> int:
        """Number the file `source` for the ids read from it."""
        self._sources.append(source)
        return len(self._sources) - 1

    def add(self, conv_id: str, file_number: int) -> int | None:
        """Record `conv_id` as read from file `file_number`; if it was read before, that file's number."""
        return self._seen.add(conv_id, file_number)

    def check_new(
        self, conv_id: str, source: str, file_number: int, line: int, *, id_field: str | None, split_hint: bool
    ) -> Reject | None:
        """Record `conv_id` as read; a Reject if it cannot be an id (input_limits.id_problem) or this run has
        read it before."""
        problem = id_problem(conv_id)
        if problem is not None:
            return Reject(file=source, line=line, transcript_id=conv_id, field=id_field, reason=problem)
        first = self._seen.add(conv_id, file_number)
        if first is None:
            return None
        if first != file_number:
            reason = f"duplicate conversation id {conv_id!r}: already read from {self._sources[first]}"
        elif split_hint:
            reason = (f"conversation split across non-adjacent rows: {conv_id!r} already appeared earlier "
                      "in this file (keep each conversation's rows together)")
        else:
            reason = f"duplicate conversation id {conv_id!r}: already read earlier in this file"
        return Reject(file=source, line=line, transcript_id=conv_id, field=id_field, reason=reason)


class _SeenIds:
    """The conversation ids of one run, as 8-byte blake2b digests in an open-addressing table.

    A Python set of id strings costs about 100 bytes an id; this table costs 12 bytes a slot at a
    load of at most 0.7 (about 200 MB for 10^7 ids), and also remembers which file each id came
    from. Two ids share a digest with probability about n²/2^64 (5·10^-6 for 10^7 ids). The table is
    two stdlib arrays, not numpy: every `kefu grade` reads ids, and numpy cost the command about 0.1 s
    to import, and its OpenBLAS thread pool, at start-up.
    """

    _MAX_LOAD = 0.7

    def __init__(self, slots_log2: int = 16) -> None:
        self._keys, self._files = _zeros(1 << slots_log2)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Memory held by the table."""
        return len(self._keys) * self._keys.itemsize + len(self._files) * self._files.itemsize

    def add(self, conv_id: str, file_number: int) -> int | None:
        """Record `conv_id` as read from file `file_number`; if it was read before, that file's number."""
        digest = blake2b(conv_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        key = int.from_bytes(digest, "little") | 1  # bit 0 set: a zero key marks an empty slot
        slot = self._slot(key)
        if self._keys[slot]:
            return self._files[slot]
        self._keys[slot], self._files[slot] = key, file_number
        self._count += 1
        if self._count > self._MAX_LOAD * len(self._keys):
            self._grow()
        return None

    def _slot(self, key: int) -> int:
        """Where `key` is, or the empty slot where it belongs (linear probing)."""
        keys = self._keys
        mask = len(keys) - 1
        slot = (key >> 1) & mask
        while (found := keys[slot]) and found != key:
            slot = (slot + 1) & mask
        return slot

    def _grow(self) -> None:
        """Double the table, inserting every key again (about a microsecond a key, each time it doubles)."""
        old_keys, old_files = self._keys, self._files
        self._keys, self._files = _zeros(2 * len(old_keys))
        for key, file_number in zip(old_keys, old_files, strict=True):
            if key:
                slot = self._slot(key)
                self._keys[slot], self._files[slot] = key, file_number


def _zeros(slots: int) -> tuple[array[int], array[int]]:
    """An empty table of `slots`: the keys (8 bytes each) and their files' numbers (4 bytes each)."""
    return array("Q", bytes(8 * slots)), array("I", bytes(4 * slots))
