"""`kefu batch`: grade a backlog through a Batch API or vLLM's offline runner (thin: parse, call, print).

pipeline/cli/main.py registers it with `app.add_typer(batch_app, name="batch")`. Every command works on a
run folder and can be rerun: what is done is recorded in the folder's store. Exit codes: 0 done,
2 bad input, settings or a refused request, 3 a transient failure (run the same command again).
See docs/batch.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.batch.limits import MAX_BYTES, MAX_REQUESTS, over_limits
from pipeline.checks.checker import DEFAULT_LEXICONS, ServiceChecker
from pipeline.cli import options
from pipeline.cli.console import NEEDS_REVIEW_NOTE, console, fail, log_to, out, redaction_text, tokens_text
from pipeline.errors import KefuError
from pipeline.grading.prompting import PromptSet
from pipeline.grading.redaction import RedactionConfig, is_loopback
from pipeline.grading.settings import Settings, load_settings
from pipeline.inputs.transcripts import read_transcripts
from pipeline.models.transcript import Reject, Transcript
from pipeline.outputs.exports import refresh_outputs
from pipeline.rubric.load import load_rubric
from pipeline.store.store import Store

# The batch machinery and the price tables are imported by the commands that use them: `kefu` registers
# these commands at every start-up, and `kefu grade` needs neither.
if TYPE_CHECKING:
    from pipeline.batch.files import BatchMode, BatchWriteResult
    from pipeline.batch.ingest import CollectResult
    from pipeline.batch.provider import BatchStatus
    from pipeline.grading.costs import CostEstimate

from pipeline.paths import CHECKOUT_DIR as REPO

batch_app = typer.Typer(
    help="Grade through a Batch API (about half price, results within 24 h) or vLLM's offline batch runner.",
    no_args_is_help=True,
)


def _money(amount: float) -> str:
    """Two decimals, or four below 1 so that a pilot's cost does not print as 0.00."""
    return f"{amount:,.2f}" if amount >= 1 else f"{amount:.4f}"


def _mode(settings: Settings) -> BatchMode:
    # A batch cannot fall back after a refusal the way online "auto" does, so auto means json_schema.
    return "json_object" if settings.response_format == "json_object" else "json_schema"


def _items(inputs: Sequence[Path], shop_speaker: list[str] | None, bot_speaker: list[str] | None,
           shop_prefix: list[str] | None) -> Iterator[Transcript | Reject]:
    return read_transcripts(list(inputs), shop_speakers=tuple(shop_speaker or ()),
                            bot_speakers=tuple(bot_speaker or ()), shop_prefixes=tuple(shop_prefix or ()))


def _write(inputs: Sequence[Path], *, rubric_path: Path, out_dir: Path, settings: Settings, repeats: int,
           per_criterion: bool, retry_failed: bool, redact: bool | None, lexicons: Path,
           shop_speaker: list[str] | None, bot_speaker: list[str] | None, shop_prefix: list[str] | None,
           max_requests: int, max_bytes: int) -> BatchWriteResult:
    from pipeline.batch.files import write_batch_files

    rubric = load_rubric(rubric_path)
    prompts = PromptSet(rubric.language)
    # As in `kefu grade`: personal data stays in only for an endpoint on this machine.
    redaction = redact if redact is not None else not is_loopback(settings.base_url or "")
    record = settings.public() | {"rubric_path": str(rubric_path), "redact": redaction,
                                  "lexicon_path": str(lexicons)}
    with Store.open(out_dir) as store:
        return write_batch_files(
            _items(inputs, shop_speaker, bot_speaker, shop_prefix), rubric=rubric, prompts=prompts,
            model=settings.model, sampling=settings.sampling, store=store, out_dir=out_dir,
            per_criterion=per_criterion, repeats=repeats, response_mode=_mode(settings), retry_failed=retry_failed,
            redaction=RedactionConfig() if redaction else None, checker=ServiceChecker.load(lexicons),
            settings_record=record, max_requests=max_requests, max_bytes=max_bytes,
        )


