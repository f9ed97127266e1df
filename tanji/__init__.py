"""The shared core: the `tanji` command, config files, meter profiles, site files, the vocabulary
(quantities, roles, quality codes, methods) and the wire format; every part imports it, it imports no part."""
