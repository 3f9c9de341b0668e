#!/usr/bin/env bash
# Set up mgrhooks in this checkout: the system packages its examples, tests and
# benchmarks use (Perl's CGI.pm, PHP with SimpleXML, hyperfine, wrk, BIND's named-checkzone,
# and the brokers of central delivery: RabbitMQ and Redis, whose tests start private
# instances), then a virtual
# environment .venv with mgrhooks and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
perl -MCGI -e 1 2>/dev/null || missing+=(libcgi-pm-perl)
php -r 'exit(class_exists("SimpleXMLElement") ? 0 : 1);' 2>/dev/null || missing+=(php-cli php-xml)
command -v hyperfine >/dev/null || missing+=(hyperfine)
command -v wrk >/dev/null || missing+=(wrk)
command -v named-checkzone >/dev/null || missing+=(bind9-utils)  # tests load the DNS zone files with it
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
command -v redis-server >/dev/null || missing+=(redis-server)
if ((${#missing[@]})); then
    if command -v apt-get >/dev/null; then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        echo "setup: installing ${missing[*]}" >&2
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup: please install ${missing[*]} (Perl CGI.pm, PHP with SimpleXML, hyperfine, wrk, named-checkzone, RabbitMQ, Redis)" >&2
    fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# compat: a plain path entry, no import hook (which costs every start of the command)
.venv/bin/python -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat
# bytecode now, as a regular install does (where PYTHONDONTWRITEBYTECODE is set, every start
# would otherwise compile the modules it loads again)
.venv/bin/python -m compileall -q mgrhooks
chmod 750 addon/*    # the vendor's advice for handler programs; git keeps only the x bit
# mgrhooks believes only files and folders no group or other may write (sshd's StrictModes
# rule, docs/protocol.md "Permissions"): a checkout made with umask 002 would be refused
chmod go-w . etc etc/xml etc/xml/*.xml addon
echo "setup: done; run .venv/bin/mgrhooks --help" >&2
