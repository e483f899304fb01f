"""The compact resume lookups: finished keys as a KeySet, finished lines as LineIds, and how the store loads them."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from hashlib import blake2b
from pathlib import Path

import pytest

from pipeline.grading.resume import LineMemo
from pipeline.models.grade import Grade, Status
from pipeline.store.digests import KeySet, LineIds, key_digest
from pipeline.store.rows import FinishedLine
from pipeline.store.store import Store


def random_keys(rng: random.Random, n: int) -> list[str]:
    """Resume-key-like strings: 64 lowercase hex digits."""
    return [f"{rng.getrandbits(256):064x}" for _ in range(n)]


def keyset(keys: list[str], chunk: int = 1000) -> KeySet:
    return KeySet.from_rows([(key,) for key in keys[i:i + chunk]] for i in range(0, len(keys), chunk))


def with_digest(digest: bytes) -> str:
    """A resume key whose KeySet digest is `digest` (its first 32 hex digits)."""
    return digest.hex() + "0" * 32


def test_every_key_is_found_and_no_other() -> None:
    rng = random.Random(7)
    stored, others = random_keys(rng, 10_000), random_keys(rng, 10_000)
    done = keyset(stored)
    assert len(done) == 10_000
    assert all(key in done for key in stored)
    assert not any(key in done for key in others)


def test_near_misses_are_not_members() -> None:
    rng = random.Random(8)
    stored = random_keys(rng, 2_000)
    done = keyset(stored)
    for key in stored[:200]:
        flipped = f"{int(key[16], 16) ^ 1:x}"  # the 9th byte: the same first 8 bytes, so the same bucket
        assert key[:16] + flipped + key[17:] not in done
        last = f"{int(key[31], 16) ^ 8:x}"  # the 16th byte
        assert key[:31] + last + key[32:] not in done


def test_a_match_across_two_stored_digests_is_not_a_member() -> None:
    # Two digests are one bucket; their bytes side by side contain low[8:] + high[:8], which is no digest held.
    low, high = sorted([bytes(range(16)), bytes(range(100, 116))])
    done = KeySet.from_rows([[(with_digest(low),), (with_digest(high),)]])
    assert with_digest(low) in done and with_digest(high) in done
    assert with_digest(low[8:] + high[:8]) not in done


def test_keys_that_are_not_hex_are_held_by_their_blake2b() -> None:
    # The tests' own stores and any future key format: a chunk of them, and a chunk mixing them with hex keys.
    rng = random.Random(9)
    plain = ["c1-0-all", "会话-1-all", "", "x" * 40, "g" * 64]
    mixed = [*random_keys(rng, 3), "c2-0-all"]
    done = KeySet.from_rows([[(key,) for key in plain], [(key,) for key in mixed]])
    assert all(key in done for key in plain + mixed)
    assert not any(key in done for key in ["c1-0-al", "会话-2-all", "x" * 41, "g" * 63, *random_keys(rng, 3)])
    assert key_digest("c1-0-all") == blake2b(b"c1-0-all", digest_size=16).digest()
    assert key_digest(mixed[0]) == bytes.fromhex(mixed[0][:32])


def test_an_empty_keyset_holds_nothing() -> None:
    done = KeySet.from_rows([])
    assert len(done) == 0 and random_keys(random.Random(1), 1)[0] not in done and "" not in done


def test_keys_and_lines_cost_a_few_dozen_bytes_each() -> None:
    rng = random.Random(10)
    keys = keyset(random_keys(rng, 10_000))
    assert keys.nbytes < 24 * 10_000  # 16 bytes of digest, the directory and the buffer's spare room
    lines = LineIds.from_rows([[(rng.randbytes(16), f"c{i:06d}".encode()) for i in range(10_000)]])
    assert lines.nbytes < 48 * 10_000  # 16 + 7 id bytes + 8 of offsets, with the same overheads


def test_ids_come_back_exactly() -> None:
    rng = random.Random(11)
    ids = ["c001", "会话-二〇二六-〇三-一号", "emoji-😀", "", "x" * 300, "c001"]  # an id may finish two lines
    digests = [rng.randbytes(16) for _ in ids]
    lines = LineIds.from_rows([list(zip(digests[i:i + 2], [t.encode() for t in ids[i:i + 2]], strict=True))
                               for i in range(0, len(ids), 2)])
    assert len(lines) == len(ids)
    assert [lines.get(d) for d in digests] == ids
    assert lines.get(rng.randbytes(16)) is None
    assert LineIds.from_rows([]).get(digests[0]) is None


def test_a_digest_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        LineIds.from_rows([[(b"x" * 15, b"c001")]])


def grade(key: str, status: Status) -> Grade:
    return Grade(key=key, transcript_id="c1", repeat=0, scope="all", status=status, criteria=[], model="m",
                 attempts=1, created_at=datetime.now(UTC))


def test_the_store_loads_keys_in_chunks(tmp_path: Path) -> None:
    keys = random_keys(random.Random(12), 7)
    with Store.open(tmp_path) as store:
        assert len(store.finished_keys()) == 0  # a first run
        for i, key in enumerate(keys):
            store.save_grade(grade(key, "unscored" if i < 2 else "scored"), 1, "r")
        store.record_batch_file(local_file="f1", run_id=1, rubric_hash="r", model="m", response_mode="json_schema",
                                size_bytes=1, requests=[("pending", "c2", "h", 0, "all")], transcripts={})
        every = store.finished_keys(chunk_rows=3)
        scored = store.finished_keys(include_unscored=False, chunk_rows=3)
        with_pending = store.finished_keys(include_unscored=False, pending_batches=True, chunk_rows=2)
    assert len(every) == 7 and all(key in every for key in keys) and "pending" not in every
    assert [key in scored for key in keys] == [False, False] + [True] * 5
    assert "pending" in with_pending and keys[0] not in with_pending and keys[6] in with_pending


def test_the_store_loads_lines_in_chunks_with_their_ids(tmp_path: Path) -> None:
    rng = random.Random(13)
    ids = [f"会话{i}" for i in range(7)]
    digests = [rng.randbytes(16) for _ in ids]
    with Store.open(tmp_path) as store:
        assert len(store.finished_lines("fp")) == 0
        for digest, transcript_id in zip(digests, ids, strict=True):
            store.save_finished_line(FinishedLine("fp", digest, transcript_id))
        store.save_finished_line(FinishedLine("other", rng.randbytes(16), "c9"))
        lines = store.finished_lines("fp", chunk_rows=2)
    assert len(lines) == 7 and [lines.get(d) for d in digests] == ids


def test_a_memo_loads_nothing_when_it_may_skip_nothing(tmp_path: Path) -> None:
    line = '{"id": "会话1"}'.encode()
    with Store.open(tmp_path) as store:
        memo = LineMemo({})
        memo.open(store, {}, skip=True)
        store.save_finished_line(FinishedLine(memo.fingerprint, blake2b(line, digest_size=16).digest(), "会话1"))
        memo.open(store, {}, skip=False)  # --retry-failed
        assert memo.lookup(line, "in.jsonl:1") is None
        memo.open(store, {}, skip=True)
        assert memo.lookup(line, "in.jsonl:1") == "会话1"
