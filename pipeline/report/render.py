"""Rendering the check's reports: agreement.json, the Markdown summary agreement.md and the self-contained report.html.

The HTML opens without a network: CSS is inline, charts are inline SVG whose geometry is computed in
pipeline/report/charts.py, and there is no script at all. Templates live in pipeline/report/templates/
and are rendered with autoescaping (HTML) and StrictUndefined, so transcript ids, the judge's reasoning
and its quotes, which come from chats and may hold `<script>`, are always text. Markdown templates are
not HTML-escaped; values that come from data go through the `md` filter instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import jinja2

from pipeline.agreement.results import CI
from pipeline.consistency.results import CheckResult, CriterionCheck, SumCheck
from pipeline.consistency.sample_size import MIN_LABELLED, TOO_FEW, SampleSize, kappa_reason
from pipeline.consistency.verdict import sentence
from pipeline.consistency.wordings import CriterionShift, RubricComparison, shift_sentence
from pipeline.models.transcript import Transcript
from pipeline.paths import PACKAGE_DIR
from pipeline.report.charts import bias_chart, distribution, heatmap, kappa_chart
from pipeline.report.compare import compare_results
from pipeline.report.messages import Lang, message, number, reason_text
from pipeline.report.result_file import AGREEMENT_JSON
from pipeline.report.views import difference_views, marked_turns

AGREEMENT_MD = "agreement.md"
REPORT_HTML = "report.html"
COMPARISON_JSON = "comparison.json"
RUBRIC_COMPARE = "rubric_compare"
TEMPLATES = PACKAGE_DIR / "report" / "templates"


def _num(value: float | None, digits: int = 2) -> str:
    return number(value, digits)


def _signed(value: float | None, digits: int = 2) -> str:
    return number(value, digits, signed=True)


def _ci(ci: CI | None, digits: int = 2) -> str:
    if ci is None or math.isnan(ci.estimate):
        return "—"
    if math.isnan(ci.low):
        return _num(ci.estimate, digits)
    return f"{_num(ci.estimate, digits)} [{_num(ci.low, digits)}, {_num(ci.high, digits)}]"


def _when(iso: str) -> str:
    """An ISO time (agreement.json's) as people read it: minutes, UTC."""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _pct(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.0%}"


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_{}[]<>()#+!|"})


def _md(value: object) -> str:
    """Text from data, safe inside a Markdown table cell: specials backslash-escaped, no line breaks."""
    return " ".join(str(value).split()).translate(_MD_SPECIAL)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), disabled_extensions=("md",),
                                            default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=_num, signed=_signed, ci=_ci, pct=_pct, md=_md, when=_when)
    env.globals.update(t=_t, why=_why, reason=_reason, shift=_shift, glossary=GLOSSARY, too_few=TOO_FEW)
    return env


@jinja2.pass_context
def _t(context: jinja2.runtime.Context, key: str, **fields: object) -> str:
    """A message of templates/messages.yaml in the render's `lang` (Chinese when not given)."""
    return message(key, context.get("lang", "zh"), **fields)


@jinja2.pass_context
def _reason(context: jinja2.runtime.Context, text: str) -> str:
    """A statistic's recorded reason in the render's `lang`."""
    return reason_text(text, context.get("lang", "zh"))


@jinja2.pass_context
def _shift(context: jinja2.runtime.Context, c: RubricComparison, s: CriterionShift) -> str:
    """A criterion's wording sentence in the render's `lang`."""
    return shift_sentence(s.metrics, c.a.label, c.b.label, context.get("lang", "zh"))


@jinja2.pass_context
def _why(context: jinja2.runtime.Context, c: CriterionCheck) -> str:
    """A criterion's verdict sentence in the render's `lang`."""
    detail, lang = c.verdict_detail, context.get("lang", "zh")
    if detail is None:
        return ""
    return detail.sentence if lang == "zh" else sentence(detail.reasons, lang, contrast=detail.contrast)


def render(template: str, **variables: Any) -> str:
    """Render one of pipeline/report/templates/ (HTML autoescaped, Markdown not)."""
    return _environment().get_template(template).render(**{"lang": "zh", **variables})


