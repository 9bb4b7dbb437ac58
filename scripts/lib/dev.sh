# Shared by scripts/develop and scripts/screenshots (sourced, not run): a
# Home Assistant configuration directory that loads this working tree's
# integration, and a location to choose in the config flow.

# dev_config DIR [PORT]: DIR holds config/configuration.yaml (on PORT, 8123
# if not given) and loads the integration from the working tree, not a copy.
dev_config() {
  local dir=$1 port=${2:-}
  mkdir -p "$dir"
  if [ "$dir" != config ]; then
    sed "s/^  server_host: 127.0.0.1$/&${port:+\n  server_port: $port}/" \
      config/configuration.yaml >"$dir/configuration.yaml"
  fi
  ln -sfn "$PWD/custom_components" "$dir/custom_components"
}

# dev_location DIR: DIR exists and, as root, is a tmpfs mount point of its
# own, so "Require a mount point" can stay on. Returns 1 if it is not one.
dev_location() {
  local dir=$1
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ] && ! mountpoint -q "$dir"; then
    mount -t tmpfs -o size=2g,mode=0755 backup_offload_dev "$dir" 2>/dev/null || true
  fi
  mountpoint -q "$dir"
}
