# Shared helpers for the scripts in this folder. Sourced, not run.

set -euo pipefail

CAIRN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CAIRN_ROOT

# Debian packages the build, the boot and the tests use on the host.
CAIRN_HOST_PACKAGES=(
  qemu-system-x86   # qemu-system-x86_64: boots the images
  ovmf              # UEFI firmware for the VMs
  systemd-boot-efi  # the boot loader put on the ESP
  dosfstools        # fsck.fat checks the built ESP in tests
  e2fsprogs         # mkfs.ext4 for STATE, e2fsck in tests
  qemu-utils        # qemu-img: qcow2, vmdk and per-VM overlays
  dnsmasq-base      # DHCP and TFTP on the test network (no service)
  iproute2          # ip netns, bridges, taps
  ipxe-qemu         # NIC boot ROMs for PXE
  skopeo            # a real OCI client checks the images cairn-image builds
  docker-registry   # a real registry the pull tests push to (no service)
  apache2-utils     # htpasswd for that registry's basic auth
)

say() { printf '==> %s\n' "$*" >&2; }

# Installs whatever of CAIRN_HOST_PACKAGES (plus "$@") is missing, saying which.
ensure_host_packages() {
  local wanted=("${CAIRN_HOST_PACKAGES[@]}" "$@") missing=() p
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    say "missing host packages: ${missing[*]}; run as root or install them with apt-get"
    exit 1
  fi
  say "installing host packages: ${missing[*]}"
  # Server packages must never start a service on the host.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The image builder fetches the pinned kernel with `apt-get download`,
# which needs package lists; fresh containers and cloud images often ship
# without them.
ensure_apt_lists() {
  if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
    say "no apt package lists yet: running apt-get update"
    apt-get update -qq
  fi
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    say "cargo is not installed: install Rust 1.90 or newer with rustup (https://rustup.rs), then run this again"
    exit 1
  fi
}
