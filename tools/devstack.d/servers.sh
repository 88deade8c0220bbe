# shellcheck shell=bash
# tools/devstack.d/servers.sh: part of tools/devstack, which sources it and
# describes the stack, its commands and its environment. This file: the
# servers (names, kinds, ports, addresses) and their processes.

# ---------------------------------------------------------------- servers

BASE_DB_HOSTS=(db1 db2 db3)
DB_HOSTS=("${BASE_DB_HOSTS[@]}")
ADDED_HOSTS="" # from hosts.env: hosts add-host started, in the order added
REPLICAS=0     # from stack.env: 1 if each host has a replica NAMEb
NETNS=0        # from stack.env: 1 if each MariaDB server runs in its own network namespace
DB_REPLICAS=() # db1b …, one per host when REPLICAS=1
DB_SERVERS=()  # every MariaDB server: db1 db1b db2 db2b …
MC_SERVERS=(mc1 mc2)
API_SERVERS=()
PROXIES=()
GUARDS=() # (guard) when the last start ran it (guard.env)

# Every server, in start order. The API servers and HAProxy are those of the
# last start (api.env), the added hosts those of hosts.env, the guard that of
# guard.env; load_stack calls this.
SERVERS=("${DB_HOSTS[@]}" "${MC_SERVERS[@]}")
compute_servers() {
    local n=${API_COUNT:-0} i name
    # shellcheck disable=SC2206 # names are [a-z0-9_], checked by add-host
    DB_HOSTS=("${BASE_DB_HOSTS[@]}" $ADDED_HOSTS)
    DB_REPLICAS=()
    DB_SERVERS=()
    for name in "${DB_HOSTS[@]}"; do
        DB_SERVERS+=("$name")
        ((REPLICAS == 0)) || {
            DB_REPLICAS+=("${name}b")
            DB_SERVERS+=("${name}b")
        }
    done
    API_SERVERS=()
    PROXIES=()
    GUARDS=()
    for ((i = 1; i <= n; i++)); do API_SERVERS+=("api$i"); done
    ((n == 0)) || PROXIES=(haproxy)
    ((${GUARD:-0} == 0)) || GUARDS=(guard)
    SERVERS=("${DB_SERVERS[@]}" "${MC_SERVERS[@]}" ${API_SERVERS[@]+"${API_SERVERS[@]}"}
        ${PROXIES[@]+"${PROXIES[@]}"} ${GUARDS[@]+"${GUARDS[@]}"})
}

# API servers that have a port in ports.env (also those a smaller
# BC_API_SERVERS dropped), in order.
recorded_api_servers() {
    sed -n 's/^PORT_\(api[0-9]*\)=.*/\1/p' "$DIR/ports.env" 2>/dev/null | sort -V -u
}

is_added_host() { [[ " $ADDED_HOSTS " == *" $1 "* ]]; }

# Succeeds for a host's replica (NAMEb of host NAME, in a stack with replicas).
is_replica() { ((REPLICAS)) && [[ " ${DB_REPLICAS[*]} " == *" $1 "* ]]; }

# A host's MariaDB servers: NAME, and its replica NAMEb in a stack with replicas.
host_servers() {
    echo "$1"
    ((REPLICAS == 0)) || echo "${1}b"
}

# The host a MariaDB server belongs to: NAME for NAME and its replica NAMEb.
host_of() {
    if is_replica "$1"; then echo "${1%b}"; else echo "$1"; fi
}

kind_of() {
    if is_added_host "$1" || is_replica "$1"; then
        echo mariadb
        return
    fi
    case $1 in
    db[1-9]) echo mariadb ;;
    mc[1-9]) echo memcached ;;
    api[1-9] | api[1-9][0-9]) echo api ;;
    haproxy) echo haproxy ;;
    guard) echo guard ;;
    *) return 1 ;;
    esac
}

check_name() {
    local n
    for n in "${SERVERS[@]}"; do [ "$n" = "$1" ] && return 0; done
    die "unknown server '$1' (one of: ${SERVERS[*]})"
}

port_of() {
    local var=PORT_$1
    [ -n "${!var:-}" ] || die "no port recorded for $1 in $DIR/ports.env"
    echo "${!var}"
}

# The port of a server, "-" for one that listens on none (the guard).
port_or_dash() {
    if [ "$(kind_of "$1")" = guard ]; then echo -; else port_of "$1"; fi
}

# The address a server listens on: its namespace's for a MariaDB server of a
# stack with BC_NETNS=1, else 127.0.0.1.
addr_of() {
    if ((NETNS)) && [ "$(kind_of "$1")" = mariadb ]; then
        echo "10.213.$(net_index "$1").2"
    else
        echo 127.0.0.1
    fi
}

# ---------------------------------------------------------------- processes

# State letter of a process (R, S, D, T, Z, …), empty if there is none.
proc_state() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    echo "${stat%% *}"
}

# A process is alive unless it is gone or a zombie (this machine's init reaps late).
alive() {
    case $(proc_state "$1") in
    "" | Z | X) return 1 ;;
    *) return 0 ;;
    esac
}

re_escape() { printf '%s' "$1" | sed 's/[][\.*^$+?(){}|]/\\&/g'; }

# Pids of every process whose command line holds the server's marker.
marker_pids() {
    local kind end='( |$)'
    kind=$(kind_of "$1")
    # The guard's command line begins `guard --once`'s: it must end there.
    [ "$kind" != guard ] || end='$'
    pgrep -f -- "$(re_escape "$("${kind}_marker" "$1")")$end" || true
}

# The pid in the server's pid file, if that process is alive and is the server.
pidfile_pid() {
    local name=$1 kind pid cmdline
    kind=$(kind_of "$name")
    pid=$({ tr -dc '0-9' <"$("${kind}_pidfile" "$name")"; } 2>/dev/null || true)
    [ -n "$pid" ] && alive "$pid" || return 0
    cmdline=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null || true)
    if [[ "$cmdline " == *"$("${kind}_marker" "$name") "* ]]; then
        echo "$pid"
    fi
}

# The pid of a running server: from its pid file, else any live process
# carrying its marker. Empty if none.
server_pid() {
    local pid
    pid=$(pidfile_pid "$1")
    if [ -z "$pid" ]; then
        for pid in $(marker_pids "$1"); do
            alive "$pid" && break
            pid=""
        done
    fi
    echo "$pid"
}

# up | down | stopped (SIGSTOP) | hung (alive, not answering)
server_state() {
    local name=$1 pid
    pid=$(server_pid "$name")
    [ -n "$pid" ] || {
        echo down
        return
    }
    case $(proc_state "$pid") in
    T | t) echo stopped ;;
    *) if "$(kind_of "$name")_ping" "$name"; then echo up; else echo hung; fi ;;
    esac
}
