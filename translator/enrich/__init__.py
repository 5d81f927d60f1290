"""Enrichment and flow-control stages: ``$lookup``, ``$cachedLookup``, ``$setStreamMeta``,
``$throttle`` (and the create-time rejection of ``$externalFunction``).

``spec`` holds their IR dataclasses, ``parse`` their readers (registered into
:data:`translator.parse.STAGE_PARSERS`), ``steps`` their step compilers (registered into
:data:`translator.stages.STEP_COMPILERS` when imported), which hand the I/O stages the
connections the compiler resolved. This package's ``__init__`` imports nothing,
so that both registrations can happen from inside those modules without import cycles.
"""
