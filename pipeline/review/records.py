"""What reviewers send (labels, disputes, resolutions): the request models and their checks against the run.

Every rejection is a `ReviewRejected` with a message in Chinese that names the offending value, which
the API returns with status 422.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import KefuError
from pipeline.review.runs import ReviewRun
from pipeline.rubric.model import Criterion
from pipeline.store.rows import DisputeRow, LabelRow
from pipeline.store.store import Store


class ReviewRejected(KefuError):
    """A label, dispute or resolution that does not fit the run; `message` says why, for people."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class LabelIn(_In):
    """A reviewer's score of one criterion of one chat (POST /api/labels)."""

    transcript_id: str = Field(min_length=1, description="The chat, by id.")
    criterion_id: str = Field(min_length=1, description="The rubric criterion, by id.")
    score: int = Field(description="One of the criterion's level points.")
    rater_id: str = Field(min_length=1, max_length=100, description="The reviewer's name.")


class DisputeIn(_In):
    """A dispute of one criterion's grade (POST /api/disputes)."""

    transcript_id: str = Field(min_length=1, description="The chat, by id.")
    criterion_id: str = Field(min_length=1, description="The rubric criterion, by id.")
    reason: str = Field(min_length=1, max_length=2000, description="Why the grade is wrong.")
    opened_by: str = Field(description="Who opens it.", min_length=1, max_length=100)


class ResolveIn(_In):
    """A reviewer's decision on a dispute (POST /api/disputes/{id}/resolve)."""

    final_score: int = Field(description="The criterion's final score: one of its level points.")
    resolved_by: str = Field(description="Who decides.", min_length=1, max_length=100)
    note: str = Field(min_length=1, max_length=2000, description="Why.")


def checked_criterion(run: ReviewRun, store: Store, transcript_id: str, criterion_id: str,
                      score: int | None = None) -> Criterion:
    """The criterion, once the chat is known to the run and the score (if given) is one of its levels."""
    if store.transcript_row(transcript_id) is None:
        raise ReviewRejected(f"未知会话：{transcript_id!r} 不在本次运行中")
    criterion = run.criteria.get(criterion_id)
    if criterion is None:
        raise ReviewRejected(f"未知评分项：{criterion_id!r} 不是评分标准 {run.rubric.id} 的评分项")
    if score is not None and score not in criterion.points:
        allowed = "、".join(map(str, criterion.points))
        raise ReviewRejected(f"分数 {score} 不是评分项 {criterion.name}（{criterion.id}）的档位，可选：{allowed}")
    return criterion


def save_label(run: ReviewRun, label: LabelIn) -> LabelRow:
    """Check and store a label (committed on return)."""
    with run.store() as store:
        checked_criterion(run, store, label.transcript_id, label.criterion_id, label.score)
        return store.save_label(transcript_id=label.transcript_id, criterion_id=label.criterion_id,
                                score=label.score, rater_id=label.rater_id, rubric_id=run.rubric.id,
                                rubric_version=run.rubric.version)


def open_dispute(run: ReviewRun, dispute: DisputeIn) -> DisputeRow:
    """Check and store a new open dispute."""
    with run.store() as store:
        checked_criterion(run, store, dispute.transcript_id, dispute.criterion_id)
        return store.open_dispute(transcript_id=dispute.transcript_id, criterion_id=dispute.criterion_id,
                                  reason=dispute.reason, opened_by=dispute.opened_by)


def resolve_dispute(run: ReviewRun, dispute_id: int, decision: ResolveIn) -> DisputeRow:
    """Check and store a decision; only an open dispute can be resolved (a later change is a new dispute)."""
    with run.store() as store:
        dispute = store.dispute(dispute_id)
        if dispute is None:
            raise ReviewRejected(f"未知申诉：编号 {dispute_id}")
        checked_criterion(run, store, dispute.transcript_id, dispute.criterion_id, decision.final_score)
        resolved = store.resolve_dispute(dispute_id, final_score=decision.final_score,
                                         resolved_by=decision.resolved_by, note=decision.note)
        if resolved is None:
            raise ReviewRejected(f"申诉 {dispute_id} 已处理过；如需再改，请新开一条申诉")
        return resolved
