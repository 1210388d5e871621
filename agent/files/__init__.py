"""File requests run inside the target's root: reads, writes, and whether the mount namespace
lets them run in the event loop."""
