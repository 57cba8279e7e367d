"""The cleaning stage: operators over row streams, each drop accounted for with its operator and reason.

* :mod:`.base` — the operator contract (one outcome per row, in order) and helper bases;
* :mod:`.op_config` — the operator registry and the YAML/JSON config (validated, unknown keys are errors);
* :mod:`.chain` — runs a chain of operators over a jsonl file: output, rejects, funnel report;
* :mod:`.funnel` — the report (JSON + Markdown);
* one module per operator: exact_dedup, near_dup, consistency, relabel, judge, format, refusal,
  language, decontaminate, balance, sample;
* helpers: :mod:`.text` (normalisation), :mod:`.minhash` (batch MinHash + banding index),
  :mod:`.spill` (two-pass operators), :mod:`.teacher_ops` (in-order outcomes).

Use from Python::

    from synthkd.filters.op_config import load_config
    from synthkd.filters.chain import CleanPaths, clean_file
    funnel = await clean_file(Path("in.jsonl"), load_config("clean.yaml"), CleanPaths(...))
"""
