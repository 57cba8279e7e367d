"""Training benchmarks: SFT and DPO tokens/s (and MFU on a GPU), and the three SFT modes compared on SVAMP.

Run:
  python benchmarks/train_throughput.py throughput          # CPU: tiny students, SFT + DPO tokens/s
  python benchmarks/train_throughput.py throughput --gpu    # GPU: ~0.5B Llama from config, bf16, packing, MFU
  python benchmarks/train_throughput.py modes               # label / rationale / multitask on SVAMP (CLI commands)

Throughput: tokens are the non-padding tokens the model processed (attention-mask sum of every batch;
with packing, the packed length), counted by wrapping the trainer's collator; time is wall time between
the end of the warm-up steps and the end of training, so start-up, tokenization and saving are excluded.
DPO tokens are the chosen + rejected sequences of each pair.

MFU (GPU): achieved FLOP/s over the device's peak dense bf16 FLOP/s.  FLOPs per token are
``6 N + 12 L d T_eff`` for SFT (PaLM appendix B: N = parameters excluding the input embedding, which
is a lookup; L layers, d width; attention over the token's own packed document, ``T_eff = sum(len^2) /
sum(len)``, so packing is not credited with attention it does not do) and ``8 N + 16 L d T_eff`` for DPO
(policy forward + backward, plus the reference forward).  Peaks: H100 SXM / H200 989 TFLOP/s, H100 PCIe
756, A100 312 (``--peak-tflops`` to override).

The ``modes`` part builds SVAMP rationale rows from the real PaLM-540B completions in
``../shared/data/distilling_step_by_step/svamp`` (``tests/fixtures/train/make_svamp_rows.py``), builds a
tiny student offline from the training texts, and runs the real ``synthkd train sft`` / ``synthkd eval``
commands for each mode, printing every command.  Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "GH200": 989.4, "A100": 312.0, "L40S": 362.0}


def _env(threads: int) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = str(threads)
    e["TOKENIZERS_PARALLELISM"] = "false"
    return e


def _svamp_module():
    spec = importlib.util.spec_from_file_location("make_svamp_rows", REPO / "tests" / "fixtures" / "train" / "make_svamp_rows.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _write_rows(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------------


class TokenCounter:
    """Wraps a collator and records the tokens of every batch it builds."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.batches: list[int] = []
        self.doc_sq: list[float] = []  # sum(len^2) per batch, for T_eff

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.base(examples)
        if "attention_mask" in batch:
            lens = batch["attention_mask"].sum(dim=1).tolist()
        elif "position_ids" in batch:  # padding-free (packing): sequences restart at position 0
            pos = batch["position_ids"].flatten().tolist()
            lens, cur = [], 0
            for p in pos:
                if p == 0 and cur:
                    lens.append(cur)
                    cur = 0
                cur += 1
            lens.append(cur)
        else:
            lens = [batch["input_ids"].numel()]
        self.batches.append(int(sum(lens)))
        self.doc_sq.append(float(sum(x * x for x in lens)))
        return batch


def _timing_callback(warmup: int):
    from transformers import TrainerCallback

    class Times(TrainerCallback):
        def __init__(self) -> None:
            self.t: dict[int, float] = {}

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t[state.global_step] = time.perf_counter()

    return Times()


def _measure(trainer: Any, counter: TokenCounter, steps: int, warmup: int, grad_accum: int) -> dict[str, Any]:
    cb = _timing_callback(warmup)
    trainer.add_callback(cb)
    trainer.train()
    t = cb.t
    first, last = warmup, max(t)
    batches_per_step = grad_accum
    toks = counter.batches[first * batches_per_step: last * batches_per_step]
    sq = counter.doc_sq[first * batches_per_step: last * batches_per_step]
    dt = t[last] - t[first]
    return {"steps_timed": last - first, "tokens": sum(toks), "seconds": dt, "tokens_per_s": sum(toks) / dt,
            "t_eff": (sum(sq) / sum(toks)) if toks else 0.0}


def _param_counts(model: Any) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight is emb
    # the input embedding is a lookup, not a matmul; a tied LM head still does the matmul
    return total, total - (0 if tied else emb.numel())


