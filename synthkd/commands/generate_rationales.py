"""``synthkd generate rationales``: step-by-step rationales from a teacher (Distilling step-by-step).

The options are :class:`synthkd.methods.rationales.RationalesConfig`'s; the job is run by
:class:`synthkd.commands.job.GenerateJob`: the whole input (and demonstrations, label set, template)
is read and validated before the teacher is built, ids already in the output are skipped (resume =
rerun), rows are written as they complete and one summary line is printed.
Exit codes as ``synthkd complete``: 0 every row written; 1 some rows rejected; 2 bad input;
3 budget reached; 4 the teacher failed fatally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

from synthkd.commands.job import GenerateJob, Outcome, generate_command
from synthkd.jsonl_io import load_rows
from synthkd.methods.rationales import RationalesConfig, RationaleTally, load_labels  # noqa: F401  (load_labels: API)
from synthkd.teachers.base import Teacher


class RationalesJob(GenerateJob):
    name = "rationales"

    def inputs(self) -> dict[str, Path | None]:
        return {"--input": self.cfg.input, "--demos": self.cfg.demos, "--labels-file": self.cfg.labels_file}

    def prepare(self) -> None:
        c = self.cfg
        self.in_rows, lines = load_rows(c.input)
        demo_rows, demo_lines = load_rows(c.demos) if c.demos else (None, [])
        self.plan = c.plan(self.in_rows, demos=demo_rows, row_where=lambda i: f"{c.input}:{lines[i]}",
                           demo_where=lambda i: f"{c.demos}:{demo_lines[i]}")
        self.tally = RationaleTally(samples=c.samples)

    async def rows(self, teachers: list[Teacher], done: Any) -> AsyncIterator[dict[str, Any]]:
        self.todo = sum(1 for r in self.in_rows if r["id"] not in done)
        async for row in self.plan.run(teachers[0], skip_ids=done):
            self.tally.add(row)
            yield row

    def expected(self) -> int | None:
        return getattr(self, "todo", None)

    def details(self, out: Outcome) -> str:
        return self.tally.line()

    def summary(self, out: Outcome) -> dict[str, Any]:
        return {"rows_written": out.counts.written, "rows_rejected": out.counts.rejected,
                "rows_already_done": out.done, "requests_sent": sum(t.stats.attempts for t in out.teachers),
                **self.tally.as_dict()}


@generate_command("rationales", RationalesConfig, required=("input", "output"))
def rationales(cfg: RationalesConfig, *, teacher: str, summary_json: Path | None = None,
               conn: dict | None = None, inp: dict | None = None) -> None:
    """Few-shot chain-of-thought rationales + answers for every row, scored against gold labels.

    Exit codes: 0 every row written; 1 some rows rejected; 2 bad input; 3 budget reached; 4 teacher fatal.
    """
    RationalesJob(cfg, teacher=teacher, conn=conn, summary_json=summary_json, inp=inp).run()
