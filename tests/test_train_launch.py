"""Scale-out: the shipped accelerate configs are valid, and ``accelerate launch`` really starts the training
command as several processes (2 CPU processes over gloo: DDP and FSDP), which train and save one model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from synthkd.assets import package_dir
from synthkd.train.student import TRAIN_RECORD, load_student
from train_fixtures import *  # noqa: F401,F403
from train_fixtures import TRAIN_ROWS

pytestmark = pytest.mark.train  # accelerate launch of training

CONFIGS = package_dir("accelerate_configs")  # shipped in the package (synthkd/accelerate_configs)


def test_shipped_accelerate_configs_are_valid():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {f.stem: str(load_config_from_file(str(f)).distributed_type) for f in CONFIGS.glob("*.yaml")}
    assert kinds == {"ddp": "DistributedType.MULTI_GPU", "fsdp": "DistributedType.FSDP",
                     "deepspeed_zero2": "DistributedType.DEEPSPEED", "deepspeed_zero3": "DistributedType.DEEPSPEED"}
    fsdp = load_config_from_file(str(CONFIGS / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # so OUTPUT is a loadable model directory


@pytest.mark.parametrize("config", ["ddp", "fsdp"])
def test_accelerate_launch_runs_two_processes(tiny_student, tmp_path, train_env, config):
    # the launcher of this interpreter's accelerate (installed with the [train] extra), whether or not the
    # virtualenv's bin/ is on PATH
    out = tmp_path / config
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / f"{config}.yaml"), "--num_processes", "2",
           "--mixed_precision", "no", "--main_process_port", "0",
           "-m", "synthkd.commands.train", "train", "sft", "-s", str(tiny_student), "-i", str(TRAIN_ROWS),
           "-o", str(out), "--max-steps", "3", "--lr", "3e-3", "--batch-size", "4", "--max-length", "256",
           "--skip-invalid", "--save-steps", "1000"]
    p = subprocess.run(cmd, env=train_env, capture_output=True, text=True, timeout=240)
    errors = [ln for ln in p.stderr.splitlines() if "Error" in ln or "error:" in ln]
    assert p.returncode == 0, "\n".join(errors[:20]) + "\n...\n" + p.stderr[-1500:]
    assert p.stderr.count("done: sft mode=label") == 1  # only the main process reports
    rec = json.loads((out / TRAIN_RECORD).read_text())
    assert rec["training"]["world_size"] == 2 and rec["metrics"]["global_steps"] == 3
    st = load_student(out)  # one full model was saved (FSDP gathers the shards)
    assert st.generate([st.user_prompt("How many apples?")], max_new_tokens=3)[0].completion_tokens >= 1
