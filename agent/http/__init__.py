"""The filtered steal's HTTP side (mirrord's agent/src/http layout): the filter, bodies for body
filters, and the HTTP/1.x and HTTP/2 connection logic that routes each request."""
