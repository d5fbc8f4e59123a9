#!/usr/bin/env bash
# make demo: a mock Mender server, the simulated auth service on a private
# D-Bus system bus, and tether, all on this machine; then a terminal on
# "the device" in this terminal, and the web console in a browser at the
# address printed (a one-time link logs you in). Leave the shell with `exit`
# (or type ~. at the start of a line to disconnect); the web console stays
# up until you press Enter; then everything is cleaned up.
# DEMO_TLS=1 serves HTTPS/WSS with a self-signed certificate made for this
# run, which tether, mock-authd and mock-mender are told to trust (and a
# browser can be: the address and the certificate's hash are printed).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/bin
work=$(mktemp -d /tmp/tether-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18080)
scheme=http
tls_args=()
trust=()     # environment of the Go clients: trust the demo certificate
link_cfg=""  # tether's Link section
if [ "${DEMO_TLS:-0}" = 1 ]; then
  scheme=https
  tls_args=(--tls-self-signed "$work/tls")
  # SSL_CERT_FILE replaces the system's roots for these processes only.
  trust=(env "SSL_CERT_FILE=$work/tls/cert.pem")
  link_cfg=",
  \"Link\": {\"CAFile\": \"$work/tls/cert.pem\"}"
fi
server=$scheme://127.0.0.1:$port

# A private bus with the same default-deny system-bus rules a device has,
# plus the auth service's own policy file.
cat >"$work/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$work/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
</busconfig>
CONF
dbus-daemon --config-file="$work/bus.conf" --nofork --nopidfile >"$work/bus.log" 2>&1 &
pids+=($!)
bus=unix:path=$work/bus.sock
for _ in $(seq 100); do [ -S "$work/bus.sock" ] && break; sleep 0.05; done

# A password of this run, not the well-known default: the server is on
# loopback, where every local user and program can reach it. It goes
# through the environment (readable by you alone), not the command line.
password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
MOCK_MENDER_USERS="admin@tether.local:$password" "$bin/mock-mender" serve --listen "127.0.0.1:$port" --key-file "$work/server.key" \
  ${tls_args[@]+"${tls_args[@]}"} --login-link admin@tether.local >"$work/server.out" 2>"$work/server.log" &
pids+=($!)
# serve prints its URL, then the login link, once it listens.
for _ in $(seq 100); do [ -f "$work/server.out" ] && [ "$(wc -l <"$work/server.out")" -ge 2 ] && break; sleep 0.05; done
link=$(sed -n 2p "$work/server.out" 2>/dev/null)
[ -n "$link" ] || { echo "demo: the mock server did not start:" >&2; cat "$work/server.log" >&2; exit 1; }

${trust[@]+"${trust[@]}"} "$bin/mock-authd" --bus-address "$bus" --server "$server" --control "$work/authd.sock" >"$work/authd.log" 2>&1 &
pids+=($!)

user=$(id -un)
cat >"$work/tether.conf" <<CONF
{
  "ShellCommand": "${SHELL:-/bin/sh}",
  "ShellArguments": ["-l"],
  "User": "$user",
  "Auth": {"DBusAddress": "$bus"},
  "Sessions": {"MaxPerUser": 2}$link_cfg
}
CONF
"$bin/tether" --config "$work/tether.conf" --fallback-config "$work/none.conf" daemon >"$work/tether.log" 2>&1 &
pids+=($!)

echo "tether demo: server $server, device shell as '$user'. Logs in $work/*.log while it runs."
echo "web console: $server/ (admin@tether.local, password $password)"
echo "  one-time login link (logs a browser in once): $link"
if [ "$scheme" = https ]; then
  spki=$(sed -n 's/.*spki_sha256="\{0,1\}\([^" ]*\).*/\1/p' "$work/server.log" | head -n 1)
  echo "  self-signed certificate: $work/tls/cert.pem (trust it in your browser, or start Chromium with"
  echo "  --ignore-certificate-errors-spki-list=$spki to trust this certificate alone)"
fi
for _ in $(seq 100); do
  MOCK_MENDER_PASSWORD=$password ${trust[@]+"${trust[@]}"} "$bin/mock-mender" devices --server "$server" 2>/dev/null | grep -qE "  connected$" && break
  sleep 0.1
done
MOCK_MENDER_PASSWORD=$password ${trust[@]+"${trust[@]}"} "$bin/mock-mender" attach --server "$server" || true
echo
echo "tether log (last lines):"
tail -n 5 "$work/tether.log"
if [ -t 0 ]; then
  echo
  echo "The web console is still up at $server/ - press Enter to stop the demo."
  read -r _ || true
fi
