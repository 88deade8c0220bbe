# shellcheck shell=bash
# tools/devstack.d/start.sh: part of tools/devstack, which sources it and
# describes the stack, its commands and its environment. This file: start:
# the servers, replication (guard --once, the guard) and the API tier.

# ---------------------------------------------------------------- start

# Initializes (in parallel) and launches the given servers, which are down.
launch_servers() {
    local name kind pids=() names=() i failed=0
    for name in "$@"; do
        kind=$(kind_of "$name")
        "${kind}_init" "$name" &
        pids+=($!)
        names+=("$name")
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || {
            warn "${names[$i]}: initialization failed"
            failed=1
        }
    done
    ((failed == 0)) || die "could not initialize the stack in $DIR"
    for name in "$@"; do
        kind=$(kind_of "$name")
        if [ "$(port_or_dash "$name")" = - ]; then
            say "starting $name"
        else
            say "starting $name on $(addr_of "$name"):$(port_of "$name")"
        fi
        "${kind}_launch" "$name" || die "$name: could not be launched"
    done
}

# Waits until each server answers; fails fast if one dies, with its log.
wait_servers() {
    local deadline name kind pending=("$@") rest t0
    t0=$(now)
    deadline=$((SECONDS + START_TIMEOUT))
    while ((${#pending[@]} > 0)); do
        rest=()
        for name in "${pending[@]}"; do
            kind=$(kind_of "$name")
            if "${kind}_ping" "$name"; then
                continue
            fi
            # Give a just-launched process a moment to appear before calling it dead.
            if [ -z "$(server_pid "$name")" ] && [ "$(elapsed "$t0" | cut -d. -f1)" -ge 2 ]; then
                warn "$name exited while starting (port $(port_or_dash "$name"))"
                show_log_tail "$("${kind}_log" "$name")"
                die "$name failed to start; the rest of the stack is left running (tools/devstack stop --dir $DIR)"
            fi
            rest+=("$name")
        done
        ((${#rest[@]} > 0)) || break
        if ((SECONDS >= deadline)); then
            for name in "${rest[@]}"; do
                warn "$name did not answer within ${START_TIMEOUT}s (pid $(server_pid "$name"), port $(port_or_dash "$name"))"
                show_log_tail "$("$(kind_of "$name")_log" "$name")"
            done
            die "the stack in $DIR did not come up (tools/devstack stop --dir $DIR)"
        fi
        pending=("${rest[@]}")
        sleep 0.2
    done
}

# Brings the given servers up: already answering ones are left alone, dead
# ones are started on their recorded port with their data. Sets LAUNCHED to
# the number of servers it started.
LAUNCHED=0
start_servers() {
    local name state to_launch=() to_wait=() bad=0
    for name in "$@"; do
        state=$(server_state "$name")
        case $state in
        up) say "$name is already running (pid $(server_pid "$name"), port $(port_or_dash "$name"))" ;;
        down) to_launch+=("$name") ;;
        stopped)
            warn "$name (pid $(server_pid "$name")) is stopped by SIGSTOP; resume it with kill -CONT or use restart-host $name"
            bad=1
            ;;
        hung)
            say "$name (pid $(server_pid "$name")) runs but does not answer yet; waiting for it"
            to_wait+=("$name")
            ;;
        esac
    done
    if ((${#to_launch[@]} > 0)); then
        launch_servers "${to_launch[@]}"
    fi
    to_wait+=(${to_launch[@]+"${to_launch[@]}"})
    if ((${#to_wait[@]} > 0)); then
        wait_servers "${to_wait[@]}"
    fi
    for name in "$@"; do
        [ "$(server_state "$name")" = up ] || continue
        "$(kind_of "$name")_ready" "$name"
    done
    ((bad == 0)) || die "not every server of the stack in $DIR is usable"
    LAUNCHED=${#to_launch[@]}
}

cmd_start() {
    local t0 n
    t0=$(now)
    [ -f "$CNF_TEMPLATE" ] || die "missing $CNF_TEMPLATE"
    check_env_values
    for n in mariadbd mariadb-install-db mariadb mariadb-admin memcached setsid flock pgrep; do
        command -v "$n" >/dev/null || die "$n not found; run tools/install-deps"
    done
    if [ -e "$DIR" ] && [ ! -e "$DIR/.devstack" ] && [ -n "$(ls -A "$DIR")" ]; then
        die "$DIR exists, is not empty and is not a devstack directory"
    fi
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    touch "$DIR/.devstack"
    lock_stack
    load_stack
    setup_stack_env
    setup_password
    assign_ports "${DB_SERVERS[@]}" "${MC_SERVERS[@]}"
    ((NETNS == 0)) || assign_nets "${DB_SERVERS[@]}"
    start_servers "${DB_SERVERS[@]}" "${MC_SERVERS[@]}"
    n=$LAUNCHED
    write_cluster_yaml
    setup_replication
    start_api_tier
    n=$((n + LAUNCHED))
    start_guard
    n=$((n + LAUNCHED))
    if ((n > 0)); then
        say "stack up in $DIR after $(elapsed "$t0") s"
    else
        say "stack in $DIR is already running"
    fi
    cmd_status || true
    say "cluster: $DIR/cluster.yaml"
    [ ! -f "$DIR/urls.env" ] || say "API: $(api_url) (DIR/urls.env: $DIR/urls.env)"
    # Release the lock: `run` goes on waiting, and must not block other commands.
    exec 9>&-
}

# ---------------------------------------------------------------- replication

# Makes the topology true once: each host's primary writable, its replica
# replicating from it (`shardctl guard --once`). Every server starts
# read-only, so this runs on every start of a stack with replicas, before
# anything writes. Without shardctl the primaries stay read-only.
setup_replication() {
    ((REPLICAS)) || return 0
    if [ ! -x "$SHARDCTL_BIN" ]; then
        warn "warning: $SHARDCTL_BIN is not built (make): the primaries stay read-only"
        return 0
    fi
    say "primaries writable, replicas replicating ($SHARDCTL_BIN guard --once)"
    run_tool "shardctl guard --once" guard-once.log "$SHARDCTL_BIN" -c "$DIR/cluster.yaml" \
        guard --once
}

# Starts the guard (a stack with replicas) after shardctl init. Sets LAUNCHED.
start_guard() {
    LAUNCHED=0
    ((REPLICAS)) || return 0
    GUARD=0
    if [ ! -x "$SHARDCTL_BIN" ]; then
        warn "warning: $SHARDCTL_BIN is not built (make): no guard, no failover"
    else
        GUARD=1
    fi
    echo "GUARD=$GUARD" >"$DIR/guard.env"
    compute_servers
    ((GUARD)) || return 0
    start_servers guard
}

# ---------------------------------------------------------------- the API tier

# Random bytes as lowercase hex.
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# Writes FILE (mode 0600) once with the output of a command.
write_secret_once() {
    local file=$1
    shift
    [ -s "$file" ] && return 0
    (
        umask 077
        "$@" >"$file.tmp"
        mv "$file.tmp" "$file"
    )
}

gen_api_secret() { random_hex 32; }
gen_admin_password() {
    local pw
    pw=$(head -c 600 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')
    printf '%s' "${pw:0:20}"
}

# Runs one build tool with its output in DIR/LOG; on failure shows it and dies.
# The limit grows with the shards (shardctl init creates each one's schema).
run_tool() {
    local what=$1 log=$DIR/$2 limit=$((120 + ${SHARDS:-64} / 2))
    shift 2
    if ! timeout "$limit" "$@" >"$log" 2>&1; then
        warn "$what failed: $*"
        show_log_tail "$log"
        die "$what failed (output in $log)"
    fi
}

api_url() { echo "http://127.0.0.1:$(port_of haproxy)"; }

write_urls_env() {
    local name urls=()
    for name in "${API_SERVERS[@]}"; do urls+=("http://127.0.0.1:$(port_of "$name")"); done
    (
        umask 077
        {
            echo "BC_API_URL=$(api_url)"
            echo "BC_API_URLS=\"${urls[*]}\""
            echo "BC_HAPROXY_STATS=http://127.0.0.1:$(port_of haproxy_stats)/stats"
            echo "BC_ADMIN_EMAIL=$ADMIN_EMAIL"
            echo "BC_ADMIN_PASSWORD=$(cat "$DIR/admin.password")"
        } >"$DIR/urls.env.tmp"
        mv "$DIR/urls.env.tmp" "$DIR/urls.env"
    )
}

# Without the API: stop API servers and HAProxy left from an earlier start
# (their binary is gone, they could not be restarted), forget them.
skip_api_tier() {
    local names
    mapfile -t names < <(recorded_api_servers)
    [ -n "${PORT_haproxy:-}" ] && names+=(haproxy)
    ((${#names[@]} == 0)) || stop_servers "${names[@]}" || true
    echo "API_COUNT=0" >"$DIR/api.env"
    API_COUNT=0
    compute_servers
    rm -f "$DIR/urls.env"
}

# Takes BC_HTTP_PORT as HAProxy's frontend port (else keeps the recorded one).
set_http_port() {
    local want=${BC_HTTP_PORT:-} owner
    [ -n "$want" ] || return 0
    if ! [[ $want =~ ^[1-9][0-9]{0,4}$ ]] || ((want > 65535)); then
        die "BC_HTTP_PORT must be a port number, not '$want'"
    fi
    [ "${PORT_haproxy:-}" = "$want" ] && return 0
    # A listener is what matters here (a TIME_WAIT from an earlier run is not).
    if (exec 3<>"/dev/tcp/127.0.0.1/$want") 2>/dev/null; then
        die "BC_HTTP_PORT=$want: something already listens on 127.0.0.1:$want"
    fi
    if ! claim_port "$want"; then
        owner=$(readlink "$PORT_CLAIMS/$want" 2>/dev/null || true)
        die "BC_HTTP_PORT=$want is taken by the stack in ${owner:-another directory}"
    fi
    sed -i '/^PORT_haproxy=/d' "$DIR/ports.env"
    echo "PORT_haproxy=$want" >>"$DIR/ports.env"
    PORT_haproxy=$want
}

# After the databases and memcached: schemas, admin, API servers, HAProxy.
# Sets LAUNCHED to the number of servers it started.
start_api_tier() {
    local n extra=() name tmp launched=0
    LAUNCHED=0
    if [ ! -x "$SHARDCTL_BIN" ]; then
        warn "warning: $SHARDCTL_BIN is not built (make): no schemas, no API servers, no HAProxy"
        skip_api_tier
        return 0
    fi
    say "creating the schemas ($SHARDCTL_BIN init)"
    run_tool "shardctl init" shardctl-init.log "$SHARDCTL_BIN" -c "$DIR/cluster.yaml" init
    if [ ! -x "$API_BIN" ]; then
        warn "warning: $API_BIN is not built yet: starting without the API servers and HAProxy"
        skip_api_tier
        return 0
    fi
    command -v haproxy >/dev/null || die "haproxy not found; run tools/install-deps"
    [ -f "$HAPROXY_TEMPLATE" ] || die "missing $HAPROXY_TEMPLATE"
    n=${BC_API_SERVERS:-${API_COUNT:-0}}
    if ! [[ $n =~ ^[0-9]{1,2}$ ]] || ((n > 32)) || { [ -n "${BC_API_SERVERS:-}" ] && ((n == 0)); }; then
        die "BC_API_SERVERS must be 1..32, not '$n'"
    fi
    ((n > 0)) || n=2
    write_secret_once "$DIR/api.secret" gen_api_secret
    write_secret_once "$DIR/admin.password" gen_admin_password
    if [ -x "$BCADMIN_BIN" ]; then
        run_tool "bcadmin create-admin" bcadmin.log "$BCADMIN_BIN" -c "$DIR/cluster.yaml" \
            create-admin --email "$ADMIN_EMAIL" --password "$(cat "$DIR/admin.password")" \
            --display-name "Platform Admin"
    else
        warn "warning: $BCADMIN_BIN is not built: no platform admin ($ADMIN_EMAIL) created"
    fi
    # API servers beyond the new count (BC_API_SERVERS went down) are stopped.
    for name in $(recorded_api_servers); do
        ((${name#api} > n)) && extra+=("$name")
    done
    ((${#extra[@]} == 0)) || stop_servers "${extra[@]}" || die "could not stop ${extra[*]}"
    echo "API_COUNT=$n" >"$DIR/api.env"
    API_COUNT=$n
    compute_servers
    set_http_port
    assign_ports "${API_SERVERS[@]}" haproxy haproxy_stats
    start_servers "${API_SERVERS[@]}"
    launched=$LAUNCHED
    # A running HAProxy whose config would change (servers, ports) is restarted.
    if [ "$(server_state haproxy)" != down ] && [ -f "$DIR/haproxy/haproxy.cfg" ]; then
        tmp=$DIR/haproxy/haproxy.cfg.new
        render_haproxy_cfg "$tmp"
        if ! cmp -s "$tmp" "$DIR/haproxy/haproxy.cfg"; then
            say "the HAProxy config changed: restarting haproxy"
            stop_servers haproxy || die "could not stop haproxy"
        fi
        rm -f "$tmp"
    fi
    start_servers haproxy
    LAUNCHED=$((launched + LAUNCHED))
    write_urls_env
}
