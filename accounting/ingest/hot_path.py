"""Which passes of ingest's hot path run compiled here (setup.py builds them; each has a
Python twin that runs where no C compiler was found at install, correct but with more CPU a
reading: docs/storage.md, "Compiled passes"). Logged by the service at start and printed by
the ingest benchmarks, so a figure says which code made it."""

from __future__ import annotations

import logging


def compiled_passes() -> dict[str, str]:
    """Pass → "compiled" or "python", for the batch's readings (admission), the reading
    columns (engine thread) and line protocol (the store's request bodies)."""
    from accounting.ingest.batch_decoder import READINGS_PASS
    from accounting.ingest.reading_columns import COLUMNS_PASS
    from accounting.store.influx import LINE_PROTOCOL_PASS

    return {"readings": READINGS_PASS, "columns": COLUMNS_PASS, "line_protocol": LINE_PROTOCOL_PASS}


def log_passes(log: logging.Logger) -> None:
    """Say at start which passes run: a deployment built without a C compiler runs the Python
    twins, correct but with more CPU a reading, and the warning names the fix."""
    passes = compiled_passes()
    text = ", ".join(f"{name} {kind}" for name, kind in passes.items())
    if all(kind == "compiled" for kind in passes.values()):
        log.info("ingest passes: %s", text)
    else:
        log.warning("ingest passes: %s; the Python ones need more CPU a reading: reinstall with a C "
                    "compiler present (Debian: apt-get install gcc) to build them (setup.py)", text)
