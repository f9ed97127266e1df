"""The numba accounting engine (ACCOUNTING.md): counters -> energy -> allocation -> footprints."""

from accounting.engine.engine import Engine
from accounting.engine.results import FootprintResult, IngestSummary, ProductFootprint, SiteBalance
from accounting.engine.settings import DEFAULT_TAIL_S, EngineSettings
from accounting.engine.source import ReadingSource
from tanji.civil_calendar import window_bounds

__all__ = ["DEFAULT_TAIL_S", "Engine", "EngineSettings", "FootprintResult", "IngestSummary",
           "ProductFootprint", "ReadingSource", "SiteBalance", "window_bounds"]
