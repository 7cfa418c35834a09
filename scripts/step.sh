#!/usr/bin/env bash
# One install step, quietly: `scripts/step.sh NAME COMMAND...`.
#
# The command's output goes to $STEP_LOGS/NAME.log (default .tools/logs). On
# success one line is printed: the step, the command's last output line (each
# step ends by printing a summary of what it did) and the time it took. On
# failure the log's last lines are printed and the command's exit code is kept.
set -uo pipefail

name=${1:?usage: step.sh NAME COMMAND...}
shift
logs=${STEP_LOGS:-.tools/logs}
mkdir -p "$logs"
log=$logs/$name.log
start=$SECONDS
"$@" >"$log" 2>&1
code=$?
took=$((SECONDS - start))
if [[ $code -eq 0 ]]; then
    summary=$(tail -n 1 "$log")
    printf '  ok   %-8s %s (%ss)\n' "$name" "$summary" "$took"
else
    printf '  FAIL %-8s exit %s after %ss; last lines of %s:\n' "$name" "$code" "$took" "$log" >&2
    tail -n 40 "$log" | sed 's/^/       /' >&2
fi
exit $code
