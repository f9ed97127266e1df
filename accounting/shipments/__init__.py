"""Export shipments: the footprint of what leaves a bonded zone, per customs declaration.

A shipment (an export declaration 报关单 or a commercial invoice) lists products and quantities,
and where known the production batches they come from. Tanji validates it against what was
produced and not yet shipped, computes its footprint from the batch footprints it draws on,
and issues an immutable document (a printable page and PACT footprints, one per line). See
docs/shipments.md.

- `declaration`: the shipment as declared (parsing and checking the input);
- `csv_import`: a logistics or ERP export as shipments;
- `lots`: what can be shipped: closed production batches (or days, for a product without a
  batch register) and their footprint records;
- `drawing`: which lots each line draws on (named batches, else first-in-first-out);
- `figures`: the shipment's footprint from its lots' records;
- `store`: shipments, their draws and issued documents, durable (SQLite);
- `book`: the operations (create, import, issue, supersede), what the API calls;
- `pact`: a shipment line as a PACT footprint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accounting.shipments.book import ShipmentBook

__all__ = ["ShipmentBook"]


def __getattr__(name: str) -> Any:
    # Lazily: the book reads the API's helpers, and the API's app makes a book.
    if name == "ShipmentBook":
        from accounting.shipments.book import ShipmentBook
        return ShipmentBook
    raise AttributeError(name)
