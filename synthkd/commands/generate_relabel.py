"""``synthkd generate relabel``: the teacher as a k-shot classifier over existing rows.

The options are :class:`synthkd.labels.RelabelConfig`'s; the job is run by
:class:`synthkd.commands.job.GenerateJob`.  Prints one ``done:`` line (rows, rejects, requests,
tokens, cost) and an "intended vs relabeled" agreement line with the top confusions (over the whole
output file), and uses ``synthkd complete``'s exit codes: 0 every row done; 1 some rows failed
(teacher errors, in OUTPUT.rejects.jsonl; a rerun retries them); 2 bad input (before any request);
3 budget reached; 4 the teacher refused us; 130 interrupted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, AsyncIterator

from synthkd.commands.job import GenerateJob, Outcome, generate_command
from synthkd.jsonl_io import iter_jsonl
from synthkd.labels import RelabelConfig
from synthkd.teachers.base import Teacher

log = logging.getLogger(__name__)


class RelabelJob(GenerateJob):
    name = "done"

    def inputs(self) -> dict[str, Path | None]:
        return {"--input": self.cfg.input, "--labels": self.cfg.labels}

    def prepare(self) -> None:
        from synthkd.labels import LabelSpace

        self.space = LabelSpace.from_file(self.cfg.labels)
        self.n_rows = self.cfg.check_input(self.cfg.input, self.space)
        self.cfg.check()

    def rows(self, teachers: list[Teacher], done: Any) -> AsyncIterator[dict[str, Any]]:
        self.todo = self.n_rows - len(done)
        todo = (row for _lineno, row in iter_jsonl(self.cfg.input) if row["id"] not in done)
        return self.cfg.run(todo, teachers[0], self.space)

    def expected(self) -> int | None:
        return getattr(self, "todo", None)

    def report(self, out: Outcome) -> None:
        from synthkd.labels import format_confusion
        from synthkd.methods.metrics import relabel_metrics

        # the method's metrics, declared once: the pipeline stage records the same ones in the manifest
        self.confusion = relabel_metrics(self.output, self.cfg.intended)
        log.info(format_confusion(self.confusion, f"intended vs relabeled (all {self.confusion['rows']} rows of "
                                             f"{self.output.name})"))

    def summary(self, out: Outcome) -> dict[str, Any]:
        return {**out.counts.as_dict(), "rows_already_done": out.done, "confusion": self.confusion}


@generate_command("relabel", RelabelConfig, required=("input", "labels", "output"))
def relabel_cmd(cfg: RelabelConfig, *, teacher: str, summary_json: Path | None = None,
                conn: dict | None = None, inp: dict | None = None) -> None:
    """Ask the teacher for each row's class; add relabeled_label, relabel_raw, relabel_reason.

    Prints intended vs relabeled agreement and the top confusions (over the whole output file).
    """
    RelabelJob(cfg, teacher=teacher, conn=conn, summary_json=summary_json, inp=inp).run()
