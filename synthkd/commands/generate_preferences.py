"""``synthkd generate preferences``: DPO preference pairs (teacher vs student, or judge-ranked samples).

The options are :class:`synthkd.methods.preferences.PreferencesConfig`'s; the job is run by
:class:`synthkd.commands.job.GenerateJob`: everything is read and validated before any teacher is
built; pair ids already in the output are skipped (resume = rerun); rows are written as they complete
and one summary line names the pairs written and the rejects by reason, then one line per model.
Exit codes: 0 done (rejected rows are an expected outcome here, not a failure); 2 bad input;
3 budget reached; 4 a teacher failed fatally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

from synthkd.commands.job import EXIT_OK, GenerateJob, Outcome, generate_command
from synthkd.jsonl_io import InputError, load_rows
from synthkd.methods.preferences import MODES, PreferencesConfig  # noqa: F401  (MODES: API)
from synthkd.teachers.base import Teacher


class PreferencesJob(GenerateJob):
    unit = "pairs"
    rejected_word = "rows without a pair"

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"preferences ({self.cfg.mode})"

    def inputs(self) -> dict[str, Path | None]:
        return {"--input": self.cfg.input, "--demos": self.cfg.demos, "--rubric-file": self.cfg.rubric_file}

    def prepare(self) -> None:
        c = self.cfg
        rows, lines = load_rows(c.input)
        if c.mode == "student" and not c.student:
            raise InputError(["--mode student needs --student MODEL (local:PATH, replay:FILE or an API model)"])
        demo_rows, demo_lines = load_rows(c.demos) if (c.mode == "student" and c.demos) else (None, [])
        self.plan = c.plan(rows, demos=demo_rows, row_where=lambda i: f"{c.input}:{lines[i]}",
                           demo_where=lambda i: f"{c.demos}:{demo_lines[i]}")

    def teacher_specs(self) -> list[tuple[str, str, str | None]]:
        c, url = self.cfg, self.conn.get("base_url")
        if c.mode == "student":
            return [("teacher", self.teacher_name, url), ("student", c.student, c.student_base_url or url)]
        samplers = [("teacher", self.teacher_name, url)]
        if c.teacher2:
            samplers.append(("teacher2", c.teacher2, c.teacher2_base_url or url))
        return samplers + [("judge", c.judge or self.teacher_name, c.judge_base_url or url)]

    def rows(self, teachers: list[Teacher], done: Any) -> AsyncIterator[dict[str, Any]]:
        from synthkd.methods.metrics import PreferencesMetrics, observed

        # the method's metrics, declared once: the pipeline stage records the same ones in the manifest
        self.metrics = PreferencesMetrics(self.cfg.mode)
        if self.cfg.mode == "student":
            return observed(self.plan.run(teachers[0], teachers[1], skip_ids=done), self.metrics)  # type: ignore[union-attr]
        return observed(self.plan.run(teachers[:-1], teachers[-1], skip_ids=done), self.metrics)  # type: ignore[union-attr]

    def reason_sep(self) -> str:
        return ": "

    def result_code(self, out: Outcome) -> int:
        return EXIT_OK  # a row without a pair is an outcome, not a failure

    def summary(self, out: Outcome) -> dict[str, Any]:
        return {"mode": self.cfg.mode, "pairs_written": out.counts.written, "rows_rejected": out.counts.rejected,
                "reject_reasons": self.drops(out)[1], "pairs_already_done": out.done,
                "requests_sent": sum(t.stats.attempts for t in out.teachers),
                **(self.metrics.as_dict({r: {"model": t.model, "requests": t.stats.attempts}
                                         for (r, _m, _u), t in zip(self.teacher_specs(), out.teachers)})
                   if hasattr(self, "metrics") else {})}


@generate_command("preferences", PreferencesConfig, required=("input", "output"))
def preferences(cfg: PreferencesConfig, *, teacher: str, summary_json: Path | None = None,
                conn: dict | None = None, inp: dict | None = None) -> None:
    """Preference pairs for DPO: the teacher's right answer vs the student's wrong one, or judge-ranked samples.

    Exit codes: 0 done; 2 bad input; 3 budget reached; 4 teacher fatal.
    """
    PreferencesJob(cfg, teacher=teacher, conn=conn, summary_json=summary_json, inp=inp).run()
