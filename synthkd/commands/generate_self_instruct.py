"""``synthkd generate self-instruct``: grow new instructions (with instances) from seed tasks.

The options are :class:`synthkd.methods.self_instruct.SelfInstructConfig`'s; the job is run like
``generate tasks`` (:class:`synthkd.commands.generate_tasks.TargetJob`): seeds and settings are
validated before the teacher is built, dropped candidates go to ``<output>.rejects.jsonl``, resume =
rerun.  Exit codes: 0 N instructions with instances; 1 short; 2 bad input; 3 budget reached;
4 teacher fatal; 130 interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

from synthkd.commands.generate_tasks import TargetJob
from synthkd.commands.job import Outcome, generate_command
from synthkd.methods.self_instruct import SelfInstructConfig
from synthkd.teachers.base import Teacher


class SelfInstructJob(TargetJob):
    input_attr = "seeds"  # the seed rows are its input
    name = "self-instruct"

    def inputs(self) -> dict[str, Path | None]:
        return {"--seeds": self.cfg.seeds}

    def prepare(self) -> None:
        from synthkd.methods.self_instruct import load_seed_tasks, plan_self_instruct

        self.plan = plan_self_instruct(load_seed_tasks(self.cfg.seeds), self.cfg)

    def rows(self, teachers: list[Teacher], done: Any) -> AsyncIterator[dict[str, Any]]:
        from synthkd.methods.self_instruct import generate_self_instruct

        return generate_self_instruct(teachers[0], self.plan, stats=self.stats)

    def target(self, out: Outcome) -> str:
        return f"{self.stats.kept}/{self.cfg.num_instructions} instructions with instances"


@generate_command("self-instruct", SelfInstructConfig, required=("seeds", "output"))
def self_instruct(cfg: SelfInstructConfig, *, teacher: str, summary_json: Path | None = None,
                  conn: dict | None = None, inp: dict | None = None) -> None:
    """Self-Instruct: grow N new instructions (with input/output instances) from seed tasks.

    Exit codes: 0 N instructions with instances; 1 short; 2 bad input; 3 budget reached; 4 teacher fatal.
    """
    SelfInstructJob(cfg, teacher=teacher, conn=conn, summary_json=summary_json, inp=inp).run()