def _peak_tflops(override: float | None) -> tuple[float | None, str]:
    import torch

    if override:
        return override, "given"
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_TFLOPS[key], name
    return None, name


def _mfu(res: dict[str, Any], model: Any, peak: float | None, kind: str) -> dict[str, Any]:
    cfg = model.config
    _, n = _param_counts(model)
    L, d = cfg.num_hidden_layers, cfg.hidden_size
    if kind == "sft":
        per_tok = 6 * n + 12 * L * d * res["t_eff"]
    else:
        per_tok = 8 * n + 16 * L * d * res["t_eff"]
    achieved = res["tokens_per_s"] * per_tok
    out = {"params_matmul": n, "flops_per_token": per_tok, "achieved_tflops": achieved / 1e12}
    if peak:
        out["mfu"] = achieved / (peak * 1e12)
    return out


# --------------------------------------------------------------------------------------------------
# throughput
# --------------------------------------------------------------------------------------------------


def bench_sft_rows(student_dir: Path, rows: Path, out: Path, *, steps: int, warmup: int, batch: int,
                   packing: bool, max_length: int, bf16: bool, mode: str = "rationale") -> dict[str, Any]:
    """SFT on method rows through synthkd's own pipeline (export -> TRL SFTTrainer)."""
    from synthkd.train.common import TrainSettings
    from synthkd.train.sft import SFTOptions, build_sft_trainer, prepare_sft_data, read_sft_rows
    from synthkd.train.student import load_student

    s = TrainSettings(max_steps=steps, learning_rate=1e-3, batch_size=batch, max_length=max_length, bf16=bf16,
                      save_steps=0, logging_steps=10**9, skip_invalid=True)
    opts = SFTOptions(student=str(student_dir), input=rows, output=out, mode=mode, packing=packing, settings=s)
    st = load_student(student_dir, for_training=True)
    data = prepare_sft_data(opts, st.chat, out / "data", read_sft_rows(opts))
    trainer = build_sft_trainer(opts, st, data, out / "ck")
    counter = TokenCounter(trainer.data_collator)
    trainer.data_collator = counter
    res = _measure(trainer, counter, steps, warmup, 1)
    res["params"] = _param_counts(st.model)[0]
    return res


def bench_dpo_rows(student_dir: Path, prefs: Path, out: Path, *, steps: int, warmup: int, batch: int,
                   max_length: int, bf16: bool) -> dict[str, Any]:
    from trl import DPOConfig, DPOTrainer

    from synthkd.train.common import TrainSettings, trainer_args
    from synthkd.train.export import build_preference_examples, load_json_dataset, preference_record, write_jsonl
    from synthkd.train.student import load_student

    st = load_student(student_dir, for_training=True)
    exs, _ = build_preference_examples(prefs)
    write_jsonl((preference_record(e, st.chat) for e in exs), out / "prefs_trl.jsonl")
    ds = load_json_dataset(out / "prefs_trl.jsonl")
    s = TrainSettings(max_steps=steps, learning_rate=1e-4, batch_size=batch, max_length=max_length, bf16=bf16,
                      save_steps=0, logging_steps=10**9)
    cfg = DPOConfig(**trainer_args(s, out / "dpo_ck", has_eval=False, bf16=bf16), beta=0.1)
    trainer = DPOTrainer(model=st.model, args=cfg, train_dataset=ds, processing_class=st.tokenizer)
    counter = TokenCounter(trainer.data_collator)
    trainer.data_collator = counter
    res = _measure(trainer, counter, steps, warmup, 1)
    res["params"] = _param_counts(st.model)[0]
    return res


