"""What the resharding tests build on: the stack (through tests/e2e's stack,
client and fixtures modules), SQL on one host, the shard map as it is now,
and the tools run as child processes: shardctl (moves streamed as JSON
events), fillshard, loadgen and an extra API server that never polls the map.

Everything a test starts is stopped by stop_all(), which main.py runs after
every test module and at exit, also on failure or interrupt.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.append(os.path.join(ROOT, "tests", "e2e"))  # after tests/reshard: its test_* names differ

import fixtures  # noqa: E402
import stack  # noqa: E402
from client import Client, RequestFailed  # noqa: E402

_children = []  # every process started here, stopped by stop_all()
_children_lock = threading.Lock()


def log(msg):
    sys.stdout.write("    [reshard] %s\n" % msg)
    sys.stdout.flush()


def build_dir():
    b = os.environ.get("BUILD", "build")
    return b if os.path.isabs(b) else os.path.join(ROOT, b)


def tool(name):
    return os.path.join(build_dir(), name)


_scratch = None


def scratch_dir():
    """A directory for the files of this run (acked bets, logs, plans), in the
    stack directory (so BC_KEEP_STACK=1 keeps them)."""
    global _scratch
    if _scratch is None:
        _scratch = tempfile.mkdtemp(prefix="reshard.", dir=stack.get().dir or tempfile.gettempdir())
    return _scratch


def _track(p):
    with _children_lock:
        _children.append(p)
    return p


def stop_all():
    """SIGKILLs every process this module started that is still running."""
    with _children_lock:
        procs = list(_children)
        _children.clear()
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass


def tail(text, n=2500):
    text = text or ""
    return text if len(text) <= n else "…" + text[-n:]


# ---------------------------------------------------------------- SQL

def hosts():
    """The MariaDB hosts of the stack directory (db1, db2, …, also added ones)."""
    d = stack.get().dir
    return sorted((x for x in os.listdir(d) if x.startswith("db") and x[2:].isdigit()
                   and os.path.isfile(os.path.join(d, x, "client.cnf"))), key=lambda x: int(x[2:]))


def server_cnf(server):
    """DIR/<server>/client.cnf of one MariaDB server of the stack (db2, db2b, …)."""
    path = os.path.join(stack.get().dir, server, "client.cnf")
    if not os.path.isfile(path):
        raise AssertionError("no %s: %r is not a server of the stack directory" % (path, server))
    return path


def cnf(host):
    """client.cnf of the server that is host's primary now (primary_of)."""
    return server_cnf(primary_of(host))


def sql(host, query, timeout=120):
    """Rows (lists of strings, None for NULL) of a query on one host's primary
    (devstack name of the host; in a stack with replicas, the server the
    catalog names its primary now)."""
    return stack.get().sql_cnf(cnf(host), query, timeout)


def sql_server(server, query, timeout=120):
    """Rows of a query on one server (db2b, or db2 itself), whatever its role."""
    return stack.get().sql_cnf(server_cnf(server), query, timeout)


# ---------------------------------------------------------------- replicas
# In a stack with replicas (devstack BC_REPLICAS=1) a host of the map is a
# replication group: its own server (named like the host) and its replica
# DIR/<host>b. Which of them is the primary is the catalog's servers table,
# read on the global group's writable server; without replicas a host is its
# one server and nothing is read.

def servers_of(host):
    """The stack's servers of host's group: [host, host + "b", …]."""
    d = stack.get().dir
    reps = sorted(x for x in os.listdir(d) if len(x) == len(host) + 1 and x.startswith(host)
                  and x[-1].isalpha() and os.path.isfile(os.path.join(d, x, "client.cnf")))
    return [host] + reps


def global_host():
    """cluster.global_host of the stack's cluster.yaml (db1)."""
    with open(stack.get().cluster) as f:
        for line in f:
            parts = line.split(":", 1)
            if parts[0].strip() == "global_host" and len(parts) == 2:
                return parts[1].strip().strip("\"'")
    return "db1"


