"""What the operator's screens show, built from the service protocol only.

The routers (`overview`, `history`, `drilldown`) and the live stream serve these bodies; they
live here, not in a router, so a router never imports another (only `app.py` assembles them).
"""