def _print_written(result: BatchWriteResult) -> None:
    table = Table(title="kefu batch write", show_header=False)
    table.add_row("读入会话", str(result.transcripts))
    table.add_row("写出请求", f"{result.requests}，共 {len(result.files)} 个文件")
    table.add_row("已完成或在批次中", str(result.skipped))
    table.add_row("拒收", str(result.rejected) + ("  （见 rejects.jsonl）" if result.rejected else ""))
    table.add_row("隐私脱敏", redaction_text(result.redacted, result.redactions))
    out.print(table)
    for path in result.files:
        out.print(str(path))


def _print_statuses(statuses: list[BatchStatus], title: str) -> None:
    table = Table(title=title)
    for column in ("文件", "批次", "状态", "请求数", "已完成", "失败", "已收取"):
        table.add_column(column)
    for s in statuses:
        table.add_row(s.local_file, s.batch_id or "—", s.status, str(s.requests),
                      "—" if s.completed is None else str(s.completed), "—" if s.failed is None else str(s.failed),
                      "是" if s.collected else "否")
    out.print(table)
    for s in statuses:
        if s.problem and not s.collected:
            console.print(f"[yellow]{escape(s.local_file)}:[/yellow] {escape(s.problem)}")


def _print_collected(result: CollectResult, prices_path: Path | None, batch: bool) -> None:
    table = Table(title="kefu batch collect", show_header=False)
    table.add_row("已评分", str(result.scored))
    table.add_row("未评分", str(result.unscored) + ("  （kefu grade --retry-failed 可在线重评）"
                                                    if result.unscored else ""))
    table.add_row("此前已收取", str(result.already_collected))
    if result.unknown or result.unreadable:
        table.add_row("跳过的行", f"custom_id 不认识 {result.unknown} 行，无法读取 {result.unreadable} 行"
                                 "（见 kefu.log）")
    if result.waiting:
        table.add_row("仍在运行", ", ".join(result.waiting))
    if result.superseded:
        table.add_row("未存入", f"{result.superseded}  （保留了已有的评分：它已评分或更新）")
    table.add_row("令牌数", tokens_text(result.prompt_tokens, result.cached_tokens, result.completion_tokens))
    if batch and len(result.models) == 1:
        from pipeline.grading.costs import UNKNOWN_MODEL, actual_cost, load_prices

        prices = load_prices(prices_path)
        model = result.models[0]
        cost = actual_cost(result.prompt_tokens, result.cached_tokens, result.completion_tokens, model, prices,
                           batch=True)
        entry = prices.price(model)
        table.add_row("费用", UNKNOWN_MODEL if cost is None or entry is None
                      else f"{_money(cost)} {entry.currency}，按 {prices.as_of} 的批量价格（请核对）")
    out.print(table)
    _print_problems(result)


def _print_problems(result: CollectResult) -> None:
    """Each batch that could not be collected, and what to do about it."""
    for p in result.problems:
        if p.next_step == "settled":
            todo = ("其请求已记为未评分 (stored unscored): kefu batch write --retry-failed 或 "
                    "kefu grade --retry-failed 重新发送 (sends them again)")
        elif p.next_step == "collect again":
            todo = "稍后再运行 kefu batch collect (run collect again later)"
        else:
            todo = "检查 --base-url 与 API key (check --base-url and the key), 然后再运行 collect"
        console.print(f"[yellow]未能收取 (not collected) {escape(p.local_file)}[/yellow] "
                      f"({escape(p.batch_id or '—')}): {escape(p.reason)}\n  → {todo}")


def _export(result: CollectResult, out_dir: Path, rubric_path: Path | None) -> None:
    """Rewrite the run folder's contract files (scores.csv, grades.jsonl, checks.jsonl), as `kefu grade` does."""
    if not (result.scored or result.unscored):
        return
    from pipeline.batch.ingest import batch_rubric

    with Store.open(out_dir) as store:
        rubric = load_rubric(rubric_path) if rubric_path else batch_rubric(store)
        outputs = refresh_outputs(store, rubric, out_dir)
    if outputs.needs_review:
        out.print(f"待复核：{outputs.needs_review}  {NEEDS_REVIEW_NOTE}")
    out.print(f"评分 scores: {outputs.scores_csv}\n逐项 grades: {outputs.grades_jsonl}\n"
              f"检查 checks: {outputs.checks_jsonl}")