class ReportFiles(NamedTuple):
    """The files a report wrote."""

    agreement_json: Path
    agreement_md: Path
    report_html: Path
    comparison_json: Path | None


def _sums_by_kind(sums: Iterable[SumCheck]) -> list[SumCheck]:
    order = {"total": 0, "dimension": 1, "group": 2}
    return sorted(sums, key=lambda s: order[s.kind])


GLOSSARY = ("gloss.kappa_w", "gloss.ci", "gloss.baselines", "gloss.alpha", "gloss.spearman", "gloss.icc",
            "gloss.omega", "gloss.rho", "gloss.epsilon")
"""The statistics the report explains in plain words, in the order a reader meets them."""


def write_report(result: CheckResult, out_dir: Path, *, previous: CheckResult | None = None, lang: Lang = "zh",
                 chats: Mapping[str, Transcript] | None = None, command: str = "kefu check",
                 min_labelled: int = MIN_LABELLED) -> ReportFiles:
    """Write agreement.json, agreement.md and report.html (and comparison.json against `previous`) to `out_dir`.

    The reports' words are in `lang` (templates/messages.yaml). The "differ most" list reads the judge's
    quotes and any deterministic checks from the run store in `out_dir`, when there is one, and shows the
    chats' text from `chats`, when given. Below `min_labelled` graded chats the pages lead with a notice
    and give no verdict (pipeline/consistency/sample_size.py); the footer names `command`, the one that made them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    comparison = compare_results(result, previous) if previous is not None else None
    labelled = [c for c in result.criteria if c.n_labelled]
    variables = {
        "r": result,
        "criteria": result.criteria,
        "sums": _sums_by_kind(result.sums),
        "comparison": comparison,
        "kappa": kappa_chart(labelled, result.options.thresholds, lang),
        "bias": bias_chart(labelled, lang),
        "heatmaps": [(c, heatmap(c.judge_vs_human), distribution(c.judge_vs_human)) for c in labelled],
        # Only the total's: group and dimension sums are often the same sum again (one group per dimension).
        "sum_heatmaps": [(s, heatmap(s.judge_vs_human)) for s in result.sums
                         if s.kind == "total" and s.judge_vs_human.n and len(s.judge_vs_human.levels) <= 15],
        "differences": difference_views(result, out_dir, chats),
        "lang": lang,
        "alt_tests": [c for c in result.criteria if c.alt_test is not None],
        "baselines": {c.criterion_id: {b.name: b for b in c.baselines} for c in result.criteria},
        "ceilings": any(c.human_ceiling is not None for c in result.criteria),
        "sample": SampleSize(n=result.transcripts_graded, minimum=min_labelled),
        "kappa_reason": kappa_reason,
        "command": command,
    }
    files = ReportFiles(out_dir / AGREEMENT_JSON, out_dir / AGREEMENT_MD, out_dir / REPORT_HTML,
                        out_dir / COMPARISON_JSON if comparison is not None else None)
    files.agreement_json.write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
    files.agreement_md.write_text(render("agreement.md", **variables), encoding="utf-8")
    files.report_html.write_text(render("report.html", **variables), encoding="utf-8")
    if comparison is not None and files.comparison_json is not None:
        files.comparison_json.write_text(comparison.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return files


def write_rubric_comparison(comparison: RubricComparison, out_dir: Path,
                            chats: Mapping[str, Transcript] | None = None, lang: Lang = "zh") -> list[Path]:
    """Write rubric_compare.json, .md and .html for a two-rubric check into `out_dir`, in `lang`; the page shows
    each flipped chat's text from `chats`, when given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{RUBRIC_COMPARE}.{ext}" for ext in ("json", "md", "html")]
    paths[0].write_text(comparison.model_dump_json(indent=2) + "\n", encoding="utf-8")
    texts = {tid: marked_turns(t, []) for tid, t in (chats or {}).items()}
    for path in paths[1:]:
        path.write_text(render(path.name, c=comparison, chats=texts, lang=lang), encoding="utf-8")
    return paths
