"""tools/bench/scale_steps.py: the steps of tools/bench/scale (make bench-scale),
which imports them and describes the bench, its environment and its report.
Here: the settings (SCALE_*), the stack, the data (companies, fillscale, the
standings aggregates, quiet hosts), the load (loadgen, the API logs, the API
servers' VmRSS), the settlement and the standings."""

import importlib.machinery
import importlib.util
import json
import os
import random
import re
import shlex
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEVSTACK = os.path.join(ROOT, "tools", "devstack")


def env_int(name, default):
    return int(os.environ.get(name, str(default)))


USERS = env_int("SCALE_USERS", 1000000)
BETS = env_int("SCALE_BETS", 10000000)
SHARDS = env_int("SCALE_SHARDS", 512)
FIRST_USERS = min(env_int("SCALE_FIRST_USERS", 10000), USERS // 2)
RATE = env_int("SCALE_RATE", 60)
# 180 s: 5,400 requests of each op, so that a measurement's p99 is the 54th
# slowest, not the 18th of 60 s (whose p99 moved between 1.6 and 5.1 ms on
# the same stack here: docs/benchmarks.md, runs 87-98).
SECONDS = env_int("SCALE_SECONDS", 180)
SLICE = 60  # measure() also gives the p99 of each SLICE s, to show its spread
LOAD_USERS = env_int("SCALE_LOAD_USERS", 100)
KICKOFF = env_int("SCALE_KICKOFF", 60)
SETTLE_TIMEOUT = env_int("SCALE_SETTLE_TIMEOUT", 900)
STANDINGS_TIMEOUT = env_int("SCALE_STANDINGS_TIMEOUT", 600)
PER_HOST = env_int("SCALE_PER_HOST", 1)
QUIET_TIMEOUT = env_int("SCALE_QUIET_TIMEOUT", 300)
QUIET_HISTORY = 1000  # undo logs the purge may have left before a measurement
QUIET_CPU = 0.03  # of a core: a mariadbd above it is still busy (an idle one: under 0.01)
QUIET_CPU_S = 5  # over this many seconds
# Each MariaDB's buffer pool: sized for the data's hot part, as a production
# server is (devstack's 128M default is for small test stacks).
BUFFER_POOL = os.environ.get("SCALE_BUFFER_POOL", "2G")
# Each MariaDB's redo log (innodb_log_file_size).
REDO = os.environ.get("SCALE_REDO", "256M")
FILL_FLAGS = shlex.split(os.environ.get("SCALE_FILL_FLAGS", ""))
PASSWORD = "scale-password"  # fillscale's default
STRIDE = 1000003  # fillscale's: user i sits at (i * STRIDE) mod USERS
MIX = "bet=50,me=50"
STARTS = 3  # devstack start attempts (shardctl init resumes; see start_stack)


def say(msg):
    sys.stderr.write("bench-scale: %s\n" % msg)
    sys.stderr.flush()


class Failed(Exception):
    pass


_children = []  # fillscale runs, killed on exit


# ---------------------------------------------------------------- the stack

def start_stack(work):
    """devstack start with SCALE_SHARDS; (dir, seconds, attempts). devstack
    gives `shardctl init` 120 s, which 1024 shards could exceed on a small
    machine: init is idempotent and resumes, so start is run again."""
    d = os.path.join(work, "stack")
    env = dict(os.environ, BC_SHARDS=str(SHARDS), BC_PREFIX="bc", BC_API_SERVERS="2",
               BC_REPLICAS=os.environ.get("BC_REPLICAS", "0"),
               BC_DB_BUFFER_POOL=BUFFER_POOL, BC_DB_REDO=REDO)
    for k in ("BC_STACK_DIR", "STACK_DIR"):
        env.pop(k, None)
    t0 = time.time()
    for attempt in range(1, STARTS + 1):
        log = os.path.join(work, "start.%d.log" % attempt)
        with open(log, "w") as f:
            p = subprocess.run([DEVSTACK, "start", "--dir", d], stdout=f, stderr=subprocess.STDOUT, env=env)
        if p.returncode == 0:
            return d, time.time() - t0, attempt
        with open(log) as f:
            text = f.read()
        if "shardctl init failed" not in text or attempt == STARTS:
            sys.stderr.write(text[-3000:])
            raise Failed("the stack did not start")
        say("shardctl init did not finish within devstack's limit (attempt %d, %.0f s so far):"
            " starting again, init resumes" % (attempt, time.time() - t0))
    raise Failed("unreachable")


def stop_stack(work):
    d = os.path.join(work, "stack")
    if os.path.isfile(os.path.join(d, ".devstack")):
        t0 = time.time()
        p = subprocess.run([DEVSTACK, "stop", "--dir", d, "--clean"], capture_output=True, text=True)
        if p.returncode != 0:
            sys.stderr.write(p.stdout + p.stderr)
        say("stack stopped and removed in %.0f s" % (time.time() - t0))


def use_stack(d):
    """Points tests/e2e's and tests/reshard's helpers at the stack in d."""
    os.environ["BC_STACK_DIR"] = d
    os.environ["BC_CLUSTER"] = os.path.join(d, "cluster.yaml")
    os.environ["BC_DEVSTACK"] = DEVSTACK
    for k in ("BC_API_URL", "BC_API_URLS", "BC_ADMIN_EMAIL", "BC_ADMIN_PASSWORD"):
        os.environ.pop(k, None)
    sys.path.insert(0, os.path.join(ROOT, "tests", "reshard"))
    sys.dont_write_bytecode = True
    import harness
    return harness


def pids_of(d, prefix, pidfile):
    """{server: pid} of the stack's servers whose name starts with prefix."""
    out = {}
    for name in sorted(os.listdir(d)):
        path = os.path.join(d, name, pidfile)
        if name.startswith(prefix) and os.path.isfile(path):
            try:
                with open(path) as f:
                    out[name] = int(f.read().strip())
            except (OSError, ValueError):
                pass
    return out


def proc_kb(pid, field):
    """VmRSS, VmHWM, … of a process in kB; None when it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


CLK_TCK = os.sysconf("SC_CLK_TCK")
MACHINE_CPU = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def stack_pids(d):
    """{server: pid} of the stack's MariaDB servers, memcached servers, API servers and HAProxy."""
    out = {}
    for prefix, pidfile in (("db", "mysqld.pid"), ("mc", "memcached.pid"), ("api", "api.pid"),
                            ("haproxy", "haproxy.pid")):
        out.update(pids_of(d, prefix, pidfile))
    return out


def stat_cpu(text):
    """(name, utime + stime in s) of a /proc/.../stat file's text."""
    fields = text.rsplit(")", 1)[1].split()
    return text[text.index("(") + 1:text.rindex(")")], (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_cpu_s(pid):
    """CPU time of a process (utime + stime of all its threads), s; None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return stat_cpu(f.read())[1]
    except (OSError, ValueError, IndexError):
        return None


def thread_cpu_s(pid):
    """{tid: (name, cpu cgroup, CPU time s)} of each thread of pid; {} when it
    is gone. The cgroup is the thread's in the cgroup v1 cpu hierarchy ("" on
    cgroup v2)."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for t in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                comm, cpu = stat_cpu(f.read())
            with open("/proc/%d/task/%s/cgroup" % (pid, t)) as f:
                cg = next((line.split(":", 2)[2].strip() for line in f
                           if "cpu" in line.split(":")[1].split(",")), "")
        except (OSError, ValueError, IndexError):
            continue
        out[int(t)] = (comm, cg, cpu)
    return out


# The kinds of threads cpu_use() counts apart: a MariaDB server's by its cpu
# cgroup (the router's idle one for the background connections' threads), an
# API server's by the names it gives them (api_jobs.c, api_loop.c, api_work.c).
DB_THREADS = ("idle cgroup", "other")
API_THREADS = (("bc-job", "jobs"), ("bc-loop", "loops"), ("bc-work", "workers"))
API_KINDS = tuple(kind for _, kind in API_THREADS) + ("the rest",)


def thread_kind(name, comm, cgroup):
    if name.startswith("db"):
        return DB_THREADS[0] if cgroup.endswith("/betcity-background") else DB_THREADS[1]
    return next((kind for prefix, kind in API_THREADS if comm.startswith(prefix)), API_KINDS[-1])


def cpu_snapshot(pids):
    """The CPU time so far of each of pids ({name: pid}) and of the machine
    (/proc/stat: user, system, idle, steal, … of all CPUs), s; and of each
    thread of the MariaDB and API servers."""
    with open("/proc/stat") as f:
        machine = [int(x) / CLK_TCK for x in f.readline().split()[1:1 + len(MACHINE_CPU)]]
    return {"t": time.time(), "procs": {n: proc_cpu_s(p) for n, p in pids.items()},
            "threads": {n: thread_cpu_s(p) for n, p in pids.items() if n.startswith(("db", "api"))},
            "machine": dict(zip(MACHINE_CPU, machine))}


def threads_use(a, b, procs, dt):
    """Cores of each kind of thread (thread_kind(), by its cgroup and name at
    b) of each MariaDB and API server between two snapshots, and "ended": its
    threads that ended meanwhile (the process's time less its threads')."""
    out = {}
    for n, tb in b.get("threads", {}).items():
        ta = a.get("threads", {}).get(n)
        if ta is None or n not in procs:
            continue
        kinds = {}
        for tid, (comm, cg, s) in tb.items():
            before = ta[tid][2] if tid in ta and ta[tid][0] == comm else 0.0
            k = thread_kind(n, comm, cg)
            kinds[k] = kinds.get(k, 0.0) + (s - before) / dt
        ended = procs[n] - sum(kinds.values())
        out[n] = {k: round(v, 3) for k, v in kinds.items()}
        out[n]["ended"] = round(max(ended, 0.0), 3)
    return out


def threads_text(th):
    """threads_use()'s figures as text: each server's kinds of threads, in
    the order of DB_THREADS or API_KINDS, and those that ended."""
    parts = []
    for n in sorted(th):
        kinds = DB_THREADS if n.startswith("db") else API_KINDS
        parts.append("%s %s (%.2f)" % (n, " / ".join("%.2f" % th[n].get(k, 0.0) for k in kinds), th[n]["ended"]))
    return "; ".join(parts)


def cpu_use(a, b):
    """Cores in use between two cpu_snapshot()s: each process's, the MariaDB
    and API servers' by kind of thread (threads_use()), and the machine's
    busy (everything but idle, iowait and steal), steal and idle."""
    dt = max(b["t"] - a["t"], 1e-3)
    procs = {n: round((b["procs"][n] - a["procs"][n]) / dt, 3) for n in a["procs"]
             if a["procs"][n] is not None and b["procs"].get(n) is not None}
    m = {k: (b["machine"][k] - a["machine"][k]) / dt for k in MACHINE_CPU}
    return {"seconds": round(dt, 1), "procs": procs, "threads": threads_use(a, b, procs, dt),
            "machine": {"busy": round(sum(v for k, v in m.items() if k not in ("idle", "iowait", "steal")), 3),
                        "steal": round(m["steal"], 3), "idle": round(m["idle"] + m["iowait"], 3)}}


def du_bytes(path):
    p = subprocess.run(["du", "-sb", path], capture_output=True, text=True)
    return int(p.stdout.split()[0]) if p.returncode == 0 and p.stdout else 0


def binlog_bytes(datadir):
    return sum(os.path.getsize(os.path.join(datadir, f)) for f in os.listdir(datadir)
               if re.match(r"binlog\.\d+$", f))


def storage(d):
    """{host: (datadir bytes, binlog bytes, schemas' bytes, mariadbd VmRSS kB)}:
    the schemas are the tables' files (bc_*), the rest of the datadir is
    the system tablespace, undo and redo logs and the binlog."""
    out = {}
    for host, pid in pids_of(d, "db", "mysqld.pid").items():
        data = os.path.join(d, host, "data")
        schemas = [os.path.join(data, x) for x in os.listdir(data) if x.startswith("bc_")]
        p = subprocess.run(["du", "-sbc"] + schemas, capture_output=True, text=True)
        tables = int(p.stdout.splitlines()[-1].split()[0]) if p.returncode == 0 and p.stdout else 0
        out[host] = (du_bytes(data), binlog_bytes(data), tables, proc_kb(pid, "VmRSS") or 0)
    return out


# ---------------------------------------------------------------- the data

def tournament():
    """The 72 group matches of tools/seed (etc/demo/worldcup2026.json), from
    tomorrow; the first one kicks off KICKOFF s from now."""
    import datetime
    loader = importlib.machinery.SourceFileLoader("bc_seed", os.path.join(ROOT, "tools", "seed"))
    spec = importlib.util.spec_from_loader("bc_seed", loader)
    seed = importlib.util.module_from_spec(spec)
    loader.exec_module(seed)
    tomorrow = datetime.datetime.now(datetime.timezone.utc).date() + datetime.timedelta(days=1)
    matches = seed.tournament(seed.DATA, tomorrow)
    matches[0]["kickoff"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + KICKOFF))
    return matches


