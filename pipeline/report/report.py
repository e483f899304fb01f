"""Check reports: agreement.json, the Markdown summary agreement.md and the self-contained report.html.

The HTML opens without a network: CSS is inline, charts are inline SVG whose geometry is computed
here, and there is no script at all. Templates live in pipeline/templates/ and are rendered with
autoescaping (HTML) and StrictUndefined, so transcript ids, the judge's reasoning and its quotes, which
come from chats and may hold `<script>`, are always text. Markdown templates are not HTML-escaped;
values that come from data go through the `md` filter instead.

"Changed more than its interval" (`--compare`): a metric's change |Δ| = |now − before| is marked when
it exceeds the half-width of the *current* 95% interval, i.e. when the previous point estimate lies
outside the current interval. Whether the two intervals overlap is shown as well; non-overlapping
intervals are the stricter sign (roughly p < 0.01 for two independent samples).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, NamedTuple, Union, get_args, get_origin

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.agreement.results import CI, CONSENSUS_RULE, PairAgreement
from pipeline.agreement.verdict import VerdictThresholds
from pipeline.consistency.check import CheckResult, CriterionCheck, Difference, RubricComparison, SumCheck
from pipeline.consistency.sample_size import MIN_LABELLED, TOO_FEW, SampleSize, kappa_reason
from pipeline.consistency.verdict import sentence
from pipeline.errors import InputError
from pipeline.grading.fingerprint import fingerprint_differences
from pipeline.models.grade import CriterionGrade
from pipeline.models.transcript import Transcript
from pipeline.paths import PACKAGE_DIR
from pipeline.report.messages import Lang, message, number
from pipeline.store.store import DB_NAME, Store

AGREEMENT_JSON = "agreement.json"
AGREEMENT_MD = "agreement.md"
REPORT_HTML = "report.html"
COMPARISON_JSON = "comparison.json"
RUBRIC_COMPARE = "rubric_compare"
COMPARED_METRICS = ("weighted_kappa", "exact", "alpha_ordinal", "spearman", "mae", "bias")
CHANGE_RULE = (
    "a change is marked when |Δ| exceeds the half-width of the current interval (the previous estimate "
    "lies outside it); 'overlap' says whether the two intervals overlap"
)
TEMPLATES = PACKAGE_DIR / "report" / "templates"


# --- changes since a previous check -----------------------------------------------------------


Kind = Literal["criterion", "group", "dimension", "total"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricChange(_Model):
    """One metric of one criterion or sum, before and now."""

    metric: str = Field(description="Metric name, as in agreement.Metrics.")
    before: float = Field(description="The previous point estimate.")
    now: float = Field(description="The current point estimate.")
    delta: float = Field(description="now − before.")
    half_width: float = Field(description="Half the width of the current interval.")
    beyond_ci: bool = Field(description="|delta| > half_width: the change is larger than its interval.")
    cis_overlap: bool = Field(description="The previous and current intervals overlap.")


class ItemChange(_Model):
    """The changes of one criterion or sum."""

    item_id: str = Field(description="Criterion, group or dimension id, or 'total'.")
    kind: Kind = Field(description="What the item is.")
    verdict_before: str | None = Field(description="The previous verdict (criteria only).")
    verdict_now: str | None = Field(description="The current verdict (criteria only).")
    changes: list[MetricChange] = Field(description="One entry per compared metric.")


class ResultComparison(_Model):
    """The current check against a previous one, item by item."""

    previous_created_at: str = Field(description="When the previous check was computed.")
    previous_model: str = Field(description="The previous judge model.")
    previous_rubric: str = Field(description="The previous rubric id and version.")
    same_rubric: bool = Field(description="The rubric content is unchanged.")
    judge_changes: list[str] = Field(
        default=[], description="How the judge differs from the previous check's (fingerprint), in words; empty: same."
    )
    rule: str = Field(default=CHANGE_RULE, description="When a change is marked.")
    items: list[ItemChange] = Field(description="Items present in both checks, current order.")
    only_now: list[str] = Field(description="Items only the current check has.")
    only_before: list[str] = Field(description="Items only the previous check has.")


def _metric_change(name: str, before: CI, now: CI) -> MetricChange:
    delta = now.estimate - before.estimate
    half = (now.high - now.low) / 2
    return MetricChange(
        metric=name, before=before.estimate, now=now.estimate, delta=delta, half_width=half,
        beyond_ci=bool(abs(delta) > half),  # False whenever a NaN is involved
        cis_overlap=not (now.low > before.high or now.high < before.low),
    )


def _items(result: CheckResult) -> dict[str, tuple[Kind, PairAgreement, str | None]]:
    items: dict[str, tuple[Kind, PairAgreement, str | None]] = {
        c.criterion_id: ("criterion", c.judge_vs_human, c.verdict) for c in result.criteria
    }
    items.update({s.sum_id: (s.kind, s.judge_vs_human, None) for s in result.sums})
    return items


def compare_results(current: CheckResult, previous: CheckResult) -> ResultComparison:
    """Per criterion and sum, each compared metric before and now, marked when it moved beyond its interval."""
    now, before = _items(current), _items(previous)
    changes = []
    for item_id, (kind, pair, verdict) in now.items():
        if item_id not in before:
            continue
        _, old, old_verdict = before[item_id]
        changes.append(ItemChange(
            item_id=item_id, kind=kind, verdict_before=old_verdict, verdict_now=verdict,
            changes=[_metric_change(m, getattr(old.metrics, m), getattr(pair.metrics, m)) for m in COMPARED_METRICS],
        ))
    return ResultComparison(
        previous_created_at=previous.created_at.isoformat(), previous_model=previous.model,
        previous_rubric=f"{previous.rubric_id} v{previous.rubric_version}",
        same_rubric=previous.rubric_hash == current.rubric_hash, items=changes,
        judge_changes=_judge_changes(previous, current),
        only_now=[i for i in now if i not in before], only_before=[i for i in before if i not in now],
    )


def _judge_changes(previous: CheckResult, current: CheckResult) -> list[str]:
    if previous.judge is None or current.judge is None:
        return [] if previous.model == current.model else [f"模型：{previous.model} → {current.model}"]
    return fingerprint_differences(previous.judge, current.judge)


# --- agreement.json -----------------------------------------------------------------------------


def _restore_nan(annotation: Any, value: Any) -> Any:
    """JSON has no NaN, so agreement.json writes null; read null back as NaN where the field is a float."""
    if value is None:
        return math.nan if annotation is float else None
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return _restore_nan(options[0], value) if len(options) == 1 else value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
        fields = annotation.model_fields
        return {k: _restore_nan(fields[k].annotation, v) if k in fields else v for k, v in value.items()}
    if origin is list and isinstance(value, list):
        return [_restore_nan(get_args(annotation)[0], v) for v in value]
    if origin is dict and isinstance(value, dict):
        return {k: _restore_nan(get_args(annotation)[1], v) for k, v in value.items()}
    return value


def load_result(path: Path) -> CheckResult:
    """Read an agreement.json written by `write_report`, with its NaNs restored."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(str(path), f"cannot read agreement.json: {exc}") from None
    try:
        return CheckResult.model_validate(_restore_nan(CheckResult, data))
    except ValidationError as exc:
        raise InputError(str(path), f"not an agreement.json of this version: {exc.errors()[0]['msg']}") from None


