#!/usr/bin/env bash
# The OS browser that tests/test_dashboard_browser.py drives (headless, through playwright's
# launcher with executable_path; `playwright install` is never needed). Installs Debian's
# chromium when /usr/bin/chromium is missing; needs root (as the Ray tests do on CI).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-browser: /usr/bin/chromium is missing and this is not root:" \
         "apt-get install chromium, or set EDGESWITCH_NO_BROWSER=1 to skip the browser test" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }
/usr/bin/chromium --version