def company_sizes(n):
    """Skewed: 10 companies of 5 % of the users, 90 of 0.5 %, the rest in
    companies of about 100; (size, teams) each."""
    sizes = [(max(1, round(n * 0.05)), 8)] * 10 + [(max(1, round(n * 0.005)), 4)] * 90
    rest = n - sum(s for s, _ in sizes)
    if rest < 1:
        raise Failed("SCALE_USERS=%d is too small for the companies' plan" % n)
    nsmall = max(1, rest // 100)
    sizes += [(rest // nsmall + (1 if i < rest % nsmall else 0), 2) for i in range(nsmall)]
    return sizes


def make_companies(h, work):
    """The fill's companies and teams, in SQL in the global schema (as the
    API would insert them); writes fillscale's plan; returns [(id, size, teams)]."""
    g = h.global_schema()
    sizes = company_sizes(USERS)
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    rng = random.Random(7)
    tag = "%x" % int(time.time())
    rows = ["('Scale Co %d', 'scale-%s-%d', '%s')" % (i + 1, tag, i + 1,
                                                      "".join(rng.choice(alphabet) for _ in range(10)))
            for i in range(len(sizes))]
    h.sql("db1", "INSERT INTO `%s`.companies (name, slug, join_code) VALUES %s" % (g, ",".join(rows)))
    ids = {slug: int(i) for i, slug in h.sql("db1", "SELECT id, slug FROM `%s`.companies WHERE slug LIKE 'scale-%s-%%'"
                                                    % (g, tag))}
    cos = [ids["scale-%s-%d" % (tag, i + 1)] for i in range(len(sizes))]
    teams = ["(%d, 'Team %d-%d')" % (c, k + 1, t + 1) for k, (c, (_, nt)) in enumerate(zip(cos, sizes))
             for t in range(nt)]
    h.sql("db1", "INSERT INTO `%s`.teams (company_id, name) VALUES %s" % (g, ",".join(teams)))
    by_co = {}
    for tid, cid in h.sql("db1", "SELECT id, company_id FROM `%s`.teams WHERE company_id BETWEEN %d AND %d ORDER BY id"
                                 % (g, min(cos), max(cos))):
        by_co.setdefault(int(cid), []).append(int(tid))
    plan = [(c, size, by_co.get(c, [])) for c, (size, _) in zip(cos, sizes)]
    with open(os.path.join(work, "plan.txt"), "w") as f:
        f.write("# company ID SIZE TEAMS (written by tools/bench/scale)\n")
        for c, size, ts in plan:
            f.write("company %d %d %s\n" % (c, size, ",".join(map(str, ts))))
    return plan


def member_of(plan, company_index):
    """The number of a fill user seated in the plan's company_index (as fillscale seats them)."""
    start = sum(size for _, size, _ in plan[:company_index])
    end = start + plan[company_index][1]
    for i in range(USERS):
        if start <= i * STRIDE % USERS < end:
            return i
    raise Failed("no user in company %d" % plan[company_index][0])


def fill(h, work, plan, matches, lo, hi):
    """fillscale for users lo .. hi-1; its JSON figures."""
    argv = [h.tool("fillscale"), "-c", h.stack.get().cluster, "--plan", os.path.join(work, "plan.txt"),
            "--users", str(USERS), "--bets", str(BETS), "--from", str(lo), "--to", str(hi),
            "--match", ",".join(str(m["id"]) for m in matches), "--per-host", str(PER_HOST),
            "--json"] + FILL_FLAGS
    say("fillscale: users %d..%d of %d (%s)" % (lo, hi - 1, USERS, " ".join(FILL_FLAGS) or "binlog, fence check"))
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    _children.append(p)
    out, _ = p.communicate()
    if p.returncode != 0:
        raise Failed("fillscale failed (exit %s): %s" % (p.returncode, out[-1000:]))
    rep = json.loads(out.strip().splitlines()[-1])
    say("fillscale: %d rows in %.1f s (%.0f rows/s): %s" % (
        rep["rows"], rep["seconds"], rep["rows_per_s"],
        ", ".join("%s %.0f rows/s" % (x["host"], x["rows_per_s"]) for x in rep["hosts"])))
    return rep


def rebuild_standings(h):
    """The fill writes users straight into the shards; the API keeps each
    shard's standings aggregates (members, points per company and team) in
    the same transactions, so they are made here as the API would have:
    bcadmin rebuild-standings. Seconds."""
    t0 = time.time()
    p = subprocess.run([h.tool("bcadmin"), "-c", h.stack.get().cluster, "rebuild-standings"],
                       capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise Failed("bcadmin rebuild-standings failed: %s" % (p.stdout + p.stderr)[-1000:])
    say("standings aggregates rebuilt in %.1f s" % (time.time() - t0))
    return time.time() - t0


def global_status(h, host, *names):
    """{name: integer value} of host's status variables (0 for one it lacks)."""
    rows = dict(h.sql(host, "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
                            "WHERE VARIABLE_NAME IN (%s)" % ", ".join("'%s'" % n for n in names)))
    return {n: int(rows.get(n) or 0) for n in names}


def innodb_state(h):
    """{host: (checkpoint age, its adaptive flushing's low-water mark, history
    list length)} of every MariaDB host, in bytes and undo logs."""
    out = {}
    for host in h.hosts():
        rows = global_status(h, host, "INNODB_CHECKPOINT_AGE", "INNODB_HISTORY_LIST_LENGTH")
        size, lwm = h.sql(host, "SELECT @@innodb_log_file_size, @@innodb_adaptive_flushing_lwm")[0]
        out[host] = (rows["INNODB_CHECKPOINT_AGE"], int(int(size) * float(lwm) / 100),
                     rows["INNODB_HISTORY_LIST_LENGTH"])
    return out


def binlog_written(h):
    """{host: (bytes its binlog has been written, transactions whose binlog
    cache spilled to a temporary file)} since the server started."""
    out = {}
    for host in h.hosts():
        rows = global_status(h, host, "BINLOG_BYTES_WRITTEN", "BINLOG_CACHE_DISK_USE")
        out[host] = (rows["BINLOG_BYTES_WRITTEN"], rows["BINLOG_CACHE_DISK_USE"])
    return out


def wait_quiet(h, d, label):
    """Waits (at most SCALE_QUIET_TIMEOUT s) until no MariaDB host is still
    working off the fill: its checkpoint age at or under the low-water mark of
    adaptive flushing (above it the page cleaners write back the fill's pages
    at full speed), its purge caught up, and each mariadbd of the stack in d
    using under QUIET_CPU of a core over QUIET_CPU_S s (whatever else the
    fill left to do in the background). A latency
    measured in that aftermath is the bulk load's, not the data size's.
    {waited_s, quiet, checkpoint_age_mb, db_cores}."""
    t0 = time.time()
    dbs = pids_of(d, "db", "mysqld.pid")
    cores, wake = {}, None
    while True:
        st = innodb_state(h)
        quiet = all(age <= lwm and hist <= QUIET_HISTORY for age, lwm, hist in st.values())
        if quiet:
            a = cpu_snapshot(dbs)
            wake = wake_delay(QUIET_CPU_S)
            wake["spin_ms"] = spin_ms()
            cores = cpu_use(a, cpu_snapshot(dbs))["procs"]
            quiet = all(c < QUIET_CPU for c in cores.values())
        if quiet or time.time() - t0 >= QUIET_TIMEOUT:
            break
        time.sleep(2)
    waited = time.time() - t0
    ages = {host: round(age / 1048576.0, 1) for host, (age, _, _) in st.items()}
    say("%s: the hosts %s after %.0f s (checkpoint age, MB: %s; mariadbd cores: %s)" % (
        label, "are quiet" if quiet else "are still busy (SCALE_QUIET_TIMEOUT)", waited,
        ", ".join("%s %.1f" % kv for kv in sorted(ages.items())),
        ", ".join("%s %.3f" % kv for kv in sorted(cores.items())) or "-"))
    if wake:
        say("%s: the machine's wake-up delay over %d s, idle: p50 %.2f, p99 %.2f, p99.9 %.2f ms; a fixed loop "
            "%.1f ms at best, %.1f ms the median of 7" % (label, QUIET_CPU_S, wake["p50_ms"], wake["p99_ms"],
                                                           wake["p999_ms"], wake["spin_ms"][0], wake["spin_ms"][1]))
    return {"waited_s": round(waited, 1), "quiet": quiet, "checkpoint_age_mb": ages, "db_cores": cores,
            "wake": wake}


def spin_ms():
    """[best, median] ms of 7 runs of a fixed loop in this process: the
    speed one CPU gives (best) and what the machine's other guests leave of
    it (median), to tell a slower machine from a slower build."""
    runs = []
    for _ in range(7):
        t, x = time.perf_counter(), 0
        for i in range(2000000):
            x += i
        runs.append((time.perf_counter() - t) * 1000.0)
    runs.sort()
    return [round(runs[0], 1), round(runs[3], 1)]


def wake_delay(seconds):
    """How late this process wakes from 1 ms sleeps over seconds (while the
    stack idles): {"count", "p50_ms", "p99_ms", "p999_ms", "max_ms"}. On an
    idle machine this is the interpreter's and the kernel's own delay (about
    0.1 ms); the tail is the machine's: a guest whose host runs other guests
    loses its CPUs now and then, and every request's p99 pays that as well
    (docs/benchmarks.md, runs 104-108)."""
    late = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic_ns()
        time.sleep(0.001)
        late.append(time.monotonic_ns() - t - 1000000)
    late.sort()
    q = lambda p: round(late[min(len(late) - 1, int(len(late) * p))] / 1e6, 3)  # noqa: E731
    return {"count": len(late), "p50_ms": q(0.5), "p99_ms": q(0.99), "p999_ms": q(0.999), "max_ms": q(1.0)}


def count_rows(h):
    """(users, bets, ledger) rows in every shard."""
    rows = h.stack.get().sql_all_shards(
        "SELECT (SELECT COUNT(*) FROM {s}.users), (SELECT COUNT(*) FROM {s}.bets), (SELECT COUNT(*) FROM {s}.ledger)")
    return tuple(sum(int(r[i]) for r in rows) for i in range(3))


# ---------------------------------------------------------------- load

def loadgen_run(h, co, others, duration, trace=False):
    """A loadgen of MIX on the other matches; its Proc (harness.Loadgen)."""
    return h.Loadgen(co, ",".join(str(m["id"]) for m in others), LOAD_USERS, duration=duration, rate=RATE,
                     mix=MIX, prefix="scale.load", trace=trace)


def sent_p99(h, trace, op, t0=None, t1=None):
    """p99 of op's latency less loadgen's own start delay (ms: from the
    moment it sent the request) over the operations due in [t0, t1) of a
    trace (harness.trace_p99 on that difference); None when there were none."""
    return h.trace_p99([t + (t[2] - t[4],) for t in trace], op, t0, t1, col=5)[1]


def trace_windows(h, trace, windows):
    """{window: {op: {"count", "p99_ms", "late_p99_ms", "sent_p99_ms"}}} of
    loadgen's trace, for each (name, from, until) of windows (unix times; an
    operation counts where it was due). late: how long after it was due
    loadgen started it (its own CPU wait, part of the latency); sent: the
    latency from the moment it sent it (sent_p99)."""
    return {name: {op: dict(zip(("count", "p99_ms"), h.trace_p99(trace, op, t0, t1)),
                            late_p99_ms=h.trace_p99(trace, op, t0, t1, col=4)[1],
                            sent_p99_ms=sent_p99(h, trace, op, t0, t1)) for op in ("bet", "me")}
            for name, t0, t1 in windows}


def trace_figures(h, trace, t0=None, t1=None):
    """A loadgen's figures from its --trace (harness.Loadgen.trace()), over
    the operations due in [t0, t1) (unix s; all without them): the
    statuses, 5xx and transport errors (a negative status), and per op its
    count, ok (2xx), p50/p99 (nearest rank) and max, late_p99_ms (how long
    after it was due loadgen started it) and sent_p99_ms (sent_p99). The
    report's own percentiles are the upper edges of histogram buckets (up
    to about 3 % higher); these are the latencies themselves."""
    ops = [t for t in trace if (t0 is None or t[0] >= t0) and (t1 is None or t[0] < t1)]
    st = {}
    for t in ops:
        if t[3] >= 0:
            st[str(t[3])] = st.get(str(t[3]), 0) + 1
    out = {"status": st, "transport_errors": sum(1 for t in ops if t[3] < 0),
           "5xx": sum(v for k, v in st.items() if k.startswith("5"))}
    for op in ("bet", "me"):
        ms = sorted(t[2] for t in ops if t[1] == op)
        rank = lambda p: ms[max(0, -(-p * len(ms) // 100) - 1)] if ms else None  # noqa: E731
        out[op] = {"count": len(ms), "ok": sum(1 for t in ops if t[1] == op and 200 <= t[3] < 300),
                   "p50_ms": rank(50), "p99_ms": rank(99), "max_ms": ms[-1] if ms else None,
                   "late_p99_ms": h.trace_p99(ops, op, col=4)[1], "sent_p99_ms": sent_p99(h, ops, op)}
    return out


def slice_p99s(h, trace, t0, seconds):
    """{op: [p99 of each SLICE s of [t0, t0 + seconds)]} of a trace (the
    last slice may be shorter)."""
    return {op: [h.trace_p99(trace, op, t0 + k * SLICE, min(t0 + (k + 1) * SLICE, t0 + seconds))[1]
                 for k in range(-(-seconds // SLICE))] for op in ("bet", "me")}


def measure(h, co, others, label):
    """trace_figures() of a loadgen of SECONDS (its whole trace), with rps
    from its report and, for each op, slice_p99_ms: the p99 of each SLICE s
    from the first request due (slice_p99s)."""
    say("%s: loadgen %d s at %d req/s (%s), %d users" % (label, SECONDS, RATE, MIX, LOAD_USERS))
    lg = loadgen_run(h, co, others, SECONDS, trace=True)
    if lg.wait(SECONDS + 300) != 0:
        raise Failed("loadgen failed:\n" + lg.describe())
    reps = [e for e in h.parse_events(lg.out) if "ops" in e]
    if not reps:
        raise Failed("loadgen printed no report:\n" + lg.describe())
    trace = lg.trace()
    out = trace_figures(h, trace)
    out["rps"] = reps[-1].get("rps")
    slices = slice_p99s(h, trace, min((t[0] for t in trace), default=0), SECONDS)
    for op in ("bet", "me"):
        out[op]["slice_p99_ms"] = slices[op]
    return out


def api_logs(d):
    return sorted(os.path.join(d, n, "api.log") for n in os.listdir(d)
                  if re.match(r"api\d+$", n) and os.path.isfile(os.path.join(d, n, "api.log")))


def log_sizes(d):
    return {p: os.path.getsize(p) for p in api_logs(d)}


# "api1 [127.0.0.1 ]GET /path 200 1.234ms[ aborted]": the client's address
# came with the escaped access log.
ACCESS_LINE = re.compile(r"^\S+ (?:\S+ )?[A-Z]+ \S+ (\d{3}) [0-9.]+ms")


# "api1 127.0.0.1 GET /v1/me 200 1.234ms": loadgen's two operations.
OP_LINE = re.compile(r"^\S+ (?:\S+ )?(GET /v1/me|POST /v1/bets) \d{3} ([0-9.]+)ms$")


def server_p99(h, since, until):
    """{op: {"count", "p99_ms"}} (harness.trace_p99's nearest rank, as
    loadgen's figures) of the API servers' own time for loadgen's bets and
    reads, from their access logs between the offsets since and until
    (log_sizes()): from the request's headers in the server to its answer
    written, the database included; HAProxy, loopback and the client apart.
    A line reaches its log within a quarter of a second."""
    rows = []
    for path, off in since.items():
        with open(path, "rb") as f:
            f.seek(off)
            data = f.read(max(0, until.get(path, off) - off))
        for raw in data.splitlines():
            m = OP_LINE.match(raw.decode("utf-8", "replace"))
            if m:
                rows.append((None, "me" if m.group(1).startswith("GET") else "bet", float(m.group(2))))
    return {op: dict(zip(("count", "p99_ms"), h.trace_p99(rows, op))) for op in ("bet", "me")}


def log_lines(since):
    """(5xx access lines, other lines: the servers' messages) written to the
    API logs after the offsets in since."""
    bad, other = [], []
    for path, off in since.items():
        name = os.path.basename(os.path.dirname(path))
        with open(path, "rb") as f:
            f.seek(off)
            for raw in f:
                line = raw.decode("utf-8", "replace").strip()
                m = ACCESS_LINE.match(line)
                if m is None:
                    other.append("%s: %s" % (name, line))
                elif m.group(1).startswith("5"):
                    bad.append("%s: %s" % (name, line))
    return bad, other


class RssSampler(threading.Thread):
    """VmRSS of the API servers every 0.5 s until stop(): the peak per server."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = {n: 0 for n in pids}
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            for n, pid in self.pids.items():
                self.peak[n] = max(self.peak[n], proc_kb(pid, "VmRSS") or 0)
            self.done.wait(0.5)

    def stop(self):
        self.done.set()
        self.join(5)
        return dict(self.peak)


# ---------------------------------------------------------------- settlement, standings

def wait_kickoff(h, big):
    """A score may be posted only after kickoff."""
    left = h.fixtures.parse_time(big["kickoff"]) + 1 - time.time()
    if left > 0:
        say("waiting %.0f s for the kickoff of match %s" % (left, big["id"]))
        time.sleep(left)


def settle(admin, big, during, on_settled=None, on_done=None):
    """Posts the first match's result and polls its settlement every 0.5 s;
    (seconds until every shard was settled, seconds until the job was done,
    settlement, the time of the first answer with every shard settled). The
    job reports every shard settled, then recomputes the standings, then is
    done: the standings are timed from the first of those. on_settled() (if
    given) runs when every shard is first seen settled, on_done() when the
    job is first seen done."""
    during["t_post"] = t0 = time.time()
    admin.post("/v1/matches/%s/result" % big["id"], {"home_goals": 2, "away_goals": 1}).expect(202, msg="post result")
    last, next_say, t_shards = None, t0 + 10, None
    while time.time() - t0 < SETTLE_TIMEOUT:
        r = admin.get("/v1/matches/%s/settlement" % big["id"], timeout=30)
        if r.status == 200 and r.json:
            last = r.json
            if t_shards is None and last.get("shards_total") and \
                    last.get("shards_done") == last.get("shards_total"):
                t_shards = time.time()
                if on_settled is not None:
                    on_settled()
            if last.get("state") == "done":
                now = time.time()
                if on_done is not None:
                    on_done()
                return (t_shards or now) - t0, now - t0, last, t_shards or now
        if time.time() > next_say:
            say("settlement: %s" % (json.dumps(last) if last else r.describe(200)))
            next_say = time.time() + 30
        time.sleep(0.5)
    raise Failed("the settlement was not done within %d s: %s" % (SETTLE_TIMEOUT, json.dumps(last)))


def expected_points(h, company):
    """From SQL after the settlement: the global maximum of users.points, the
    company's maximum, points per company, and per team of the company."""
    st = h.stack.get()
    top = max(int(r[0] or 0) for r in st.sql_all_shards("SELECT MAX(points) FROM {s}.users"))
    ctop = max(int(r[0] or 0) for r in st.sql_all_shards(
        "SELECT MAX(points) FROM {s}.users WHERE company_id = %d" % company))
    per_co, per_team = {}, {}
    for c, p in st.sql_all_shards("SELECT company_id, SUM(points) FROM {s}.users GROUP BY company_id"):
        per_co[int(c)] = per_co.get(int(c), 0) + int(p)
    for t, p in st.sql_all_shards("SELECT team_id, SUM(points) FROM {s}.users WHERE company_id = %d"
                                  " AND team_id IS NOT NULL GROUP BY team_id" % company):
        per_team[int(t)] = per_team.get(int(t), 0) + int(p)
    return top, ctop, per_co, per_team


def standings_paths(company):
    """{name: (path, query)} of the four standings, read as a member of company."""
    return {
        "users": ("/v1/standings/users", None),
        "users in the company": ("/v1/standings/users", {"company": str(company)}),
        "teams of the company": ("/v1/standings/teams", {"company": str(company)}),
        "companies": ("/v1/standings/companies", None),
    }


def standings_checks(exp):
    """{name: check(body) -> bool}: the standing shows the settled points."""
    top, ctop, per_co, per_team = exp

    def first_points(want):
        return lambda j: bool(j.get("items")) and int(j["items"][0]["points"]) == want

    def companies(j):
        items = j.get("items") or []
        return bool(items) and any(int(x["points"]) for x in items) and all(
            int(x["points"]) == per_co.get(int(x["company_id"]), 0) for x in items)

    def teams(j):
        items = j.get("items") or []
        return bool(items) and all(int(x["points"]) == per_team.get(int(x["team_id"]), 0) for x in items)

    return {"users": first_points(top), "users in the company": first_points(ctop),
            "teams of the company": teams, "companies": companies}


class StandingsPoller(threading.Thread):
    """Reads the four standings every 0.5 s from the result's post on, and
    keeps each distinct answer with the time it was first seen, so that the
    expected values can be computed in SQL meanwhile without delaying the
    first observation."""

    def __init__(self, member, paths):
        super().__init__(daemon=True)
        self.member, self.paths = member, paths
        self.seen = {n: [] for n in paths}  # name -> [(time, body bytes)]
        self.last = {}
        self.lock = threading.Lock()
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            for name, (path, query) in self.paths.items():
                try:
                    r = self.member.get(path, query=query, timeout=30)
                except Exception as e:  # noqa: BLE001 -- a failed read is kept as the last answer
                    self.last[name] = str(e)
                    continue
                self.last[name] = r.describe(300)
                with self.lock:
                    if r.status == 200 and (not self.seen[name] or self.seen[name][-1][1] != r.body):
                        self.seen[name].append((time.time(), r.body))
            self.done.wait(0.5)

    def answers(self, name):
        with self.lock:
            return list(self.seen[name])

    def stop(self):
        self.done.set()
        self.join(60)


def wait_standings(poller, checks):
    """When each standing first showed the settlement (time.time())."""
    seen, tried = {}, {n: 0 for n in checks}
    deadline = time.time() + STANDINGS_TIMEOUT
    while len(seen) < len(checks) and time.time() < deadline:
        for name, ok in checks.items():
            answers = poller.answers(name) if name not in seen else []
            for t, body in answers[tried[name]:]:
                if ok(json.loads(body)):
                    seen[name] = t
                    break
            tried[name] = len(answers)
        time.sleep(0.2)
    for name in checks:
        if name not in seen:
            say("standings %s: not as expected after %d s: %s" % (name, STANDINGS_TIMEOUT, poller.last.get(name)))
    return seen
