# shellcheck shell=bash
# tools/devstack.d/netns.sh: part of tools/devstack, which sources it and
# describes the stack, its commands and its environment. This file: the
# network namespaces of a stack made with BC_NETNS=1, their links, partition
# and heal.

# ---------------------------------------------------------------- network namespaces

# With BC_NETNS=1 each MariaDB server runs in a network namespace of its own,
# bc<stack hash>-<server>, joined to the root namespace by a link on
# 10.213.n.0/30 (root side .1, server side .2; n recorded in net.env and
# claimed machine-wide like the ports), so that a server can be cut off
# (partition) while its process runs. The root namespace forwards between the
# namespaces (forwarding on the root-side ends only, not ip_forward), and a
# namespace routes only 10.213.0.0/16: traffic goes to loopback and to these
# namespaces, nowhere else (the root namespace holds an unreachable route for
# each /30, under the link's own: a link that vanishes does not send its
# traffic to the default route).
#
# The link delays each packet by 250 us each way, like a network between
# machines. How depends on the kernel, probed once per command (link_kind):
#   netem  a veth pair, netem on both ends (the kernel has sch_netem);
#   wire   else $BUILD/netwire between two TUN devices, one in each namespace
#          (the delay in user space; one netwire process per server,
#          DIR/<server>/netwire.pid and netwire.log): it runs from the
#          server's first start to stop, across restarts of the server;
#   veth   else (no TUN device, netwire not built, or it could not make its
#          devices) a veth pair without delay, with a warning.
# Either way the ends have the same names, bc<hash>r<n> (root) and
# bc<hash>s<n> (server), and partition sets the server's end down.

# Six hex digits of DIR's hash: names made of it are unique to the stack.
stack_hash() { printf '%s' "$DIR" | sha1sum | cut -c1-6; }
netns_name() { echo "bc$(stack_hash)-$1"; }

net_index() {
    local var=NET_$1
    [ -n "${!var:-}" ] || die "no subnet recorded for $1 in $DIR/net.env"
    echo "${!var}"
}

# Interface names are at most 15 characters: the server's subnet names them.
link_root() { echo "bc$(stack_hash)r$(net_index "$1")"; }
link_server() { echo "bc$(stack_hash)s$(net_index "$1")"; }

require_root() {
    [ "$(id -u)" = 0 ] || die "BC_NETNS=1 needs root (network namespaces and their links)"
    { command -v ip && command -v tc; } >/dev/null || die "ip and tc not found (iproute2)"
}

NETWIRE_BIN=$BUILD_DIR/netwire
NETWIRE_DELAY_US=250
LINK_KIND="" # netem, wire or veth: link_kind sets it once per command

# Sets LINK_KIND: netem where a scratch namespace's lo takes a netem qdisc,
# else wire where /dev/net/tun exists and netwire is built, else veth.
link_kind() {
    local probe
    [ -z "$LINK_KIND" ] || return 0
    LINK_KIND=veth
    # Named like the stack's namespaces (no server is called .probe): a stop
    # removes one left behind.
    probe="$(netns_name .probe)"
    ip netns del "$probe" 2>/dev/null || true
    if ip netns add "$probe" 2>/dev/null; then
        tc -n "$probe" qdisc add dev lo root netem delay 250us 2>/dev/null && LINK_KIND=netem
        ip netns del "$probe" || warn "could not remove network namespace $probe"
    fi
    if [ "$LINK_KIND" = veth ] && [ -c /dev/net/tun ] && [ -x "$NETWIRE_BIN" ]; then
        LINK_KIND=wire
    fi
    case $LINK_KIND in
    wire) say "no netem in this kernel: each server's link is a netwire ($NETWIRE_DELAY_US us each way)" ;;
    veth)
        warn "warning: no netem in this kernel, and no TUN device or $NETWIRE_BIN (make):" \
            "the servers' links have no added delay"
        ;;
    esac
}

