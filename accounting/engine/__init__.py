"""The numba accounting engine (ACCOUNTING.md): counters -> energy -> allocation -> footprints."""

from accounting.engine.engine import Engine, FootprintResult, ProductFootprint, SiteBalance
from accounting.engine.history import IngestSummary
from accounting.engine.windows import window_bounds

__all__ = ["Engine", "FootprintResult", "IngestSummary", "ProductFootprint", "SiteBalance",
           "window_bounds"]
