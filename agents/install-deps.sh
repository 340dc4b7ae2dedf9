#!/usr/bin/env bash
# `make agent-deps`: what the eBPF sensors need on a Debian host, installed idempotently.
#
# - BCC: Debian's python3-bpfcc and bpfcc-tools (PyPI's `bcc` is an unrelated package).
# - Kernel headers BCC compiles against: the exact linux-headers-$(uname -r) when Debian has it;
#   otherwise (a cloud or VM kernel Debian does not ship) the newest linux-headers-*-cloud-<arch>,
#   linked as /lib/modules/$(uname -r)/build and /source. The eBPF sensors read only tracepoint
#   arguments and BPF helpers, never kernel structs, so headers of another version are enough.
# - tracefs mounted at /sys/kernel/tracing (BCC builds tracepoint argument structs from it).
#
# Where this cannot be done (not root, no apt), it says what is missing and exits 0: the agent
# then runs with the sensors that can, and `sentinel agent sensors` names what each one lacks.
set -uo pipefail

say() { echo "agent-deps: $*"; }
kernel=$(uname -r)
modules=/lib/modules/$kernel

if [ "$(uname -s)" != Linux ]; then say "not Linux: nothing to do"; exit 0; fi
if [ "$(id -u)" != 0 ]; then say "not root: cannot install BCC or link kernel headers"; exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "no apt-get: install BCC and headers for $kernel with your distribution's packages"; exit 0
fi

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 && return 0
  say "apt-get install $* failed; refreshing the package lists and trying again"
  apt-get update -qq >/dev/null 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

need=()
dpkg -s python3-bpfcc >/dev/null 2>&1 || need+=(python3-bpfcc)
dpkg -s bpfcc-tools >/dev/null 2>&1 || need+=(bpfcc-tools)
dpkg -s iproute2 >/dev/null 2>&1 || need+=(iproute2)
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]}"
  apt_install "${need[@]}" || { say "could not install ${need[*]}"; exit 0; }
fi

if [ -e "$modules/build/include" ]; then
  say "kernel headers for $kernel: present ($(readlink -f "$modules/build"))"
elif apt-cache show "linux-headers-$kernel" >/dev/null 2>&1; then
  say "installing linux-headers-$kernel"
  apt_install "linux-headers-$kernel" || say "could not install linux-headers-$kernel"
else
  arch=$(dpkg --print-architecture)
  pkg=$(apt-cache pkgnames linux-headers- | grep -E "^linux-headers-[0-9.]+-[0-9]+-cloud-$arch\$" | sort -V | tail -1)
  if [ -z "$pkg" ]; then
    say "no linux-headers package for $kernel and no cloud headers to link: eBPF sensors unavailable"
    exit 0
  fi
  version=${pkg#linux-headers-}; version=${version%-cloud-$arch}
  dpkg -s "$pkg" >/dev/null 2>&1 || { say "installing $pkg (Debian has no headers for $kernel)"; apt_install "$pkg" || exit 0; }
  mkdir -p "$modules"
  ln -sfn "/usr/src/linux-headers-$version-cloud-$arch" "$modules/build"
  ln -sfn "/usr/src/linux-headers-$version-common" "$modules/source"
  say "linked $modules/build -> /usr/src/linux-headers-$version-cloud-$arch"
fi

if [ ! -d /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null && say "mounted tracefs at /sys/kernel/tracing" \
    || say "could not mount tracefs at /sys/kernel/tracing: eBPF sensors unavailable"
fi
say "ready: BCC $(dpkg-query -W -f='${Version}' python3-bpfcc 2>/dev/null), kernel $kernel"