# --- chart geometry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """A linear map from values to x pixels, clipping at both ends."""

    lo: float
    hi: float
    x0: float
    x1: float

    def x(self, value: float) -> float:
        """The pixel for `value`, clipped into the chart."""
        v = min(max(value, self.lo), self.hi)
        return round(self.x0 + (v - self.lo) / (self.hi - self.lo) * (self.x1 - self.x0), 1)

    def ticks(self, step: float) -> list[tuple[float, str]]:
        """Gridline positions and labels every `step`."""
        n = round((self.hi - self.lo) / step)
        return [(self.x(self.lo + i * step), f"{self.lo + i * step:g}") for i in range(n + 1)]


class IntervalRow(NamedTuple):
    """One row of an interval chart."""

    label: str
    y: float
    estimate: float | None
    low: float | None
    high: float | None
    markers: list[tuple[str, float]]
    """(kind, x) of reference marks, e.g. the human ceiling."""
    title: str


class IntervalChart(NamedTuple):
    """An estimate-and-interval chart, one row per criterion."""

    width: int
    height: int
    left: int
    rows: list[IntervalRow]
    ticks: list[tuple[float, str]]
    lines: list[tuple[float, str]]
    """(x, label) of threshold lines."""


class HeatCell(NamedTuple):
    """One cell of a confusion heatmap."""

    x: int
    y: int
    n: int
    fill: str
    ink: str


