#!/usr/bin/env bash
# Exit 0 when some configured apt repository offers PACKAGE (it has an installable candidate), else 1.
#
# Usage: scripts/apt-has.sh PACKAGE
#
# apt-cache's whole answer is read before it is matched: piped into `grep -q`, which exits at its first
# match, apt-cache would die of SIGPIPE on a long answer, and under pipefail the match would read as a
# failure depending on how fast the two processes ran.
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 PACKAGE" >&2; exit 2; }
policy=$(apt-cache policy "$1" 2>/dev/null) || exit 1
[[ "$policy" =~ Candidate:\ [0-9] ]]
