#!/usr/bin/env bash
# test_plot.sh SCRIPT SUMMARY: scripts/plot-migration draws a summary as a
# PNG, and refuses a file with no summary (TAP).
set -u
script=$1 summary=$2
echo "1..2"
if ! command -v gnuplot >/dev/null; then
    echo "ok 1 # SKIP gnuplot is not installed (scripts/deps.sh installs gnuplot-nox)"
    echo "ok 2 # SKIP gnuplot is not installed"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if "$script" "$summary" "$tmp/m.png" >/dev/null &&
   [ "$(head -c 8 "$tmp/m.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then
    echo "ok 1 - a PNG of $(stat -c %s "$tmp/m.png") bytes"
else
    echo "not ok 1 - no PNG"
fi
echo '{"ok":false}' > "$tmp/bad.json"
if "$script" "$tmp/bad.json" "$tmp/bad.png" 2>/dev/null; then
    echo "not ok 2 - a summary without rounds was drawn"
else
    echo "ok 2 - a summary without rounds is refused"
fi
