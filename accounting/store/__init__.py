"""Where validated readings, computed footprints and quarantined messages are kept.

One interface (:class:`accounting.store.base.ReadingStore`), two adapters: SQLite for the
embedded default, InfluxDB (through influxdb-client's write API) for production.
"""
