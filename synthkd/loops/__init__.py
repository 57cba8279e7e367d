"""Multi-round loops: code that trains a student, evaluates it, asks the teacher about what it got
wrong and goes round again, writing one directory per round (and its plots).

Unlike :mod:`synthkd.methods` (rows in, rows out over a teacher), a loop owns a run directory and calls
the trainer and the evaluator; it uses methods for its teacher requests
(:mod:`synthkd.methods.similar_exercises`, :mod:`synthkd.methods.runner`).

* :mod:`.tailored` — tailored multi-round distillation (Tailored Learning; LLM2LLM).
"""
