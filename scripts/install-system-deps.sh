#!/bin/sh
# Debian packages the tests and benchmarks use: chromium (browser tests), postfix's smtp-sink/smtp-source
# (benchmark sink), spamassassin (deliverability check). Installs only what is missing.
set -eu
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -x /usr/sbin/smtp-sink ] || missing="$missing postfix"
command -v spamassassin >/dev/null 2>&1 || missing="$missing spamassassin"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: missing system packages:$missing (install them with apt-get; related tests are skipped)" >&2
    exit 0
fi
echo "installing system packages:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# postfix asks how to configure itself; the tests only use its smtp-sink binary.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