class Heatmap(NamedTuple):
    """A confusion matrix drawn as a heatmap: rows the judge's level, columns the human's."""

    size: int
    cell: int
    offset: int
    levels: list[str]
    cells: list[HeatCell]


class Bar(NamedTuple):
    """A bar of a distribution chart."""

    x: int
    y: float
    height: float
    n: int
    who: str


class Distribution(NamedTuple):
    """Judge and human counts per level."""

    width: int
    height: int
    base: int
    bars: list[Bar]
    labels: list[tuple[int, str]]


def _defined(v: float) -> float | None:
    return None if math.isnan(v) else v


def kappa_chart(criteria: Sequence[CriterionCheck], thresholds: VerdictThresholds) -> IntervalChart:
    """Weighted kappa with its interval per criterion, the human ceiling marked beside it."""
    left, width, step = 170, 640, 26
    scale = Scale(-1.0, 1.0, left, width - 30)
    rows = []
    for i, c in enumerate(criteria):
        wk = c.judge_vs_human.metrics.weighted_kappa
        markers = []
        if c.human_ceiling is not None:
            ceiling = c.human_ceiling
            for kind, humans in (("pairwise", ceiling.pairwise), ("consensus", ceiling.vs_consensus)):
                if not math.isnan(humans.mean.weighted_kappa):
                    markers.append((kind, scale.x(humans.mean.weighted_kappa)))
        rows.append(IntervalRow(
            label=c.name, y=30 + i * step, estimate=_x(scale, wk.estimate), low=_x(scale, wk.low),
            high=_x(scale, wk.high), markers=markers,
            title=f"{c.criterion_id}: κw {_num(wk.estimate)} [{_num(wk.low)}, {_num(wk.high)}]",
        ))
    lines = [(scale.x(thresholds.trusted_estimate), "trusted"), (scale.x(thresholds.not_trusted_below), "not trusted")]
    return IntervalChart(width, 40 + len(criteria) * step, left, rows, scale.ticks(0.5), lines)


def bias_chart(criteria: Sequence[CriterionCheck]) -> IntervalChart:
    """Mean judge − human per criterion as a share of the criterion's maximum, with its interval."""
    left, width, step = 170, 640, 26
    extent = 0.25
    for c in criteria:
        b = c.judge_vs_human.metrics.bias
        for v in (b.low, b.high, b.estimate):
            if not math.isnan(v):
                extent = max(extent, math.ceil(abs(v) / c.max_points * 4) / 4)
    scale = Scale(-extent, extent, left, width - 30)
    rows = []
    for i, c in enumerate(criteria):
        b = c.judge_vs_human.metrics.bias
        share = [v / c.max_points for v in (b.estimate, b.low, b.high)]
        rows.append(IntervalRow(
            label=c.name, y=30 + i * step, estimate=_x(scale, share[0]), low=_x(scale, share[1]),
            high=_x(scale, share[2]), markers=[],
            title=f"{c.criterion_id}: bias {_num(b.estimate)} points [{_num(b.low)}, {_num(b.high)}] of {c.max_points}",
        ))
    ticks = scale.ticks(extent / 2 if extent >= 0.5 else extent)
    return IntervalChart(width, 40 + len(criteria) * step, left, rows, ticks, [(scale.x(0), "0")])


def _x(scale: Scale, v: float) -> float | None:
    return None if math.isnan(v) else scale.x(v)


