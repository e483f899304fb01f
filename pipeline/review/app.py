"""The workbench's web app: pages and the JSON API over one or more run folders (`kefu review`).

Pages are rendered on the server from Jinja templates with autoescaping on, so every chat text, id,
name and reason is text in the page, never markup; the pages' only script is served from
`static/`. Which run a request concerns is its `run` query parameter (0 by default).
"""

from __future__ import annotations

import csv
import io
import threading
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pipeline.outputs.summary import GROUP_BY, rate_text, summarize_figures
from pipeline.review import overview as ov
from pipeline.review.calibration import calibrate
from pipeline.review.chatview import load_chat
from pipeline.review.low_agreement import LowAgreement, low_agreement_criteria
from pipeline.review.queue import QueueSpec, draw_queue
from pipeline.review.records import (
    DisputeIn,
    LabelIn,
    ResolveIn,
    ReviewRejected,
    open_dispute,
    resolve_dispute,
    save_label,
)
from pipeline.review.runs import ReviewRun
from pipeline.review.security import Guard

HERE = Path(__file__).resolve().parent
CHAT_LIST_PAGE = 100
LABEL_COLUMNS = ("transcript_id", "criterion_id", "score", "rater_id", "labelled_at")
_M = TypeVar("_M", bound=BaseModel)
_PROBLEMS = {"missing": "缺少此字段", "int_parsing": "须为整数", "int_type": "须为整数", "string_too_short": "不能为空",
             "string_too_long": "太长", "extra_forbidden": "不认识的字段", "json_invalid": "不是合法的 JSON",
             "string_type": "须为文字", "model_type": "须为 JSON 对象"}


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
    )


