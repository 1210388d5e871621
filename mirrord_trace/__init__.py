"""mirrord-trace: run local programs in the context of a remote pod, at the syscall boundary."""

__version__ = "0.1.0"