@batch_app.command("write")
def write_cmd(
    inputs: options.Inputs,
    rubric: options.RubricOpt = REPO / "rubric/ecommerce_cs.yaml",
    out_dir: options.RunFolderOpt = Path("out"),
    model: options.ModelOpt = None,
    base_url: options.BaseUrlOpt = None,
    repeats: options.RepeatsOpt = 1,
    per_criterion: options.PerCriterionOpt = False,
    retry_failed: Annotated[bool, typer.Option(help="Write unscored grades' requests again.")] = False,
    temperature: options.TemperatureOpt = None,
    seed: options.SeedOpt = None,
    max_tokens: options.MaxTokensOpt = None,
    response_format: Annotated[str | None, typer.Option(help="json_schema (auto) or json_object.")] = None,
    redact: options.RedactFlag = None,
    lexicons: options.LexiconsOpt = DEFAULT_LEXICONS,
    shop_speaker: options.ShopSpeakerOpt = None,
    bot_speaker: options.BotSpeakerOpt = None,
    shop_prefix: options.ShopPrefixOpt = None,
    max_requests: Annotated[int, typer.Option(min=1, help="Requests per file at most.")] = MAX_REQUESTS,
    max_bytes: Annotated[int, typer.Option(min=1, help="Bytes per file at most.")] = MAX_BYTES,
    config: options.ConfigOpt = None,
) -> None:
    """Write batch request files into OUT/batch/ for `kefu batch submit` or vLLM's run_batch; skips what is done."""
    log_to(out_dir)
    for warning in over_limits(max_requests, max_bytes):
        console.print(f"[yellow]警告 (warning):[/yellow] {warning}")
    overrides = {"model": model, "base_url": base_url, "temperature": temperature, "seed": seed,
                 "max_tokens": max_tokens, "response_format": response_format}
    try:
        settings = load_settings(config, overrides)
        result = _write(inputs, rubric_path=rubric, out_dir=out_dir, settings=settings, repeats=repeats,
                        per_criterion=per_criterion, retry_failed=retry_failed, redact=redact, lexicons=lexicons,
                        shop_speaker=shop_speaker, bot_speaker=bot_speaker, shop_prefix=shop_prefix,
                        max_requests=max_requests, max_bytes=max_bytes)
    except KefuError as exc:
        fail(exc)
    _print_written(result)


@batch_app.command("submit")
def submit_cmd(
    out_dir: Annotated[Path, typer.Argument(help="A run folder with files from `kefu batch write`.")],
    base_url: options.BaseUrlOpt = None,
    api_key_env: options.KeyEnvOpt = None,
    config: options.ConfigOpt = None,
) -> None:
    """Upload every request file not yet submitted and start its batch (24 h window)."""
    from pipeline.batch.provider import submit

    _print_statuses(_ask_provider(submit, out_dir, base_url, api_key_env, config), "kefu batch submit")


@batch_app.command("status")
def status_cmd(
    out_dir: Annotated[Path, typer.Argument(help="A run folder with submitted batches.")],
    base_url: options.BaseUrlOpt = None,
    api_key_env: options.KeyEnvOpt = None,
    config: options.ConfigOpt = None,
) -> None:
    """Ask the provider where every batch of the run folder stands."""
    from pipeline.batch.provider import status

    _print_statuses(_ask_provider(status, out_dir, base_url, api_key_env, config), "kefu batch status")


def _ask_provider(action: Callable[[Path, Any], list[BatchStatus]], out_dir: Path, base_url: str | None,
                  api_key_env: str | None, config: Path | None) -> list[BatchStatus]:
    """Run `submit` or `status` against the configured provider, failing with a readable message."""
    from pipeline.batch.provider import batch_client

    log_to(out_dir)
    try:
        return action(out_dir, batch_client(_settings(config, base_url, api_key_env).endpoint()))
    except KefuError as exc:
        fail(exc)


def _settings(config: Path | None, base_url: str | None, api_key_env: str | None) -> Settings:
    return load_settings(config, {"base_url": base_url, "api_key_env": api_key_env})


