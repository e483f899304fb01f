"""PII redaction: typed, numbered placeholders for a transcript's personal data before it leaves the machine.

Detectors run in a fixed order over each turn's original text, and every span a detector takes is
masked for the detectors after it. The order decides ties between look-alike digit runs:
e-mail (it may hold a QQ number) → ID number (18 digits, birth date and check character valid) →
bank card (16–19 digits, Luhn valid) → waybill (letter-prefixed codes such as JDVA01234567890 hold
phone-shaped digits) → mobile → landline → order number → address (last, so that a phone number
written right after a house number is already taken). ID and card candidates
are skipped when an order keyword (订单) stands just before them and the digits also fit an order
pattern: a Luhn-valid 19-digit Taobao order number is then an 订单号, not a 银行卡号.

Placeholders are stable within a transcript: the same value (compared without spaces, dashes or
the +86 prefix) gets the same `[手机号1]` in every turn; the next different value gets `[手机号2]`.
Placeholders already in the text are never touched, and numbering continues after them.

Every text field that can leave the machine is redacted: each turn's text and nickname
(`Turn.speaker`), and the transcript's platform, shop and agent id; the id, which is never sent, is
kept. Defaults are modest and best effort; shops add their own order and waybill formats in
`RedactionConfig`. Not covered: 400/800 service numbers (a business's, not a person's), QQ/WeChat
ids, names, and PII split across turns.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import cache, lru_cache
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from pipeline.models.strict import StrictModel
from pipeline.models.transcript import Transcript
from pipeline.regexes import Regex


class PiiKind(StrEnum):
    """The kinds of personal data redacted, in detection order."""

    email = "email"
    id_card = "id_card"
    bank_card = "bank_card"
    waybill = "waybill"
    mobile = "mobile"
    landline = "landline"
    order = "order"
    address = "address"


LABELS: dict[PiiKind, str] = {
    PiiKind.email: "邮箱",
    PiiKind.id_card: "身份证号",
    PiiKind.bank_card: "银行卡号",
    PiiKind.mobile: "手机号",
    PiiKind.landline: "座机",
    PiiKind.waybill: "运单号",
    PiiKind.order: "订单号",
    PiiKind.address: "地址",
}
"""The placeholder label of each kind: `[手机号1]`."""

DEFAULT_ORDER_PATTERNS = [
    r"\d{18,19}",  # 淘宝/天猫 orders are 18–19 digits, 抖店 19
    r"\d{6}-\d{15}",  # 拼多多: 6 digits, a dash, 15 digits
]
DEFAULT_WAYBILL_PATTERNS = [
    r"SF\d{12,13}",  # 顺丰
    r"YT\d{13}",  # 圆通
    r"JD[A-Z]{0,2}\d{11,13}",  # 京东 (JDVA…, JDX…)
    r"7[58]\d{13}",  # 中通 / 韵达 numeric waybills starting 75 or 78
    r"E[A-Z]\d{9}CN",  # EMS, UPU S10 format
]


class ExtraPattern(StrictModel):
    """A shop's own pattern for one kind, tried after that kind's built-in detectors."""

    kind: PiiKind = Field(description="What the pattern finds.")
    pattern: Regex = Field(min_length=1, description="Python regular expression, matched as a whole token.")


class RedactionConfig(StrictModel):
    """Which kinds to redact and the shop-specific number formats."""

    kinds: list[PiiKind] = Field(default_factory=lambda: list(PiiKind), description="The kinds to redact.")
    order_patterns: list[Regex] = Field(
        default_factory=lambda: list(DEFAULT_ORDER_PATTERNS),
        description="Order-number regexes, matched as whole tokens, case-insensitive.",
    )
    waybill_patterns: list[Regex] = Field(
        default_factory=lambda: list(DEFAULT_WAYBILL_PATTERNS),
        description="Waybill regexes, matched as whole tokens, case-insensitive.",
    )
    order_keywords: list[str] = Field(
        default_factory=lambda: ["订单"],
        description="Words that, just before a digit run fitting an order pattern, make it an order number.",
    )
    extra_patterns: list[ExtraPattern] = Field(default_factory=list, description="More patterns for any kind.")


class PiiMatch(StrictModel):
    """One piece of personal data found in a text."""

    kind: PiiKind = Field(description="What it is.")
    start: int = Field(ge=0, description="Start offset in the text.")
    end: int = Field(ge=0, description="End offset (exclusive).")
    text: str = Field(description="The matched text.")


class RedactionResult(BaseModel):
    """The redacted transcript and what was replaced. The placeholder→original map is private.

    It is a private attribute, so it is in no dump, JSON or repr: only `original` and `restore`
    read it, for a person who has the result object in hand on this machine.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    transcript: Transcript = Field(description="The transcript with placeholders in place of personal data.")
    counts: dict[PiiKind, int] = Field(description="Occurrences replaced per kind (every kind present).")
    _originals: dict[str, str] = PrivateAttr(default_factory=dict)

    def original(self, placeholder: str) -> str:
        """The text a placeholder replaced (its first spelling); KeyError for an unknown placeholder."""
        return self._originals[placeholder]

    def restore(self, text: str) -> str:
        """Put the originals back into a text that uses this transcript's placeholders (e.g. a grade)."""
        return _PLACEHOLDER.sub(lambda m: self._originals.get(m.group(), m.group()), text)

    def columns(self) -> dict[str, int]:
        """Flat counts for one CSV row: redacted_<kind> and redacted_total."""
        return {
            **{f"redacted_{k.value}": n for k, n in self.counts.items()},
            "redacted_total": sum(self.counts.values()),
        }


