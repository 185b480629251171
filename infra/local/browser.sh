#!/usr/bin/env bash
# The browser the search page's test drives: Debian's chromium with its chromedriver, and a Korean
# font (fonts-nanum) so that Hangul renders. `ensure` installs what is missing when it can (root
# with apt-get); elsewhere it says what to install and the browser test is skipped with that reason.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

missing() {
  local pkgs=()
  command -v chromium >/dev/null || pkgs+=(chromium)
  command -v chromedriver >/dev/null || pkgs+=(chromium-driver)
  { command -v fc-list >/dev/null && [ -n "$(fc-list :lang=ko 2>/dev/null)" ]; } || pkgs+=(fonts-nanum)
  echo "${pkgs[@]}"
}

case "${1:-ensure}" in
  ensure)
    pkgs="$(missing)"
    [ -z "$pkgs" ] && { log "browser: $(chromium --version 2>/dev/null | head -1), chromedriver, a Korean font"; exit 0; }
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "browser: installing $pkgs (apt-get)"
      # shellcheck disable=SC2086
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null 2>&1; } \
        || log "browser: apt-get could not install $pkgs; the search page test will be skipped"
    else
      log "browser: missing $pkgs; the search page test will be skipped (as root: apt-get install $pkgs)"
    fi
    ;;
  *) die "usage: browser.sh ensure" ;;
esac
