"""The options several `kefu` commands share, declared once so that their names and help stay the same.

Each is an `Annotated` type for a command's parameter; the command gives the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.grading.settings import Settings

_DEFAULTS = Settings()
"""What a job uses when neither a flag, the config nor the environment says otherwise."""

Inputs = Annotated[list[Path], typer.Argument(help="Transcript files or folders (.jsonl, .csv, .txt).")]
RubricOpt = Annotated[Path, typer.Option("--rubric", "-r", help="Rubric YAML.")]
RunFolderOpt = Annotated[Path, typer.Option("--out", "-o", help="Run folder (store, scores, rejects).")]
ConfigOpt = Annotated[Path | None, typer.Option(
    help="TOML config with a \\[kefu] table and nothing else (default ./kefu.toml).")]

ModelOpt = Annotated[str | None, typer.Option(
    help="Model name at the endpoint (or KEFU_MODEL); with no endpoint and no model, the embedded offline model.",
    show_default=_DEFAULTS.model)]
BaseUrlOpt = Annotated[str | None, typer.Option(help="OpenAI-compatible base URL (default: OPENAI_BASE_URL).")]
KeyEnvOpt = Annotated[str | None, typer.Option(help="Env variable holding the API key.")]
ConcurrencyOpt = Annotated[int | None, typer.Option(min=1, help="Requests in flight.",
                                                    show_default=str(_DEFAULTS.concurrency))]
RpmOpt = Annotated[float | None, typer.Option(help="Requests per minute at most.")]
TpmOpt = Annotated[float | None, typer.Option(help="Tokens per minute at most.")]
TimeoutOpt = Annotated[float | None, typer.Option(help=(
    "Request timeout, seconds. Default: adapts to the endpoint, 10× its recent 95th-percentile latency "
    "within 30-600 s (120 s until 10 replies); a request in flight over 4× that latency stops holding "
    "a place in flight meanwhile."))]
ContextWindowOpt = Annotated[int | None, typer.Option(help="Model context, tokens.")]

RepeatsOpt = Annotated[int, typer.Option(min=1, help="Independent grades per transcript.")]
PerCriterionOpt = Annotated[bool, typer.Option(help="One request per criterion.")]
RetryFailedOpt = Annotated[bool, typer.Option(help="Re-attempt unscored grades.")]
TemperatureOpt = Annotated[float | None, typer.Option(help="Sampling temperature.",
                                                      show_default=str(_DEFAULTS.temperature))]
SeedOpt = Annotated[int | None, typer.Option(help="Sampling seed.")]
MaxTokensOpt = Annotated[int | None, typer.Option(help="Completion token cap.",
                                                  show_default=str(_DEFAULTS.max_tokens))]
ResponseFormatOpt = Annotated[str | None, typer.Option(help="auto, json_schema or json_object.")]
RedactFlag = Annotated[bool | None, typer.Option(
    "--redact/--no-redact", help="Replace personal data before sending (default: on unless the endpoint is "
                                 "127.0.0.1/localhost).")]

ShopSpeakerOpt = Annotated[list[str] | None, typer.Option(help="Chat-log nickname that is the shop.")]
BotSpeakerOpt = Annotated[list[str] | None, typer.Option(help="Chat-log nickname that is a bot.")]
ShopPrefixOpt = Annotated[list[str] | None, typer.Option(help="Chat-log nickname prefix of shop agents.")]
LexiconsOpt = Annotated[Path, typer.Option(help="Phrase lexicons for the service checks.")]
MinLabelledOpt = Annotated[int, typer.Option(
    min=1, help="Labelled chats a verdict needs; below it the report says so and gives none.")]
PricesOpt = Annotated[Path | None, typer.Option(help="Price table YAML (default: the packaged, dated one).")]
