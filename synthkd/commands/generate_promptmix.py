"""``synthkd generate promptmix``: borderline examples mixing two classes, relabeled by the teacher.

The options are :class:`synthkd.methods.promptmix.PromptMixConfig`'s; the job is run by
:class:`synthkd.commands.job.GenerateJob`.  Prints one ``done:`` line (rows, rejects, generation
calls, requests, tokens, cost), the alpha spread and an "intended vs relabeled" agreement line with
the top confusions, and uses ``synthkd complete``'s exit codes: 0 every row done; 1 some calls or
rows failed (teacher errors; a rerun retries them); 2 bad input (before any request); 3 budget
reached; 4 the teacher refused us; 130 interrupted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, AsyncIterator

from synthkd.commands.job import EXIT_OK, EXIT_SHORT, GenerateJob, Outcome, generate_command
from synthkd.jsonl_io import InputError
from synthkd.methods.promptmix import PromptMixConfig
from synthkd.teachers.base import Teacher

log = logging.getLogger(__name__)


class PromptMixJob(GenerateJob):
    input_attr = None  # reads no rows: --limit caps the results
    name = "done"

    def inputs(self) -> dict[str, Path | None]:
        return {"--labels": self.cfg.labels, "--confusion": self.cfg.confusion}

    def prepare(self) -> None:
        from synthkd.labels import LabelSpace
        from synthkd.methods.metrics import PromptMixMetrics
        from synthkd.methods.promptmix import PromptMixStats, plan_calls

        self.space = LabelSpace.from_file(self.cfg.labels)
        problems = self.cfg.problems(self.space)
        if problems:
            raise InputError([f"{self.cfg.labels}: {p}" if "label space" in p else p for p in problems])
        self.n_calls = len(plan_calls(self.space, self.cfg))  # renders every prompt: template errors now
        self.stats = PromptMixStats()
        # the method's metrics, declared once: the pipeline stage records the same ones in the manifest
        self.metrics = PromptMixMetrics(self.stats, calls_planned=self.n_calls, policy=self.cfg.policy)

    def finish_output(self) -> None:
        from synthkd.methods.promptmix import canonical_key
        from synthkd.methods.runner import sort_output

        sort_output(self.output, canonical_key)  # the file does not depend on completion order

    def rows(self, teachers: list[Teacher], done: Any) -> AsyncIterator[dict[str, Any]]:
        from synthkd.methods.metrics import observed
        from synthkd.methods.promptmix import promptmix

        return observed(promptmix(self.space, teachers[0], self.cfg, self.stats), self.metrics)

    def already(self, out: Outcome) -> int:
        return out.counts.already_there  # the method re-yields rows; the writer skips those there

    def details(self, out: Outcome) -> str:
        s = self.stats
        return (f"generation calls {s.calls}/{self.n_calls} answered ({s.failed_calls} failed), "
                f"{s.parsed} examples parsed, {s.kept} kept after dedup")

    def report(self, out: Outcome) -> None:
        for line in self.metrics.lines():
            log.info(line)

    def result_code(self, out: Outcome) -> int:
        failed = self.stats.failed_calls + out.counts.reasons.get("teacher error", 0)
        return EXIT_SHORT if failed else EXIT_OK

    def summary(self, out: Outcome) -> dict[str, Any]:
        return {**out.counts.as_dict(), **self.metrics.as_dict()}


@generate_command("promptmix", PromptMixConfig, required=("labels", "output"))
def promptmix_cmd(cfg: PromptMixConfig, *, teacher: str, summary_json: Path | None = None,
                  conn: dict | None = None, inp: dict | None = None) -> None:
    """PromptMix: borderline examples mixing two classes (alpha% A, rest B), relabeled by the teacher."""
    PromptMixJob(cfg, teacher=teacher, conn=conn, summary_json=summary_json, inp=inp).run()