def create_app(folders: list[Path], *, token: str | None = None) -> Starlette:
    """The app over these run folders; with `token`, every request must carry it (see `security`)."""
    runs = [ReviewRun(folder) for folder in folders]
    for run in runs:  # ready by the time someone opens a page (or that request waits for it)
        threading.Thread(target=run.warm_up, name=f"warm-up {run.folder}", daemon=True).start()
    env = _environment()

    def run_of(request: Request) -> tuple[int, ReviewRun]:
        raw = request.query_params.get("run", "0")
        if not raw.isdigit() or int(raw) >= len(runs):
            raise HTTPException(404, f"没有编号为 {raw} 的运行")
        return int(raw), runs[int(raw)]

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        index, run = run_of(request)
        html = env.get_template(name).render(
            runs=[r.folder.name for r in runs], run_index=index, run=run, rubric=run.rubric, **context)
        return HTMLResponse(html)

    async def overview_page(request: Request) -> Response:
        _, run = run_of(request)
        frame = run.overview_index()
        filters = ov.Filters.model_validate({k: v for k, v in request.query_params.items() if v != ""})
        chosen = ov.apply_filters(frame, filters)
        offset = _int_param(request, "offset")
        listed = chosen.iloc[offset:offset + CHAT_LIST_PAGE]
        by = request.query_params.get("by", "agent")
        return page(
            request, "overview.html", filters=filters, totals=ov.totals(chosen), all_totals=ov.totals(frame),
            rejected=_count_lines(run.folder / "rejects.jsonl"), distributions=ov.distributions(chosen, run.rubric),
            groups=summarize_figures(chosen, run.rubric, by if by in GROUP_BY else "agent"), rate_text=rate_text,
            by=by if by in GROUP_BY else "agent", group_names=ov.GROUPS,
            facets=ov.facet_values(frame), chats=listed.to_dict("records"), offset=offset,
            page_size=CHAT_LIST_PAGE, status_names=ov.STATUS_NAMES,
        )

    async def chat_page(request: Request) -> Response:
        _, run = run_of(request)
        view = load_chat(run, request.path_params["transcript_id"])
        if view is None:
            raise HTTPException(404, "没有这条会话")
        return page(request, "chat.html", chat=view, blind=False)

    def queue_of(run: ReviewRun, spec: QueueSpec) -> tuple[list[str], LowAgreement | None]:
        """The queue's chats and, for a low-agreement queue, its criteria and where they come from."""
        if spec.mode != "low_agreement":
            return draw_queue(run.overview_index(), spec), None
        low = low_agreement_criteria(run.folder, run.rubric_hash, spec.given_criteria(), list(run.criteria))
        return draw_queue(run.overview_index(), spec, low.criteria), low

    async def queue_page(request: Request) -> Response:
        _, run = run_of(request)
        spec = QueueSpec.model_validate(dict(request.query_params))
        ids, low = queue_of(run, spec)
        position = min(_int_param(request, "i"), max(len(ids) - 1, 0))
        view = load_chat(run, ids[position]) if ids else None
        blind = request.query_params.get("blind", "1") == "1"
        shown = [c for c in run.rubric.criteria() if low is None or c.id in low.criteria]
        return page(request, "queue.html", spec=spec, ids=ids, position=position, chat=view, blind=blind,
                    low=low, shown=shown)

    async def disputes_page(request: Request) -> Response:
        _, run = run_of(request)
        status = request.query_params.get("status") or None
        with run.store() as store:
            rows = store.disputes(status=status if status in ("open", "resolved") else None)
        return page(request, "disputes.html", disputes=rows, status=status or "")

    async def calibration_page(request: Request) -> Response:
        _, run = run_of(request)
        only = None
        if "mode" in request.query_params:  # the set of one queue: a calibration session
            only, _ = queue_of(run, QueueSpec.model_validate(dict(request.query_params)))
        return page(request, "calibration.html", criteria=calibrate(run, only), only=only)

    async def api_chat(request: Request) -> Response:
        _, run = run_of(request)
        view = load_chat(run, request.path_params["transcript_id"])
        if view is None:
            return JSONResponse({"detail": "没有这条会话"}, status_code=404)
        return JSONResponse(view.as_json())

    async def api_labels(request: Request) -> Response:
        _, run = run_of(request)
        label = await _body(request, LabelIn)
        return JSONResponse(save_label(run, label)._asdict(), status_code=201)

    async def api_labels_csv(request: Request) -> Response:
        _, run = run_of(request)
        with run.store() as store:
            rows = store.labels()
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(LABEL_COLUMNS)
        writer.writerows([r.transcript_id, r.criterion_id, r.score, r.rater_id, r.labelled_at] for r in rows)
        return Response(text.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"content-disposition": 'attachment; filename="labels.csv"'})

    async def api_disputes(request: Request) -> Response:
        _, run = run_of(request)
        if request.method == "POST":
            dispute = await _body(request, DisputeIn)
            return JSONResponse(open_dispute(run, dispute)._asdict(), status_code=201)
        status = request.query_params.get("status") or None
        with run.store() as store:
            rows = store.disputes(transcript_id=request.query_params.get("transcript_id") or None, status=status)
        return JSONResponse([r._asdict() for r in rows])

    async def api_resolve(request: Request) -> Response:
        _, run = run_of(request)
        decision = await _body(request, ResolveIn)
        return JSONResponse(resolve_dispute(run, request.path_params["dispute_id"], decision)._asdict())

    async def rejected(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ReviewRejected)
        return JSONResponse({"detail": exc.message}, status_code=422)

    async def bad_parameters(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ValidationError)
        return await not_found(request, HTTPException(400, "地址中的参数不正确：" + "；".join(
            f"{'.'.join(map(str, e['loc']))}：{_PROBLEMS.get(e['type'], e['msg'])}" for e in exc.errors())))

    async def not_found(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        html = env.get_template("error.html").render(message=exc.detail, runs=[], run_index=0)
        return HTMLResponse(html, status_code=exc.status_code)

    app = Starlette(
        routes=[
            Route("/", overview_page),
            Route("/chats/{transcript_id:path}", chat_page),
            Route("/queue", queue_page),
            Route("/disputes", disputes_page),
            Route("/calibration", calibration_page),
            Route("/api/chats/{transcript_id:path}", api_chat),
            Route("/api/labels", api_labels, methods=["POST"]),
            Route("/api/labels.csv", api_labels_csv),
            Route("/api/disputes", api_disputes, methods=["GET", "POST"]),
            Route("/api/disputes/{dispute_id:int}/resolve", api_resolve, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        exception_handlers={ReviewRejected: rejected, HTTPException: not_found, ValidationError: bad_parameters},
    )
    app.add_middleware(Guard, token=token)
    return app


async def _body(request: Request, model: type[_M]) -> _M:
    """The request's JSON as `model`, or a 422 in Chinese naming the fields at fault."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        problems = "；".join(f"{'.'.join(map(str, e['loc'])) or '请求体'}：{_PROBLEMS.get(e['type'], e['msg'])}"
                            for e in exc.errors())
        raise ReviewRejected(f"请求内容不符合要求：{problems}") from None


def _int_param(request: Request, name: str) -> int:
    """A non-negative integer query parameter (a page offset, a queue position); 0 when absent or not one."""
    raw = request.query_params.get(name, "")
    return int(raw) if raw.isdigit() else 0


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def serve(folders: list[Path], *, host: str, port: int, token: str | None) -> None:
    """Run the app with uvicorn until Ctrl-C."""
    import uvicorn

    uvicorn.run(create_app(folders, token=token), host=host, port=port, log_level="warning")
