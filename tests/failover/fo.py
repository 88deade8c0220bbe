"""What the failover tests share, on top of tests/reshard/harness.py (the
stack, SQL on a host's current primary, loadgen with --acked, the
acknowledged-bets and ledger checks): the servers' roles and live state
(shardctl status --json), devstack kill and restart-host, waiting for the
roles to settle, the API servers' /metrics, GTID states, and a watcher that
timestamps loadgen's acknowledged bets as they are written.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.join(HERE, "..", "reshard"))  # after tests/failover: both have a test_kill

import harness as h  # noqa: E402  (puts tests/e2e on the path too)

stack = h.stack
fixtures = h.fixtures

MAX_LAG_MS = 1000  # replication.max_lag_ms (the stack's default)
DOWN_AFTER_MS = 1000  # replication.down_after_ms


def log(msg):
    sys.stdout.write("    [failover] %s\n" % msg)
    sys.stdout.flush()


class Phases:
    """Seconds spent in each phase of a test, for its log line."""

    def __init__(self):
        self.t = time.time()
        self.spent = []

    def __call__(self, name):
        now = time.time()
        self.spent.append((name, now - self.t))
        self.t = now

    def __str__(self):
        return " ".join("%s %.1f" % (n, s) for n, s in self.spent)


# ---------------------------------------------------------------- servers

def status():
    """{server: its entry of `shardctl status --json`} (role, up, writable,
    replicating, lag_ms, note, host, addr)."""
    r = h.shardctl("status", "--json", timeout=60)
    for line in r.out.splitlines():
        line = line.strip()
        if line.startswith("{") and '"servers"' in line:
            return {s["name"]: s for s in json.loads(line)["servers"]}
    raise AssertionError("no servers in shardctl status --json:\n" + r.describe())


def describe_status(st):
    return "\n".join("      %-6s %-5s %-8s up=%s writable=%s replicating=%s lag=%s %s"
                     % (n, s["host"], s["role"], s["up"], s["writable"], s["replicating"], s["lag_ms"], s["note"])
                     for n, s in sorted(st.items()))


def describe_status_safe():
    try:
        return describe_status(status())
    except AssertionError as e:
        return "(shardctl status failed: %s)" % str(e)[:1500]


def settle_problems(st):
    """Why the servers are not settled: each host one primary, up and
    writable; every other server a replica, up, read-only, replicating, lag
    known and within max_lag_ms."""
    problems = []
    by_host = {}
    for n, s in st.items():
        by_host.setdefault(s["host"], []).append(s)
    for host, srvs in sorted(by_host.items()):
        prim = [s for s in srvs if s["role"] == "primary"]
        if len(prim) != 1:
            problems.append("%s: %d primaries" % (host, len(prim)))
        for s in srvs:
            if s["role"] == "primary" and not (s["up"] and s["writable"]):
                problems.append("primary %s up=%s writable=%s" % (s["name"], s["up"], s["writable"]))
            elif s["role"] != "primary" and not (s["role"] == "replica" and s["up"] and not s["writable"]
                                                 and s["replicating"] and s["lag_ms"] is not None
                                                 and s["lag_ms"] <= MAX_LAG_MS):
                problems.append("%s is not a healthy replica: role %s up=%s writable=%s replicating=%s lag=%s %s"
                                % (s["name"], s["role"], s["up"], s["writable"], s["replicating"], s["lag_ms"],
                                   s["note"]))
    return problems


def replication_detail(st):
    """Each server's GTID positions and semi-sync state, read on it (what an
    unsettled stack's report needs: a primary whose commits wait for an
    acknowledgement, a replica that has or lacks what they wait for)."""
    out = []
    for n in sorted(st):
        rows = h._sql_quick(n, "SELECT @@global.gtid_binlog_pos, (SELECT GROUP_CONCAT(CONCAT(variable_name, '=', "
                               "variable_value)) FROM information_schema.GLOBAL_STATUS WHERE variable_name IN "
                               "('RPL_SEMI_SYNC_MASTER_CLIENTS', 'RPL_SEMI_SYNC_MASTER_WAIT_SESSIONS', "
                               "'RPL_SEMI_SYNC_SLAVE_STATUS'))")
        repl = ""
        try:
            p = subprocess.run(["mariadb", "--defaults-file=" + h.server_cnf(n), "--connect-timeout=2", "-e",
                                "SHOW SLAVE STATUS\\G"], capture_output=True, text=True, timeout=10)
            fields = {k.strip(): v.strip() for k, v in (line.split(": ", 1) for line in p.stdout.splitlines()
                                                        if ": " in line)}
            if fields:
                repl = " io=%s sql=%s Gtid_IO_Pos=%s" % (fields.get("Slave_IO_Running"),
                                                         fields.get("Slave_SQL_Running"), fields.get("Gtid_IO_Pos"))
        except (subprocess.TimeoutExpired, AssertionError):
            repl = " (SHOW SLAVE STATUS did not answer)"
        if rows is None:
            out.append("      %-6s (does not answer)" % n)
        else:
            out.append("      %-6s binlog %s; %s%s" % (n, rows[0][0], (rows[0][1] or "").lower(), repl))
    return "\n".join(out)


_unsettled = False  # a cleanup could not settle the stack


def wait_settled(timeout=30):
    """Waits until every host has one writable primary and healthy replicas;
    returns the status. Fails with the last status and the guard's log (at
    once after a cleanup that could not settle them)."""
    global _unsettled
    if _unsettled:
        timeout = min(timeout, 3)
    deadline = time.time() + timeout
    while True:
        st = status()
        problems = settle_problems(st)
        if not problems:
            _unsettled = False
            return st
        if time.time() > deadline:
            raise AssertionError("the servers did not settle within %d s: %s\n%s\nreplication:\n%s\nguard log:\n%s"
                                 % (timeout, "; ".join(problems), describe_status(st), replication_detail(st),
                                    guard_log_tail()))
        time.sleep(0.3)


def netns():
    """Whether the stack runs its MariaDB servers in network namespaces of
    their own (BC_NETNS=1 when it was made: partitions are possible)."""
    try:
        with open(os.path.join(stack.get().dir, "stack.env")) as f:
            return any(line.strip() == "NETNS=1" for line in f)
    except OSError:
        return False


def replica_of(host):
    """The server the catalog names a replica of host (the first one)."""
    reps = sorted(s for s, (hh, role, _) in h.catalog_servers().items() if hh == host and role == "replica")
    if not reps:
        raise AssertionError("no replica of %s in the catalog: %s" % (host, h.catalog_servers()))
    return reps[0]


def guard_log_tail(n=25):
    try:
        with open(os.path.join(stack.get().dir, "guard", "guard.log")) as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return "(no guard log: %s)" % e


def guard_log_since(offset):
    """The guard's log from a byte offset (guard_log_size() earlier)."""
    try:
        with open(os.path.join(stack.get().dir, "guard", "guard.log"), "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def guard_log_size():
    try:
        return os.path.getsize(os.path.join(stack.get().dir, "guard", "guard.log"))
    except OSError:
        return 0


# ---------------------------------------------------------------- devstack

def devstack(*args, timeout=120):
    """tools/devstack ARGS --dir DIR to its end (files, not pipes: it starts
    servers that would hold a pipe open)."""
    s = stack.get()
    r = h.run([s.devstack] + list(args) + ["--dir", s.dir], timeout=timeout, via_files=True)
    if r.rc != 0:
        raise AssertionError("devstack failed: " + r.describe())
    return r


def partition(test, server):
    """Cuts server off (tools/devstack partition) and returns (when, heal):
    heal() heals it once, however often it is called; test's cleanup calls
    it too, so a failed test leaves no server cut off."""
    devstack("partition", server)
    t_cut = time.time()
    healed = [False]

    def heal_it():
        if not healed[0]:
            healed[0] = True
            devstack("heal", server)
    test.addCleanup(heal_it)
    return t_cut, heal_it


def kill9(server):
    """SIGKILLs one server of the stack (tools/devstack kill); returns when."""
    devstack("kill", server)
    return time.time()


def restart(server):
    devstack("restart-host", server, timeout=180)


def heal():
    """Restarts whatever server of the stack is down (after a failed test)."""
    s = stack.get()
    p = subprocess.run([s.devstack, "status", "--dir", s.dir], capture_output=True, text=True, timeout=60)
    for line in p.stdout.splitlines():
        m = re.match(r"^(\S+)\s+port\s+\S+\s+pid\s+\S+\s+(.*)$", line)
        if m and not m.group(2).startswith("up"):
            log("cleanup: %s is %s: restart-host" % (m.group(1), m.group(2)))
            try:
                restart(m.group(1))
            except AssertionError as e:
                log("cleanup: %s" % e)


def _cnf_value(path, key):
    with open(path) as f:
        for line in f:
            k, sep, v = line.partition("=")
            if sep and k.strip() == key:
                return v.strip()
    raise AssertionError("no %s in %s" % (key, path))


def rebuild(server):
    """Makes server a copy of its host's primary again, as the runbook's
    rebuild does (docs/operations.md), with a logical dump instead of a
    backup: replication stopped (its settings kept, so that the guard does
    not start it again meanwhile), the cluster's schemas dropped and loaded
    from a dump of the primary (mariadb-dump --gtid), its binlog reset, then
    replicating from the dump's GTID position, and its role set back to
    'replica' in the catalog. For a server marked 'rebuild', or a replica
    whose replication broke (diverged)."""
    host = [hh for n, (hh, _, _) in h.catalog_servers().items() if n == server][0]
    prim = h.primary_of(host)
    pcnf = h.server_cnf(prim)
    like = stack.get().prefix.replace("_", "\\_") + "\\_%"
    q = "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE '%s'" % like
    dbs = sorted(r[0] for r in h.sql_server(prim, q))
    log("rebuilding %s from %s (%d schemas)" % (server, prim, len(dbs)))
    drop = "".join("DROP DATABASE IF EXISTS `%s`; " % r[0] for r in h.sql_server(server, q))
    h.sql_server(server, "STOP SLAVE; SET GLOBAL read_only = 1; SET SESSION sql_log_bin = 0; %s RESET MASTER" % drop)
    dump = subprocess.run(["mariadb-dump", "--defaults-file=" + pcnf, "--single-transaction", "--gtid",
                           "--master-data=2", "--routines", "--triggers", "--events", "--databases"] + dbs,
                          capture_output=True, timeout=300)
    if dump.returncode != 0:
        raise AssertionError("mariadb-dump of %s failed: %s" % (prim, dump.stderr.decode()[-1000:]))
    pos = re.search(rb"gtid_slave_pos\s*=\s*'([0-9,-]*)'", dump.stdout)
    if not pos:
        raise AssertionError("no GTID position in the dump of %s" % prim)
    load = subprocess.run(["mariadb", "--defaults-file=" + h.server_cnf(server),
                           "--init-command=SET SESSION sql_log_bin = 0"], input=dump.stdout,
                          capture_output=True, timeout=300)
    if load.returncode != 0:
        raise AssertionError("loading %s's dump into %s failed: %s" % (prim, server, load.stderr.decode()[-1000:]))
    h.sql_server(server, "RESET MASTER; SET GLOBAL gtid_slave_pos = '%s'; "
                 "CHANGE MASTER TO MASTER_HOST = '%s', MASTER_PORT = %s, MASTER_USER = '%s', MASTER_PASSWORD = '%s', "
                 "MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = 1; START SLAVE"
                 % (pos.group(1).decode(), _cnf_value(pcnf, "host"), int(_cnf_value(pcnf, "port")),
                    _cnf_value(pcnf, "user"), _cnf_value(pcnf, "password")))
    h.sql(h.global_host(), "UPDATE `%s`.servers SET role = 'replica', note = 'rebuilt by tests/failover' "
          "WHERE name = '%s'" % (h.global_schema(), server))


def recover():
    """After a test: brings back the servers that are down, then, if the
    roles do not settle, works around what the guard left undone: a global
    host without a writable server (the guard restarted), a read-only server
    marked 'rebuild' or whose replication broke (rebuilt from its primary).
    A writable server the catalog does not call primary is left alone (only
    the guard or an operator may decide). Logs each step; if the stack still
    does not settle, the next tests fail at once instead of waiting."""
    global _unsettled
    heal()
    try:
        wait_settled(8)
        return
    except AssertionError as e:
        log("cleanup: %s" % str(e).split("\n")[0])
    try:
        try:
            h.catalog_servers(timeout=2)
        except AssertionError:
            log("cleanup: no writable server of the global host: restarting the guard")
            devstack("restart-host", "guard")
        for n, srv in sorted(status().items()):
            if srv["up"] and not srv["writable"] and (
                    srv["role"] == "rebuild" or (srv["role"] == "replica" and not srv["replicating"] and srv["note"])):
                rebuild(n)
        wait_settled(15)
    except AssertionError as e:
        _unsettled = True
        log("cleanup: the stack did not settle; the next tests will say so at once: %s" % e)


# ---------------------------------------------------------------- GTIDs

def gtid_state(server):
    """{(domain, server_id): last seq} of @@gtid_binlog_state on a server."""
    return parse_gtids(h.sql_server(server, "SELECT @@global.gtid_binlog_state")[0][0] or "")


def parse_gtids(text):
    out = {}
    for d, s, n in re.findall(r"(\d+)-(\d+)-(\d+)", text or ""):
        k = (int(d), int(s))
        out[k] = max(out.get(k, 0), int(n))
    return out


def server_ids(server):
    """(gtid_domain_id, server_id) of a server."""
    d, s = h.sql_server(server, "SELECT @@global.gtid_domain_id, @@global.server_id")[0]
    return int(d), int(s)


def binlog_gtids_offline(server):
    """{(domain, server_id): last seq} of the GTIDs in a stopped server's
    binlog files (mariadb-binlog on its datadir): what it wrote before it
    died, read before anything can change it."""
    data = os.path.join(stack.get().dir, server, "data")
    files = sorted(f for f in os.listdir(data) if re.fullmatch(r"binlog\.\d+", f))
    if not files:
        raise AssertionError("no binlog files in %s" % data)
    p = subprocess.run(["mariadb-binlog"] + [os.path.join(data, f) for f in files],
                       capture_output=True, text=True, timeout=120)
    gtids = re.findall(r"^#.*\bGTID (\d+-\d+-\d+)", p.stdout, re.M)
    if not gtids:
        raise AssertionError("mariadb-binlog found no GTID in %s (exit %d): %s"
                             % (files, p.returncode, h.tail(p.stderr, 500)))
    return parse_gtids(" ".join(gtids))


# ---------------------------------------------------------------- metrics

def metrics(url):
    """{(name, frozenset of labels): value} of one API server's /metrics."""
    out = {}
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)\{([^}]*)\}\s+(\S+)$", line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def db_queries(mx, host):
    """Statements of one API server on host's primary so far."""
    return sum(v for (n, lb), v in mx.items() if n == "betcity_db_queries_total" and ("host", host) in lb)