def _sql_quick(server, query):
    """Rows of a query on one server that fails fast (2 s to connect, 10 s in
    all) when it is down or hung; None instead of an exception."""
    try:
        p = subprocess.run(["mariadb", "--defaults-file=" + server_cnf(server), "--connect-timeout=2",
                            "-N", "-B", "-e", query], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return None
    if p.returncode != 0:
        return None
    return [line.split("\t") for line in p.stdout.split("\n") if line]


def catalog_servers(timeout=15):
    """{server: (host, role, note)} of the catalog's servers table, read on the
    global group's writable server; waits up to timeout for one (a failover
    of the global host under way)."""
    deadline = time.time() + timeout
    while True:
        for srv in servers_of(global_host()):
            rows = _sql_quick(srv, "SELECT name, host, role, note FROM `%s`.servers WHERE @@global.read_only = 0 "
                              "UNION ALL SELECT '', '', '', '' FROM DUAL WHERE @@global.read_only = 0"
                              % global_schema())
            if rows:
                return {r[0]: (r[1], r[2], r[3]) for r in rows if r[0]}
        if time.time() > deadline:
            raise AssertionError("no writable server of the global host among %s for %d s"
                                 % (servers_of(global_host()), timeout))
        time.sleep(0.2)


def primary_of(host, timeout=15):
    """The server the catalog names host's primary now (host itself in a stack
    without replicas)."""
    if len(servers_of(host)) == 1:
        return host
    deadline = time.time() + timeout
    while True:
        prim = [s for s, (h, role, _) in catalog_servers(timeout).items() if h == host and role == "primary"]
        if len(prim) == 1:
            return prim[0]
        if time.time() > deadline:
            raise AssertionError("the catalog names %d primaries of %s: %s" % (len(prim), host, prim))
        time.sleep(0.2)


def sql_error(host, query, timeout=60):
    """Runs a statement expected to fail; returns (exit status, stderr)."""
    p = subprocess.run(["mariadb", "--defaults-file=" + cnf(host), "-N", "-B", "-e", query],
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stderr.strip()


def schema(shard):
    return stack.get().schema(shard)


def global_schema():
    return stack.get().global_schema()


def shard_map():
    """{shard: host} as bc_global.shard_map says now."""
    rows = sql("db1", "SELECT shard, host FROM `%s`.shard_map" % global_schema())
    return {int(s): h for s, h in rows}


def shard_row(shard):
    """(host, state) of one shard in the map."""
    rows = sql("db1", "SELECT host, state FROM `%s`.shard_map WHERE shard = %d" % (global_schema(), shard))
    assert len(rows) == 1, "shard %d: map rows %s" % (shard, rows)
    return rows[0][0], int(rows[0][1])


def schema_exists(host, shard):
    return bool(sql(host, "SELECT 1 FROM information_schema.schemata WHERE schema_name = '%s'" % schema(shard)))


def count(host, shard, table="bets", where="1"):
    return int(sql(host, "SELECT COUNT(*) FROM `%s`.`%s` WHERE %s" % (schema(shard), table, where))[0][0])


def ids_present(host, shard, ids, table="bets"):
    """The subset of ids that are rows of the table in the shard's schema on host."""
    found = set()
    ids = sorted({int(i) for i in ids})
    for i in range(0, len(ids), 5000):
        part = ids[i:i + 5000]
        for (x,) in sql(host, "SELECT id FROM `%s`.`%s` WHERE id IN (%s)"
                        % (schema(shard), table, ",".join(map(str, part)))):
            found.add(int(x))
    return found


def bets_per_shard(shards=None):
    """{shard: bets rows} on the host the map names, one statement per host."""
    m = shard_map()
    by_host = {}
    for s in sorted(m if shards is None else shards):
        by_host.setdefault(m[s], []).append(s)
    out = {}
    for h, shs in by_host.items():
        q = " UNION ALL ".join("(SELECT %d, COUNT(*) FROM `%s`.bets)" % (s, schema(s)) for s in shs)
        for s, n in sql(h, q):
            out[int(s)] = int(n)
    return out


def other_host(host, among=None):
    hs = [h for h in (among or hosts()) if h != host]
    assert hs, "no host besides %s" % host
    return hs[0]


# ---------------------------------------------------------------- acknowledged bets

def read_acked(path):
    """[(bet_id, user_id, stake)] of loadgen's --acked file."""
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                out.append((int(parts[0]), int(parts[1]), int(parts[2])))
            elif line.strip():
                raise AssertionError("%s: malformed line %r" % (path, line))
    return out


def check_acked(bet_ids):
    """Problems (strings) with acknowledged bets: listed twice, or not a row of
    their shard on the host the map names now."""
    problems = []
    seen = set()
    by_shard = {}
    for b in bet_ids:
        if b in seen:
            problems.append("bet %d acknowledged twice" % b)
        seen.add(b)
        by_shard.setdefault(stack.shard_of(b), set()).add(b)
    m = shard_map()
    for s, ids in sorted(by_shard.items()):
        missing = ids - ids_present(m[s], s, ids)
        if missing:
            problems.append("%d of %d acknowledged bets of shard %d are not rows on %s: %s"
                            % (len(missing), len(ids), s, m[s], sorted(missing)[:10]))
    return problems


# ---------------------------------------------------------------- the game

def new_company():
    return fixtures.new_company()


def new_match(kickoff_in=86400):
    return fixtures.new_match(kickoff_in=kickoff_in)


def member_client(user_id, company_id, url=None):
    """A client with a token made with the stack's key for a user that exists
    only as a row (e.g. written by fillshard)."""
    tok = fixtures.make_token(stack.get().secret(), user_id, company_id, 0, int(time.time()) + 3600)
    return Client(url or stack.get().api_url, tok)


def users_of(shard, company_id, n=1, host=None):
    """[(user id, company id)] of n users of the company in the shard, richest first."""
    host = host or shard_map()[shard]
    rows = sql(host, "SELECT id, company_id FROM `%s`.users WHERE company_id = %d ORDER BY balance DESC, id LIMIT %d"
               % (schema(shard), int(company_id), n))
    assert len(rows) == n, "shard %d on %s has %d users of company %s, want %d" % (
        shard, host, len(rows), company_id, n)
    return [(int(u), int(c)) for u, c in rows]


_key_seq = [0]


def bet(client, match_id, stake=1, pick="home"):
    """Places one bet with an Idempotency-Key (retried on no answer); returns its id."""
    _key_seq[0] += 1
    key = "rs-%d-%d-%d" % (os.getpid(), int(time.time() * 1000), _key_seq[0])
    last = None
    for _ in range(3):
        try:
            r = client.post("/v1/bets", {"match_id": str(match_id), "pick": pick, "stake": stake},
                            headers={"Idempotency-Key": key})
        except RequestFailed as e:
            last = str(e)
            continue
        j = r.expect_json(201, msg="place a bet")
        return int(j["id"])
    raise AssertionError("bet not placed: %s" % last)


# ---------------------------------------------------------------- tools

def parse_events(text):
    """The JSON objects of --json output, one per line (other lines skipped)."""
    out = []
    for line in (text or "").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


class Result:
    def __init__(self, argv, rc, out, err, seconds):
        self.argv, self.rc, self.out, self.err, self.seconds = argv, rc, out, err, seconds
        self.events = parse_events(out)

    def of(self, kind):
        return [e for e in self.events if e.get("event") == kind]

    def describe(self):
        return "`%s` exit %s after %.1f s\n--- stdout:\n%s\n--- stderr:\n%s" % (
            " ".join(os.path.relpath(a, ROOT) if a.startswith(ROOT) else a for a in self.argv),
            self.rc, self.seconds, tail(self.out), tail(self.err))


def run(argv, timeout=300, env_extra=None, via_files=False):
    """Runs a tool to its end. via_files: its stdout and stderr go to files, not
    pipes, for tools that leave a daemon holding them (devstack starting a server)."""
    env = dict(os.environ)
    env.pop("BC_SHARDCTL_HOLD", None)
    env.update(env_extra or {})
    t0 = time.time()
    if via_files:
        with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
            try:
                rc = subprocess.run(argv, stdout=fo, stderr=fe, timeout=timeout, env=env, cwd=ROOT).returncode
            except subprocess.TimeoutExpired:
                rc = None
            fo.seek(0)
            fe.seek(0)
            r = Result(argv, rc, fo.read(), fe.read(), time.time() - t0)
        if rc is None:
            raise AssertionError("timed out after %d s: %s" % (timeout, r.describe()))
        return r
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        r = Result(argv, None, out, err, time.time() - t0)
        raise AssertionError("timed out after %d s: %s" % (timeout, r.describe()))
    return Result(argv, p.returncode, p.stdout, p.stderr, time.time() - t0)


def shardctl(*args, timeout=300, env_extra=None):
    return run([tool("shardctl"), "-c", stack.get().cluster] + [str(a) for a in args],
               timeout=timeout, env_extra=env_extra)


def fillshard(shard, users, bets, match=None, company=None, timeout=300):
    argv = [tool("fillshard"), "-c", stack.get().cluster, "--shard", str(shard),
            "--users", str(users), "--bets", str(bets)]
    if match is not None:
        argv += ["--match", str(match)]
    if company is not None:
        argv += ["--company", str(company)]
    r = run(argv, timeout=timeout)
    if r.rc != 0:
        raise AssertionError("fillshard failed: " + r.describe())
    return r


class Proc:
    """A tool in the background: stdout lines read as they come (JSON events
    collected), stderr to a file."""

    def __init__(self, argv, name, env_extra=None):
        self.argv = argv
        self.name = name
        self.errpath = os.path.join(scratch_dir(), "%s.%d.err" % (name, int(time.time() * 1000)))
        env = dict(os.environ)
        env.pop("BC_SHARDCTL_HOLD", None)
        env.update(env_extra or {})
        self.lines = []
        self.events = []
        self.cond = threading.Condition()
        self.t0 = time.time()
        self._err = open(self.errpath, "w")
        self.p = _track(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._err, text=True,
                                         env=env, cwd=ROOT, start_new_session=True))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stdout:
            ev = parse_events(line)
            with self.cond:
                self.lines.append(line)
                if ev:
                    ev[0]["_t"] = time.time()
                    self.events.extend(ev)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    @property
    def out(self):
        with self.cond:
            return "".join(self.lines)

    @property
    def err(self):
        try:
            with open(self.errpath) as f:
                return f.read()
        except OSError:
            return ""

    def of(self, kind):
        with self.cond:
            return [e for e in self.events if e.get("event") == kind]

    def wait_event(self, pred, timeout, what="an event"):
        """The first event for which pred is true; fails if the process exits
        or timeout passes first."""
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for e in self.events:
                    if pred(e):
                        return e
                if not self.reader.is_alive() and self.p.poll() is not None:
                    raise AssertionError("%s exited (status %s) before %s:\n%s" % (
                        self.name, self.p.returncode, what, self.describe()))
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("no %s within %d s:\n%s" % (what, timeout, self.describe()))
                self.cond.wait(min(left, 0.5))

    def wait(self, timeout):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still running after %d s:\n%s" % (self.name, timeout, self.describe()))
        self.reader.join(10)
        self._err.close()
        return rc

    def kill9(self):
        """SIGKILL to the tool (not only its group leader: it is the leader)."""
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait(10)
        self.reader.join(10)
        self._err.close()

    def describe(self):
        return "`%s` (pid %d, status %s, %.1f s)\n--- stdout:\n%s\n--- stderr:\n%s" % (
            " ".join(os.path.relpath(a, ROOT) if a.startswith(ROOT) else a for a in self.argv),
            self.p.pid, self.p.poll(), time.time() - self.t0, tail(self.out), tail(self.err))


def move_proc(shard, to_host, *extra, hold=None):
    """shardctl move SHARD TO-HOST --json [extra] in the background."""
    argv = [tool("shardctl"), "-c", stack.get().cluster, "move", str(shard), to_host, "--json"] + list(extra)
    return Proc(argv, "move%d" % shard, {"BC_SHARDCTL_HOLD": hold} if hold else None)


def wait_hold(mv, point, timeout=120):
    return mv.wait_event(lambda e: e.get("event") == "hold" and e.get("at") == point,
                         timeout, 'the {"event":"hold","at":"%s"} line' % point)


def differences(events):
    """The differences verify reported, as dicts with table, key and what: the
    contract's "differences" list in the verify event, or (as shardctl does
    now) one {"event":"difference"} line each beside a count in the verify event."""
    out = []
    for e in events:
        if e.get("event") == "verify" and isinstance(e.get("differences"), list):
            out += e["differences"]
        elif e.get("event") == "difference":
            out.append(e)
    return out


def verify_events_clean(events):
    """Problems of verify events: none at all, or differences reported."""
    v = [e for e in events if e.get("event") == "verify"]
    if not v:
        return ["no verify event"]
    diffs = differences(events)
    counted = [e for e in v if isinstance(e.get("differences"), int) and e["differences"] != 0]
    if diffs or counted:
        return ["verify found differences: %s %s" % (json.dumps(counted)[:500], json.dumps(diffs)[:1500])]
    return []


# ---------------------------------------------------------------- loadgen

class Loadgen(Proc):
    """build/loadgen through a URL, with --acked and --json; stop() ends it
    with SIGINT (in-flight requests finish) and returns its JSON report.
    With trace=True also --trace: trace() gives every operation of the load."""

    def __init__(self, company, match_id, users, duration=600, rate=0, mix="bet=60,odds=40",
                 watch_shard=None, shard_users=None, threads=8, url=None, prefix=None, stake=1,
                 trace=False):
        self.acked_path = os.path.join(scratch_dir(), "acked.%d.txt" % int(time.time() * 1000))
        self.trace_path = self.acked_path.replace("acked.", "trace.") if trace else None
        self.prefix = prefix or fixtures.uniq("rs").replace("-", ".")
        argv = [tool("loadgen"), "--url", url or stack.get().api_url, "--users", str(users),
                "--duration", str(duration), "--rate", str(rate), "--mix", mix,
                "--company", company["slug"], "--join-code", company["join_code"],
                "--email-prefix", self.prefix, "--match", str(match_id), "--stake", str(stake),
                "--threads", str(threads), "--acked", self.acked_path, "--json"]
        if watch_shard is not None:
            argv += ["--watch-shard", str(watch_shard)]
        if shard_users is not None:
            argv += ["--shard-users", "%d:%d" % shard_users]
        if stack.get().shards:
            argv += ["--shards", str(stack.get().shards)]
        if self.trace_path:
            argv += ["--trace", self.trace_path]
        super().__init__(argv, "loadgen")
        self.report = None

    def wait_loading(self, timeout=120):
        """Waits until phase 2 (the load) has started."""
        deadline = time.time() + timeout
        while " s of load on " not in self.err:
            if self.p.poll() is not None:
                raise AssertionError("loadgen exited before the load started:\n" + self.describe())
            if time.time() > deadline:
                raise AssertionError("loadgen did not start its load within %d s:\n%s" % (timeout, self.describe()))
            time.sleep(0.2)

    def stop(self, timeout=60):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGINT)
        rc = self.wait(timeout)
        reports = [e for e in parse_events(self.out) if "ops" in e or "bets_acked" in e]
        if rc != 0 or not reports:
            raise AssertionError("loadgen ended with status %s and no JSON report:\n%s" % (rc, self.describe()))
        self.report = reports[-1]
        return self.report

    def acked(self):
        return read_acked(self.acked_path)

    def trace(self):
        """[(unix s the operation was due, op, latency ms, status, ms after it
        was due that loadgen started it)] of --trace."""
        out = []
        with open(self.trace_path) as f:
            for line in f:
                p = line.split()
                if len(p) != 5:
                    raise AssertionError("%s: malformed line %r" % (self.trace_path, line))
                out.append((int(p[0]) / 1000.0, p[1], int(p[2]) / 1000.0, int(p[3]), int(p[4]) / 1000.0))
        return out


