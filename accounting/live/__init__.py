"""The accounting service's live state, one concern per module.

`engines` holds each site's engine and what queries it; `engine_state` restores an engine
after a restart and checkpoints it; `status` keeps what each meter and gateway last said;
`events` tells listeners what changed; `jobs` runs the periodic work (checkpoints, footprint
announcements and writes); `series` turns an engine's hours into dashboard rows.
`accounting.service` assembles them around the ingest pipeline (`accounting.ingest.pipeline`).
"""
