"""What `kefu` loads at start-up: only what `kefu grade` needs, each part when it is needed.

Checked in fresh interpreters by the modules they have loaded, never by the clock. Every command pays
for `import pipeline.cli.main`; a grade run pays for its imports before its first request.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.batch.files import write_batch_files
from pipeline.checks.checker import DEFAULT_LEXICONS
from pipeline.checks.lexicons import load_lexicons, parse_lexicons
from pipeline.errors import RubricError
from pipeline.testing.mockserver import MockServer
from pipeline.yamlload import load_yaml

REPO = Path(__file__).resolve().parents[2]

# Run `kefu ARGS` (argv[2:]) and write the names of every module loaded by the end to argv[1].
RUN_AND_LIST_MODULES = (
    "import atexit, json, runpy, sys; out = sys.argv[1]; "
    "atexit.register(lambda: open(out, 'w', encoding='utf-8').write(json.dumps(sorted(sys.modules)))); "
    "sys.argv = ['kefu', *sys.argv[2:]]; runpy.run_module('pipeline', run_name='__main__', alter_sys=True)"
)

NOT_FOR_GRADE = (
    "pipeline.batch.files", "pipeline.batch.ingest", "pipeline.batch.provider",  # kefu batch
    "pipeline.grading.costs",  # --dry-run, kefu batch estimate
    "pipeline.outputs.summary",  # kefu summary
    "pipeline.consistency.results", "pipeline.consistency.job", "pipeline.consistency.assess",  # kefu check
    "pipeline.consistency.wordings", "pipeline.agreement.compare", "pipeline.agreement.results",  # kefu check
    "pipeline.inputs.labels", "pipeline.report.render", "pipeline.report.compare",  # kefu check, report
    "pipeline.report.charts", "pipeline.report.views", "pipeline.report.result_file",  # kefu check, report
    "pandas", "scipy", "sklearn", "krippendorff", "pingouin", "statsmodels", "openpyxl", "pyarrow",
    "numpy",  # kefu check, review, summary: the ids table of the transcript reader is stdlib arrays
)
"""Modules that only other commands use."""

NOT_AT_IMPORT = (
    *NOT_FOR_GRADE,
    "openai",  # loaded by the first request
)


def loaded_by(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[set[str], str]:
    """The modules loaded by `kefu ARGS` run to its end in a fresh interpreter, and its stdout."""
    listing = tmp_path / "modules.json"
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("OPENAI_", "KEFU_")) or k == "KEFU_LIMITS_FILE"} | (env or {})
    proc = subprocess.run([sys.executable, "-c", RUN_AND_LIST_MODULES, str(listing), *args], cwd=REPO, text=True,
                          capture_output=True, timeout=300, env=clean)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(listing.read_text(encoding="utf-8"))), proc.stdout


def test_importing_the_cli_loads_nothing_only_other_commands_or_later_steps_need() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import json, sys, pipeline.cli.main; print(json.dumps(sorted(sys.modules)))"],
        cwd=REPO, text=True, capture_output=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    assert {"pipeline.cli.main", "pipeline.grading.job", "pipeline.cli.batch"} <= loaded
    assert sorted(loaded.intersection(NOT_AT_IMPORT)) == []


def test_batch_write_help_shows_the_batch_file_limits_without_loading_batch(tmp_path: Path) -> None:
    loaded, stdout = loaded_by(tmp_path, "batch", "write", "--help", env={"COLUMNS": "200"})  # nothing wrapped
    limits = inspect.signature(write_batch_files).parameters
    for name in ("max_requests", "max_bytes"):
        assert f"[default: {limits[name].default}]" in stdout
    assert sorted(loaded.intersection(NOT_AT_IMPORT)) == []


def test_a_grade_run_loads_nothing_only_other_commands_need(tmp_path: Path) -> None:
    chats = REPO / "eval_sets" / "ecommerce_cs.jsonl"
    with MockServer() as server:
        loaded, stdout = loaded_by(tmp_path, "grade", str(chats), "--base-url", server.base_url, "--model", "m",
                                   "--limit", "2", "--out", str(tmp_path / "out"))
        assert len(server.requests) == 2
    assert "scores:" in stdout
    assert "openai" in loaded  # it did send
    assert sorted(loaded.intersection(NOT_FOR_GRADE)) == []


# Rubrics and lexicons are parsed by libyaml at start-up (pipeline.yamlload), as PyYAML's own parser would.


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml parses with its own parser only")
def test_the_packaged_lexicons_load_as_pyyaml_reads_them() -> None:
    text = DEFAULT_LEXICONS.read_text(encoding="utf-8")
    assert load_lexicons(DEFAULT_LEXICONS) == parse_lexicons(yaml.safe_load(text), str(DEFAULT_LEXICONS))


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml parses with its own parser only")
@pytest.mark.parametrize("path", sorted((REPO / "rubric").glob("*.yaml")), ids=lambda p: p.name)
def test_every_packaged_yaml_loads_as_pyyaml_reads_it(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert load_yaml(text, unique_keys=True) == load_yaml(text) == yaml.safe_load(text)


def test_a_yaml_error_in_the_lexicons_quotes_the_offending_line(tmp_path: Path) -> None:
    bad = tmp_path / "lex.yaml"
    bad.write_text("version: t\ngroups: [unclosed\n", encoding="utf-8")
    with pytest.raises(RubricError) as info:
        load_lexicons(bad)
    # PyYAML's own parser quotes the line under a caret; libyaml's message has line and column only.
    assert "not valid YAML" in info.value.problems[0]
    assert "    groups: [unclosed\n" in info.value.problems[0] and "^" in info.value.problems[0]
