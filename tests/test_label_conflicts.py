"""The ``label_conflicts`` cleaning op: a text that carries different labels (task generation and
PromptMix, or two labels of one spec, wrote it) is resolved by a stated policy — relabel by the teacher
(real loopback TestServer with the scripted Banking77 classifier), majority, or drop — counted in the
funnel, and the result does not depend on which copy came first."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import clean_rows
from synthkd.errors import ConfigError
from synthkd.filters.op_config import parse_ops
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher
from synthkd.testing.banking77_responder import DEFAULT_DIR, Banking77Responder

LABELS = DEFAULT_DIR / "labels.yaml"
LOST = "I can't find my card, I think someone stole it."
RATE = "Why was I charged such a bad exchange rate on my card payment?"


def _rows() -> list[dict]:
    return [
        {"id": "t:1", "text": LOST, "label": "card_arrival", "source": "tasks"},
        {"id": "t:2", "text": "How old do I need to be to open an account?", "label": "age_limit"},
        {"id": "p:1", "text": LOST.upper() + "  ", "label": "lost_or_stolen_card", "source": "promptmix"},
        {"id": "p:2", "text": RATE, "label": "exchange_rate"},
        {"id": "p:3", "text": RATE, "label": "card_payment_wrong_exchange_rate"},
        {"id": "t:3", "text": RATE, "label": "card_payment_wrong_exchange_rate"},
        {"id": "t:4", "text": "How old do I need to be to open an account?", "label": "age_limit"},  # same label
    ]


def test_majority_keeps_one_copy_with_the_majority_label_and_drops_ties(tmp_path):
    funnel, kept, rejects = clean_rows(tmp_path, _rows(), [{"op": "label_conflicts", "policy": "majority"}])
    assert [(r["id"], r["label"]) for r in kept] == [
        ("t:2", "age_limit"), ("p:3", "card_payment_wrong_exchange_rate"), ("t:4", "age_limit")]
    assert kept[1]["label_conflict"] == {"labels": {"card_payment_wrong_exchange_rate": 2, "exchange_rate": 1},
                                         "policy": "majority", "label": "card_payment_wrong_exchange_rate",
                                         "was": "card_payment_wrong_exchange_rate"}
    assert sorted(r["id"] for r in rejects) == ["p:1", "p:2", "t:1", "t:3"]
    assert {r["reject_reason"] for r in rejects} == {"label conflict"}
    assert "tie" in next(r for r in rejects if r["id"] == "t:1")["reject_detail"]
    st = funnel.stages[1]
    assert st.extra["conflicting_texts"] == 2 and st.extra["rows_in_conflict"] == 5
    # order does not matter: reversed input, same labels kept
    _, kept_rev, _ = clean_rows(tmp_path, _rows()[::-1], [{"op": "label_conflicts", "policy": "majority"}])
    assert sorted((r["text"], r["label"]) for r in kept_rev) == sorted((r["text"], r["label"]) for r in kept)


def test_drop_drops_every_copy_of_a_conflicting_text(tmp_path):
    _, kept, rejects = clean_rows(tmp_path, _rows(), [{"op": "label_conflicts", "policy": "drop"}])
    assert [r["id"] for r in kept] == ["t:2", "t:4"]
    assert len(rejects) == 5 and all("policy drop" in r["reject_detail"] for r in rejects)


def test_relabel_asks_the_teacher_once_per_conflicting_text(tmp_path, make_server):
    responder = Banking77Responder.from_dir()
    srv = make_server(responder=responder)
    rows = _rows()
    rows[0]["text"] = rows[2]["text"] = "I still have not received my new card, where is it?"  # a real card_arrival text
    responder.gold[rows[0]["text"].lower()] = "card_arrival"
    rows[3]["text"] = rows[4]["text"] = rows[5]["text"] = "what exchange rate do you use?"
    responder.gold[rows[3]["text"]] = "exchange_rate"

    def factory():
        return OpenAICompatibleTeacher("test-model", base_url=srv.base_url, concurrency=4, max_retries=0)

    ops = [{"op": "label_conflicts", "policy": "relabel", "labels": str(LABELS)}]
    funnel, kept, rejects = clean_rows(tmp_path, rows, ops, teacher_factory=factory)
    assert responder.calls["classify"] == 2
    assert [(r["id"], r["label"]) for r in kept] == [
        ("t:1", "card_arrival"), ("t:2", "age_limit"), ("p:2", "exchange_rate"), ("t:4", "age_limit")]
    assert kept[2]["label_conflict"]["policy"] == "relabel"
    assert sorted(r["id"] for r in rejects) == ["p:1", "p:3", "t:3"]
    assert funnel.stages[1].extra["outcomes"] == {"resolved by relabel": 2, "other copy dropped": 3}


def test_relabel_needs_the_label_file():
    with pytest.raises(ConfigError, match="policy relabel needs 'labels'"):
        parse_ops([{"op": "label_conflicts", "policy": "relabel"}])
    parse_ops([{"op": "label_conflicts", "policy": "relabel", "labels": str(Path("x.yaml"))}])