# Gives every named MariaDB server without one a subnet 10.213.n.0/30 that no
# other stack claims and that nothing on this machine uses, and records it.
assign_nets() {
    local name var n
    for name in "$@"; do
        var=NET_$name
        [ -z "${!var:-}" ] || continue
        for ((n = 1; n <= 254; n++)); do
            grep -qx "NET_[a-z0-9_]*=$n" "$DIR/net.env" 2>/dev/null && continue
            [ -z "$(ip -4 route show "10.213.$n.0/30")$(ip -4 addr show to "10.213.$n.0/30")" ] ||
                continue
            claim_port "net-$n" && break
        done
        ((n <= 254)) || die "no free subnet 10.213.n.0/30 left for $name"
        printf -v "NET_$name" '%s' "$n"
        echo "NET_$name=$n" >>"$DIR/net.env"
    done
}

wire_pidfile() { echo "$DIR/$1/netwire.pid"; }
wire_log() { echo "$DIR/$1/netwire.log"; }
wire_marker() { echo "--pidfile $(wire_pidfile "$1")"; }

# Pids of the server's netwire: its pid file's, and any process carrying its
# marker.
wire_pids() {
    local name=$1 pid cmdline
    pid=$({ tr -dc '0-9' <"$(wire_pidfile "$name")"; } 2>/dev/null || true)
    if [ -n "$pid" ] && alive "$pid"; then
        cmdline=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null || true)
        [[ "$cmdline " != *" $(wire_marker "$name") "* ]] || echo "$pid"
    fi
    pgrep -f -- "$(re_escape "$(wire_marker "$name")")( |$)" || true
}

