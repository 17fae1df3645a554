#!/usr/bin/env bash
# Build the lab's images under the names deploy/k8s uses (lab-<app>:dev), with
# the same Dockerfiles and build arguments as docker-compose.yml, then
# optionally load them into a local cluster, which then needs no registry:
#
#   deploy/k8s/images.sh                 build only
#   deploy/k8s/images.sh kind [cluster]      build, then `kind load docker-image` (default: kind)
#   deploy/k8s/images.sh minikube [profile]  build, then `minikube image load` (default: minikube)
#   deploy/k8s/images.sh k3d [cluster]       build, then `k3d image import` (default: k3s-default)
#
# Run from anywhere; the build context is the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."

TAG=dev
# name  dockerfile  build args
images=(
    "lab-user       deploy/service.Dockerfile  SERVICE=user_service UID=10001"
    "lab-order      deploy/service.Dockerfile  SERVICE=order_service UID=10002"
    "lab-inventory  deploy/service.Dockerfile  SERVICE=inventory_service UID=10003"
    "lab-payment    deploy/service.Dockerfile  SERVICE=payment_service UID=10004"
    "lab-dashboard  dashboard/Dockerfile"
    "lab-keys       deploy/keys/Dockerfile"
    "lab-locust     loadtests/Dockerfile"
)

built=()
for line in "${images[@]}"; do
    read -r name dockerfile args <<<"$line"
    build_args=()
    for arg in $args; do build_args+=(--build-arg "$arg"); done
    echo "[images] $name:$TAG from $dockerfile ${args}"
    docker build -q -f "$dockerfile" "${build_args[@]}" -t "$name:$TAG" .
    built+=("$name:$TAG")
done

case "${1:-}" in
    "") ;;
    kind) kind load docker-image --name "${2:-kind}" "${built[@]}" ;;
    minikube) for image in "${built[@]}"; do minikube -p "${2:-minikube}" image load "$image"; done ;;
    k3d) k3d image import -c "${2:-k3s-default}" "${built[@]}" ;;
    *) echo "unknown cluster kind: $1 (kind, minikube or k3d)" >&2; exit 2 ;;
esac
