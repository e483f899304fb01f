"""Compact read-only lookups over 16-byte digests: the finished keys and finished lines a resumed run loads.

A resume over 10^7 chats cannot hold its finished keys as a Python set of strings (about 155 bytes a
key) or its finished lines as a dict of digests to ids (about 160–200 bytes a line). Here each entry
is a 16-byte digest in one sorted buffer (about 18 bytes a key with the directory below; with its
transcript id, about 27 bytes plus the id's UTF-8 bytes a line), built from the store's rows one chunk
at a time, so that loading never holds a Python object per row either.

A lookup reads the digest's bucket (its leading bits; two to four digests on average) from a
directory and searches that bucket with `bytes.find`: one digest, two integer reads and a short
search in C, no numpy call. 16 bytes, not 8: a false "already done" would silently skip a chat, and
the chance that any of 10^7 lookups meets a stranger's digest among 10^7 entries is about 10^-25
(10^14 / 2^128), where 8 bytes would make it about 5·10^-6.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterable, Sequence
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

DIGEST_SIZE = 16


def key_digest(key: str) -> bytes:
    """The 16 bytes a KeySet holds for `key`.

    A resume key (`store.grade_key`) is sha256 hex, so its first 32 characters decoded are already
    uniformly spread and cost less than hashing it again; any other string gets its blake2b-16.
    (`bytes.fromhex` ignores case, so "AB…" and "ab…" are one key: grade keys are all lowercase.)
    """
    try:
        digest = bytes.fromhex(key[:32])
    except ValueError:
        digest = b""
    if len(digest) == DIGEST_SIZE:
        return digest
    return blake2b(key.encode("utf-8", "surrogatepass"), digest_size=DIGEST_SIZE).digest()


def _key_digests(rows: Sequence[tuple[str]]) -> bytes:
    """`key_digest` of every row's key, concatenated: one `bytes.fromhex` for a chunk of resume keys."""
    heads = "".join([row[0][:32] for row in rows])
    if len(heads) == 32 * len(rows):
        try:
            digests = bytes.fromhex(heads)
        except ValueError:
            digests = b""
        # 32 characters a key and 16 bytes a key: every head is 32 hex digits, as `key_digest` decodes it alone.
        if len(digests) == DIGEST_SIZE * len(rows):
            return digests
    return b"".join([key_digest(row[0]) for row in rows])


class _SortedDigests:
    """16-byte digests, sorted, with a directory of where each bucket of equal leading bits starts."""

    def __init__(self, digests: bytearray) -> None:
        """Index `digests` (concatenated, already sorted); the buffer is kept, not copied."""
        count = len(digests) // DIGEST_SIZE
        bits = max(0, count.bit_length() - 2)  # 2^bits buckets for 2 to 4 digests each
        self._shift = 8 * DIGEST_SIZE - bits
        # Byte offsets, so that a lookup multiplies nothing; a memoryview, so that it reads plain Python ints.
        self._starts = _bucket_starts(digests, bits) if count else memoryview(array("I", (0, 0)))
        self._digests = digests

    def __len__(self) -> int:
        return len(self._digests) // DIGEST_SIZE

    @property
    def nbytes(self) -> int:
        """Memory held: the digests' buffer as allocated, and the directory."""
        return self._digests.__sizeof__() + self._starts.nbytes

    def position(self, digest: bytes) -> int:
        """The sorted position of `digest` (exactly 16 bytes), or -1."""
        bucket = int.from_bytes(digest, "big") >> self._shift
        end = self._starts[bucket + 1]
        found = self._digests.find(digest, self._starts[bucket], end)
        while found > 0 and found % DIGEST_SIZE:  # the tail of one digest and the head of the next: not a match
            found = self._digests.find(digest, found + 1, end)
        return found // DIGEST_SIZE if found >= 0 else -1