# Stops the server's netwire (its devices go with it): SIGTERM, SIGKILL after 5 s.
wire_stop() {
    local name=$1 deadline pids=()
    mapfile -t pids < <(wire_pids "$name" | sort -u)
    if ((${#pids[@]} > 0)); then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        deadline=$((SECONDS + 5))
        while mapfile -t pids < <(living "${pids[@]}") && ((${#pids[@]} > 0)); do
            if ((SECONDS >= deadline)); then
                kill -KILL "${pids[@]}" 2>/dev/null || true
            fi
            sleep 0.05
        done
    fi
    rm -f "$(wire_pidfile "$name")"
}

# Starts the server's netwire; when it returns, both TUN devices exist (down,
# without addresses). Fails, with the end of its log, if netwire could not
# make them.
wire_start() {
    local name=$1
    mkdir -p "$DIR/$name"
    wire_stop "$name"
    "$NETWIRE_BIN" --delay-us "$NETWIRE_DELAY_US" --daemon --pidfile "$(wire_pidfile "$name")" \
        "$(link_root "$name")" "$(netns_name "$name")" "$(link_server "$name")" \
        >>"$(wire_log "$name")" 2>&1 </dev/null 9>&- || {
        show_log_tail "$(wire_log "$name")"
        return 1
    }
}

# Creates the server's namespace and link, unless they exist (then they are
# left as they are: partitioned or not). A link whose root end is gone (its
# netwire died) is made again.
netns_up() {
    local name=$1 ns vr vs n
    require_root
    ns=$(netns_name "$name")
    vr=$(link_root "$name")
    vs=$(link_server "$name")
    n=$(net_index "$name")
    if [ -e "/run/netns/$ns" ] && ip link show "$vr" >/dev/null 2>&1; then
        return 0
    fi
    [ -e "/run/netns/$ns" ] || ip netns add "$ns" || die "$name: cannot create network namespace $ns"
    link_kind
    wire_stop "$name"
    ip link del "$vr" 2>/dev/null || true
    ip -n "$ns" link del "$vs" 2>/dev/null || true
    if [ "$LINK_KIND" = wire ] && ! wire_start "$name"; then
        warn "warning: $name: netwire could not make the TUN devices $vr - $vs: the" \
            "servers' links have no added delay"
        LINK_KIND=veth
    fi
    if [ "$LINK_KIND" != wire ]; then
        ip link add "$vr" type veth peer name "$vs" netns "$ns" ||
            die "$name: cannot create the veth pair $vr - $vs in $ns"
    fi
    # IPv6 off on both ends where the kernel has it: the link carries the
    # stack's IPv4 only, and no router solicitations.
    { echo 1 >"/proc/sys/net/ipv6/conf/$vr/disable_ipv6"; } 2>/dev/null || true
    ip netns exec "$ns" sh -c "echo 1 >/proc/sys/net/ipv6/conf/$vs/disable_ipv6" 2>/dev/null || true
    if ! { ip route replace unreachable "10.213.$n.0/30" metric 4242 &&
        ip addr add "10.213.$n.1/30" dev "$vr" &&
        echo 1 >"/proc/sys/net/ipv4/conf/$vr/forwarding" &&
        ip link set "$vr" up &&
        ip -n "$ns" link set lo up &&
        ip -n "$ns" addr add "10.213.$n.2/30" dev "$vs" &&
        ip -n "$ns" link set "$vs" up &&
        ip -n "$ns" route add 10.213.0.0/16 via "10.213.$n.1"; }; then
        wire_stop "$name"
        ip link del "$vr" 2>/dev/null || true
        die "$name: cannot set up the link $vr - $vs in $ns"
    fi
    if [ "$LINK_KIND" = netem ] && ! { tc qdisc add dev "$vr" root netem delay 250us &&
        tc -n "$ns" qdisc add dev "$vs" root netem delay 250us; } 2>/dev/null; then
        warn "warning: $name: netem refused on $vr - $vs: its link has no added delay"
    fi
}

# Stops every netwire and removes every namespace of the stack (their links
# go with them) and the unreachable routes, also those of a start that failed
# half-way. The netwires go first: an open TUN device keeps its namespace
# alive after `ip netns del`.
netns_down_all() {
    local ns name vr n
    require_root
    sed -n 's/^NET_\([a-z0-9_]*\)=.*/\1/p' "$DIR/net.env" 2>/dev/null | while read -r name; do
        wire_stop "$name"
    done
    for ns in $(ip netns list 2>/dev/null | awk -v p="bc$(stack_hash)-" 'index($1, p) == 1 { print $1 }'); do
        ip netns del "$ns" || warn "could not remove network namespace $ns"
    done
    sed -n 's/^NET_\([a-z0-9_]*\)=.*/\1/p' "$DIR/net.env" 2>/dev/null | while read -r name; do
        vr=$(link_root "$name")
        n=$(net_index "$name")
        ! ip link show "$vr" >/dev/null 2>&1 || ip link del "$vr" || warn "could not remove $vr"
        [ -z "$(ip -4 route show type unreachable "10.213.$n.0/30" 2>/dev/null)" ] ||
            ip route del unreachable "10.213.$n.0/30" metric 4242 ||
            warn "could not remove the route unreachable 10.213.$n.0/30"
    done
}

# Succeeds if the server's link is cut (partition), or gone.
netns_cut() {
    ((NETNS)) && [ -e "/run/netns/$(netns_name "$1")" ] || return 1
    ! ip -n "$(netns_name "$1")" -o link show "$(link_server "$1")" 2>/dev/null |
        grep -q '[<,]UP[,>]'
}

partition_target() {
    ((NETNS)) || die "partition and heal need a stack made with BC_NETNS=1"
    [ "$(kind_of "$1")" = mariadb ] || die "$1 is not a MariaDB server (only those have a namespace)"
    require_root
    [ -e "/run/netns/$(netns_name "$1")" ] || die "$1 has no network namespace (is the stack started?)"
}

# Cuts the server's link on its side: packets to it are dropped (by the veth
# pair without carrier, or by netwire, whose writes to a device that is down
# fail), its own have no route.
cmd_partition() {
    require_stack
    partition_target "$1"
    ip -n "$(netns_name "$1")" link set "$(link_server "$1")" down
    say "$1 partitioned: nothing reaches $(addr_of "$1") or leaves it (heal $1 to restore)"
}

# Sets the server's end up again; a link that is gone (its netwire died) is
# made again first.
cmd_heal() {
    local n
    require_stack
    partition_target "$1"
    n=$(net_index "$1")
    netns_up "$1"
    ip -n "$(netns_name "$1")" link set "$(link_server "$1")" up
    # The route through the root namespace went with the link.
    ip -n "$(netns_name "$1")" route replace 10.213.0.0/16 via "10.213.$n.1"
    say "$1 healed: $(addr_of "$1") is reachable again"
}
