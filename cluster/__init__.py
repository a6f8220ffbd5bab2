"""Connecting to Ray: a local instance, an existing cluster, or a local multi-node rehearsal."""