_PLACEHOLDER = re.compile(r"\[(?P<label>" + "|".join(LABELS.values()) + r")(?P<n>\d+)\]")
# Full-width ASCII (１３８, ＋, （）) maps one to one onto ASCII, so offsets stay valid.
_HALF_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_MASK = "\x00"  # matched by no detector: not a digit, letter, CJK character or e-mail character
_TOKEN = r"(?<![A-Za-z\d])(?:{})(?![A-Za-z\d])"
_SEP = r"[ \-‐]"

_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_ID_CARD = re.compile(r"(?<![A-Za-z\d])\d{17}[\dXx](?![A-Za-z\d])")
_BANK_CARD = re.compile(rf"(?<!\d)\d{{4}}(?:{_SEP}?\d{{4}}){{3}}(?:{_SEP}?\d{{1,3}})?(?!\d)")
_MOBILE = re.compile(rf"(?<!\d)(?:(?:\+|00)?86{_SEP}?)?1[3-9]\d(?:{_SEP}?\d{{4}}){{2}}(?!\d)")
_LANDLINE = re.compile(rf"(?<!\d)(?:\(0\d{{2,3}}\)|0\d{{2,3}}){_SEP}?\d{{7,8}}(?!\d)")

_ROAD_SUFFIX = "大道|路|街|巷|弄|胡同"
_PLACE_SUFFIX = "小区|花园|公寓|大厦|广场|家园|新村|村|苑|园|公馆|中心|大楼"
_PROVINCES = (
    "北京|天津|上海|重庆|河北|山西|辽宁|吉林|黑龙江|江苏|浙江|安徽|福建|江西|山东|河南|湖北|湖南|广东|海南|"
    "四川|贵州|云南|陕西|甘肃|青海|台湾|内蒙古|广西|西藏|宁夏|新疆|香港|澳门"
)
# A place-name character: CJK, but not the words that lead into an address in chat (寄到, 地址是,
# 我住在, 位于, 投诉…), so that a match starts at the place name rather than a few characters
# before it (投诉北京市… is not a city called 投诉北京); 省 ends a province, never sits inside a name.
_NAME = r"(?:(?![的是在到寄送往收址住位于从去回诉为我你您请帮给改个这那和与及省])[\u4e00-\u9fa5])"
_PROVINCE = rf"(?:{_PROVINCES})(?:省|市|壮族自治区|回族自治区|维吾尔自治区|自治区|特别行政区)?"
_CITY = rf"{_NAME}{{2,6}}(?:市|自治州|州|盟|地区)"
_DISTRICT = rf"{_NAME}{{1,6}}(?:区|县|旗)"
_TOWN = rf"{_NAME}{{1,6}}(?:镇|乡|街道)"
_REGION = (
    rf"(?:{_PROVINCE}(?:{_CITY})?(?:{_DISTRICT})?(?:{_TOWN})?"
    rf"|{_CITY}(?:{_DISTRICT})?(?:{_TOWN})?|{_DISTRICT}(?:{_TOWN})?|{_TOWN})"
)
_ROAD = rf"{_NAME}{{1,10}}(?:{_ROAD_SUFFIX})"
_NUMBER = r"(?:\d{1,5}(?:-\d{1,4})?(?:号|弄|巷)){1,2}"
_PLACE = rf"{_NAME}{{1,10}}(?:{_PLACE_SUFFIX})"
_UNIT = r"(?:[\dA-Za-z]{1,5}(?:号楼|栋|幢|座|单元|楼|层|室|号)){1,4}(?:\d{1,5}(?!\d))?"


