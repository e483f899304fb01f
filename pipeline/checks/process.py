"""The service checks in a child process, so that the event loop's core is left to the requests.

A transcript's checks (pipeline/checks/checker.py) cost about a millisecond of CPU, a quarter of what the
runner spends on it; on a machine with a second core a large run hands them to one child
(`python -m pipeline.checks.process`) over pipes: a transcript's JSON goes in, its stored record's
JSON comes back, in order. The record is byte-for-byte what an in-process check stores, because
the child builds its checker from the same lexicons, thresholds and calendar and the fingerprints
are compared before any record is used. If the child cannot start, dies or fails on one
transcript, that work is checked in-process instead: the run never depends on the child.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections import deque

from pydantic import BaseModel, ConfigDict, Field

from pipeline.checks.checker import ServiceChecker, record_json
from pipeline.checks.lexicons import Lexicons
from pipeline.checks.timing import ShopCalendar, TimingThresholds
from pipeline.models.transcript import Transcript

log = logging.getLogger("kefu.checks")  # under "kefu", so its warnings reach OUT/kefu.log

_LINE_LIMIT = 1 << 26  # a record line may be long (every phrase hit of a long chat); 64 MiB is never reached
_FAILED = b"!"


class CheckerSetup(BaseModel):
    """What the child needs to build the same checker: the first line it reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lexicons: Lexicons = Field(description="The lexicons, as loaded by the parent.")
    thresholds: TimingThresholds = Field(description="The timing thresholds.")
    calendar: ShopCalendar = Field(description="The shop's calendar (time zone, hours).")


class CheckProcess:
    """One child process that checks transcripts for the runner; `submit` never blocks."""

    def __init__(self, checker: ServiceChecker) -> None:
        self._checker = checker
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        # requests sent and not yet answered, in the order the child answers them
        self._waiting: deque[tuple[asyncio.Future[str], Transcript, str]] = deque()
        self._alive = False
        self._started = False
        self._ended = False  # end_input: the child exits once it has answered
        self.checked_here = 0
        """Transcripts checked in-process because the child could not (it died, or failed on one)."""

    @property
    def pid(self) -> int | None:
        """The child's process id, once started."""
        return self._proc.pid if self._proc is not None else None

    async def submit(self, transcript: Transcript, transcript_hash: str) -> asyncio.Future[str]:
        """A future of the JSON text of the transcript's checks record, as `record_json` writes it.

        The child is started on the first call, so a run that checks nothing (a resume) starts none.
        """
        if not self._started:
            self._started = True
            await self._start()
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if not self._alive or self._proc is None or self._proc.stdin is None:
            self._settle(future, transcript, transcript_hash)
            return future
        self._waiting.append((future, transcript, transcript_hash))
        self._proc.stdin.write(f"{transcript_hash}\t{transcript.model_dump_json()}\n".encode())
        return future

    async def _start(self) -> None:
        """Start the child and send it the checker's setup, without waiting for it to be ready."""
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", __name__,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=_LINE_LIMIT,
            )
        except OSError as exc:
            log.warning("service checks run in-process: the check process did not start (%s)", exc)
            return
        assert self._proc.stdin is not None
        setup = CheckerSetup(lexicons=self._checker.lexicons, thresholds=self._checker.thresholds,
                             calendar=self._checker.calendar)
        self._proc.stdin.write(setup.model_dump_json().encode() + b"\n")
        self._alive = True
        self._reader = asyncio.create_task(self._read())

    def end_input(self) -> None:
        """No more transcripts: close the child's input now, so that it answers what it has and exits while
        the run's last requests are out, not after them (its exit took 0.1–0.2 s at the end of a run)."""
        self._ended = True
        if self._proc is not None and self._proc.stdin is not None:
            self._proc.stdin.close()

    def in_process(self, transcript: Transcript, transcript_hash: str) -> str:
        """The same record made here and now (a fallback, and what a cancelled grade stores)."""
        return record_json(self._checker.check(transcript, transcript_hash).record())

    async def close(self) -> None:
        """Stop the child: end of input, then a kill if it has not exited within 5 s."""
        proc, self._alive = self._proc, False
        if proc is None:
            return
        for future, _, _ in self._waiting:  # a run that ends with checks still out was cancelled: none is awaited
            future.cancel()
        self._waiting.clear()
        if self._reader is not None:
            self._reader.cancel()
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout=5)
        except TimeoutError:  # every record the run needed is stored: a stuck child is only killed
            log.warning("the check process did not exit within 5 s of the end of input; it was killed")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        try:
            hello = await stdout.readline()
            try:
                fingerprint = json.loads(hello)["fingerprint"] if hello else None
            except (ValueError, KeyError, TypeError):
                fingerprint = None
            if fingerprint != self._checker.fingerprint:
                log.warning("service checks run in-process: the check process %s", "did not start" if not hello
                            else f"has another checker ({fingerprint} != {self._checker.fingerprint})")
                return
            while line := await stdout.readline():
                future, transcript, thash = self._waiting.popleft()
                if line.startswith(_FAILED):  # checking it here raises the same error, with its traceback
                    self._settle(future, transcript, thash)
                elif not future.done():
                    future.set_result(line[:-1].decode())
            # Its output is closed, so it has exited or is about to (close() cancels this wait if not).
            code = await self._proc.wait()
            if self._waiting or not self._ended or code != 0:
                log.warning("service checks run in-process: the check process stopped (exit code %s)", code)
        finally:
            self._alive = False
            self._drain()

    def _drain(self) -> None:
        """Check in-process whatever the child will not answer."""
        while self._waiting:
            self._settle(*self._waiting.popleft())

    def _settle(self, future: asyncio.Future[str], transcript: Transcript, transcript_hash: str) -> None:
        if future.done():
            return
        self.checked_here += 1
        try:
            future.set_result(self.in_process(transcript, transcript_hash))
        except Exception as exc:  # a bug in the checks: the grade waiting for them fails as it would in-process
            future.set_exception(exc)


def main() -> None:
    """The child: a setup line, then `hash<TAB>transcript JSON` lines in, a record line out for each."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes our stdin
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    first = stdin.readline()
    if not first:
        return
    setup = CheckerSetup.model_validate_json(first)
    checker = ServiceChecker(setup.lexicons, setup.thresholds, setup.calendar)
    stdout.write(json.dumps({"fingerprint": checker.fingerprint}).encode() + b"\n")
    stdout.flush()
    for line in stdin:
        thash, _, body = line.rstrip(b"\n").partition(b"\t")
        try:
            out = record_json(checker.check(Transcript.model_validate_json(body), thash.decode()).record()).encode()
        except Exception as exc:  # the parent re-checks this one in-process, which raises it with its traceback
            out = _FAILED + repr(exc).encode("unicode_escape")
        stdout.write(out + b"\n")
        stdout.flush()


if __name__ == "__main__":
    main()
