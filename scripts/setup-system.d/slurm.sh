#!/usr/bin/env bash
# System packages for the Slurm executor's tests: Debian's slurm-wlm (slurmctld, slurmd, the
# client commands) and munge. Idempotent: installs only what is missing. Needs root (or sudo).
set -euo pipefail
missing=()
command -v slurmctld >/dev/null 2>&1 || missing+=(slurmctld)
command -v slurmd >/dev/null 2>&1 || missing+=(slurmd)
command -v sbatch >/dev/null 2>&1 || missing+=(slurm-client)
command -v munged >/dev/null 2>&1 || missing+=(munge)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "slurm.sh: need root to install ${missing[*]} (or install slurm-wlm and munge yourself)" >&2; exit 1
  fi
fi
echo "slurm.sh: installing slurm-wlm munge (missing: ${missing[*]})"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q -o DPkg::Lock::Timeout=600
# another apt-get may hold the dpkg lock (CI runs several setup scripts): wait for it
$SUDO apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends slurm-wlm munge