def replica_queries(mx, host, server=None):
    return sum(v for (n, lb), v in mx.items() if n == "betcity_db_replica_queries_total" and ("host", host) in lb
               and (server is None or ("server", server) in lb))


def replica_lag(mx, host, server):
    vals = [v for (n, lb), v in mx.items() if n == "betcity_db_replica_lag_ms" and ("host", host) in lb
            and ("server", server) in lb]
    return vals[0] if vals else None


# ---------------------------------------------------------------- acknowledged bets as they come

class AckedWatch:
    """Reads loadgen's --acked file every 20 ms and records when each bet id
    first appeared (loadgen writes a bet's line as its 201 arrives)."""

    def __init__(self, lg):
        self.path = lg.acked_path
        self.seen = []  # (time, bet id)
        self._stop = threading.Event()
        self._pos = 0
        self._buf = ""
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _poll(self):
        try:
            with open(self.path) as f:
                f.seek(self._pos)
                chunk = f.read()
                self._pos = f.tell()
        except OSError:
            return
        now = time.time()
        self._buf += chunk
        lines = self._buf.split("\n")
        self._buf = lines.pop()
        for line in lines:
            parts = line.split()
            if parts:
                self.seen.append((now, int(parts[0])))

    def _run(self):
        while not self._stop.is_set():
            self._poll()
            self._stop.wait(0.02)

    def stop(self):
        self._stop.set()
        self.t.join(5)
        self._poll()

    def first_after(self, t, pred=lambda b: True):
        """Time of the first acknowledged bet (with pred) seen after t, or None."""
        for when, b in self.seen:
            if when > t and pred(b):
                return when
        return None

    def after(self, t, pred=lambda b: True):
        return [b for when, b in self.seen if when > t and pred(b)]


