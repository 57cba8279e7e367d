"""Training and evaluation of students (needs the ``[train]`` extra: torch, transformers, trl, peft, ...).

Modules, one job each:

* ``student``      load a student (directory or Hub id), tokenizer fixes, prompt format, batched generation;
* ``export``       method rows -> TRL dataset formats (prompt/completion, conversational, messages, preference);
* ``sft``          TRL SFTTrainer in label / rationale / multitask (Distilling step-by-step) modes;
* ``weighted``     per-example loss weights of the multitask mode;
* ``dpo``          TRL DPOTrainer with an implicit, explicit or LoRA-disabled reference, optionally after SFT;
* ``evaluate``     accuracy / macro-F1 / per-label / mistakes / teacher comparison (``synthkd eval``);
* ``model_card``   provenance and the README.md of a trained student;
* ``common``       settings, precision, LoRA/QLoRA, saving, the training record;
* ``tiny``         tiny offline students for tests, smoke runs and benchmarks.

Nothing here is imported by ``import synthkd``; the CLI imports it inside the commands.
"""
