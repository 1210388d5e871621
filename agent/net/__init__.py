"""Outgoing traffic from the target's network namespace: connected TCP/UDP streams, name
lookups through the target's resolver, the small network requests."""
