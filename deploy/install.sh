#!/usr/bin/env bash
# Installs (or upgrades) one DWCP appliance from a release build:
#   binaries  -> $PREFIX/bin (dwcp, dwcp-control, and dwcp-hw / dwcp-lab / dwcp-certify when built)
#   units     -> $ROOT/etc/systemd/system/dwcp-{control,dataplane}.service
#   config    -> $ROOT/etc/dwcp/{control.toml,dataplane.env,profile.toml} (only if absent:
#                an existing file is kept and the shipped one is written beside it as *.dist)
#   docs      -> $PREFIX/share/doc/dwcp
# and a system user `dwcp` that both services run as (they share /dev/shm/dwcp, mode 0600).
#
# Upgrade: run it again with the new build. The binaries being replaced are kept as *.prev;
# the control process restarts first (its state is in redb), then the dataplane; running
# migration jobs would be cancelled by the restart, so it refuses while the API reports one
# (unless --force). `--rollback` puts the *.prev binaries back and restarts.
# The protocol upgrade (v1 -> v3 flows) is not done here: it is a staged rollout through the
# API (docs/operations.md, "Upgrade").
#
# Usage: deploy/install.sh [--prefix /usr/local] [--root DIR] [--target-dir DIR] [--dry-run]
#                          [--no-start] [--force] [--rollback]
#   --root DIR   install under DIR (a staging tree; no user, no systemctl)
#   --dry-run    print every action, change nothing
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
prefix=/usr/local root="" dry=0 start=1 force=0 rollback=0
target=${CARGO_TARGET_DIR:-$repo/target}
while (($#)); do
  case $1 in
    --prefix) prefix=$2; shift 2 ;;
    --root) root=${2%/}; shift 2 ;;
    --target-dir) target=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --no-start) start=0; shift ;;
    --force) force=1; shift ;;
    --rollback) rollback=1; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $prefix == /* ]] || { echo "install.sh: --prefix must be absolute" >&2; exit 2; }
bin=$root$prefix/bin etc=$root/etc/dwcp units=$root/etc/systemd/system doc=$root$prefix/share/doc/dwcp
live=0; [[ -z $root ]] && live=1
# systemctl only where systemd runs this machine.
have_systemd=0; [[ $live == 1 && -d /run/systemd/system ]] && have_systemd=1

run() { if ((dry)); then echo "+ $*"; else "$@"; fi; }
say() { echo "install.sh: $*"; }

api=http://127.0.0.1:7480
if [[ -f $etc/control.toml ]]; then
  l=$(sed -n 's/^listen *= *"\([^"]*\)".*/\1/p' "$etc/control.toml" | head -1)
  [[ -n $l ]] && api=http://${l/0.0.0.0/127.0.0.1}
fi

restart_all() {
  ((have_systemd && start)) || return 0
  run systemctl daemon-reload
  run systemctl restart dwcp-control.service
  run systemctl restart dwcp-dataplane.service
  ((dry)) && return 0
  for _ in $(seq 50); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$api/readyz" 2>/dev/null) == 200 ]] && { say "ready ($api/readyz 200)"; return 0; }
    sleep 0.2
  done
  say "WARNING: $api/readyz is not 200 after 10 s; see journalctl -u dwcp-dataplane -u dwcp-control"
  return 1
}

if ((rollback)); then
  for b in dwcp dwcp-control dwcp-hw dwcp-lab dwcp-certify; do
    [[ -f $bin/$b.prev ]] && run mv -f "$bin/$b.prev" "$bin/$b" && say "rolled back $bin/$b"
  done
  restart_all
  exit $?
fi

# 1. Binaries from the release build.
bins=()
for b in dwcp dwcp-control; do
  [[ -x $target/release/$b ]] || { echo "install.sh: $target/release/$b missing; run: cargo build --release --workspace" >&2; exit 1; }
  bins+=("$b")
done
for b in dwcp-hw dwcp-lab dwcp-certify; do [[ -x $target/release/$b ]] && bins+=("$b"); done

upgrade=0; [[ -x $bin/dwcp-control ]] && upgrade=1
if ((upgrade && have_systemd && !force)) && systemctl is-active -q dwcp-control.service; then
  if curl -sf "$api/v1/jobs" 2>/dev/null | grep -q '"status":"\(running\|queued\|cancelling\)"'; then
    echo "install.sh: migration jobs are running ($api/v1/jobs); a restart would cancel them. Wait, or pass --force." >&2
    exit 1
  fi
fi

# 2. The service user.
if ((live)) && ! id dwcp >/dev/null 2>&1; then
  run useradd --system --no-create-home --home-dir /var/lib/dwcp --shell /usr/sbin/nologin dwcp
fi

# 3. Files.
run install -d -m 0755 "$bin" "$units" "$doc"
run install -d -m 0750 "$etc"
for b in "${bins[@]}"; do
  [[ -f $bin/$b ]] && run cp -p "$bin/$b" "$bin/$b.prev"
  run install -m 0755 "$target/release/$b" "$bin/$b"
done
for u in dwcp-control.service dwcp-dataplane.service; do
  if ((dry)); then echo "+ sed s#/usr/local/#$prefix/# $here/systemd/$u > $units/$u"
  else sed "s#/usr/local/#$prefix/#g" "$here/systemd/$u" >"$units/$u"; chmod 0644 "$units/$u"; fi
done
conf() { # src dest mode: never overwrite an operator's file
  if [[ -e $2 ]]; then
    cmp -s "$1" "$2" || { run install -m "$3" "$1" "$2.dist"; say "kept $2 (shipped version in $2.dist)"; }
  else
    run install -m "$3" "$1" "$2"
  fi
}
conf "$here/config/control.toml" "$etc/control.toml" 0640
conf "$here/config/dataplane.env" "$etc/dataplane.env" 0640
conf "$repo/hw-profiles/profiles/default.toml" "$etc/profile.toml" 0640
((live)) && run chgrp dwcp "$etc" "$etc/control.toml" "$etc/dataplane.env" "$etc/profile.toml"
for d in operations.md api.md daemon.md shm-abi.md protocol.md; do
  run install -m 0644 "$repo/docs/$d" "$doc/$d"
done
run install -m 0644 "$here/wireshark/dwcp.lua" "$doc/dwcp.lua"

# 4. Services.
if ((have_systemd && start)); then
  run systemctl daemon-reload
  run systemctl enable dwcp-control.service dwcp-dataplane.service
  if ((upgrade)); then restart_all; else
    run systemctl start dwcp-control.service dwcp-dataplane.service
  fi
elif ((live)); then
  say "systemd is not running here: start the services yourself (or reboot)"
fi
say "$( ((dry)) && echo "would have " )$( ((upgrade)) && echo upgraded || echo installed ) ${bins[*]} into $bin"
