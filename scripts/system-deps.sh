#!/usr/bin/env bash
# System packages some tests need: redis-server (the shared store), chromium (the wallet's
# pages and the web example, driven by Playwright), nodejs and npm (the JS package, the
# conformance adapter, the npm SDKs), caddy (the TLS proxy in front of a hosted wallet). Installed from Debian's packages when missing and run as root;
# otherwise says what to install.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v wrk >/dev/null 2>&1 || need+=(wrk)  # bench/peers.py's load generator
[ -x /usr/bin/chromium ] || need+=(chromium)
# Node: package.json's engines say >= 20 (the JS package uses the global WebCrypto), and .npmrc's
# engine-strict makes `npm ci` refuse a locked package whose engines the node here does not meet.
NODE_MAJOR=20
node_ok() {
  command -v node >/dev/null 2>&1 \
    && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge "$NODE_MAJOR" ]
}
node_ok || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v caddy >/dev/null 2>&1 || need+=(caddy)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]} (install them: sudo apt-get install -y ${need[*]};" \
       "Node.js must be >= $NODE_MAJOR)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
if ! node_ok; then
  # Debian 12's nodejs is 18: say so here rather than let npm ci or a test fail obscurely.
  echo "Node.js >= $NODE_MAJOR is needed (package.json engines), this system has" \
       "$(node --version 2>/dev/null || echo none); Debian 13 packages Node 20, or use" \
       "NodeSource's node_$NODE_MAJOR.x repository" >&2
  exit 1
fi
