"""The HTTP-filtering proxy of stolen connections: which requests go to the program, which
on to the target's own server."""
