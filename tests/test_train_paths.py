"""`train sft`, `train dpo` and `eval` refuse an unusable output directory up front, with the same
path check every other command uses: one line, exit 2, before any model is loaded.

The student given is a directory that does not exist: had a command loaded the model first, its error
would be about the student, not the path; "read-only" is a real kernel refusal (see test_complete_files).
"""

from __future__ import annotations

import subprocess

import pytest

from conftest import cli_env, synthkd_cmd
from test_complete_files import _as_unprivileged, _one_clear_line


def _run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(synthkd_cmd(*args), env=cli_env(HF_HUB_OFFLINE="1"), capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, preexec_fn=_as_unprivileged)


COMMANDS = {
    "sft": ["train", "sft", "-s", "no-student-dir", "-i", "in.jsonl", "--output"],
    "dpo": ["train", "dpo", "-s", "no-student-dir", "-i", "in.jsonl", "--output"],
    "eval": ["eval", "-s", "no-student-dir", "-i", "in.jsonl", "--output"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("case", ["file_in_the_way", "under_a_file", "read_only_parent", "the_input"])
def test_unusable_output_dir_is_one_line_and_exit_2_before_any_model(tmp_path, command, case):
    # F14 follow-up regression: these commands checked their output directory only when saving, after
    # loading the model and training (a file in the way, a read-only parent, -o naming the input)
    (tmp_path / "in.jsonl").write_text('{"id": 1, "question": "1+1?", "answer": "2", "rationale": "one and one", '
                                       '"prompt": "1+1?", "chosen": "2", "rejected": "3", "gold": 2}\n')
    (tmp_path / "afile").write_text("x")
    (tmp_path / "ro").mkdir(mode=0o555)
    out, needle = {
        "file_in_the_way": ("afile", "afile: is a file, not a directory"),
        "under_a_file": ("afile/model", f"afile/model: cannot create it: {tmp_path / 'afile'} is not a directory"),
        "read_only_parent": ("ro/model", f"ro/model: cannot write in {tmp_path / 'ro'}"),
        "the_input": ("in.jsonl", "in.jsonl: names the same file as --input in.jsonl"),
    }[case]
    try:
        res = _run(tmp_path, *COMMANDS[command], out)
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert res.returncode == 2, res.stderr
    _one_clear_line(res, f"error: {COMMANDS[command][-1]} {needle}")
    assert "student" not in res.stderr  # refused before the model was looked at