def heatmap(pair: PairAgreement, cell: int = 34) -> Heatmap:
    """The confusion matrix, shaded by each cell's share of the largest cell."""
    top = max((n for row in pair.confusion for n in row), default=0) or 1
    cells = []
    for i, row in enumerate(pair.confusion):
        for j, n in enumerate(row):
            shade = n / top
            rgb = tuple(round(255 - shade * (255 - c)) for c in (37, 99, 235))
            cells.append(HeatCell(x=j * cell, y=i * cell, n=n, fill=f"rgb{rgb}",
                                  ink="#fff" if shade > 0.55 else "#1f2937"))
    levels = [f"{v:g}" for v in pair.levels]
    return Heatmap(size=len(levels) * cell, cell=cell, offset=34, levels=levels, cells=cells)


def distribution(pair: PairAgreement) -> Distribution:
    """Judge and human counts per level on the transcripts both scored (the confusion's margins)."""
    judge = [sum(row) for row in pair.confusion]
    human = [sum(col) for col in zip(*pair.confusion, strict=True)] if pair.confusion else []
    top = max([*judge, *human, 1])
    group, bar, base, tall = 36, 14, 110, 90
    bars, labels = [], []
    for k, level in enumerate(pair.levels):
        x = 10 + k * group
        for offset, who, n in ((0, "judge", judge[k]), (bar + 2, "human", human[k])):
            h = round(n / top * tall, 1)
            bars.append(Bar(x=x + offset, y=base - h, height=h, n=n, who=who))
        labels.append((x + bar, f"{level:g}"))
    return Distribution(width=20 + len(pair.levels) * group, height=base + 20, base=base, bars=bars, labels=labels)


# --- the "differ most" list ---------------------------------------------------------------------


class EvidenceView(NamedTuple):
    """One criterion of a listed transcript, with the judge's words."""

    criterion: str
    judge: int
    human: float
    reasoning: str
    quotes: list[tuple[int, str, bool]]


ChatTurn = tuple[str, list[tuple[str, bool]]]
"""A turn as the report shows it: the role, and its text in pieces, each marked when the judge quoted it."""


class DifferenceView(NamedTuple):
    """A listed transcript as the report shows it."""

    difference: Difference
    evidence: list[EvidenceView]
    checks: list[tuple[str, str]]
    chat: list[ChatTurn]
    """The chat, with the judge's verbatim quotes marked; empty when the report was written without it."""


def marked_turns(transcript: Transcript, quotes: Iterable[tuple[int, str]]) -> list[ChatTurn]:
    """Each turn's text split into pieces, the pieces the judge quoted (1-based turn, verbatim) marked.

    Only verbatim occurrences are marked; overlapping quotes merge. The pieces stay text: the template
    escapes them, so a chat's `<script>` is shown, never run.
    """
    by_turn: dict[int, list[str]] = {}
    for cited, quote in quotes:
        if quote.strip():
            by_turn.setdefault(cited, []).append(quote)
    out: list[ChatTurn] = []
    for position, turn in enumerate(transcript.turns, start=1):
        text = turn.text
        marked = [False] * len(text)
        for quote in by_turn.get(position, []):
            start = text.find(quote)
            while start >= 0:
                marked[start:start + len(quote)] = [True] * len(quote)
                start = text.find(quote, start + 1)
        pieces: list[tuple[str, bool]] = []
        for ch, m in zip(text, marked, strict=True):
            if pieces and pieces[-1][1] == m:
                pieces[-1] = (pieces[-1][0] + ch, m)
            else:
                pieces.append((ch, m))
        out.append((turn.role.value, pieces))
    return out


