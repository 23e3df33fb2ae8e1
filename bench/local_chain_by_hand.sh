#!/usr/bin/env bash
# The first release of the reference service done by hand, the way a careful person would script
# it without pipeline: the same raw steps `pipeline run local` takes on a first run (lint, packer
# build, testinfra checks, a test stack of 2 replicas behind nginx, curl, delete it, the production
# stack, curl). bench/local_chain times it against the pipeline.
#
# usage: bash local_chain_by_hand.sh PROJECT_DIR NAME VERSION LB_IMAGE
# (not executable on purpose: `make bench` runs every executable in bench/, and this one needs arguments)
#   PROJECT_DIR  a folder made by `pipeline init`
#   NAME         prefix of every container, network and image this script makes
#   VERSION      the release (the page says "Hello World VERSION")
#   LB_IMAGE     an nginx image (the same one the local engine uses)
# Leaves the production stack running (NAME-prod-*); bench/local_chain removes it.
set -euo pipefail

dir=$1 name=$2 version=$3 lb_image=$4
python=${PYTHON:-python3}
cd "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- commit test --------------------------------------------------------------------------------
cfn-lint templates/web.yaml
packer validate -syntax-only images/web.pkr.hcl >/dev/null

# --- bake: packer build, then the testinfra checks on a container of the image ------------------
packer build -machine-readable -only=docker.web -var "version=$version" -var pull_base=false \
    -var "manifest=$work/manifest.json" images/web.pkr.hcl >"$work/packer.log"
artifact=$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["builds"][-1]["artifact_id"])' \
    "$work/manifest.json")
image="$name-bake:$version"
docker tag "$artifact" "$image"

check=$(docker run -d -p 127.0.0.1::80 "$image")
port=$(docker port "$check" 80/tcp | head -1 | sed 's/.*://')
PIPELINE_CHECK_CONTAINER=$check PIPELINE_CHECK_HOST=127.0.0.1 PIPELINE_CHECK_URL="http://127.0.0.1:$port" \
    PIPELINE_VAR_VERSION=$version "$python" -m pytest -q -p no:cacheprovider -c /dev/null \
    --rootdir=serverspec "--hosts=docker://$check" serverspec >"$work/checks.log"
docker rm -f "$check" >/dev/null

# --- helpers ----------------------------------------------------------------------------------------
host_port() { docker port "$1" 80/tcp | head -1 | sed 's/.*://'; }

wait_http() { # URL: until it answers 200 (at most 60 s)
    for _ in $(seq 600); do
        if curl -fsS -o /dev/null "$1"; then return 0; fi
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

verify() { # URL TEXT COUNT: COUNT answers that contain TEXT
    wait_http "$1"
    for _ in $(seq "$3"); do curl -fsS "$1" | grep -q "$2"; done
}

nginx_conf() { # SERVER...
    printf 'worker_processes 1;\npid /run/nginx.pid;\nevents { worker_connections 1024; }\n'
    printf 'http {\n  access_log off;\n  keepalive_timeout 0;\n  upstream replicas {\n'
    for server in "$@"; do printf '    server %s:80 max_fails=1 fail_timeout=2s;\n' "$server"; done
    printf '  }\n  server {\n    listen 80;\n    location / {\n      proxy_pass http://replicas;\n'
    printf '      proxy_next_upstream error timeout http_502 http_503 http_504;\n    }\n  }\n}\n'
}

stack_up() { # STACK IMAGE: a network, 2 replicas (health-checked), nginx in front; prints the URL
    local stack=$1 img=$2
    docker network create "$stack-net" >/dev/null
    for n in 1 2; do
        docker run -d --name "$stack-r$n" --network "$stack-net" -p 127.0.0.1::80 "$img" >/dev/null
    done
    for n in 1 2; do wait_http "http://127.0.0.1:$(host_port "$stack-r$n")/health"; done
    nginx_conf "$stack-r1" "$stack-r2" >"$work/$stack.conf"
    docker create --name "$stack-lb" --network "$stack-net" -p 127.0.0.1::80 "$lb_image" >/dev/null
    docker cp "$work/$stack.conf" "$stack-lb:/etc/nginx/nginx.conf"
    docker start "$stack-lb" >/dev/null
    echo "http://127.0.0.1:$(host_port "$stack-lb")"
}

stack_down() { # STACK
    docker rm -f "$1-lb" "$1-r1" "$1-r2" >/dev/null
    docker network rm "$1-net" >/dev/null
}

# --- test stack: create, verify (health, page after the update, health after the rollback) ------
# On a first release there is no production image yet, so update and rollback have nothing to do.
url=$(stack_up "$name-test" "$image")
verify "$url/health" OK 10
verify "$url/" "Hello World $version" 20
verify "$url/health" OK 10
stack_down "$name-test"

# --- promote: the production stack, verified -------------------------------------------------------
url=$(stack_up "$name-prod" "$image")
verify "$url/" "Hello World $version" 20
echo "$url"