@cache
def _address() -> re.Pattern[str]:
    """The address detector, compiled on first use: it takes about 40 ms, and a run that redacts nothing
    (an endpoint on this machine) should not pay it at start-up."""
    # Every address has a road or place suffix within reach: the lookahead rejects most start positions
    # at once instead of walking every optional part of the pattern from there.
    return re.compile(
        rf"(?=[\u4e00-\u9fa5]{{0,45}}?(?:{_ROAD_SUFFIX}|{_PLACE_SUFFIX}))"
        rf"(?:(?:{_REGION})?{_ROAD}{_NUMBER}(?:{_PLACE})?(?:{_UNIT})?"
        rf"|{_REGION}(?:{_ROAD}|{_PLACE})(?:{_UNIT})?"
        rf"|{_PLACE}{_UNIT})"
    )


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def _digits(text: str) -> str:
    """The decimal digits of a text as ASCII (full-width １ counts as 1)."""
    return "".join(str(d) for ch in text if (d := unicodedata.decimal(ch, None)) is not None)


def _valid_id(text: str) -> bool:
    """GB 11643: a real birth date and the ISO 7064 MOD 11-2 check character."""
    digits = _digits(text[:17])
    try:
        date(int(digits[6:10]), int(digits[10:12]), int(digits[12:14]))
    except ValueError:
        return False
    check = _ID_CHECK[sum(int(d) * w for d, w in zip(digits, _ID_WEIGHTS, strict=True)) % 11]
    last = unicodedata.normalize("NFKC", text[17]).upper()
    return int(digits[6:10]) >= 1900 and digits[0] != "0" and last == check


def _valid_luhn(text: str) -> bool:
    digits = _digits(text)
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return 16 <= len(digits) <= 19 and total % 10 == 0


_Validator = Callable[[re.Match[str], str], bool]


@dataclass(frozen=True)
class _Detector:
    kind: PiiKind
    regex: re.Pattern[str]
    accept: _Validator


def _any(_: re.Match[str], __: str) -> bool:
    return True


class _Detectors:
    """A config compiled into the ordered list of detectors."""

    def __init__(self, config: RedactionConfig) -> None:
        orders = [re.compile(_TOKEN.format(p), re.IGNORECASE) for p in config.order_patterns]
        extra = [(e.kind, re.compile(_TOKEN.format(e.pattern), re.IGNORECASE)) for e in config.extra_patterns]
        self._order_keywords = tuple(config.order_keywords)
        self._orders = [*orders, *(r for k, r in extra if k is PiiKind.order)]
        builtin: dict[PiiKind, list[_Detector]] = {
            PiiKind.email: [_Detector(PiiKind.email, _EMAIL, _any)],
            PiiKind.id_card: [_Detector(PiiKind.id_card, _ID_CARD, self._id_card)],
            PiiKind.bank_card: [_Detector(PiiKind.bank_card, _BANK_CARD, self._bank_card)],
            PiiKind.mobile: [_Detector(PiiKind.mobile, _MOBILE, _any)],
            PiiKind.landline: [_Detector(PiiKind.landline, _LANDLINE, _any)],
            PiiKind.waybill: [
                _Detector(PiiKind.waybill, re.compile(_TOKEN.format(p), re.IGNORECASE), _any)
                for p in config.waybill_patterns
            ],
            PiiKind.order: [_Detector(PiiKind.order, r, _any) for r in orders],
            PiiKind.address: [_Detector(PiiKind.address, _address(), _any)],
        }
        enabled = set(config.kinds)
        self.detectors = [
            detector
            for kind in PiiKind
            if kind in enabled
            for detector in (*builtin[kind], *(_Detector(k, r, _any) for k, r in extra if k is kind))
        ]

    def _looks_like_order(self, match: re.Match[str], text: str) -> bool:
        before = text[max(0, match.start() - 10) : match.start()]
        return any(k in before for k in self._order_keywords) and any(r.fullmatch(match.group()) for r in self._orders)

    def _id_card(self, match: re.Match[str], text: str) -> bool:
        return _valid_id(match.group()) and not self._looks_like_order(match, text)

    def _bank_card(self, match: re.Match[str], text: str) -> bool:
        return _valid_luhn(match.group()) and not self._looks_like_order(match, text)

    def find(self, text: str) -> list[PiiMatch]:
        """Every match, in text order; existing placeholders and earlier matches are masked for later ones."""
        work = list(text.translate(_HALF_WIDTH))
        for m in _PLACEHOLDER.finditer(text):
            work[m.start() : m.end()] = _MASK * (m.end() - m.start())
        found = []
        for detector in self.detectors:
            for m in detector.regex.finditer("".join(work)):
                if detector.accept(m, text):
                    found.append(
                        PiiMatch(kind=detector.kind, start=m.start(), end=m.end(), text=text[m.start() : m.end()])
                    )
                    work[m.start() : m.end()] = _MASK * (m.end() - m.start())
        return sorted(found, key=lambda f: f.start)


