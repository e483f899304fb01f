"""Tests for pipeline/grading/redaction.py. Every personal datum here is invented for the test."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from pipeline.grading.redaction import (
    ExtraPattern,
    PiiKind,
    RedactionConfig,
    find_pii,
    is_loopback,
    redact_transcript,
)
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.paths import DCH1_DIR

# GB 11643 worked example. Weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 on 11010519491231002:
# 7+9+0+5+0+20+2+9+24+27+7+18+30+5+0+0+4 = 167; 167 mod 11 = 2; "10X98765432"[2] = X.
ID_NUMBER = "11010519491231002X"
# Luhn: the Visa test number. From the right, the 7 doubled ones give 14, the 8 undoubled ones 8,
# the doubled leading 4 gives 8: 30, a multiple of 10.
CARD = "4111 1111 1111 1111"
MOBILE_RUN = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")


def chat(*turns: tuple[Role, str]) -> Transcript:
    return Transcript(id="t1", turns=[Turn(role=r, text=x) for r, x in turns])


def kinds(text: str, config: RedactionConfig | None = None) -> list[tuple[str, str]]:
    return [(m.kind.value, m.text) for m in find_pii(text, config)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("手机13800138000", [("mobile", "13800138000")]),
        ("电话 +86 139-1234-5678 谢谢", [("mobile", "+86 139-1234-5678")]),
        ("打我186 1234 5678", [("mobile", "186 1234 5678")]),
        ("全角１３８００１３８０００也算", [("mobile", "１３８００１３８０００")]),
        ("座机0571-88881234或(010)12345678", [("landline", "0571-88881234"), ("landline", "(010)12345678")]),
        ("邮箱是zhang.san88@qq.com谢谢", [("email", "zhang.san88@qq.com")]),
        ("QQ邮箱 12345678@qq.com", [("email", "12345678@qq.com")]),
        (f"身份证号{ID_NUMBER}", [("id_card", ID_NUMBER)]),
        (f"卡号{CARD}", [("bank_card", CARD)]),
        ("退款打到6222021234567890128这张卡", [("bank_card", "6222021234567890128")]),
        ("订单号3385521234567890123", [("order", "3385521234567890123")]),
        ("拼多多订单240501-123456789012345", [("order", "240501-123456789012345")]),
        ("顺丰SF1234567890123到了吗", [("waybill", "SF1234567890123")]),
        ("圆通YT1234567890123", [("waybill", "YT1234567890123")]),
        ("京东JDVA01234567890", [("waybill", "JDVA01234567890")]),
        ("中通751234567890123", [("waybill", "751234567890123")]),
        ("EMS单号EA123456789CN", [("waybill", "EA123456789CN")]),
        (
            "寄到浙江省杭州市西湖区文三路478号华星时代广场A座1203室",
            [("address", "浙江省杭州市西湖区文三路478号华星时代广场A座1203室")],
        ),
        ("我住在北京市朝阳区建国路88号", [("address", "北京市朝阳区建国路88号")]),
        ("上海市浦东新区张江镇祖冲之路2288弄5号", [("address", "上海市浦东新区张江镇祖冲之路2288弄5号")]),
        ("地址:阳光小区3栋2单元501", [("address", "阳光小区3栋2单元501")]),
    ],
)
def test_each_kind_is_found(text: str, expected: list[tuple[str, str]]) -> None:
    assert kinds(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "价格¥199.00,满258包邮",
        "2024-05-01 18:00前拍下当天发货",
        "拍下后20240501发货",
        "全国热线400-118-2016",  # a business's service number, not a person's
        "4111111111111112",  # card-shaped, fails Luhn
        "一路顺风,有问题随时联系",
    ],
)
def test_lookalikes_are_left_alone(text: str) -> None:
    assert find_pii(text) == []


def test_an_id_shape_with_a_wrong_check_character_is_only_a_long_number() -> None:
    assert kinds(f"{ID_NUMBER[:-1]}3") == [("order", f"{ID_NUMBER[:-1]}3")]


def test_an_order_keyword_wins_over_a_luhn_valid_card_shape() -> None:
    # 3385521234567890121 passes Luhn (19 digits), so without context it is taken for a card.
    assert kinds("3385521234567890121") == [("bank_card", "3385521234567890121")]
    assert kinds("订单号:3385521234567890121") == [("order", "3385521234567890121")]
    # An ID after 订单 that also fits the 18-digit order pattern is an order number too.
    assert kinds(f"订单{ID_NUMBER[:-1]}0") == [("order", f"{ID_NUMBER[:-1]}0")]


def test_phone_after_house_number_is_taken_before_the_address() -> None:
    assert kinds("浙江省杭州市西湖区文三路478号13800138000") == [
        ("address", "浙江省杭州市西湖区文三路478号"),
        ("mobile", "13800138000"),
    ]


def test_placeholders_are_numbered_per_kind_and_stable_within_the_transcript() -> None:
    t = chat(
        (Role.customer, "我手机138 0013 8000,备用13912345678"),
        (Role.agent, "好的亲,已备注+86 13800138000"),
        (Role.customer, "再补一个 18612345678,邮箱li.si@163.com"),
    )
    result = redact_transcript(t)
    assert [turn.text for turn in result.transcript.turns] == [
        "我手机[手机号1],备用[手机号2]",
        "好的亲,已备注[手机号1]",
        "再补一个 [手机号3],邮箱[邮箱1]",
    ]
    assert result.counts[PiiKind.mobile] == 4 and result.counts[PiiKind.email] == 1
    assert result.columns()["redacted_mobile"] == 4 and result.columns()["redacted_total"] == 5


def test_existing_placeholders_are_kept_and_numbering_continues() -> None:
    t = chat((Role.customer, "之前的号[手机号1]停用了,新号13800138000"), (Role.agent, "[订单号2]已改"))
    out = redact_transcript(t).transcript.turns
    assert out[0].text == "之前的号[手机号1]停用了,新号[手机号2]"
    assert out[1].text == "[订单号2]已改"


REALISTIC = chat(
    (Role.customer, "你好,订单号3385521234567890123还没发货"),
    (Role.agent, "亲,您好,请提供一下收货人电话"),
    (Role.customer, "13800138000,地址寄到浙江省杭州市西湖区文三路478号华星时代广场A座1203室"),
    (Role.customer, f"退款退到卡号{CARD},身份证{ID_NUMBER},发票发zhang.san88@qq.com"),
    (Role.agent, "好的亲,已经给您发顺丰SF1234567890123,客服座机0571-88881234"),
    (Role.customer, "收到,手机13800138000随时联系"),
)


def test_round_trip_through_the_private_mapping() -> None:
    result = redact_transcript(REALISTIC)
    for before, after in zip(REALISTIC.turns, result.transcript.turns, strict=True):
        assert result.restore(after.text) == before.text
    assert result.original("[手机号1]") == "13800138000"
    with pytest.raises(KeyError):
        result.original("[手机号9]")


def test_nothing_personal_is_left_or_serialised() -> None:
    result = redact_transcript(REALISTIC)
    for turn in result.transcript.turns:
        assert find_pii(turn.text) == []
        assert not re.search(r"\d{7,}", turn.text), turn.text
    assert result.counts == {
        PiiKind.email: 1,
        PiiKind.id_card: 1,
        PiiKind.bank_card: 1,
        PiiKind.mobile: 2,
        PiiKind.landline: 1,
        PiiKind.waybill: 1,
        PiiKind.order: 1,
        PiiKind.address: 1,
    }
    # The mapping is private: not in the dump, the JSON or the repr.
    for shown in (result.model_dump_json(), str(result.model_dump()), repr(result)):
        assert "13800138000" not in shown and "zhang.san88" not in shown


def test_kinds_can_be_switched_off_and_patterns_added() -> None:
    config = RedactionConfig(
        kinds=[PiiKind.mobile, PiiKind.order],
        extra_patterns=[ExtraPattern(kind=PiiKind.order, pattern=r"TB\d{10}")],
    )
    text = "订单TB2024050101,电话13800138000,邮箱a@b.cn"
    assert kinds(text, config) == [("order", "TB2024050101"), ("mobile", "13800138000")]
    with pytest.raises(ValidationError, match="regular expression"):
        RedactionConfig(order_patterns=[r"(\d{18}"])


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8080/v1", True),
        ("http://127.8.9.10/v1", True),
        ("http://localhost:11434/v1", True),
        ("http://LOCALHOST./v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://[::ffff:127.0.0.1]/v1", True),
        ("127.0.0.1:8080", True),
        ("https://api.openai.com/v1", False),
        ("http://10.0.0.5:8000/v1", False),
        ("http://0.0.0.0:8000/v1", False),
        ("http://localhost.example.com/v1", False),
        ("http://127.0.0.1.nip.io/v1", False),
        ("", False),
    ],
)
def test_is_loopback(url: str, loopback: bool) -> None:
    assert is_loopback(url) is loopback


DCH1 = DCH1_DIR / "train_data_cn.json"


@pytest.mark.skipif(not DCH1.exists(), reason="DCH-1 training data not present on this machine")
def test_real_dialogues_leave_no_mobile_numbers() -> None:
    """The DCH-1 Weibo dialogues are unmasked; its README counts about 133 with mobile-like strings."""
    dialogues = json.loads(DCH1.read_text(encoding="utf-8"))
    with_mobile = 0
    for d in dialogues:
        turns = [
            Turn(role=Role.customer if t["sender"] == "customer" else Role.agent, text=u)
            for t in d["turns"]
            for u in t["utterances"]
            if u and re.search(r"\d{7}|@", u)
        ]
        if not turns:
            continue
        result = redact_transcript(Transcript(id=d["id"], turns=turns))
        with_mobile += result.counts[PiiKind.mobile] > 0
        for turn in result.transcript.turns:
            assert not MOBILE_RUN.search(turn.text), d["id"]
            assert find_pii(turn.text) == [], d["id"]
    assert with_mobile >= 120


def test_every_text_field_is_redacted_and_the_id_kept(pii_everywhere: Transcript, pii_values: dict[str, str]) -> None:
    result = redact_transcript(pii_everywhere)
    sent = result.transcript.model_dump_json(exclude={"id"})
    assert not any(value in sent for value in pii_values.values()), sent
    assert find_pii(sent) == []
    assert result.transcript.id == pii_everywhere.id  # the join key, never sent
    assert result.transcript.shop == "张三的店 [手机号1] [邮箱1]"  # names are not covered
    assert result.transcript.turns[0].speaker == "买家[手机号1]"  # one value, one placeholder across fields
    assert result.counts[PiiKind.mobile] == 2 and result.counts[PiiKind.email] == 3
