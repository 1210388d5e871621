#!/bin/sh
# The container's entrypoint: run the command (CMD, or `docker run IMAGE COMMAND...`) under
# mirrord-trace. `exec` makes mirrord-trace itself PID 1, so that it reaps orphaned processes,
# forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT to the program and exits with the program's status.
#
#   MIRRORD_TRACE_TARGET   pod/NAME[/container/C], deployment/NAME, pid/N (unset: targetless)
#   MIRRORD_TRACE_CONFIG   a mirrord-style configuration file (optional)
set -eu

# Options go in front of "--", so the program's own arguments are passed on untouched.
set -- -- "$@"
if [ -n "${MIRRORD_TRACE_CONFIG:-}" ]; then
    set -- --config-file "$MIRRORD_TRACE_CONFIG" "$@"
fi
if [ -n "${MIRRORD_TRACE_TARGET:-}" ]; then
    set -- --target "$MIRRORD_TRACE_TARGET" "$@"
fi
exec mirrord-trace exec "$@"
