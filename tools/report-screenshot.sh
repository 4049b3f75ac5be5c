#!/usr/bin/env bash
# Renders the HTML report in headless Chromium (Debian's `chromium` package) and saves a screenshot,
# to check by eye what an analyst sees. Usage: tools/report-screenshot.sh [data/report.html] [out.png]
set -euo pipefail
report="${1:-data/report.html}"
out="${2:-data/report.png}"
command -v chromium >/dev/null || { echo "install Chromium first: apt-get install chromium" >&2; exit 1; }
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size=1100,4200 \
  --screenshot="$out" "file://$(realpath "$report")" 2>/dev/null
echo "screenshot: $out"
