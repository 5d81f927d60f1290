"""One module per engine. Each has ``run(workload, batches, clock) -> (rows, first_output_at)``.

``batches`` yields lists of generator documents (consumed once: the engine may keep or
mutate them). ``rows`` are the engine's results converted *after* the timed part by
``to_rows``; ``first_output_at`` is the ``time.perf_counter()`` at which the first result
reached the engine's sink (``None`` if nothing did).
"""
