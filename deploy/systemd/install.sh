#!/usr/bin/env bash
# Installs the Tandem binaries and systemd units on this host.
#
#   sudo deploy/systemd/install.sh [coordinator] [gateway] [prefill] [decode]
#
# Builds bin/tandem and bin/tandemctl first if needed, creates the tandem
# user, copies the units, and enables the roles named on the command line.
# Each role reads /etc/tandem/ROLE.yaml (keys are the role's flag names; see
# docs/operations.md) and secrets from /etc/tandem/secrets.env.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
[[ $EUID -eq 0 ]] || { echo "install.sh: run as root" >&2; exit 1; }
[[ -x "$root/bin/tandem" ]] || make -C "$root" build
install -m 0755 "$root/bin/tandem" "$root/bin/tandemctl" /usr/local/bin/
id tandem >/dev/null 2>&1 || useradd --system --home /var/lib/tandem --shell /usr/sbin/nologin tandem
install -d -m 0750 -o root -g tandem /etc/tandem
[[ -f /etc/tandem/secrets.env ]] || install -m 0640 -o root -g tandem /dev/null /etc/tandem/secrets.env
for role in "$@"; do
	case "$role" in coordinator | gateway | prefill | decode) ;; *) echo "install.sh: unknown role $role" >&2; exit 1 ;; esac
	install -m 0644 "$root/deploy/systemd/tandem-$role.service" /etc/systemd/system/
	[[ -f /etc/tandem/$role.yaml ]] || echo "install.sh: write /etc/tandem/$role.yaml before starting tandem-$role"
	systemctl daemon-reload
	systemctl enable "tandem-$role.service"
done
echo "install.sh: done; start with systemctl start tandem-ROLE"
