#!/usr/bin/env bash
# The web console's extras, idempotently:
#   scripts/browser.sh          uPlot (the console's chart library) + headless Chromium
#   scripts/browser.sh assets   only uPlot, from npm into .cache/console-assets
# Chromium and its WebDriver are Debian's `chromium` and `chromium-driver` (apt-get); the
# browser tests drive them with Selenium.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
UPLOT_VERSION=1.6.32
assets="$root/.cache/console-assets"

if [ ! -f "$assets/node_modules/uplot/dist/uPlot.iife.min.js" ] \
  || ! grep -q "\"version\": \"$UPLOT_VERSION\"" "$assets/node_modules/uplot/package.json"; then
  command -v npm >/dev/null || { echo "browser: npm is not installed (needed for uPlot)" >&2; exit 1; }
  echo "browser: installing uplot@$UPLOT_VERSION from npm into .cache/console-assets" >&2
  mkdir -p "$assets"
  npm install --no-audit --no-fund --prefix "$assets" "uplot@$UPLOT_VERSION" >/dev/null
fi
[ "${1:-}" = "assets" ] && exit 0

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "browser: installing chromium and chromium-driver with apt-get" >&2
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  # Other installs may hold the dpkg lock for a while: wait for it (bounded).
  $sudo_ apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends chromium chromium-driver >/dev/null
fi
command -v chromium >/dev/null || { echo "browser: chromium missing after install" >&2; exit 1; }
command -v chromedriver >/dev/null || { echo "browser: chromedriver missing after install" >&2; exit 1; }
