"""The HTTP face of Tanji: versioned REST, the live stream, PACT v3, reports and the dashboard.

Everything here reads from one `AccountingService` (see `types.py`); nothing here computes a
footprint, so the control-room screen, the CSV an exporter sends and the PACT document a
customer pulls are always the same numbers.
"""

from accounting.api.app import create_app

__all__ = ["create_app"]
