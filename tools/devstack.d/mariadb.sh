# shellcheck shell=bash
# tools/devstack.d/mariadb.sh: part of tools/devstack, which sources it and
# describes the stack, its commands and its environment. This file: the
# MariaDB servers (the kind "mariadb").

# ---------------------------------------------------------------- mariadb

mariadb_dir() { echo "$DIR/$1"; }
mariadb_pidfile() { echo "$DIR/$1/mysqld.pid"; }
mariadb_log() { echo "$DIR/$1/error.log"; }
mariadb_marker() { echo "--defaults-file=$DIR/$1/my.cnf"; }
mariadb_socket() { echo "$DIR/$1/mysqld.sock"; }

# Runs the mariadb client as root over the server's socket.
mariadb_root() {
    local name=$1
    shift
    timeout 30 mariadb --no-defaults --user=root --socket="$(mariadb_socket "$name")" \
        --connect-timeout=5 --batch --skip-column-names "$@"
}

# gtid_domain_id of a host and its replica: i for db<i>, recorded for added
# hosts. It is also the host's server_id.
mariadb_domain_id() {
    local host var
    host=$(host_of "$1")
    var=SERVER_ID_$host
    if is_added_host "$host"; then
        [ -n "${!var:-}" ] || die "no server id recorded for $host in $DIR/hosts.env"
        echo "${!var}"
    else
        echo "${host#db}"
    fi
}

# server_id: the host's domain id for the host, 100 more for its replica.
mariadb_server_id() {
    local i
    i=$(mariadb_domain_id "$1")
    if is_replica "$1"; then echo $((100 + i)); else echo "$i"; fi
}

# Writes my.cnf from the template (every start, so template edits take effect).
# Without replicas the hosts are writable from the start (see the template).
mariadb_write_cnf() {
    local name=$1 d read_only=ON slave_updates=ON
    d=$(mariadb_dir "$name")
    ((REPLICAS)) || { read_only=OFF slave_updates=OFF; }
    mkdir -p "$d/data" "$d/tmp"
    sed -e "s|@DIR@|$d|g" -e "s|@PORT@|$(port_of "$name")|g" \
        -e "s|@SERVER_ID@|$(mariadb_server_id "$name")|g" \
        -e "s|@DOMAIN_ID@|$(mariadb_domain_id "$name")|g" -e "s|@USER@|$(id -un)|g" \
        -e "s|@BUFFER_POOL@|$BUFFER_POOL|g" -e "s|@REDO@|$REDO|g" -e "s|@READ_ONLY@|$read_only|g" \
        -e "s|@BIND_ADDRESS@|$(addr_of "$name")|g" \
        -e "s|@LOG_SLAVE_UPDATES@|$slave_updates|g" "$CNF_TEMPLATE" >"$d/my.cnf.tmp"
    if grep -q '@[A-Z_]*@' "$d/my.cnf.tmp"; then
        die "$CNF_TEMPLATE has a placeholder devstack does not fill: $(grep -o '@[A-Z_]*@' "$d/my.cnf.tmp" | head -1)"
    fi
    mv "$d/my.cnf.tmp" "$d/my.cnf"
}

mariadb_init() {
    local name=$1 d
    d=$(mariadb_dir "$name")
    mariadb_write_cnf "$name"
    [ -e "$d/.initialized" ] && return 0
    # A datadir without the marker is from an interrupted first start: redo it.
    rm -rf "$d/data" "$d/.provisioned"
    mkdir -p "$d/data"
    if ! mariadb-install-db --defaults-file="$d/my.cnf" --user="$(id -un)" \
        --auth-root-authentication-method=normal --skip-test-db \
        --skip-name-resolve >"$d/install.log" 2>&1; then
        warn "$name: mariadb-install-db failed"
        show_log_tail "$d/install.log"
        return 1
    fi
    touch "$d/.initialized"
}

mariadb_launch() {
    local name=$1 d ns=()
    d=$(mariadb_dir "$name")
    rm -f "$d/mysqld.pid"
    if ((NETNS)); then
        netns_up "$name"
        ns=(ip netns exec "$(netns_name "$name")")
    fi
    ${ns[@]+"${ns[@]}"} setsid -f mariadbd --defaults-file="$d/my.cnf" >>"$d/error.log" 2>&1 \
        </dev/null 9>&-
}

mariadb_ping() {
    timeout 5 mariadb-admin --no-defaults --user=root --socket="$(mariadb_socket "$1")" \
        --connect-timeout=2 ping >/dev/null 2>&1
}

