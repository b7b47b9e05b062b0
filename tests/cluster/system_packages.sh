#!/usr/bin/env bash
# Installs the Debian packages the test cluster needs (SLURM, munge, OpenMPI) when they are missing and
# apt is usable (root). Elsewhere it says what is missing and carries on: those tests then skip, or fail
# under CI=true.
set -euo pipefail
packages=(slurmctld slurmd slurm-client munge openmpi-bin libopenmpi-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "warning: missing system packages (${missing[*]}) and apt-get is not usable as this user;" \
       "SLURM and MPI tests will skip" >&2
fi