def _check_items(checks: Any) -> list[tuple[str, str]]:
    """A transcript's stored deterministic checks as (name, value) lines, when there are any.

    The record is keyed JSON owned by pipeline/checks/checker.py; its flat `columns` are the summary meant
    for people, so they are shown when present, else the top-level keys. Empty (null) values are left out.
    """
    if not isinstance(checks, dict):
        return []
    flat = checks["columns"] if isinstance(checks.get("columns"), dict) else checks
    return [(str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
            for k, v in flat.items() if v is not None]


def difference_views(result: CheckResult, out_dir: Path,
                     chats: Mapping[str, Transcript] | None = None) -> list[DifferenceView]:
    """The listed transcripts with the judge's repeat-0 reasoning and quotes, any stored checks and, when
    `chats` has them, their text with the quotes marked."""
    wanted = {d.transcript_id for d in result.differences}
    grades: dict[tuple[str, str], CriterionGrade] = {}
    meta: dict[str, dict[str, Any]] = {}
    if wanted and (out_dir / DB_NAME).exists():
        with Store.open(out_dir) as store:
            for grade in store.iter_grades(rubric_hash=result.rubric_hash):
                if grade.transcript_id in wanted and grade.repeat == 0 and grade.model == result.model:
                    grades.update({(grade.transcript_id, cg.criterion_id): cg for cg in grade.criteria})
            meta = store.transcript_meta()
    names = {c.criterion_id: c.name for c in result.criteria}
    views = []
    for d in result.differences:
        evidence = []
        for gap in d.criteria:
            cg = grades.get((d.transcript_id, gap.criterion_id))
            evidence.append(EvidenceView(
                criterion=names.get(gap.criterion_id, gap.criterion_id), judge=gap.judge, human=gap.human,
                reasoning=cg.reasoning if cg else "", quotes=[(e.turn, e.quote, e.verified) for e in cg.evidence]
                if cg else [],
            ))
        chat = (chats or {}).get(d.transcript_id)
        quotes = [(turn, quote) for e in evidence for turn, quote, _ in e.quotes]
        views.append(DifferenceView(d, evidence, _check_items((meta.get(d.transcript_id) or {}).get("checks")),
                                    marked_turns(chat, quotes) if chat else []))
    return views


# --- rendering ----------------------------------------------------------------------------------


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
    env.filters.update(num=_num, signed=_signed, ci=_ci, pct=_pct, md=_md)
    env.globals.update(t=_t, why=_why, glossary=GLOSSARY)
    return env


@jinja2.pass_context
def _t(context: jinja2.runtime.Context, key: str, **fields: object) -> str:
    """A message of templates/messages.yaml in the render's `lang` (Chinese when not given)."""
    return message(key, context.get("lang", "zh"), **fields)


@jinja2.pass_context
def _why(context: jinja2.runtime.Context, c: CriterionCheck) -> str:
    """A criterion's verdict sentence in the render's `lang`."""
    detail, lang = c.verdict_detail, context.get("lang", "zh")
    if detail is None:
        return ""
    return detail.sentence if lang == "zh" else sentence(detail.reasons, lang, contrast=detail.contrast)


def render(template: str, **variables: Any) -> str:
    """Render one of pipeline/templates/ (HTML autoescaped, Markdown not)."""
    return _environment().get_template(template).render(**variables)


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
        "kappa": kappa_chart(labelled, result.options.thresholds),
        "bias": bias_chart(labelled),
        "heatmaps": [(c, heatmap(c.judge_vs_human), distribution(c.judge_vs_human)) for c in labelled],
        # Only the total's: group and dimension sums are often the same sum again (one group per dimension).
        "sum_heatmaps": [(s, heatmap(s.judge_vs_human)) for s in result.sums
                         if s.kind == "total" and s.judge_vs_human.n and len(s.judge_vs_human.levels) <= 15],
        "differences": difference_views(result, out_dir, chats),
        "lang": lang,
        "alt_tests": [c for c in result.criteria if c.alt_test is not None],
        "baselines": {c.criterion_id: {b.name: b for b in c.baselines} for c in result.criteria},
        "consensus_rule": CONSENSUS_RULE,
        "ceilings": any(c.human_ceiling is not None for c in result.criteria),
        "sample": SampleSize(n=result.transcripts_graded, minimum=min_labelled),
        "too_few": TOO_FEW,
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
                            chats: Mapping[str, Transcript] | None = None) -> list[Path]:
    """Write rubric_compare.json, .md and .html for a two-rubric check into `out_dir`; the page shows each
    flipped chat's text from `chats`, when given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{RUBRIC_COMPARE}.{ext}" for ext in ("json", "md", "html")]
    paths[0].write_text(comparison.model_dump_json(indent=2) + "\n", encoding="utf-8")
    texts = {tid: marked_turns(t, []) for tid, t in (chats or {}).items()}
    for path in paths[1:]:
        path.write_text(render(path.name, c=comparison, chats=texts), encoding="utf-8")
    return paths
