"""MQTT → validation → dedup: what stands between the broker and the books.

`subscriber` receives (QoS 1, persistent session, shared subscription, manual acks),
`admission` validates and quarantines, `dedup` and `sequence` catch duplicates and gaps,
`stats` counts all of it; `pipeline` runs the cycle (admit, store then ack, deliver) on three threads.
"""