@lru_cache(maxsize=16)
def _compiled(config_json: str) -> _Detectors:
    return _Detectors(RedactionConfig.model_validate_json(config_json))


def _detectors(config: RedactionConfig | None) -> _Detectors:
    """Compiled detectors, cached per configuration: a run redacts 10^5 transcripts with one config."""
    return _compiled((config or RedactionConfig()).model_dump_json())


def find_pii(text: str, config: RedactionConfig | None = None) -> list[PiiMatch]:
    """The personal data in one text, in text order (what `redact_transcript` would replace)."""
    return _detectors(config).find(text)


def _canonical(kind: PiiKind, text: str) -> str:
    """The value compared for numbering: the same number written two ways is one value."""
    if kind is PiiKind.mobile:
        return _digits(text)[-11:]
    if kind in (PiiKind.id_card, PiiKind.bank_card, PiiKind.landline):
        return _digits(text) + ("X" if text[-1:] in "Xx" else "")
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).upper()


def redact_transcript(transcript: Transcript, config: RedactionConfig | None = None) -> RedactionResult:
    """Replace the personal data in every text field with numbered placeholders, stable within the transcript.

    The fields are those that can reach a prompt or a batch file: each turn's text and speaker, and the
    transcript's platform, shop and agent id. The id is kept: it joins the grade to its input and is
    never sent.
    """
    detectors = _detectors(config)
    texts = [transcript.platform, transcript.shop, transcript.agent_id,
             *(value for turn in transcript.turns for value in (turn.text, turn.speaker))]
    used: dict[str, int] = {}
    for text in texts:
        for m in _PLACEHOLDER.finditer(text or ""):
            used[m["label"]] = max(used.get(m["label"], 0), int(m["n"]))
    assigned: dict[tuple[PiiKind, str], str] = {}
    originals: dict[str, str] = {}
    counts = dict.fromkeys(PiiKind, 0)

    def mask(text: str | None) -> str | None:
        if not text:
            return text
        pieces, cursor = [], 0
        for match in detectors.find(text):
            key = (match.kind, _canonical(match.kind, match.text))
            if key not in assigned:
                label = LABELS[match.kind]
                used[label] = used.get(label, 0) + 1
                assigned[key] = f"[{label}{used[label]}]"
                originals[assigned[key]] = match.text
            counts[match.kind] += 1
            pieces += [text[cursor : match.start], assigned[key]]
            cursor = match.end
        pieces.append(text[cursor:])
        return "".join(pieces)

    metadata = {"platform": mask(transcript.platform), "shop": mask(transcript.shop),
                "agent_id": mask(transcript.agent_id)}
    turns = [turn.model_copy(update={"text": mask(turn.text), "speaker": mask(turn.speaker)})
             for turn in transcript.turns]
    result = RedactionResult(transcript=transcript.model_copy(update={**metadata, "turns": turns}), counts=counts)
    result._originals.update(originals)
    return result


def is_loopback(base_url: str) -> bool:
    """Whether an endpoint is this machine (127.0.0.0/8, ::1, localhost): only then may PII stay in."""
    host = urlsplit(base_url if "//" in base_url else f"//{base_url}").hostname
    if not host:
        return False
    host = host.rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
