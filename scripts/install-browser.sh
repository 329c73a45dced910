#!/usr/bin/env bash
# What the browser tests need:
# - the OS browser that tests/test_dashboard_browser.py and tests/test_device_page.py drive
#   (headless, through playwright's launcher with executable_path; `playwright install` is
#   never needed): Debian's chromium when /usr/bin/chromium is missing;
# - onnxruntime-web for the device page (`edgeswitch device-page` serves its dist files):
#   `npm ci` in device/ (the version pinned by device/package-lock.json), with Debian's
#   nodejs and npm when npm is missing.
# Installing OS packages needs root (as the Ray tests do on CI).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-browser: $* missing and this is not root: apt-get install $*," \
             "or set EDGESWITCH_NO_BROWSER=1 to skip the browser tests" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y "$@" || { apt-get update && apt-get install -y "$@"; }
}

if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium
    /usr/bin/chromium --version
fi

if ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
# --ignore-scripts: the page needs the package's files only, nothing runs at install time
(cd device && npm ci --ignore-scripts --no-audit --no-fund)