def trace_p99(trace, op, t0=None, t1=None, col=2):
    """(count, p99) of column col (2: the latency, 4: the start delay; ms) of
    op's operations due in [t0, t1) of a Loadgen trace (nearest rank, as
    loadgen's report); (0, None) when there were none."""
    ms = sorted(t[col] for t in trace if t[1] == op and (t0 is None or t[0] >= t0) and (t1 is None or t[0] < t1))
    if not ms:
        return 0, None
    return len(ms), ms[max(0, -(-99 * len(ms) // 100) - 1)]


def watch_section(report):
    """The --watch-shard part of a loadgen --json report:
    {"shard": N, "watched": {...}, "others": {...}}, each group with users,
    count, acked, errors, p50_ms, p99_ms, max_ms, max_gap_ms; None without it."""
    w = report.get("watch")
    return w if isinstance(w, dict) else None


def loadgen_errors(report):
    """(errors of bets, description): non-2xx answers that are not game
    refusals, transport errors and unknown outcomes."""
    bets = report.get("bets") or {}
    st = report.get("status_counts") or {}
    bad = {k: v for k, v in st.items() if v and k not in ("200", "201") and k != "422"}
    n = sum(bad.values()) + int(report.get("transport_errors") or 0) + int(bets.get("unknown") or 0)
    return n, "status %s, transport errors %s, unknown bets %s, rejected %s" % (
        bad, report.get("transport_errors"), bets.get("unknown"), bets.get("rejected"))


def unavailable_by_cause():
    """{cause: 503s answered for it so far} summed over the stack's API
    servers: betcity_db_unavailable_total of each one's /metrics (timeout: a
    statement past its deadline; moved: a cut-over longer than move_wait_ms)."""
    out = {}
    for url in stack.get().api_urls:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        for cause, v in re.findall(r'^betcity_db_unavailable_total\{[^}]*cause="(\w+)"\}\s+(\d+)$', text, re.M):
            out[cause] = out.get(cause, 0) + int(v)
    if not out:
        raise AssertionError("no betcity_db_unavailable_total in the API servers' /metrics")
    return out


def load_errors_under_move(report, before, after, tolerate=0.02):
    """(problems, 503s by cause) of a load that ran while shards moved, from
    loadgen's report and unavailable_by_cause() taken before and after it.

    A move must never answer 503 itself: a cut-over that outlasts
    move_wait_ms (cause "moved") is always a problem. A statement past its
    800 ms deadline (cause "timeout") is a host too slow for a moment, which
    docs/api.md answers with 503 and an unknown outcome: on a machine the
    copies and other suites load, up to `tolerate` of loadgen's requests may
    meet it, their bets counted as unknown outcomes by the row checks.
    Anything else loadgen_errors() counts is a problem."""
    causes = {c: after.get(c, 0) - before.get(c, 0) for c in after}
    causes = {c: n for c, n in causes.items() if n}
    problems = []
    if causes.get("moved"):
        problems.append("%d answers 503 because a cut-over outlasted move_wait_ms" % causes["moved"])
    st = report.get("status_counts") or {}
    n503 = int(st.get("503") or 0)
    requests = sum(int(v or 0) for v in st.values()) + int(report.get("transport_errors") or 0)
    slow = min(n503, causes.get("timeout", 0))
    if slow > tolerate * max(requests, 1):
        problems.append("%d of %d requests answered 503 at the statement deadline, want at most %.0f %%"
                        % (slow, requests, 100 * tolerate))
        slow = 0
    n, what = loadgen_errors(report)
    unknown = int((report.get("bets") or {}).get("unknown") or 0)
    if n - slow - min(slow, unknown) > 0:
        problems.append("loadgen errors: %s; 503s by cause %s" % (what, causes))
    return problems, causes


# ---------------------------------------------------------------- an API server that never polls the map

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StaleApi:
    """betcity-api --no-map-poll on a free port, with the stack's cluster file
    and token key: it keeps the map it loaded at start unless a shard
    answers "moved"."""

    def __init__(self, name="rsstale"):
        s = stack.get()
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.logpath = os.path.join(scratch_dir(), "%s.log" % name)
        self._log = open(self.logpath, "w")
        self.argv = [tool("betcity-api"), "-c", s.cluster, "--listen", "127.0.0.1:%d" % self.port,
                     "--secret-file", os.path.join(s.dir, "api.secret"), "--name", name,
                     "--threads", "4", "--no-map-poll"]
        self.p = _track(subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                         cwd=ROOT, start_new_session=True))
        deadline = time.time() + 30
        while True:
            try:
                if Client(self.url).get("/readyz", timeout=2).status == 200:
                    break
            except RequestFailed:
                pass
            if self.p.poll() is not None or time.time() > deadline:
                self.stop()
                raise AssertionError("%s did not get ready (status %s):\n%s" % (
                    " ".join(self.argv), self.p.poll(), tail(open(self.logpath).read())))
            time.sleep(0.2)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self._log.close()

    def log_tail(self):
        try:
            with open(self.logpath) as f:
                return tail(f.read(), 1500)
        except OSError:
            return ""


def check_ledger():
    rc, out = stack.get().check_ledger()
    return rc, out


# ---------------------------------------------------------------- shards for the tests

_used = set()


def pick_shards(n, on_host=None):
    """n shards no other test of this run picked, spread over the hosts (or
    all on one host), smallest numbers first."""
    m = shard_map()
    by_host = {}
    for s in sorted(m):
        if s not in _used and (on_host is None or m[s] == on_host):
            by_host.setdefault(m[s], []).append(s)
    out = []
    while len(out) < n and any(by_host.values()):
        for h in sorted(by_host):
            if by_host[h] and len(out) < n:
                out.append(by_host[h].pop(0))
    assert len(out) == n, "only %d free shards for %d" % (len(out), n)
    _used.update(out)
    return out


def settle(shard):
    """After a failed test: rolls back (or else finishes) an unfinished move of
    the shard, so that the tests after it start from a quiet map. Kills
    whatever this module started first (a held move holds the shard)."""
    stop_all()
    try:
        if shard_row(shard)[1] == 0:
            return
        for how in ("--abort", "--resume"):
            r = shardctl("move", shard, how, "--json", timeout=180)
            log("cleanup: shardctl move %d %s: exit %s" % (shard, how, r.rc))
            if shard_row(shard)[1] == 0:
                return
        log("cleanup: shard %d is still not active: %s" % (shard, shard_row(shard)))
    except AssertionError as e:
        log("cleanup of shard %d failed: %s" % (shard, e))
