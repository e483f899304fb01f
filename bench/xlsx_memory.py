"""Time and peak memory of `kefu export --format xlsx` (pipeline/outputs/spreadsheet.py) at 10,000 and 100,000 chats.

    python -m bench.xlsx_memory                  # N = 10,000 and 100,000
    python -m bench.xlsx_memory --n 2000 --keep /tmp/xlsx-bench

Builds the store of bench/exports_speed.py (N generated chats with their checks and one graded call
each under the seed rubric: N score rows, 13·N per-criterion lines), then runs the real CLI in a
child process and reads its peak resident memory from os.wait4 (ru_maxrss of that child alone).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.exports_speed import RUBRIC, build_store
from bench.harness import REPO, command_env, compile_package, describe_machine, print_table
from pipeline.rubric.load import load_rubric


def export_xlsx(out_dir: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one `python -m pipeline export OUT --format xlsx`."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "export", str(out_dir), "--format", "xlsx"],
                            cwd=REPO, env=command_env(), stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, f"export failed ({proc.returncode})"
    return wall, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000], help="chats per store")
    parser.add_argument("--keep", type=Path, help="build the stores under this folder and keep them")
    args = parser.parse_args(argv)
    rubric = load_rubric(RUBRIC)
    compile_package()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kefu-xlsx-") as tmp:
        for n in args.n:
            out_dir = (args.keep or Path(tmp)) / f"n{n}"
            with build_store(out_dir, n, rubric) as store:  # the CLI reads the rubric from the last run
                store.start_run(rubric_id=rubric.id, rubric_version=rubric.version, rubric_hash=rubric.content_hash,
                                template_hash="bench", model="mock-model",
                                settings={"rubric": rubric.model_dump(mode="json", by_alias=True)})
            wall, peak = export_xlsx(out_dir)
            size = (out_dir / "scores.xlsx").stat().st_size / 1e6
            rows.append([f"{n:,}", f"{n * 13:,}", f"{wall:.1f}", f"{peak:.0f}", f"{size:.0f}"])
    print("kefu export --format xlsx (child process)\n")
    print_table(["chats", "grade lines", "wall s", "peak RSS MB", "file MB"], rows)
    print(f"\nMachine: {describe_machine(('xlsxwriter', 'pydantic'))}")


if __name__ == "__main__":
    main()