# What mariadb_ready provisions, as one text: a host whose .provisioned differs
# (new passwords, or a stack made before the accounts were split) is redone.
provision_spec() {
    printf 'accounts v2 prefix %s\nbc %s\nbc_api %s\n' "$PREFIX" \
        "$(cat "$DIR/password")" "$(cat "$DIR/api.password")"
    ((NETNS == 0)) || echo "hosts $(account_hosts)"
}

# Where the accounts may connect from: this machine, and with BC_NETNS=1 the
# namespaces' addresses (clients in the root namespace come from 10.213.n.1,
# a replica from its own 10.213.n.2).
account_hosts() {
    if ((NETNS)); then echo "127.0.0.1 localhost 10.213.%"; else echo "127.0.0.1 localhost"; fi
}

# Creates the two accounts (once per password) and drops the install's extra
# root accounts, so that root can only log in over the socket:
#   bc      the operator tools' (shardctl, bcadmin, fillers): every privilege
#           but GRANT (schemas, replication, SET GLOBAL for moves)
#   bc_api  the API servers': SELECT, INSERT, UPDATE, DELETE, EXECUTE on the stack's
#           schemas (<prefix>_global, <prefix>_0000 …, also those a move
#           creates later) and nothing else: no DDL, GRANT, FILE or SUPER
# Not binlogged: the hosts' binlogs start empty, and replication between hosts
# carries only data (a replica gets its own accounts here, as a host does).
mariadb_ready() {
    local name=$1 d pw api_pw extra u schemas
    d=$(mariadb_dir "$name")
    pw=$(cat "$DIR/password")
    api_pw=$(cat "$DIR/api.password")
    # The prefix's own _ are literal in a GRANT's database pattern: escape them.
    schemas="${PREFIX//_/\\_}\\_%"
    if [ ! -e "$d/.provisioned" ] || ! cmp -s "$d/.provisioned" <(provision_spec); then
        extra=$(mariadb_root "$name" -e "SELECT CONCAT(QUOTE(user), '@', QUOTE(host))
              FROM mysql.user WHERE user = '' OR (user = 'root' AND host <> 'localhost')") ||
            die "$name: cannot query the accounts over $(mariadb_socket "$name")"
        {
            echo "SET SESSION sql_log_bin = 0;"
            for u in $extra; do echo "DROP USER IF EXISTS $u;"; done
            for h in $(account_hosts); do
                echo "CREATE USER IF NOT EXISTS 'bc'@'$h' IDENTIFIED BY '$pw';"
                echo "ALTER USER 'bc'@'$h' IDENTIFIED BY '$pw';"
                echo "GRANT ALL PRIVILEGES ON *.* TO 'bc'@'$h';"
                # A stack made before the split gave bc GRANT OPTION too.
                echo "REVOKE GRANT OPTION ON *.* FROM 'bc'@'$h';"
                echo "DROP USER IF EXISTS 'bc_api'@'$h';"
                echo "CREATE USER 'bc_api'@'$h' IDENTIFIED BY '$api_pw';"
                echo "GRANT SELECT, INSERT, UPDATE, DELETE, EXECUTE ON \`$schemas\`.* TO 'bc_api'@'$h';"
            done
        } | mariadb_root "$name" || die "$name: cannot create the bc and bc_api accounts"
        provision_spec >"$d/.provisioned"
    fi
    # Convenience for people and scripts: mariadb --defaults-file=DIR/db1/client.cnf
    (
        umask 077
        printf '[client]\nhost = %s\nport = %s\nuser = bc\npassword = %s\n' \
            "$(addr_of "$name")" "$(port_of "$name")" "$pw" >"$d/client.cnf"
    )
    # End to end: both accounts over TCP, as the tools and the router connect.
    timeout 10 mariadb --defaults-file="$d/client.cnf" --connect-timeout=5 -e 'SELECT 1' \
        >/dev/null 2>"$d/client-check.err" || {
        cat "$d/client-check.err" >&2
        die "$name: the bc user cannot log in over $(addr_of "$name"):$(port_of "$name")"
    }
    timeout 10 mariadb --defaults-file=<(printf '[client]\npassword = %s\n' "$api_pw") \
        --host="$(addr_of "$name")" --port="$(port_of "$name")" --user=bc_api --connect-timeout=5 \
        -e 'SELECT 1' >/dev/null 2>"$d/client-check.err" || {
        cat "$d/client-check.err" >&2
        die "$name: the bc_api user cannot log in over $(addr_of "$name"):$(port_of "$name")"
    }
    rm -f "$d/client-check.err"
}
