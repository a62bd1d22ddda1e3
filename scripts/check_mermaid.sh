#!/usr/bin/env bash
# Validate the Mermaid diagrams in markdown files with Mermaid's real parser,
# and optionally render them to PNG to look at.  Not part of the test suite
# (it needs node and npm; rendering also needs chromium); tests/test_erd.py
# checks the diagram's structure without them.
#
#   scripts/check_mermaid.sh                      # parse docs/er-diagram.md
#   scripts/check_mermaid.sh FILE.md ...          # parse these files
#   scripts/check_mermaid.sh --render OUT.png     # parse, then render with mermaid-cli
#
# Exit 0 when every ```mermaid block parses, 1 otherwise (the parser's message
# names the line).  Tools are installed once (npm) into MERMAID_TOOLS_DIR
# (default: ~/.cache/datalayer-mermaid), never into the repository.
# Rendering needs a Chromium: CHROMIUM (default /usr/bin/chromium; on Debian
# `apt-get install -y chromium`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
tools="${MERMAID_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/datalayer-mermaid}"
mermaid_version="${MERMAID_VERSION:-11}"
render=""
files=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --render) render="${2:?--render needs an output .png or .svg path}"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) files+=("$1"); shift ;;
  esac
done
[[ ${#files[@]} -gt 0 ]] || files=("$root/docs/er-diagram.md")

command -v node >/dev/null && command -v npm >/dev/null || {
  echo "check_mermaid: node and npm are needed (e.g. apt-get install -y nodejs npm)" >&2
  exit 1
}

mkdir -p "$tools"
if [[ ! -d "$tools/node_modules/mermaid" || ! -d "$tools/node_modules/jsdom" ]]; then
  echo "check_mermaid: installing mermaid@$mermaid_version and jsdom into $tools" >&2
  (cd "$tools" && { [[ -f package.json ]] || npm init -y >/dev/null; } \
    && npm install --no-audit --no-fund "mermaid@$mermaid_version" jsdom >/dev/null)
fi

# Node resolves imports next to the script, so run a copy inside the tools directory.
cp "$here/mermaid_parse.mjs" "$tools/mermaid_parse.mjs"
abs=()
for f in "${files[@]}"; do abs+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")"); done
node "$tools/mermaid_parse.mjs" "${abs[@]}"

if [[ -n "$render" ]]; then
  chromium="${CHROMIUM:-/usr/bin/chromium}"
  [[ -x "$chromium" ]] || { echo "check_mermaid: no Chromium at $chromium (set CHROMIUM)" >&2; exit 1; }
  if [[ ! -x "$tools/node_modules/.bin/mmdc" ]]; then
    echo "check_mermaid: installing @mermaid-js/mermaid-cli into $tools" >&2
    (cd "$tools" && PUPPETEER_SKIP_DOWNLOAD=1 npm install --no-audit --no-fund \
      @mermaid-js/mermaid-cli >/dev/null)
  fi
  printf '{"executablePath": "%s", "args": ["--no-sandbox"]}\n' "$chromium" > "$tools/puppeteer.json"
  # mmdc renders the first diagram of the first file; that is what we look at.
  block="$tools/diagram.mmd"
  awk '/^```mermaid$/{on=1; next} /^```$/{if (on) exit} on' "${abs[0]}" > "$block"
  "$tools/node_modules/.bin/mmdc" -q -p "$tools/puppeteer.json" -i "$block" -o "$render" -s 2
  echo "check_mermaid: rendered ${files[0]} to $render"
fi
