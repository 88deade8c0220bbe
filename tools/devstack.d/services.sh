# shellcheck shell=bash
# tools/devstack.d/services.sh: part of tools/devstack, which sources it and
# describes the stack, its commands and its environment. This file: the
# other kinds of server: memcached, api, haproxy, guard (and the HTTP checks
# of the API servers and HAProxy).

# ---------------------------------------------------------------- memcached

memcached_pidfile() { echo "$DIR/$1/memcached.pid"; }
memcached_log() { echo "$DIR/$1/memcached.log"; }
memcached_marker() { echo "-P $DIR/$1/memcached.pid"; }

memcached_init() { mkdir -p "$DIR/$1"; }

# Not "memcached -d": a daemonizing memcached that cannot bind its port exits
# silently with status 0. Detached by setsid instead, its errors reach the log.
memcached_launch() {
    local name=$1
    rm -f "$(memcached_pidfile "$name")"
    setsid -f memcached -u "$(id -un)" -l 127.0.0.1 -p "$(port_of "$name")" -U 0 -m 64 \
        -P "$(memcached_pidfile "$name")" >>"$(memcached_log "$name")" 2>&1 </dev/null 9>&-
}

memcached_ping() {
    local port
    port=$(port_of "$1")
    (
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        printf 'version\r\n' >&3
        IFS= read -r -t 2 line <&3 || exit 1
        [[ $line == VERSION* ]]
    ) 2>/dev/null
}

memcached_ready() { :; }

# ---------------------------------------------------------------- http

# Prints the HTTP status of GET PATH on 127.0.0.1:PORT, or nothing if there is
# no answer within 2 s. Bash's /dev/tcp: no client to install.
http_status() {
    local port=$1 path=$2
    (
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' \
            "$path" "$port" >&3
        IFS=' ' read -r -t 2 _ code _ <&3 || exit 1
        echo "$code"
    ) 2>/dev/null || true
}

