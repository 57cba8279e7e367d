"""Batch execution: the same teacher's requests sent through the providers' Batch APIs at half price.

Why a mode of the teacher and not a separate tool: requests are built by the same code
(``_request_body``), keyed by the same cache keys (the ``custom_id`` of each batch line), priced by the
same table (at its batch price) and bounded by the same budget, so a method, a filter or ``complete``
runs unchanged online or in batches, and a rerun reads the same cache either way.

* :mod:`.journal` — the durable record beside the cache: each batch's state, request file and failures;
* :mod:`.spool` — writing request lines into batch files split at the provider's limits;
* :mod:`.providers` — the wire: OpenAI Files + Batches, Anthropic Message Batches;
* :mod:`.engine` — :class:`~.engine.BatchExecutor`: one pass over the requests (cache, defer, plan),
  submitting, polling and collecting into the cache;
* :mod:`.passes` — the command-level loop: pass, wait and collect (or exit 5), pass again.
"""
