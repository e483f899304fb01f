"""The Chinese headings people read for the columns whose ids the machine files keep.

One vocabulary for every table a person opens (the spreadsheet, the summary's CSV and XLSX, the
console): each column id maps to exactly one heading here, and the README's tables are this
mapping. Rubric columns (criteria, groups, dimensions) take their names from the rubric itself.
"""

from __future__ import annotations

from pipeline.rubric.model import Rubric

SCORE_HEADINGS: dict[str, str] = {
    "transcript_id": "会话编号",
    "repeat": "重复序号",
    "total": "总分",
    "max_total": "满分",
    "model": "评分模型",
    "status": "评分状态",
    "llm_total": "模型原始总分",
    "critical_failed": "致命项",
    "adjustments": "扣分调整",
    "adjustment_ids": "调整编号",
    "needs_review": "待复核",
    "injection_suspected": "疑似对评分模型下指令",
}
"""scores.csv's fixed columns."""

CHECK_HEADINGS: dict[str, str] = {
    "timing_not_measurable": "无法计时原因",
    "first_reply_status": "首条消息回复情况",
    "first_response_s": "首次人工回复用时(秒)",
    "first_bot_reply_s": "首次机器人回复用时(秒)",
    "greeted_within_limit": "10秒内问候(含问候语)",
    "first_reply_within_greet_limit": "10秒内首次回复",
    "greeting_text": "问候语原文",
    "mean_wait_within_rate_limit": "平均等待在3分钟内",
    "satisfaction_stars": "满意度星级",
    "satisfied": "满意(4-5星)",
    "negative_language_hits": "负面语言次数",
    "first_reply_within_limit": "2分钟内首次回复",
    "customer_messages": "顾客消息数",
    "unanswered_messages": "未回复消息数",
    "mean_wait_s": "平均等待(秒)",
    "max_wait_s": "最长等待(秒)",
    "burst_mean_wait_s": "连发平均等待(秒)",
    "burst_max_wait_s": "连发最长等待(秒)",
    "share_within_reply_limit": "1分钟内回复占比",
    "share_within_rate_limit": "3分钟内回复占比",
    "banned_hits": "禁用语次数",
    "negation_refusal_hits": "“不”字拒绝次数",
    "but_words_hits": "“但是”类转折次数",
    "honorific_used": "使用“您”",
    "greeting_found": "有问候语",
    "closing_found": "有结束语",
    "refusal_replies": "拒绝回复数",
    "refusals_without_apology": "拒绝未致歉数",
    "refusal_first_words_ok": "拒绝先致歉",
    "phrase_hits": "命中词句",
}
"""The check columns (pipeline/checks/checker.py `CHECKS`), with the seeds' limits in the names."""

GROUP_HEADINGS: dict[str, str] = {"agent": "客服", "shop": "店铺", "platform": "平台", "day": "日期"}
"""The summary's group column, per `--by`."""

SUMMARY_HEADINGS: dict[str, str] = {
    "transcripts": "会话数",
    "rows": "计分行数",
    "mean_total": "平均总分",
    "weakest": "最弱评分项",
    "critical_failed": "致命项",
    "needs_review": "待复核",
    "timing_sessions": "计时会话数",
    "not_measurable_sessions": "无法计时会话数",
    "first_reply_sessions": "首次回复计数会话数",
    "first_replies_within": "2分钟内首次回复会话数",
    "first_reply_rate": "2分钟首次回复率",
    "first_reply_pass": "首次回复率达标",
    "reply_rate_basis": "3分钟平均回复率口径",
    "reply_rate_within": "3分钟平均回复率分子",
    "reply_rate_of": "3分钟平均回复率分母",
    "reply_rate": "3分钟平均回复率",
    "reply_pass": "平均回复率达标",
    "rated_sessions": "已评价会话数",
    "satisfied_sessions": "满意会话数",
    "satisfaction_rate": "满意度",
    "satisfaction_pass": "满意度达标",
    "banned_rate": "禁用语率",
    "negation_refusal_rate": "“不”字拒绝率",
}
"""The summary's fixed columns; a dimension's mean is `mean_<id>` → "<dimension name>均分"."""

STATUS_WORDS: dict[str, str] = {"scored": "已评分", "partial": "部分评分", "unscored": "未评分"}
"""A row's or a grade's status."""


def rubric_headings(rubric: Rubric) -> dict[str, str]:
    """Criterion, group and dimension ids → their rubric names with the maximum: "招呼语 (3)" for a criterion,
    "服务用语小计 (9)" for a group or dimension total (a group may share its criterion's name)."""
    out = {c.id: f"{c.name} ({c.max})" for c in rubric.criteria()}
    for d in rubric.dimensions:
        out |= {g.id: f"{g.name}小计 ({g.points})" for g in d.groups}
        out[d.id] = f"{d.name}小计 ({d.points})"
    return out


def score_headings(rubric: Rubric) -> dict[str, str]:
    """Every scores.csv column id → its heading."""
    return {**SCORE_HEADINGS, "total": f"总分 ({rubric.total})", **rubric_headings(rubric), **CHECK_HEADINGS}


def summary_headings(rubric: Rubric, by: str) -> dict[str, str]:
    """Every summary column id → its heading."""
    means = {f"mean_{d.id}": f"{d.name}均分" for d in rubric.dimensions}
    return {by: GROUP_HEADINGS[by], **SUMMARY_HEADINGS, **means}


def yes_no(value: bool | None) -> str | None:
    """A flag as a person reads it: 是 / 否, or an empty cell."""
    return None if value is None else ("是" if value else "否")
