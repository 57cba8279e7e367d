"""One-off data converters: turn published datasets and recorded teacher outputs into the files
synthkd's commands read (run as ``python -m synthkd.data_tools.<name>``).  Nothing in the library
imports them; they live in the package (not ``scripts/``) because the tests import them to rebuild
fixtures and check the conversion.

* :mod:`.rationales_replay` — PaLM-540B chain-of-thought outputs of *Distilling step-by-step* ->
  inputs, recorded completions and demonstrations for ``--teacher replay:``.
"""
