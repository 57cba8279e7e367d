"""Moved to :mod:`synthkd.labels` (label space, teacher classifier, confusion summary).

Kept only so modules not yet switched (synthkd/stages/generate_stages.py,
synthkd/commands/generate_promptmix.py) still import; remove once they import synthkd.labels.
"""

from synthkd.labels import (  # noqa: F401
    LabelSpace,
    LexicalIndex,
    Relabel,
    classify,
    confusion_summary,
    format_confusion,
    map_answer,
    norm_text,
    offered_classes,
)
