# shellcheck shell=bash
# tools/devstack.d/stack.sh: part of tools/devstack, which sources it and
# describes the stack, its commands and its environment. This file: the
# stack directory (DIR, its .env files, the passwords) and cluster.yaml.

# ---------------------------------------------------------------- stack directory

resolve_dir() {
    [ -n "$DIR" ] || DIR=${STACK_DIR:-${BC_STACK_DIR:-$ROOT/.stack}}
    DIR=$(realpath -m -- "$DIR")
    case $DIR in
    / | "${HOME:-/}" | "$ROOT") die "refusing to use $DIR as a stack directory" ;;
    esac
    # The path goes into my.cnf, sed expressions and pgrep patterns.
    [[ $DIR =~ ^[A-Za-z0-9._/+@-]+$ ]] ||
        die "the stack dir may only hold the characters A-Z a-z 0-9 . _ / + @ -: $DIR"
    # Unix socket paths are limited to 107 bytes (db1's replica: db1b).
    local sock="$DIR/db1b/mysqld.sock"
    [ ${#sock} -le 107 ] || die "stack dir too long for a unix socket path: $DIR"
}

require_stack() {
    [ -f "$DIR/ports.env" ] || die "no stack in $DIR (run: tools/devstack start --dir $DIR)"
    load_stack
}

load_stack() {
    # shellcheck source=/dev/null
    [ -f "$DIR/ports.env" ] && . "$DIR/ports.env"
    # shellcheck source=/dev/null
    [ -f "$DIR/stack.env" ] && . "$DIR/stack.env"
    # shellcheck source=/dev/null
    [ -f "$DIR/api.env" ] && . "$DIR/api.env"
    # shellcheck source=/dev/null
    [ -f "$DIR/hosts.env" ] && . "$DIR/hosts.env"
    # shellcheck source=/dev/null
    [ -f "$DIR/guard.env" ] && . "$DIR/guard.env"
    # shellcheck source=/dev/null
    [ -f "$DIR/net.env" ] && . "$DIR/net.env"
    compute_servers
    return 0
}

# Serializes start/restart-host on one stack directory. Servers are launched
# with fd 9 closed, or they would hold the lock for as long as they run.
lock_stack() {
    exec 9>"$DIR/.lock"
    flock -w 120 9 || die "another devstack command holds $DIR/.lock"
}

check_env_values() {
    local shards=${BC_SHARDS:-64} prefix=${BC_PREFIX:-bc}
    # The same limits as shardmap/ (SHARDMAP_MIN_SHARDS, SHARDMAP_PREFIX_MAX).
    if ! [[ $shards =~ ^[1-9][0-9]{0,4}$ ]] ||
        (((shards & (shards - 1)) != 0 || shards < 16 || shards > 8192)); then
        die "BC_SHARDS must be a power of two in 16..8192, not '$shards'"
    fi
    [[ $prefix =~ ^[a-z0-9_]{1,31}$ ]] ||
        die "BC_PREFIX must be 1..31 characters of a-z 0-9 _, not '$prefix'"
    [[ ${BC_REPLICAS:-1} =~ ^[01]$ ]] || die "BC_REPLICAS must be 0 or 1, not '$BC_REPLICAS'"
    [[ ${BC_NETNS:-0} =~ ^[01]$ ]] || die "BC_NETNS must be 0 or 1, not '$BC_NETNS'"
}

# Shard count, prefix and replicas are fixed when the stack is created (a
# stack made before replicas existed has none: no REPLICAS in stack.env).
setup_stack_env() {
    local shards=${BC_SHARDS:-64} prefix=${BC_PREFIX:-bc} replicas=${BC_REPLICAS:-1}
    local netns=${BC_NETNS:-0}
    if [ -f "$DIR/stack.env" ]; then
        if [ -n "${BC_SHARDS:-}" ] && [ "$BC_SHARDS" != "$SHARDS" ]; then
            die "the stack in $DIR has $SHARDS shards, not BC_SHARDS=$BC_SHARDS (stop --clean to recreate it)"
        fi
        if [ -n "${BC_PREFIX:-}" ] && [ "$BC_PREFIX" != "$PREFIX" ]; then
            die "the stack in $DIR has prefix $PREFIX, not BC_PREFIX=$BC_PREFIX (stop --clean to recreate it)"
        fi
        if [ -n "${BC_REPLICAS:-}" ] && [ "$BC_REPLICAS" != "$REPLICAS" ]; then
            die "the stack in $DIR has BC_REPLICAS=$REPLICAS, not $BC_REPLICAS (stop --clean to recreate it)"
        fi
        if [ -n "${BC_NETNS:-}" ] && [ "$BC_NETNS" != "$NETNS" ]; then
            die "the stack in $DIR has BC_NETNS=$NETNS, not $BC_NETNS (stop --clean to recreate it)"
        fi
        ((NETNS == 0)) || require_root
        return 0
    fi
    ((netns == 0)) || require_root
    printf 'SHARDS=%s\nPREFIX=%s\nREPLICAS=%s\nNETNS=%s\n' "$shards" "$prefix" "$replicas" \
        "$netns" >"$DIR/stack.env"
    SHARDS=$shards
    PREFIX=$prefix
    REPLICAS=$replicas
    NETNS=$netns
    compute_servers
}

# The two accounts' passwords, each made once: DIR/password (bc) and
# DIR/api.password (bc_api).
setup_password() {
    local f
    for f in "$DIR/password" "$DIR/api.password"; do
        [ -s "$f" ] && continue
        (
            umask 077
            # 24 alphanumeric characters: no quoting trouble in SQL, YAML or my.cnf.
            local pw
            pw=$(head -c 600 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')
            printf '%s' "${pw:0:24}" >"$f.tmp"
            mv "$f.tmp" "$f"
        )
    done
}

# ---------------------------------------------------------------- cluster.yaml

host_weight() {
    local var=WEIGHT_$1
    echo "${!var:-1}"
}

write_cluster_yaml() {
    local f=$DIR/cluster.yaml name pw api_pw
    pw=$(cat "$DIR/password")
    api_pw=$(cat "$DIR/api.password")
    {
        echo "cluster:"
        echo "  name: devstack"
        echo "  schema_prefix: $PREFIX"
        echo "  shards: $SHARDS"
        echo "  global_host: ${DB_HOSTS[0]}"
        echo "hosts:"
        for name in "${DB_HOSTS[@]}"; do
            echo "  - name: $name"
            echo "    addr: $(addr_of "$name")"
            echo "    port: $(port_of "$name")"
            echo "    user: bc_api"
            echo "    password: \"$api_pw\""
            echo "    ops_user: bc"
            echo "    ops_password: \"$pw\""
            echo "    weight: $(host_weight "$name")"
            if ((REPLICAS)); then
                echo "    replicas:"
                echo "      - name: ${name}b"
                echo "        addr: $(addr_of "${name}b")"
                echo "        port: $(port_of "${name}b")"
            fi
        done
        echo "memcached:"
        for name in "${MC_SERVERS[@]}"; do
            echo "  - addr: 127.0.0.1"
            echo "    port: $(port_of "$name")"
        done
        echo "router:"
        echo "  pool_size: $POOL_SIZE"
        echo "  connect_timeout_ms: 500"
        echo "  query_timeout_ms: 800"
        echo "  map_poll_ms: 1000"
    } >"$f.tmp"
    chmod 600 "$f.tmp"
    mv "$f.tmp" "$f"
}