# ---------------------------------------------------------------- after a failover

def failover_problems(roles, old, new, watch, report, t_event, shard, what, recover_s):
    """What is wrong after host's primary old was lost at t_event (killed or
    cut off) and new promoted: the catalog's roles (new 'primary', old
    'fenced'); the watched shard's first acknowledged bet later than
    down_after_ms / 2 after the event (earlier ones went to the old primary)
    and loadgen's longest gap between two of them, each within recover_s.
    Returns (problems, seconds to the first bet back or None, time of it or
    None, loadgen's watched section)."""
    problems = []
    if not (roles.get(new, ("", ""))[1] == "primary" and roles.get(old, ("", ""))[1] == "fenced"):
        problems.append("catalog roles after the failover: %s is %s, %s is %s; want primary and fenced"
                        % (new, roles.get(new), old, roles.get(old)))
    t_back = watch.first_after(t_event + DOWN_AFTER_MS / 2000.0, lambda b: h.stack.shard_of(b) == shard)
    recover = None if t_back is None else t_back - t_event
    if recover is None or recover > recover_s:
        problems.append("shard %d's first acknowledged bet after the %s came %s s after it, want <= %.1f"
                        % (shard, what, "never" if recover is None else "%.2f" % recover, recover_s))
    ws = (h.watch_section(report) or {}).get("watched") or {}
    if (ws.get("max_gap_ms") or 1e9) > recover_s * 1000:
        problems.append("longest gap between two acknowledged bets of shard %d: %s ms, want <= %d: %s"
                        % (shard, ws.get("max_gap_ms"), recover_s * 1000, json.dumps(ws)))
    return problems, recover, t_back, ws
