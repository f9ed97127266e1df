"""Audit: the evidence a footprint names, and self-contained bundles an auditor verifies offline.

`evidence` (Merkle roots over the signed chain segments, the certificates and the factor
dataset a footprint rests on), `bundle` (what `tanji audit export` writes), `verify` (what
`tanji audit verify` checks), `cli` (both commands). docs/audit.md explains them.
"""
