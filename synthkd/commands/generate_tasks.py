"""``synthkd generate tasks``: labelled examples from a task spec.

The options are :class:`synthkd.methods.label_tasks.LabelTaskConfig`'s; the job is run by
:class:`synthkd.commands.job.GenerateJob`: everything (spec, settings, template) is validated before
the teacher is built, kept rows go to the output and dropped candidates to
``<output>.rejects.jsonl`` with ``reject_reason``, and one summary line gives rows, drops by reason,
requests, tokens, cost.  Resume = rerun: the same command sends the same prompts, the cache answers
those already paid for, ids already in the output are skipped.  Exit codes as ``synthkd complete``:
0 the target was reached; 1 it was not (teacher errors, request cap) — rerun or raise the cap;
2 bad input; 3 budget reached; 4 the teacher failed fatally; 130 interrupted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, AsyncIterator

from synthkd.commands.job import EXIT_OK, EXIT_SHORT, GenerateJob, Outcome, generate_command
from synthkd.methods.label_tasks import LabelTaskConfig
from synthkd.teachers.base import Teacher

log = logging.getLogger(__name__)


class TargetJob(GenerateJob):
    """A job with a target (N per label, N instructions): drops are candidates the method left out,
    counted by :class:`~synthkd.methods.label_tasks.MethodStats`; exit 1 when the target is short."""

    rejected_word = "dropped"

    def __init__(self, *a: Any, **kw: Any) -> None:
        from synthkd.methods.label_tasks import MethodStats

        super().__init__(*a, **kw)
        self.stats = MethodStats()

    def already(self, out: Outcome) -> int:
        return out.counts.already_there  # the method re-yields kept rows; the writer skips them

    def drops(self, out: Outcome) -> tuple[int, dict[str, int]]:
        return sum(self.stats.drops.values()), dict(self.stats.drops)

    def metrics(self) -> Any:
        """The method's metrics, declared once (:mod:`synthkd.methods.metrics`): the pipeline stage
        records the same ones in the run manifest."""
        from synthkd.methods.metrics import TasksMetrics

        return TasksMetrics(self.stats)

    def report(self, out: Outcome) -> None:
        for line in self.metrics().lines():
            log.info(f"  {line}")

    def budget_reached(self, out: Outcome) -> bool:
        return self.stats.budget_stopped

    def result_code(self, out: Outcome) -> int:
        return EXIT_SHORT if self.stats.short else EXIT_OK

    def summary(self, out: Outcome) -> dict[str, Any]:
        return {"rows_written": out.counts.written, "rows_already_there": out.counts.already_there,
                "rejects_written": out.counts.rejected, **self.metrics().as_dict(),
                "teacher_attempts": sum(t.stats.attempts for t in out.teachers), "elapsed_s": round(out.elapsed, 3)}


class TasksJob(TargetJob):
    input_attr = None  # reads no rows: --limit caps the results
    name = "tasks"

    def inputs(self) -> dict[str, Path | None]:
        return {"--labels": self.cfg.labels}

    def prepare(self) -> None:
        from synthkd.methods.label_tasks import load_task_spec, plan_label_tasks

        self.plan = plan_label_tasks(load_task_spec(self.cfg.labels), self.cfg)

    def finish_output(self) -> None:
        from synthkd.methods.label_tasks import canonical_order

        canonical_order(self.plan, self.output)  # the file does not depend on completion order

    def rows(self, teachers: list[Teacher], done: Any) -> AsyncIterator[dict[str, Any]]:
        from synthkd.methods.label_tasks import generate_label_examples

        return generate_label_examples(teachers[0], self.plan, stats=self.stats)

    def target(self, out: Outcome) -> str:
        n = len(self.plan.labels)
        return f"{sum(self.stats.per_label.values())}/{self.cfg.per_label * n} kept over {n} labels"


@generate_command("tasks", LabelTaskConfig, required=("labels", "output"))
def tasks(cfg: LabelTaskConfig, *, teacher: str, summary_json: Path | None = None, conn: dict | None = None, inp: dict | None = None) -> None:
    """N diverse labelled examples per label from a task description, near-duplicates removed.

    Exit codes: 0 every label has N; 1 some label short; 2 bad input; 3 budget reached; 4 teacher fatal.
    """
    TasksJob(cfg, teacher=teacher, conn=conn, summary_json=summary_json, inp=inp).run()
