"""PACT Technical Specifications v3 host system: who may pull footprints, what is published.

The HTTP routes are in `accounting.api.pact`; everything they stand on is here, one concept per
module: `clients` (the partners of a plant, from a file, secrets hashed), `tokens` (bearer
tokens, durable across restarts, capped per client), `ratelimit` (failed logins), `tls`
(certificates and the uvicorn TLS settings), `document` (a footprint record as a v3
ProductFootprint), `published` (the store of published footprints, immutable), `publisher`
(which closed periods are published, revisions), `filters` (ListFootprints and
RequestCreated criteria), `events` (CloudEvents in and out), `outbox` (durable delivery of
events with retries) and `host` (all of it for one deployment).
"""
