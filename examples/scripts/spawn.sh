#!/bin/sh
# spawn.sh [STATUS [FILE]]: creates processes the way shell scripts do (a subshell, an external
# command in a command substitution, a pipeline, a background job that is waited for), then
# exits with STATUS. With FILE, a child process (cat) prints it, so a test can check file access
# from a grandchild. Every line is predictable, so a test can compare the output exactly.
status=${1:-0}
file=${2:-}

( echo "subshell ok" )
echo "command-substitution $(sh -c 'echo ok')"

lines=$(printf 'one two three\n' | tr ' ' '\n' | wc -l)
echo "pipeline lines=$((lines))"

( sleep 0.05; exit 7 ) &
wait $!
echo "background status=$?"

if [ -n "$file" ]; then
    cat -- "$file" || exit $?
fi

echo "exit $status"
exit "$status"
