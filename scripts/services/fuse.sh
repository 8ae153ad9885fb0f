# fuse: the kernel's /dev/fuse plus Debian's fuse3 (for fusermount3). Sourced by services.sh.

fuse_up() {
  apt_install fuse3
  [ -e /dev/fuse ] || die "fuse: /dev/fuse is missing; FUSE mounts cannot work on this machine"
}

fuse_down() { :; }

fuse_env() { :; }