def llama_05b_config(vocab: int = 32000):
    """~0.5B-parameter Llama shape: 24 layers, d=1024, MLP 4096 (SwiGLU), GQA 16/8 heads, untied 32k vocab."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                       num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=4096,
                       tie_word_embeddings=False, rope_theta=10000.0)


def bench_gpu(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The GPU path: a ~0.5B Llama from config in bf16, packed synthetic documents, SFT then DPO."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from synthkd.train.common import TrainSettings, trainer_args
    from synthkd.train.tiny import build_tiny_tokenizer

    on_gpu = torch.cuda.is_available()
    attn = "sdpa"
    if on_gpu:
        try:
            import flash_attn  # noqa: F401

            attn = "flash_attention_2"
        except ImportError:
            pass
    cfg = llama_05b_config() if not args.gpu_config_small else _small_config()
    tok = build_tiny_tokenizer(["synthetic benchmark text 0123456789"], vocab_size=300)
    torch.manual_seed(0)
    rng = random.Random(0)
    L = args.seq_len
    docs = [[rng.randrange(10, cfg.vocab_size) for _ in range(rng.randint(L // 8, L))] for _ in range(args.gpu_docs)]
    dtype = torch.bfloat16 if on_gpu else torch.float32
    peak, device_name = _peak_tflops(args.peak_tflops)
    out: dict[str, Any] = {"device": device_name, "attention": attn, "seq_len": L}

    def new_model() -> Any:
        return AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=dtype)

    model = new_model()
    s = TrainSettings(max_steps=args.gpu_steps, learning_rate=1e-4, batch_size=args.gpu_batch, max_length=L,
                      bf16=on_gpu, save_steps=0, logging_steps=10**9,
                      gradient_checkpointing=args.gradient_checkpointing)
    # bfd packing is padding-free: cheap with FlashAttention-2's varlen kernels; without them, fixed blocks
    # ("wrapped", attention across the block) keep sdpa on its fast unmasked path.
    strategy = "bfd" if attn == "flash_attention_2" else "wrapped"
    out["packing"] = strategy
    sft_cfg = SFTConfig(**trainer_args(s, work / "gpu_sft", has_eval=False, bf16=on_gpu), packing=True,
                        packing_strategy=strategy)
    trainer = SFTTrainer(model=model, args=sft_cfg, train_dataset=Dataset.from_dict({"input_ids": docs}),
                         processing_class=tok)
    counter = TokenCounter(trainer.data_collator)
    trainer.data_collator = counter
    res = _measure(trainer, counter, args.gpu_steps, args.gpu_warmup, 1)
    res.update(_mfu(res, model, peak, "sft"))
    res["params"] = _param_counts(model)[0]
    if on_gpu:
        res["max_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    out["sft"] = res
    del trainer, model
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    # DPO: prompt + chosen/rejected of synthetic tokens, implicit reference (a second copy in bf16)
    model = new_model()
    ref = new_model()
    ref.load_state_dict(model.state_dict())
    half = L // 2
    words = [f"w{i}" for i in range(200)]

    def text(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    pairs = [{"prompt": text(rng.randint(half // 4, half // 2)), "chosen": text(rng.randint(half // 4, half // 2)),
              "rejected": text(rng.randint(half // 4, half // 2))} for _ in range(args.gpu_docs)]
    tok2 = build_tiny_tokenizer([p["prompt"] for p in pairs[:200]], vocab_size=400)
    d = TrainSettings(max_steps=args.gpu_steps, learning_rate=1e-6, batch_size=max(1, args.gpu_batch // 2),
                      max_length=L, bf16=on_gpu, save_steps=0, logging_steps=10**9,
                      gradient_checkpointing=args.gradient_checkpointing)
    dcfg = DPOConfig(**trainer_args(d, work / "gpu_dpo", has_eval=False, bf16=on_gpu), beta=0.1)
    trainer = DPOTrainer(model=model, ref_model=ref, args=dcfg, train_dataset=Dataset.from_list(pairs),
                         processing_class=tok2)
    counter = TokenCounter(trainer.data_collator)
    trainer.data_collator = counter
    res = _measure(trainer, counter, args.gpu_steps, args.gpu_warmup, 1)
    res.update(_mfu(res, model, peak, "dpo"))
    if on_gpu:
        res["max_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    out["dpo"] = res
    return out


def _small_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)


def throughput(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from synthkd.train.tiny import build_tiny_student

    svamp = _svamp_module()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.gpu or args.gpu_config_small:
            res = bench_gpu(args, work)
            print(json.dumps(res, indent=2, default=float))
            s, d = res["sft"], res["dpo"]
            print(f"\nGPU {res['device']} ({res['attention']}), ~{s['params'] / 1e6:.0f}M-parameter Llama from config, "
                  f"bf16, packing ({res['packing']}) to {res['seq_len']} tokens:")
            print(f"  SFT: {s['tokens_per_s']:,.0f} tokens/s, {s['achieved_tflops']:.1f} TFLOP/s"
                  + (f", MFU {100 * s['mfu']:.1f}%" if "mfu" in s else "") + f" (T_eff {s['t_eff']:.0f})")
            print(f"  DPO: {d['tokens_per_s']:,.0f} tokens/s, {d['achieved_tflops']:.1f} TFLOP/s"
                  + (f", MFU {100 * d['mfu']:.1f}%" if "mfu" in d else ""))
            return
        rows = _write_rows(svamp.svamp_rows("train"), work / "svamp_train.jsonl")
        prefs = []
        for r in svamp.svamp_rows("train"):
            gold = int(r["gold"]) if float(r["gold"]).is_integer() else r["gold"]
            prefs.append({"id": r["id"], "prompt": r["input"], "chosen": f"{r['rationale']}\nSo the answer is {gold}.",
                          "rejected": f"{r['rationale']}\nSo the answer is {gold + 7}."})
        prefs_path = _write_rows(prefs, work / "prefs.jsonl")
        texts = [r["input"] for r in svamp.svamp_rows("train")] + [r["rationale"] for r in svamp.svamp_rows("train")]
        table = []
        for name, shape in (("tiny (2x64)", dict(hidden_size=64, layers=2, heads=4)),
                            ("small (4x256)", dict(hidden_size=256, layers=4, heads=8))):
            sdir = build_tiny_student(texts, work / name.split()[0], vocab_size=1000, **shape)
            for mode in ("label", "rationale"):
                r = bench_sft_rows(sdir, rows, work / f"sft_{name}_{mode}", steps=args.steps, warmup=args.warmup,
                                   batch=args.batch, packing=False, max_length=256, bf16=False, mode=mode)
                table.append((name, f"SFT {mode}", r))
            if name.startswith("tiny"):  # packing without flash-attn: one masked sequence per batch (slow on CPU)
                r = bench_sft_rows(sdir, rows, work / f"sftp_{name}", steps=args.steps, warmup=args.warmup,
                                   batch=args.batch, packing=True, max_length=256, bf16=False, mode="rationale")
                table.append((name, "SFT rationale, packed (padding-free, sdpa)", r))
            r = bench_dpo_rows(sdir, prefs_path, work / f"dpo_{name}", steps=args.steps, warmup=args.warmup,
                               batch=max(1, args.batch // 2), max_length=256, bf16=False)
            table.append((name, "DPO (implicit ref)", r))
        print(f"\nCPU, torch threads {args.threads}, {args.steps} steps ({args.warmup} warm-up), batch {args.batch} "
              f"(DPO {max(1, args.batch // 2)} pairs), real SVAMP rows with PaLM rationales:\n")
        print("| student | job | params | tokens/s | timed tokens | seconds |")
        print("|---|---|---|---|---|---|")
        for name, job, r in table:
            print(f"| {name} | {job} | {r['params'] / 1e6:.2f}M | {r['tokens_per_s']:,.0f} | {r['tokens']:,} | "
                  f"{r['seconds']:.2f} |")


# --------------------------------------------------------------------------------------------------
# the three SFT modes on SVAMP
# --------------------------------------------------------------------------------------------------


def modes(args: argparse.Namespace) -> None:
    svamp = _svamp_module()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = _write_rows(svamp.svamp_rows("train", args.train_rows), out / "svamp_train.jsonl")
    test = _write_rows(svamp.svamp_rows("test", args.test_rows), out / "svamp_test.jsonl")
    env = _env(args.threads)
    student = out / "student"
    if not (student / "config.json").exists():
        code = (f"import json; from synthkd.train.tiny import build_tiny_student; "
                f"rows=[json.loads(l) for l in open({str(train)!r})]; "
                f"build_tiny_student([r['input'] for r in rows]+[r['rationale'] for r in rows], {str(student)!r}, "
                f"vocab_size={args.vocab}, hidden_size={args.hidden}, layers={args.layers}, heads={args.heads})")
        _run([sys.executable, "-c", code], env)
    results = {}
    cli = [sys.executable, "-m", "synthkd.commands.train"]
    for mode in args.modes:
        sdir = out / f"sft_{mode}"
        cmd = cli + ["train", "sft", "-s", str(student), "-i", str(train), "-o", str(sdir), "--mode", mode,
                     "--epochs", str(args.epochs), "--lr", str(args.lr), "--batch-size", str(args.batch),
                     "--max-length", "384", "--skip-invalid", "--save-steps", "100000", "--logging-steps", "50",
                     "--seed", "0"]
        t0 = time.time()
        _run(cmd, env)
        train_s = time.time() - t0
        edir = out / f"eval_{mode}"
        cmd = cli + ["eval", "-s", str(sdir), "-i", str(test), "--kind", "number", "--teacher-field", "answer",
                     "--out", str(edir), "--batch-size", "50"]
        _run(cmd, env)
        rep = json.loads((edir / "metrics.json").read_text())
        rec = json.loads((sdir / "synthkd_train.json").read_text())
        results[mode] = (rep, rec, train_s)
    print(f"\nSVAMP: train {args.train_rows or 800} rows (PaLM-540B rationales) -> tiny student "
          f"({args.layers}x{args.hidden}, vocab {args.vocab}) -> test {args.test_rows or 200} rows, greedy\n")
    print("| mode | accuracy | answered | train loss first -> last | steps | train s | teacher on same rows |")
    print("|---|---|---|---|---|---|---|")
    for mode, (rep, rec, train_s) in results.items():
        m, t = rep["metrics"], rep.get("teacher", {})
        tm = rec["metrics"]
        print(f"| {mode} | {100 * m['accuracy']:.1f}% ({m['correct']}/{m['rows']}) | {m['answered']} | "
              f"{tm.get('train_loss_first', float('nan')):.3f} -> {tm.get('train_loss_last', float('nan')):.3f} | "
              f"{tm['global_steps']} | {train_s:.0f} | {100 * t.get('accuracy', 0):.1f}% |")


def _run(cmd: list[str], env: dict[str, str]) -> None:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    for line in p.stderr.splitlines():
        if line.startswith(("done:", "student ", "warning:", "error:")):
            print("  " + line, flush=True)
    if p.returncode != 0:
        print(p.stderr[-4000:], file=sys.stderr)
        raise SystemExit(p.returncode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="part", required=True)
    t = sub.add_parser("throughput", help="SFT and DPO tokens/s (CPU tiny students; --gpu: ~0.5B Llama + MFU)")
    t.add_argument("--gpu", action="store_true", help="the GPU path (needs CUDA)")
    t.add_argument("--gpu-config-small", action="store_true", help="run the GPU path's code with a tiny config (CPU check)")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--steps", type=int, default=40)
    t.add_argument("--warmup", type=int, default=5)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--seq-len", type=int, default=2048)
    t.add_argument("--gpu-steps", type=int, default=40)
    t.add_argument("--gpu-warmup", type=int, default=10)
    t.add_argument("--gpu-batch", type=int, default=16, help="packed sequences per SFT step (DPO: half as many pairs)")
    t.add_argument("--gpu-docs", type=int, default=2000)
    t.add_argument("--gradient-checkpointing", action="store_true")
    t.add_argument("--peak-tflops", type=float, default=None)
    m = sub.add_parser("modes", help="label vs rationale vs multitask on SVAMP with a tiny student")
    m.add_argument("--out", default=str(REPO / "runs" / "train-modes-svamp"))
    m.add_argument("--modes", nargs="+", default=["label", "rationale", "multitask"])
    m.add_argument("--train-rows", type=int, default=None)
    m.add_argument("--test-rows", type=int, default=None)
    m.add_argument("--epochs", type=float, default=10)
    m.add_argument("--lr", type=float, default=2e-3)
    m.add_argument("--batch", type=int, default=16)
    m.add_argument("--hidden", type=int, default=128)
    m.add_argument("--layers", type=int, default=4)
    m.add_argument("--heads", type=int, default=4)
    m.add_argument("--vocab", type=int, default=1000)
    m.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    throughput(a) if a.part == "throughput" else modes(a)


if __name__ == "__main__":
    main()