# Waits up to READY_TIMEOUT s until GET PATH on PORT answers 200; fails with
# the server's log if it does not, or if the server exits meanwhile.
wait_http_ok() {
    local name=$1 port=$2 path=$3 deadline code=""
    deadline=$((SECONDS + READY_TIMEOUT))
    while :; do
        code=$(http_status "$port" "$path")
        [ "$code" = 200 ] && return 0
        if [ -z "$(server_pid "$name")" ]; then
            warn "$name exited while waiting for GET $path on port $port"
            show_log_tail "$("$(kind_of "$name")_log" "$name")"
            die "$name failed to start (tools/devstack stop --dir $DIR)"
        fi
        if ((SECONDS >= deadline)); then
            warn "GET http://127.0.0.1:$port$path did not answer 200 within ${READY_TIMEOUT}s (last: ${code:-no answer})"
            show_log_tail "$("$(kind_of "$name")_log" "$name")"
            die "$name is not ready (tools/devstack stop --dir $DIR)"
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------- api

api_pidfile() { echo "$DIR/$1/api.pid"; }
api_log() { echo "$DIR/$1/api.log"; }
api_marker() { echo "--listen 127.0.0.1:$(port_of "$1") --secret-file $DIR/api.secret --name $1"; }

api_init() { mkdir -p "$DIR/$1"; }

# The server runs in the foreground and writes no pid file: a shell records
# its own pid, then execs the server in its place.
api_launch() {
    local name=$1
    [ -x "$API_BIN" ] || die "$API_BIN is not built (make)"
    rm -f "$(api_pidfile "$name")"
    # shellcheck disable=SC2016
    setsid -f sh -c 'echo $$ >"$0" && exec "$@"' "$(api_pidfile "$name")" \
        "$API_BIN" -c "$DIR/cluster.yaml" --listen "127.0.0.1:$(port_of "$name")" \
        --secret-file "$DIR/api.secret" --name "$name" ${API_THREADS:+--threads "$API_THREADS"} \
        "${API_SET[@]}" >>"$(api_log "$name")" 2>&1 </dev/null 9>&-
}

api_ping() { [ "$(http_status "$(port_of "$1")" /healthz)" = 200 ]; }

# Answering is not serving: wait until it has its shard map and a database.
api_ready() { wait_http_ok "$1" "$(port_of "$1")" /readyz; }

# ---------------------------------------------------------------- haproxy

haproxy_pidfile() { echo "$DIR/haproxy/haproxy.pid"; }
haproxy_log() { echo "$DIR/haproxy/haproxy.log"; }
haproxy_marker() { echo "-f $DIR/haproxy/haproxy.cfg"; }

# Writes the config for the current API servers to FILE and checks it.
render_haproxy_cfg() {
    local out=$1 name servers=""
    for name in ${API_SERVERS[@]+"${API_SERVERS[@]}"}; do
        servers+="    server $name 127.0.0.1:$(port_of "$name")"$'\n'
    done
    [ -n "$servers" ] || die "HAProxy without API servers"
    # Two descriptors a connection (client and server side), and some spare.
    local fds maxconn=20000
    fds=$(ulimit -Hn)
    if [ "$fds" != unlimited ] && ((maxconn > (fds - 200) / 2)); then
        maxconn=$(((fds - 200) / 2))
    fi
    SERVERS_BLOCK=${servers%$'\n'} awk -v http="$(port_of haproxy)" \
        -v stats="$(port_of haproxy_stats)" -v plc="$((2 * $(nproc)))" -v mc="$maxconn" '
        /^[ \t]*#/ { print; next }
        $0 == "@SERVERS@" { print ENVIRON["SERVERS_BLOCK"]; next }
        { gsub(/@HTTP_PORT@/, http); gsub(/@STATS_PORT@/, stats); gsub(/@POOL_LOW_CONN@/, plc); gsub(/@MAXCONN@/, mc); print }
    ' "$HAPROXY_TEMPLATE" >"$out.tmp"
    if grep -v '^[[:space:]]*#' "$out.tmp" | grep -q '@[A-Z_]*@'; then
        die "$HAPROXY_TEMPLATE has a placeholder devstack does not fill: $(grep -v '^[[:space:]]*#' "$out.tmp" | grep -o '@[A-Z_]*@' | head -1)"
    fi
    if ! haproxy -c -q -f "$out.tmp" >"$out.check" 2>&1; then
        cat "$out.check" >&2
        die "the generated HAProxy config $out.tmp is invalid"
    fi
    rm -f "$out.check"
    mv "$out.tmp" "$out"
}

haproxy_init() {
    mkdir -p "$DIR/haproxy"
    render_haproxy_cfg "$DIR/haproxy/haproxy.cfg"
}

# In the foreground (-db) so that its messages reach the log; pid as for api.
haproxy_launch() {
    rm -f "$(haproxy_pidfile haproxy)"
    # shellcheck disable=SC2016
    setsid -f sh -c 'echo $$ >"$0" && exec "$@"' "$(haproxy_pidfile haproxy)" \
        haproxy -db -f "$DIR/haproxy/haproxy.cfg" \
        >>"$(haproxy_log haproxy)" 2>&1 </dev/null 9>&-
}

haproxy_ping() { [ "$(http_status "$(port_of haproxy_stats)" /stats)" = 200 ]; }

# Through HAProxy: some API server passed its health check.
haproxy_ready() { wait_http_ok haproxy "$(port_of haproxy)" /readyz; }

# ---------------------------------------------------------------- guard

# The failover supervisor of a stack with replicas: `shardctl guard`, running
# until SIGTERM. It listens on no port: it is up while its process lives.
guard_pidfile() { echo "$DIR/guard/guard.pid"; }
guard_log() { echo "$DIR/guard/guard.log"; }
# Without the binary's path: a stack started with another BUILD stops it too.
guard_marker() { echo "-c $DIR/cluster.yaml guard"; }

guard_init() { mkdir -p "$DIR/guard"; }

# It writes no pid file: launched as the API servers are.
guard_launch() {
    [ -x "$SHARDCTL_BIN" ] || die "$SHARDCTL_BIN is not built (make)"
    rm -f "$(guard_pidfile guard)"
    # shellcheck disable=SC2016
    setsid -f sh -c 'echo $$ >"$0" && exec "$@"' "$(guard_pidfile guard)" \
        "$SHARDCTL_BIN" -c "$DIR/cluster.yaml" guard \
        >>"$(guard_log guard)" 2>&1 </dev/null 9>&-
}

guard_ping() { [ -n "$(server_pid guard)" ]; }

# A guard that cannot read its config or reach the catalog exits at once:
# give it a second to do so rather than report it up.
guard_ready() {
    sleep 1
    [ -z "$(server_pid guard)" ] || return 0
    warn "guard exited just after it started"
    show_log_tail "$(guard_log guard)"
    die "guard failed to start (tools/devstack stop --dir $DIR)"
}