def _bucket_starts(digests: bytearray, bits: int) -> memoryview:
    """Where each of the 2^bits buckets of leading bits starts in `digests` (and where the last ends), in bytes."""
    import numpy as np

    leading = np.frombuffer(digests, dtype=">u8")[::2]
    buckets = leading >> np.uint64(64 - bits) if bits else np.zeros(len(leading), dtype=np.uint64)
    starts = np.searchsorted(buckets, np.arange((1 << bits) + 1, dtype=np.uint64)) * DIGEST_SIZE
    return starts.astype(_index_dtype(len(digests))).data


def _index_dtype(largest: int) -> type[np.unsignedinteger[Any]]:
    import numpy as np

    return np.uint32 if largest < 1 << 32 else np.uint64


class KeySet:
    """A read-only set of strings held as 16-byte digests (`key_digest`): `key in keys`."""

    def __init__(self, digests: _SortedDigests) -> None:
        self._digests = digests

    @classmethod
    def from_rows(cls, chunks: Iterable[Sequence[tuple[str]]]) -> KeySet:
        """Build from chunks of 1-tuples (a cursor's `fetchmany`); a key given twice is held twice."""
        digests = bytearray()
        for rows in chunks:
            digests += _key_digests(rows)
        if digests:  # a first run finds none, and then loads no numpy
            import numpy as np

            np.frombuffer(digests, dtype=f"S{DIGEST_SIZE}").sort()  # in place: no second copy of the digests
        return cls(_SortedDigests(digests))

    def __contains__(self, key: str) -> bool:
        return self._digests.position(key_digest(key)) >= 0

    def __len__(self) -> int:
        """The digests held (a key given twice counts twice)."""
        return len(self._digests)

    @property
    def nbytes(self) -> int:
        """Memory held."""
        return self._digests.nbytes


class LineIds:
    """A read-only map from 16-byte line digests to transcript ids, the ids as one UTF-8 buffer."""

    def __init__(self, digests: _SortedDigests, ids: bytearray, starts: memoryview, ends: memoryview) -> None:
        self._digests = digests
        self._ids = ids
        self._starts = starts  # memoryviews, as in _SortedDigests
        self._ends = ends

    @classmethod
    def from_rows(cls, chunks: Iterable[Sequence[tuple[bytes, bytes]]]) -> LineIds:
        """Build from chunks of (16-byte digest, transcript id as UTF-8 bytes) rows (a cursor's `fetchmany`)."""
        chunks = iter(chunks)
        first = next(chunks, None)
        if first is None:  # a first run finds none, and then loads no numpy
            empty = memoryview(array("I"))
            return cls(_SortedDigests(bytearray()), bytearray(), empty, empty)
        import numpy as np

        digests, ids = bytearray(), bytearray()
        chunk_lengths = [np.zeros(0, dtype=np.int64)]  # the ids' byte lengths, one array per chunk
        for rows in itertools.chain([first], chunks):
            digests += b"".join([row[0] for row in rows])
            chunk_ids = [row[1] for row in rows]
            chunk_lengths.append(np.fromiter(map(len, chunk_ids), dtype=np.int64, count=len(chunk_ids)))
            ids += b"".join(chunk_ids)
        lengths = np.concatenate(chunk_lengths)
        if len(digests) != DIGEST_SIZE * len(lengths):
            raise ValueError(f"every line digest must be {DIGEST_SIZE} bytes")
        sortable = np.frombuffer(digests, dtype=f"S{DIGEST_SIZE}")
        order = np.argsort(sortable)
        sortable[:] = sortable[order]
        ends = np.cumsum(lengths)[order]
        starts = ends - lengths[order]
        offset = _index_dtype(len(ids))
        return cls(_SortedDigests(digests), ids, starts.astype(offset).data, ends.astype(offset).data)

    def get(self, digest: bytes) -> str | None:
        """The transcript id of the line with this digest, or None."""
        position = self._digests.position(digest)
        if position < 0:
            return None
        return self._ids[self._starts[position]:self._ends[position]].decode()

    def __len__(self) -> int:
        return len(self._digests)

    @property
    def nbytes(self) -> int:
        """Memory held."""
        return self._digests.nbytes + self._ids.__sizeof__() + self._starts.nbytes + self._ends.nbytes
