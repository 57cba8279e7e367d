"""SFT in the three modes on real SVAMP rows (PaLM-540B rationales) with a tiny offline student."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

# a [train] module (torch at module level): skipped whole where the extra is not installed
torch = pytest.importorskip("torch")

from synthkd.jsonl_io import InputError
from synthkd.train.export import load_json_dataset
from synthkd.train.sft import SFTOptions, build_sft_trainer, prepare_sft_data, read_sft_rows, run_sft, train_sft
from synthkd.train.student import TRAIN_RECORD, load_student
from synthkd.train.weighted import TASK_COLUMN, WEIGHT_COLUMN, example_losses
from train_fixtures import *  # noqa: F401,F403
from train_fixtures import TEST_ROWS, TRAIN_ROWS, quiet_settings, read_rows

pytestmark = pytest.mark.train  # trains SFT students

LN_VOCAB = math.log(800)


@pytest.mark.parametrize("mode", ["label", "rationale", "multitask"])
def test_each_mode_trains_and_its_loss_falls(tiny_student, tmp_path, mode):
    out = tmp_path / mode
    rec = run_sft(SFTOptions(student=str(tiny_student), input=TRAIN_ROWS, output=out, mode=mode,
                             eval_input=TEST_ROWS, settings=quiet_settings()))
    m = rec["metrics"]
    assert m["train_loss_first"] > LN_VOCAB - 0.3  # a random student starts near log(vocab)
    assert m["train_loss_last"] < m["train_loss_first"] - 1.0
    assert m["eval_loss"] < LN_VOCAB - 0.8  # and it generalises a little to the held-out rows
    assert m["global_steps"] == 30
    saved = json.loads((out / TRAIN_RECORD).read_text())
    assert saved["mode"] == mode and saved["inference_prefix"] == ("predict: " if mode == "multitask" else "")
    assert saved["data"]["rows_used"] == 63 and saved["data"]["rows_skipped"] == 1
    assert saved["data"]["teachers"] == {"palm-540b": 63}
    train = load_json_dataset(out / "data" / "train.jsonl")
    assert len(train) == (126 if mode == "multitask" else 63)
    target = train[0]["completion"][0]["content"]
    assert {"label": "42", "multitask": "42"}.get(mode, "84 / 2 = 42.\nSo the answer is 42.") in target
    card = (out / "README.md").read_text()
    assert "palm-540b (63)" in card and "| rows skipped | 1 |" in card and "eval_loss" in card
    if mode == "multitask":
        assert m["loss_predict_last"] < m["loss_predict_first"] and m["loss_explain_last"] < m["loss_explain_first"]
    assert load_student(out).generate(["x"], max_new_tokens=2)  # the saved student loads and generates


def test_multitask_rationale_weight_really_weights_the_tasks(tiny_student, tmp_path):
    """Weight 0 on the explain task: its held-out loss stays at chance; weight 1: it falls (and predict lags)."""
    got = {}
    for alpha in (0.0, 1.0):
        rec = run_sft(SFTOptions(student=str(tiny_student), input=TRAIN_ROWS, output=tmp_path / f"a{alpha}",
                                 mode="multitask", rationale_weight=alpha, eval_input=TEST_ROWS,
                                 settings=quiet_settings()))
        got[alpha] = rec["metrics"]
    assert got[0.0]["eval_loss_explain"] > LN_VOCAB - 0.3  # never trained on: still near log(vocab)
    assert got[1.0]["eval_loss_explain"] < got[0.0]["eval_loss_explain"] - 0.7
    assert got[0.0]["eval_loss_predict"] < got[1.0]["eval_loss_predict"] - 1.0
    assert json.loads((tmp_path / "a0.0" / TRAIN_RECORD).read_text())["task_weights"] == {"predict": 2.0, "explain": 0.0}


def test_weighted_loss_is_the_weighted_mean_of_example_losses(tiny_student, tmp_path):
    opts = SFTOptions(student=str(tiny_student), input=TRAIN_ROWS, output=tmp_path, mode="multitask",
                      rationale_weight=0.2, settings=quiet_settings(batch_size=6))
    st = load_student(tiny_student, for_training=True)
    data = prepare_sft_data(opts, True, tmp_path / "data", read_sft_rows(opts))
    trainer = build_sft_trainer(opts, st, data, tmp_path / "ck")
    batch = next(b for b in trainer.get_train_dataloader() if len(set(b[TASK_COLUMN].tolist())) == 2)
    w, codes = batch[WEIGHT_COLUMN].clone(), batch[TASK_COLUMN].clone()
    assert w.tolist() == pytest.approx([1.6 if c == 2 else 0.4 for c in codes.tolist()])  # predict 2, explain 3
    st.model.train()
    per = example_losses(st.model, dict(batch)).detach()
    loss = trainer.compute_loss(st.model, dict(batch))
    assert loss.item() == pytest.approx((w * per).mean().item(), rel=1e-5)
    # weight 0 on every explain example: their gradient is exactly zero
    zero = dict(batch)
    zero[WEIGHT_COLUMN] = torch.where(codes == 3, 0.0, w)
    st.model.zero_grad()
    trainer.compute_loss(st.model, dict(zero)).backward()
    g_weighted = [p.grad.clone() for p in st.model.parameters() if p.grad is not None]
    only_pred = {k: (v[codes == 2] if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in batch.items()}
    st.model.zero_grad()
    (trainer.compute_loss(st.model, dict(only_pred)) * (codes == 2).sum() / len(codes)).backward()
    g_pred = [p.grad.clone() for p in st.model.parameters() if p.grad is not None]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_weighted, g_pred))


def test_save_reload_generate(tiny_student, tmp_path):
    rec, trainer, st = train_sft(SFTOptions(student=str(tiny_student), input=TRAIN_ROWS, output=tmp_path / "s",
                                            mode="label", settings=quiet_settings(max_steps=20)))
    prompts = [st.user_prompt(r["input"]) for r in read_rows(TEST_ROWS)[:6]]
    in_memory = st.generate(prompts, max_new_tokens=8)
    reloaded = load_student(tmp_path / "s")
    assert reloaded.record["mode"] == "label" and reloaded.chat
    assert [g.text for g in reloaded.generate(prompts, max_new_tokens=8)] == [g.text for g in in_memory]
    sd = reloaded.model.state_dict()
    assert all(torch.equal(v.cpu(), sd[k].cpu()) for k, v in trainer.model.state_dict().items() if k in sd)


def test_lora_adapter_and_merged_model(tiny_student, tmp_path):
    out = tmp_path / "lora"
    rec = run_sft(SFTOptions(student=str(tiny_student), input=TRAIN_ROWS, output=out, mode="label",
                             settings=quiet_settings(max_steps=10, lora=True, lora_r=4, lora_alpha=8,
                                                     learning_rate=1e-2)))
    assert rec["training"]["saved"] == "merged model + adapter"
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "config.json").exists()
    merged, adapter = load_student(out), load_student(out / "adapter")  # base + adapter, loaded by peft
    prompts = [merged.user_prompt(r["input"]) for r in read_rows(TEST_ROWS)[:4]]
    assert [g.text for g in merged.generate(prompts, max_new_tokens=6)] == \
        [g.text for g in adapter.generate(prompts, max_new_tokens=6)]
    base = load_student(tiny_student).model.state_dict()
    changed = [k for k, v in merged.model.state_dict().items() if k in base and not torch.equal(v, base[k])]
    assert any("q_proj" in k for k in changed)  # the adapter was trained and merged into the weights


def test_checkpoints_resume_and_bf16_fallback(tiny_student, tmp_path):
    out = tmp_path / "ck"
    with pytest.warns(UserWarning, match="bf16 requested but no CUDA GPU"):
        rec = run_sft(SFTOptions(student=str(tiny_student), input=TRAIN_ROWS, output=out, mode="label",
                                 settings=quiet_settings(max_steps=6, save_steps=3, bf16=True)))
    assert rec["training"]["bf16"] is False
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    rec2 = run_sft(SFTOptions(student=str(tiny_student), input=TRAIN_ROWS, output=out, mode="label",
                              settings=quiet_settings(max_steps=8, save_steps=3, resume=True)))
    assert rec2["training"]["resumed_from"].endswith("checkpoint-6") and rec2["metrics"]["global_steps"] == 8


def test_multitask_refuses_packing_and_label_mode_packs(tiny_student, tmp_path):
    with pytest.warns(UserWarning, match="packing turned off"):
        rec = run_sft(SFTOptions(student=str(tiny_student), input=TRAIN_ROWS, output=tmp_path / "mt", mode="multitask",
                                 packing=True, settings=quiet_settings(max_steps=2)))
    assert rec["training"]["packing"] is False
    with pytest.warns(UserWarning, match="without FlashAttention-2"):  # CPU: allowed, but said to be slow
        rec = run_sft(SFTOptions(student=str(tiny_student), input=TRAIN_ROWS, output=tmp_path / "pk",
                                 mode="rationale", packing=True, settings=quiet_settings(max_steps=4, logging_steps=1)))
    assert rec["training"]["packing"] is True and rec["metrics"]["train_loss_last"] < rec["metrics"]["train_loss_first"]


def test_plain_student_cli_and_bad_rows(tiny_student_plain, tmp_path, train_env):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": 1, "input": "q", "answer": 3}) + "\n" + json.dumps({"id": 2, "answer": 4}) + "\n")
    base = [sys.executable, "-m", "synthkd.commands.train", "train", "sft", "--max-steps", "3", "--lr", "3e-3",
            "--max-length", "256", "--save-steps", "1000"]
    p = subprocess.run(base + ["-s", str(tmp_path / "no-such-student"), "-i", str(bad), "-o", str(tmp_path / "o1")],
                       env=train_env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 2 and f"{bad}:2: field 'input' / 'question' / 'prompt' / 'text'" in p.stderr  # rows first
    p = subprocess.run(base + ["-s", str(tiny_student_plain), "-i", str(TRAIN_ROWS), "-o", str(tmp_path / "o2"),
                               "--mode", "rationale", "--skip-invalid"],
                       env=train_env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "done: sft mode=rationale; 63 rows -> 63 examples (1 skipped)" in p.stderr
    row = json.loads((tmp_path / "o2" / "data" / "train.jsonl").read_text().splitlines()[0])
    assert row["prompt"].startswith("### Input:\n") and row["prompt"].endswith("### Response:\n")
    assert json.loads((tmp_path / "o2" / TRAIN_RECORD).read_text())["prompt_format"] == "plain"


def test_bad_options_are_input_errors(tiny_student, tmp_path):
    with pytest.raises(InputError, match="unknown SFT mode"):
        run_sft(SFTOptions(student=str(tiny_student), input=TRAIN_ROWS, output=tmp_path, mode="bogus"))
    with pytest.raises(InputError, match="--qlora needs a CUDA GPU"):
        run_sft(SFTOptions(student=str(tiny_student), input=TRAIN_ROWS, output=tmp_path,
                           settings=quiet_settings(qlora=True)))


def test_cli_student_tiny_builds_the_stage_s_tiny_student(tmp_path, train_env):
    # issue 12: `student: tiny` worked in a pipeline stage but `synthkd train sft --student tiny` looked
    # for a model called "tiny"; now the command builds the same tiny student the stage builds (the
    # stage's default shape, its tokenizer trained on the input's texts) next to OUTPUT, then trains it
    from synthkd.stages.train import TinyStudent

    out = tmp_path / "o"
    p = subprocess.run([sys.executable, "-m", "synthkd.commands.train", "train", "sft", "--student", "tiny",
                        "-i", str(TRAIN_ROWS), "-o", str(out), "--max-steps", "2", "--batch-size", "4",
                        "--learning-rate", "3e-3", "--max-length", "128", "--save-steps", "0", "--skip-invalid"],
                       env=train_env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    built = tmp_path / "o.tiny-student"
    shape = TinyStudent()
    cfg = json.loads((built / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]) == (
        shape.hidden_size, shape.layers, shape.heads)
    rec = json.loads((out / TRAIN_RECORD).read_text())
    assert rec["student"] == str(built) and rec["metrics"]["global_steps"] == 2
    assert rec["training"]["learning_rate"] == 3e-3 and rec["training"]["max_length"] == 128
    assert "done: sft" in p.stderr


def test_think_mode_trains_on_the_teachers_trace(tiny_student, tmp_path):
    """Rows from a replayed reasoning teacher (generate rationales --rationale-source reasoning) train a
    student on ``<think>\\n{trace}\\n</think>\\n\\n{answer}``: checked in the exported data and in the
    completion tokens the trainer computes its loss on."""
    import asyncio

    from synthkd.methods.rationales import generate_rationales
    from synthkd.teachers.replay import ReplayTeacher
    from test_reasoning_rows import R1, RECORDED, _svamp_inputs

    async def gen():
        teacher = ReplayTeacher.from_jsonl(R1)
        return [r async for r in generate_rationales(_svamp_inputs(4), teacher, kind="math", n_demos=0,
                                                     rationale_source="reasoning")]

    rows = sorted(asyncio.run(gen()), key=lambda r: r["id"])
    inp = tmp_path / "rows.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rec, trainer, st = train_sft(SFTOptions(student=str(tiny_student), input=inp, output=tmp_path / "think",
                                            mode="think", settings=quiet_settings(max_steps=4, batch_size=2,
                                                                                  max_length=512)))
    want = {r["id"]: f"<think>\n{RECORDED[i]['reasoning']}\n</think>\n\n{r['answer']}" for i, r in enumerate(rows)}
    assert want["svamp-test-0"].endswith("Yes, 450 seeds.\n</think>\n\n450")
    exported = [json.loads(line) for line in (tmp_path / "think" / "data" / "train.jsonl").read_text().splitlines()]
    assert st.chat and len(exported) == 4
    got = {}
    for e, r in zip(exported, rows):  # in id order
        assert e["prompt"] == [{"role": "user", "content": r["input"]}]
        got[r["id"]] = e["completion"][0]["content"]
    assert got == want
    assert rec["mode"] == "think" and rec["fields"]["reasoning"] == "reasoning"
    # what the loss is on: the completion tokens of each example decode to the think-formatted target
    ds = trainer.train_dataset
    tok = st.tokenizer
    decoded = set()
    for ex in ds:  # TRL builds the labels: -100 on the prompt, the completion's ids on the rest
        ids = [t for t in ex["labels"] if t != -100]
        decoded.add(tok.decode(ids, skip_special_tokens=True).strip())
    assert all(any(text.startswith(w) for text in decoded) for w in want.values()), decoded


def test_think_mode_without_a_trace_is_an_error_before_training(tiny_student, tmp_path):
    inp = tmp_path / "rows.jsonl"
    inp.write_text(json.dumps({"id": "a", "input": "1 + 1?", "answer": 2, "reasoning": "one and one is two"}) + "\n"
                   + json.dumps({"id": "b", "input": "2 + 2?", "answer": 4}) + "\n")
    out = tmp_path / "never"
    with pytest.raises(InputError, match=r"rows.jsonl:2: field 'reasoning': the reasoning trace missing"):
        run_sft(SFTOptions(student=str(tiny_student), input=inp, output=out, mode="think",
                           settings=quiet_settings(skip_invalid=False)))
    assert not out.exists()  # nothing loaded, nothing written
