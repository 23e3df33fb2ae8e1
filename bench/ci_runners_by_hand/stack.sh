#!/usr/bin/env bash
# The stack helpers of the hand-written workflow (bench/ci_runners_by_hand/workflow.yml), copied
# into the benchmark's repository as ci/stack.sh: the same raw steps bench/local_chain_by_hand.sh
# takes (2 replicas on a network, nginx in front, all published on 127.0.0.1; curl until they
# answer), as a team without pipeline would keep them next to its workflow.
#
#   bash ci/stack.sh up STACK IMAGE LB_IMAGE   -> prints the stack's URL
#   bash ci/stack.sh verify URL TEXT COUNT      -> COUNT answers that contain TEXT
#   bash ci/stack.sh down STACK
set -euo pipefail

host_port() { docker port "$1" 80/tcp | head -1 | sed 's/.*://'; }

wait_http() { # URL: until it answers 200 (at most 60 s)
    for _ in $(seq 600); do
        if curl -fsS -o /dev/null "$1"; then return 0; fi
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

verify() { # URL TEXT COUNT
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

up() { # STACK IMAGE LB_IMAGE
    local stack=$1 img=$2 lb_image=$3 conf
    docker network create "$stack-net" >/dev/null
    for n in 1 2; do
        docker run -d --name "$stack-r$n" --network "$stack-net" -p 127.0.0.1::80 "$img" >/dev/null
    done
    for n in 1 2; do wait_http "http://127.0.0.1:$(host_port "$stack-r$n")/health"; done
    conf=$(mktemp)
    nginx_conf "$stack-r1" "$stack-r2" >"$conf"
    docker create --name "$stack-lb" --network "$stack-net" -p 127.0.0.1::80 "$lb_image" >/dev/null
    docker cp "$conf" "$stack-lb:/etc/nginx/nginx.conf"
    rm -f "$conf"
    docker start "$stack-lb" >/dev/null
    echo "http://127.0.0.1:$(host_port "$stack-lb")"
}

down() { # STACK
    docker rm -f "$1-lb" "$1-r1" "$1-r2" >/dev/null 2>&1 || true
    docker network rm "$1-net" >/dev/null 2>&1 || true
}

"$@"