@batch_app.command("collect")
def collect_cmd(
    out_dir: Annotated[Path, typer.Argument(help="A run folder with submitted batches.")],
    rubric: Annotated[Path | None, typer.Option("--rubric", "-r", help="Rubric YAML (default: as written).")]
    = None,
    base_url: options.BaseUrlOpt = None,
    api_key_env: options.KeyEnvOpt = None,
    prices: options.PricesOpt = None,
    config: options.ConfigOpt = None,
) -> None:
    """Download and store the results of every finished batch; rerun it until nothing is still running."""
    from pipeline.batch.provider import batch_client, collect

    log_to(out_dir)
    try:
        client = batch_client(_settings(config, base_url, api_key_env).endpoint())
        result = collect(out_dir, client, load_rubric(rubric) if rubric else None)
        _print_collected(result, prices, batch=True)
        _export(result, out_dir, rubric)
    except KefuError as exc:
        fail(exc)
    steps = {p.next_step for p in result.problems}
    if steps - {"settled"}:  # the rest is collected and exported; these need a fix (2) or another collect (3)
        raise typer.Exit(2 if "fix the endpoint" in steps else 3)


@batch_app.command("collect-local")
def collect_local_cmd(
    out_dir: Annotated[Path, typer.Argument(help="The run folder the request files were written in.")],
    output_jsonl: Annotated[Path, typer.Argument(help="vLLM run_batch's output file (-o).")],
    rubric: Annotated[Path | None, typer.Option("--rubric", "-r", help="Rubric YAML (default: as written).")]
    = None,
) -> None:
    """Store the results of `python -m vllm.entrypoints.openai.run_batch -i REQUESTS -o OUTPUT --model M`."""
    from pipeline.batch.provider import collect_local

    log_to(out_dir)
    try:
        result = collect_local(out_dir, output_jsonl, load_rubric(rubric) if rubric else None)
        _print_collected(result, None, batch=False)
        _export(result, out_dir, rubric)
    except KefuError as exc:
        fail(exc)


@batch_app.command("estimate")
def estimate_cmd(
    inputs: options.Inputs,
    rubric: options.RubricOpt = REPO / "rubric/ecommerce_cs.yaml",
    model: options.ModelOpt = None,
    repeats: options.RepeatsOpt = 1,
    per_criterion: options.PerCriterionOpt = False,
    completion_tokens: Annotated[int | None, typer.Option(
        help="Completion tokens per request (default: 120 per criterion graded).")] = None,
    online: Annotated[bool, typer.Option(help="Price online requests instead of the batch discount.")] = False,
    prices: options.PricesOpt = None,
    config: options.ConfigOpt = None,
) -> None:
    """Forecast a job's tokens and cost before sending anything (prompts rendered as they would be sent)."""
    from pipeline.grading.costs import estimate_job, load_prices

    try:
        settings = load_settings(config, {"model": model})
        r = load_rubric(rubric)
        estimate = estimate_job(_items(inputs, None, None, None), rubric=r, prompts=PromptSet(r.language),
                                per_criterion=per_criterion, repeats=repeats,
                                max_completion_tokens_estimate=completion_tokens, model=settings.model,
                                prices=load_prices(prices), batch=not online)
    except KefuError as exc:
        fail(exc)
    print_estimate(estimate, online=online)


def print_estimate(estimate: CostEstimate, *, online: bool) -> None:
    """The forecast as a table (shared by `kefu batch estimate` and `kefu grade --dry-run`)."""
    table = Table(title=f"kefu 费用估算 — {estimate.model}", show_header=False)
    table.add_row("定价模型", estimate.model)
    table.add_row("会话", f"{estimate.transcripts:,}（拒收 {estimate.rejected:,}）")
    table.add_row("请求数", f"{estimate.requests:,}")
    table.add_row("提示令牌", f"{estimate.prompt_tokens:,}（系统提示占 {estimate.shared_prefix_share:.0%}）")
    table.add_row("回复令牌", f"{estimate.completion_tokens:,}（假设值）")
    if estimate.cost is not None and estimate.cost_with_caching is not None:
        table.add_row("费用（在线）" if online else "费用（批量）",
                      f"{_money(estimate.cost)} {estimate.currency}；系统提示走缓存则为 "
                      f"{_money(estimate.cost_with_caching)}")
    table.add_row("价格表日期", f"{estimate.prices_as_of}（请核对）")
    for note in estimate.notes:
        table.add_row("说明", note)
    out.print(table)


if __name__ == "__main__":  # `python -m pipeline.cli.batch …` before cli.py registers it
    batch_app()
