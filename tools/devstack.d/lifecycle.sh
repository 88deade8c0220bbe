# shellcheck shell=bash
# tools/devstack.d/lifecycle.sh: part of tools/devstack, which sources it and
# describes the stack, its commands and its environment. This file: the
# commands on a started stack: stop, status, pid, restart-host, kill,
# add-host, run.

# ---------------------------------------------------------------- stop

# Every pid of the given servers: pid files and command-line markers.
all_pids() {
    local name
    for name in "$@"; do
        pidfile_pid "$name"
        marker_pids "$name"
    done | sort -u
}

living() {
    local pid
    for pid in "$@"; do alive "$pid" && echo "$pid"; done
    return 0
}

# SIGTERM (STOP_SIGNAL; with SIGCONT, for stopped processes), up to STOP_TIMEOUT
# s, then SIGKILL.
stop_servers() {
    local deadline name p pids=() killed=0
    mapfile -t pids < <(all_pids "$@")
    if ((${#pids[@]} > 0)); then
        for name in "$@"; do
            p=$(server_pid "$name")
            [ -z "$p" ] || say "stopping $name (pid $p)"
        done
        {
            kill -CONT "${pids[@]}"
            kill -"${STOP_SIGNAL:-TERM}" "${pids[@]}"
            kill -CONT "${pids[@]}"
        } 2>/dev/null || true
        deadline=$((SECONDS + STOP_TIMEOUT))
        # Also picks up processes that appear meanwhile (an install-db's server).
        while mapfile -t pids < <({ living "${pids[@]}"; all_pids "$@"; } | sort -u) &&
            ((${#pids[@]} > 0)); do
            if ((SECONDS >= deadline + 10)); then
                warn "could not kill: ${pids[*]}"
                return 1
            elif ((SECONDS >= deadline)); then
                ((killed)) || warn "still running after ${STOP_TIMEOUT}s, sending SIGKILL to: ${pids[*]}"
                killed=1
                kill -KILL "${pids[@]}" 2>/dev/null || true
            fi
            sleep 0.1
        done
    fi
    for name in "$@"; do
        rm -f "$("$(kind_of "$name")_pidfile" "$name")"
    done
}

cmd_stop() {
    if [ ! -d "$DIR" ]; then
        say "no stack in $DIR, nothing runs"
        return 0
    fi
    load_stack
    local apis=() proxies=()
    # The guard first (it would fail over the hosts stopping under it), then
    # every API server ever given a port, then HAProxy, then the rest.
    stop_servers guard || die "the guard of the stack in $DIR survived SIGKILL"
    mapfile -t apis < <(recorded_api_servers)
    { [ -n "${PORT_haproxy:-}" ] || [ -f "$DIR/haproxy/haproxy.pid" ]; } && proxies=(haproxy)
    # SIGINT: no drain for HAProxy's health checks (it stops too); SIGTERM drains.
    ((${#apis[@]} == 0)) || STOP_SIGNAL=INT stop_servers "${apis[@]}" ||
        die "some API servers of the stack in $DIR survived SIGKILL"
    ((${#proxies[@]} == 0)) || stop_servers haproxy ||
        die "HAProxy of the stack in $DIR survived SIGKILL"
    stop_servers "${DB_SERVERS[@]}" "${MC_SERVERS[@]}" ||
        die "some processes of the stack in $DIR survived SIGKILL"
    ((NETNS == 0)) || netns_down_all
    # The idle cpu cgroup the API servers put their background connections'
    # MariaDB threads in (router/router_lower.c): the last of them out
    # removes it, but not if it was killed. Removed only when empty (rmdir);
    # another stack's servers on this machine make it again when they need it.
    local group
    for group in /sys/fs/cgroup/cpu/betcity-background /sys/fs/cgroup/cpu,cpuacct/betcity-background; do
        [ ! -d "$group" ] || rmdir "$group" 2>/dev/null || true
    done
    say "stack in $DIR stopped"
    if ((CLEAN)); then
        if [ -e "$DIR/.devstack" ]; then
            release_ports
            rm -rf -- "$DIR"
            say "removed $DIR"
        elif [ -z "$(ls -A "$DIR")" ]; then
            rmdir -- "$DIR"
        else
            die "not removing $DIR: it is not a devstack directory"
        fi
    fi
}

# ---------------------------------------------------------------- status, pid, restart-host

cmd_status() {
    local name state pid port code rc=0
    [ -f "$DIR/ports.env" ] || {
        say "no stack in $DIR"
        return 1
    }
    load_stack
    for name in "${SERVERS[@]}"; do
        port=$(port_or_dash "$name")
        pid=$(server_pid "$name")
        state=$(server_state "$name")
        case $state in
        up) ;;
        stopped)
            state="down (pid $pid is stopped, SIGSTOP)"
            rc=1
            ;;
        hung)
            state="down (pid $pid does not answer)"
            rc=1
            ;;
        *) rc=1 ;;
        esac
        # Up is not ready: say so (not an error, the stack may be healing).
        if [ "$state" = up ]; then
            case $(kind_of "$name") in
            api)
                code=$(http_status "$port" /readyz)
                [ "$code" = 200 ] || state="up, not ready (/readyz: ${code:-no answer})"
                ;;
            haproxy)
                code=$(http_status "$port" /readyz)
                state="up, stats on port $(port_of haproxy_stats)"
                [ "$code" = 200 ] || state+=", no API server ready (/readyz: ${code:-no answer})"
                ;;
            mariadb)
                ((NETNS == 0)) || state+=" on $(addr_of "$name")"
                ((REPLICAS == 0)) || state+=", $(mariadb_role "$name")"
                ! netns_cut "$name" || state+=", PARTITIONED"
                ;;
            esac
        fi
        printf '%-7s port %-5s pid %-7s %s\n' "$name" "$port" "${pid:--}" "$state"
    done
    return $rc
}

cmd_pid() {
    local pid
    require_stack
    pid=$(server_pid "$1")
    [ -n "$pid" ] || die "$1 is not running"
    echo "$pid"
}

# The MariaDB server of the stack on PORT ("port PORT" if none).
server_at_port() {
    local name
    for name in "${DB_SERVERS[@]}"; do
        [ "$(port_of "$name")" != "$1" ] || {
            echo "$name"
            return 0
        }
    done
    echo "port $1"
}

# What a MariaDB server of a stack with replicas does, for status: whom it
# replicates from and how far behind, and whether it takes writes.
mariadb_role() {
    local name=$1 ro port io sql lag
    ro=$(mariadb_root "$name" -e 'SELECT @@read_only' 2>/dev/null) || {
        echo "role unknown (no answer as root)"
        return 0
    }
    read -r port io sql lag < <(mariadb_root "$name" --column-names -e 'SHOW SLAVE STATUS\G' \
        2>/dev/null | awk '$1 == "Master_Port:" { p = $2 } $1 == "Slave_IO_Running:" { i = $2 }
            $1 == "Slave_SQL_Running:" { s = $2 } $1 == "Seconds_Behind_Master:" { l = $2 }
            END { print p, i, s, l }')
    if [ -n "$io" ]; then
        printf 'replica of %s (io %s, sql %s, %s s behind)' "$(server_at_port "$port")" \
            "$io" "$sql" "$lag"
        [ "$ro" = 1 ] || printf ', writable'
        echo
    elif [ "$ro" = 0 ]; then
        echo "writable"
    else
        echo "read-only, replicating from nobody"
    fi
}

cmd_restart_host() {
    require_stack
    lock_stack
    stop_servers "$1" || die "could not stop $1"
    start_servers "$1"
    say "$1 restarted (pid $(server_pid "$1"), port $(port_or_dash "$1"))"
    # A MariaDB server comes back read-only. The guard, when it runs, decides
    # what it is now; without it the topology is set up again as on start.
    if ((REPLICAS)) && [ "$(kind_of "$1")" = mariadb ] && [ "$(server_state guard)" != up ]; then
        setup_replication
    fi
}

# SIGKILL to one server, for tests (a crash: no shutdown, pid file left).
cmd_kill() {
    local pid deadline
    require_stack
    pid=$(server_pid "$1")
    [ -n "$pid" ] || die "$1 is not running"
    kill -KILL "$pid"
    deadline=$((SECONDS + 10))
    while alive "$pid"; do
        ((SECONDS < deadline)) || die "$1 (pid $pid) survived SIGKILL"
        sleep 0.05
    done
    say "$1 killed (pid $pid)"
}

# ---------------------------------------------------------------- add-host

WEIGHT="" # --weight

# Rewrites hosts.env from ADDED_HOSTS and their SERVER_ID_ and WEIGHT_ variables.
write_hosts_env() {
    local name sid w
    {
        echo "ADDED_HOSTS=\"$ADDED_HOSTS\""
        for name in $ADDED_HOSTS; do
            sid=SERVER_ID_$name
            w=WEIGHT_$name
            echo "SERVER_ID_$name=${!sid}"
            echo "WEIGHT_$name=${!w}"
        done
    } >"$DIR/hosts.env.tmp"
    mv "$DIR/hosts.env.tmp" "$DIR/hosts.env"
}

# After add-host, in a stack with replicas: the new host writable and its
# replica replicating; a running guard is restarted to watch the new host too
# (it reads cluster.yaml when it starts).
added_host_replication() {
    ((REPLICAS)) || return 0
    setup_replication
    if [ "$(server_state guard)" = up ]; then
        stop_servers guard || die "could not stop the guard"
        start_servers guard
    fi
}

# One more MariaDB host (and its replica NAMEb, in a stack with replicas), recorded first (a failed start is resumed by running
# add-host or start again, and stopped by stop), then started like db1, then
# listed in cluster.yaml. stdout gets only the NAME=127.0.0.1:PORT line.
cmd_add_host() {
    local name=$1 weight=${WEIGHT:-1} id=3 n var group=()
    [[ $name =~ ^[a-z][a-z0-9_]{0,30}$ ]] ||
        die "a host name is [a-z][a-z0-9_]*, at most 31 characters, not '$name'"
    if ! [[ $weight =~ ^[1-9][0-9]{0,3}$ ]] || ((weight > 1000)); then
        die "--weight must be 1..1000, not '$weight'"
    fi
    exec 3>&1 1>&2
    require_stack
    lock_stack
    load_stack # again under the lock: another add-host may just have added one
    [ "$(server_state "${BASE_DB_HOSTS[0]}")" = up ] ||
        die "the stack in $DIR is not running (tools/devstack start --dir $DIR)"
    if [[ " ${DB_HOSTS[*]} " == *" $name "* ]]; then
        [ -z "$WEIGHT" ] || [ "$WEIGHT" = "$(host_weight "$name")" ] ||
            warn "$name exists with weight $(host_weight "$name"); --weight $WEIGHT ignored"
        mapfile -t group < <(host_servers "$name")
        start_servers "${group[@]}" 3>&-
        # A guard that runs watches it already, and sets it up again.
        if ((REPLICAS)) && [ "$(server_state guard)" != up ]; then
            setup_replication 3>&-
        fi
        echo "$name=$(addr_of "$name"):$(port_of "$name")" >&3
        return 0
    fi
    if [[ $name =~ ^(mc|api)[0-9]+$ || $name == haproxy* || $name == guard ]]; then
        die "'$name' is the name of another kind of server; pick another (e.g. db4)"
    fi
    if ((REPLICAS)); then
        is_replica "$name" && die "'$name' is the replica of ${name%b}; pick another name"
        [[ " ${DB_HOSTS[*]} " != *" ${name}b "* ]] ||
            die "'$name' would name its replica ${name}b, a host of the stack; pick another name"
    fi
    [ ${#DIR} -le $((107 - ${#name} - 1 - 13)) ] ||
        die "stack dir too long for a unix socket path of ${name}b: $DIR"
    # server_id and gtid_domain_id: one more than the largest in the stack.
    for n in $ADDED_HOSTS; do
        var=SERVER_ID_$n
        if ((${!var} > id)); then
            id=${!var}
        fi
    done
    # Replicas take 100 + their host's id.
    ((REPLICAS == 0 || id < 99)) || die "a stack with replicas holds at most 99 hosts"
    printf -v "SERVER_ID_$name" '%s' $((id + 1))
    printf -v "WEIGHT_$name" '%s' "$weight"
    ADDED_HOSTS=${ADDED_HOSTS:+$ADDED_HOSTS }$name
    write_hosts_env
    compute_servers
    mapfile -t group < <(host_servers "$name")
    assign_ports "${group[@]}"
    ((NETNS == 0)) || assign_nets "${group[@]}"
    start_servers "${group[@]}" 3>&-
    write_cluster_yaml
    added_host_replication 3>&-
    say "$name added (server_id $((id + 1)), port $(port_of "$name"), weight $weight); it" \
        "holds no shard until shardctl plan --add-host $name=$(addr_of "$name"):$(port_of "$name")" \
        "--weight $weight and shardctl rebalance move some there"
    echo "$name=$(addr_of "$name"):$(port_of "$name")" >&3
}

# ---------------------------------------------------------------- run

SLEEP_PID=""

# Ctrl-C (SIGINT) or SIGTERM during run: stop the whole stack, exit 0.
run_exit() {
    trap - INT TERM
    [ -z "$SLEEP_PID" ] || kill "$SLEEP_PID" 2>/dev/null || true
    echo
    say "stopping the stack in $DIR"
    cmd_stop || exit 1
    exit 0
}

# Succeeds while some server of the stack runs.
stack_alive() {
    local name
    for name in "${SERVERS[@]}"; do
        [ -z "$(pidfile_pid "$name")" ] || return 0
    done
    return 1
}

# One field of the "demo" object of DIR/seed.json (written by tools/seed).
seed_field() {
    python3 -c 'import json, sys
try:
    v = json.load(open(sys.argv[1])).get("demo", {}).get(sys.argv[2])
    print("" if v is None else v)
except Exception:
    pass' "$DIR/seed.json" "$1" 2>/dev/null || true
}

print_banner() {
    local url pw email demo demo_pw match company
    # shellcheck source=/dev/null
    . "$DIR/urls.env"
    url=$BC_API_URL
    pw=$BC_ADMIN_PASSWORD
    email=$BC_ADMIN_EMAIL
    demo=$(seed_field user_email)
    demo_pw=$(seed_field user_password)
    company=$(seed_field user_company)
    match=$(seed_field match_id)
    cat <<EOF

BetCity is up (stack in $DIR):
  API, through HAProxy   $url
  API servers            $BC_API_URLS
  HAProxy stats          $BC_HAPROXY_STATS
  platform admin         $email / $pw
EOF
    [ -z "$demo" ] ||
        echo "  demo user              $demo / $demo_pw (company admin of $company; all demo users have that password)"
    # The demo companies' join codes (a sign-up needs one), on every run.
    python3 -c 'import json, sys
try:
    for slug, c in json.load(open(sys.argv[1])).get("companies", {}).items():
        print("  join code %-12s %s" % (slug, c["join_code"]))
except Exception:
    pass' "$DIR/seed.json" 2>/dev/null || true
    cat <<EOF
  URLs and logins        $DIR/urls.env
  logs                   $DIR/api1/api.log, $DIR/haproxy/haproxy.log
  shards                 $BUILD_DIR/shardctl -c $DIR/cluster.yaml status

Try:
  curl -s $url/readyz
  TOKEN=\$(curl -s -H 'Content-Type: application/json' \\
      -d '{"email": "$email", "password": "$pw"}' $url/v1/auth/login |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
  curl -s -H "Authorization: Bearer \$TOKEN" '$url/v1/matches?limit=3'
  # (standings are empty until a first match is settled)
  curl -s -H "Authorization: Bearer \$TOKEN" $url/v1/standings/companies
EOF
    if [ -n "$demo" ]; then
        cat <<EOF
  # as $demo (the platform admin is not ranked): bet on the first match
  USER_TOKEN=\$(curl -s -H 'Content-Type: application/json' \\
      -d '{"email": "$demo", "password": "$demo_pw"}' $url/v1/auth/login |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
  curl -s -H "Authorization: Bearer \$USER_TOKEN" -H 'Content-Type: application/json' \\
      -d '{"match_id": "${match:-MATCH_ID}", "pick": "home", "stake": 10}' $url/v1/bets
  curl -s -H "Authorization: Bearer \$USER_TOKEN" $url/v1/me
EOF
    fi
    echo
    echo "Ctrl-C (or SIGTERM, from a script: a job started with & ignores SIGINT) stops the whole stack."
}

# cmd_run's start failed (a die() in it exits): stop what it started, so
# that a failed `make run` leaves no server running.
run_start_failed() {
    local status=$?
    trap - EXIT
    warn "the start failed: stopping what it started in $DIR"
    cmd_stop >/dev/null 2>&1 || warn "some servers of $DIR did not stop"
    exit "$status"
}

cmd_run() {
    trap run_exit INT TERM
    trap run_start_failed EXIT
    cmd_start
    trap - EXIT
    if [ ! -f "$DIR/urls.env" ]; then
        warn "warning: no API servers ($API_BIN is not built): nothing to seed"
        echo "Ctrl-C stops the stack."
    else
        if [ -e "$DIR/.seeded" ]; then
            say "demo data already seeded ($DIR/seed.json)"
        elif python3 "$ROOT/tools/seed" --dir "$DIR"; then
            touch "$DIR/.seeded"
        else
            warn "warning: seeding failed; the stack runs on (retry: tools/seed --dir $DIR)"
        fi
        print_banner
    fi
    while :; do
        sleep 5 &
        SLEEP_PID=$!
        wait "$SLEEP_PID" || true
        SLEEP_PID=""
        if ! stack_alive; then
            say "the stack in $DIR was stopped by someone else; exiting"
            exit 0
        fi
    done
}
