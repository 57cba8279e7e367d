"""Student loading, tokenizer fixes, prompt formats and batched generation (tiny students built offline)."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

# a [train] module (torch at module level): skipped whole where the extra is not installed
torch = pytest.importorskip("torch")

from synthkd.jsonl_io import InputError
from synthkd.train.student import (
    PLAIN_HEADERS,
    load_student,
    plain_prompt,
    prepare_tokenizer,
    resolve_bf16,
    resolve_source,
)
from train_fixtures import *  # noqa: F401,F403
from train_fixtures import TEST_ROWS, read_rows

pytestmark = pytest.mark.train  # loads and runs tiny students


def test_load_local_student_with_chat_template(tiny_student):
    st = load_student(tiny_student)
    assert st.source.kind == "local" and st.chat
    assert st.tokenizer.pad_token == "<|pad|>" and st.tokenizer.padding_side == "left"
    assert st.user_prompt("2 + 2?") == "<|user|>\n2 + 2?\n<|assistant|>\n"
    assert st.user_prompt("2 + 2?", prefix="predict: ", system="Be brief.") == \
        "<|system|>\nBe brief.\n<|user|>\npredict: 2 + 2?\n<|assistant|>\n"
    assert next(st.model.parameters()).dtype == torch.float32 and not st.model.training


def test_plain_format_without_chat_template(tiny_student_plain):
    st = load_student(tiny_student_plain)
    assert not st.chat
    assert st.user_prompt("2 + 2?") == "### Input:\n2 + 2?\n\n### Response:\n"
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
            {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]
    assert plain_prompt(msgs, eos_token="</s>") == (
        "### System:\nS\n\n### Input:\nU1\n\n### Response:\nA1</s>\n\n### Input:\nU2\n\n### Response:\n")
    assert PLAIN_HEADERS["user"] == "### Input:"
    gens = st.generate([st.user_prompt("How many apples?")], max_new_tokens=5)
    assert gens[0].completion_tokens <= 5 and isinstance(gens[0].text, str)


def test_tokenizer_without_pad_token_gets_one(tiny_student):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_student)
    tok.pad_token = None
    prepare_tokenizer(tok)
    assert tok.pad_token == tok.eos_token == "<|end|>" and tok.padding_side == "left"


def test_student_directory_without_tokenizer_is_a_clear_error(tiny_student, tmp_path):
    d = tmp_path / "no_tok"
    d.mkdir()
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(tiny_student / f, d / f)
    with pytest.raises(InputError, match="has no tokenizer") as ei:
        load_student(d)
    assert str(d) in str(ei.value) and "--tokenizer" in str(ei.value)
    st = load_student(d, tokenizer=tiny_student)  # the way out the message names
    assert st.chat


def test_sources_local_hub_and_nonsense(tiny_student, tmp_path):
    assert resolve_source(tiny_student).kind == "local"
    assert resolve_source("Qwen/Qwen2.5-0.5B-Instruct").kind == "hub"  # never downloaded in tests
    with pytest.raises(InputError, match="no such student directory"):
        resolve_source(tmp_path / "missing")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(InputError, match="not a file"):
        resolve_source(f)


def test_remote_code_is_not_run_by_default(tiny_student, tmp_path):
    d = tmp_path / "remote"
    shutil.copytree(tiny_student, d)
    marker = tmp_path / "code_ran"
    (d / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\nfrom transformers import LlamaConfig\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil'\n")
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(model_type="evil", auto_map={"AutoConfig": "configuration_evil.EvilConfig"})
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="contains custom code.*--trust-remote-code only if you trust"):
        load_student(d)
    assert not marker.exists()


def test_bf16_on_cpu_falls_back_with_a_warning(tiny_student):
    with pytest.warns(UserWarning, match="bf16 requested but no CUDA GPU"):
        assert resolve_bf16(True) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_bf16(None) is False and resolve_bf16(False) is False
    with pytest.warns(UserWarning, match="bf16"):
        st = load_student(tiny_student, bf16=True)
    assert next(st.model.parameters()).dtype == torch.float32


def test_batched_generation_equals_one_by_one(varied_student):
    """Left padding: a prompt's output must not depend on the other prompts in its batch."""
    st = load_student(varied_student)
    rows = read_rows(TEST_ROWS)[:8]
    prompts = [st.user_prompt(r["input"]) for r in rows]
    lens = {len(st.tokenizer(p)["input_ids"]) for p in prompts}
    assert len(lens) > 4  # really different lengths, so padding happens
    batched = st.generate(prompts, batch_size=8, max_new_tokens=12)
    single = [st.generate([p], batch_size=1, max_new_tokens=12)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.prompt_tokens for g in batched] == [len(st.tokenizer(p)["input_ids"]) for p in prompts]
    assert len({g.text for g in batched}) == len(batched)  # the outputs really depend on the prompt
    st.tokenizer.padding_side = "right"  # generate() must not depend on how the caller left the tokenizer
    assert [g.text for g in st.generate(prompts, batch_size=8, max_new_tokens=12)] == [g.text for g in single]


def test_stop_strings_and_finish_reasons(label_student, varied_student):
    trained = load_student(label_student)
    p = trained.user_prompt(read_rows(TEST_ROWS)[0]["input"])
    ended = trained.generate([p], max_new_tokens=40)[0]
    assert ended.finish_reason == "stop" and ended.completion_tokens < 40  # it learned to emit <|end|>
    st = load_student(varied_student)
    free = st.generate([p], max_new_tokens=12)[0]
    assert free.finish_reason == "length" and free.completion_tokens == 12
    words = free.text.split()
    assert len(words) >= 3
    stop = words[2]
    cut = st.generate([p], max_new_tokens=12, stop=[stop])[0]
    assert cut.text == free.text[: free.text.index(stop)] and cut.finish_reason == "stop"
