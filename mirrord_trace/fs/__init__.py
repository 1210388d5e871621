"""The remote filesystem's local half: the session's cache of remote files and directories,
the writers whose data goes back to the target, and the kernel structs handlers emulate."""
