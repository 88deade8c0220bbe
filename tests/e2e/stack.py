"""The stack under test: URLs and logins from the environment (or from
$BC_STACK_DIR/urls.env), direct SQL on the MariaDB hosts, the shard layout,
tools/devstack and bcadmin.

Environment (tests/integration/run and tests/e2e/run set it):
  BC_API_URL         HAProxy
  BC_API_URLS        the API servers directly (space or comma separated; api1 first)
  BC_ADMIN_EMAIL, BC_ADMIN_PASSWORD   the platform admin
  BC_STACK_DIR       the devstack directory (SQL, api.secret, devstack commands)
  BC_CLUSTER         cluster.yaml (default $BC_STACK_DIR/cluster.yaml)
  BC_DEVSTACK        tools/devstack
"""

import os
import re
import shlex
import signal
import subprocess
import threading
import time
import unittest
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

_lock = threading.Lock()
_stack = None


def _read_env_file(path):
    """KEY=VALUE lines in shell syntax (quotes allowed, no expansions)."""
    out = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("export "):
                    line = line[7:]
                k, sep, v = line.partition("=")
                if not sep:
                    continue
                try:
                    parts = shlex.split(v)
                    v = " ".join(parts)
                except ValueError:
                    pass
                out[k.strip()] = v
    except OSError:
        pass
    return out


class Stack:
    def __init__(self):
        env = dict(os.environ)
        self.dir = env.get("BC_STACK_DIR") or None
        if self.dir:
            for k, v in _read_env_file(os.path.join(self.dir, "urls.env")).items():
                env.setdefault(k, v)
        self.api_url = (env.get("BC_API_URL") or "").rstrip("/")
        self.api_urls = [u.rstrip("/") for u in re.split(r"[\s,]+", env.get("BC_API_URLS", "")) if u]
        if not self.api_urls and self.api_url:
            self.api_urls = [self.api_url]
        self.admin_email = env.get("BC_ADMIN_EMAIL", "")
        self.admin_password = env.get("BC_ADMIN_PASSWORD", "")
        self.cluster = env.get("BC_CLUSTER") or (os.path.join(self.dir, "cluster.yaml") if self.dir else None)
        self.devstack = env.get("BC_DEVSTACK") or os.path.join(ROOT, "tools", "devstack")
        build = env.get("BUILD", "build")
        if not os.path.isabs(build):
            build = os.path.join(ROOT, build)
        self.bcadmin = os.path.join(build, "bcadmin")
        self.api_bin = os.path.join(build, "betcity-api")
        self.shardctl = os.path.join(build, "shardctl")
        st = _read_env_file(os.path.join(self.dir, "stack.env")) if self.dir else {}
        self.prefix = st.get("PREFIX", "bc")
        self.shards = int(st.get("SHARDS", "0") or 0) or None
        self._host_cnf = None
        self._shard_map = None

    # ------------------------------------------------------------ checks

    def require_api(self):
        if not self.api_url:
            raise unittest.SkipTest("BC_API_URL is not set (no API in the stack)")

    def require_dir(self):
        if not self.dir or not os.path.isdir(self.dir):
            raise unittest.SkipTest("BC_STACK_DIR is not set: no direct database access")

    # ------------------------------------------------------------ SQL

    def global_schema(self):
        return "%s_global" % self.prefix

    def schema(self, shard):
        return "%s_%04d" % (self.prefix, shard)

    def _cnf(self, name):
        return os.path.join(self.dir, name, "client.cnf")

    def host_cnfs(self):
        """{host name in the shard map: client.cnf path}. The names of
        bc_global.hosts are matched to the stack's db<i> directories by port."""
        self.require_dir()
        with _lock:
            if self._host_cnf is not None:
                return self._host_cnf
        by_port = {}
        for d in sorted(os.listdir(self.dir)):
            cnf = os.path.join(self.dir, d, "client.cnf")
            if re.fullmatch(r"db\d+", d) and os.path.isfile(cnf):
                port = _read_cnf_port(cnf)
                if port:
                    by_port[port] = cnf
        rows = self.sql_cnf(self._cnf("db1"),
                            "SELECT name, port FROM `%s`.hosts ORDER BY ord" % self.global_schema())
        m = {}
        for name, port in rows:
            if port in by_port:
                m[name] = by_port[port]
            elif os.path.isfile(self._cnf(name)):
                m[name] = self._cnf(name)
        with _lock:
            self._host_cnf = m
        return m

    def sql_cnf(self, cnf, query, timeout=60):
        p = subprocess.run(
            ["mariadb", "--defaults-file=" + cnf, "--default-character-set=utf8mb4",
             "-N", "-B", "-e", query],
            capture_output=True, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError("SQL failed on %s: %s\n%s" % (
                cnf, query[:500], p.stderr.decode("utf-8", "replace")))
        out = p.stdout.decode("utf-8", "replace")
        return [[_unescape(c) for c in line.split("\t")] for line in out.split("\n") if line != ""]

    def sql(self, host, query, timeout=60):
        """Rows (lists of strings, None for NULL) of a query on one host of the map."""
        cnfs = self.host_cnfs()
        if host not in cnfs:
            raise AssertionError("no client.cnf for host %r (known: %s)" % (host, sorted(cnfs)))
        return self.sql_cnf(cnfs[host], query, timeout)

    def sql_global(self, query):
        return self.sql_cnf(self._cnf("db1"), query)

    def shard_map(self, refresh=False):
        """{shard: host} from bc_global.shard_map."""
        self.require_dir()
        if self._shard_map is None or refresh:
            rows = self.sql_global("SELECT shard, host FROM `%s`.shard_map" % self.global_schema())
            self._shard_map = {int(s): h for s, h in rows}
            if not self.shards:
                self.shards = len(self._shard_map)
        return self._shard_map

    def shards_on(self, host):
        return sorted(s for s, h in self.shard_map().items() if h == host)

    def host_of_id(self, ident):
        return self.shard_map()[shard_of(ident)]

    def sql_shard(self, shard, query_fmt):
        """Runs query_fmt with {s} replaced by the shard's schema, on its host."""
        host = self.shard_map()[shard]
        return self.sql(host, query_fmt.replace("{s}", "`%s`" % self.schema(shard)))

    def sql_all_shards(self, select_fmt, shards=None):
        """The UNION ALL of select_fmt ({s} = schema, {n} = shard number) over
        every shard (or the given ones), one statement per host; rows of all."""
        m = self.shard_map()
        by_host = {}
        for s in (sorted(m) if shards is None else sorted(set(shards))):
            by_host.setdefault(m[s], []).append(s)
        rows = []
        for host, shs in sorted(by_host.items()):
            parts = ["(" + select_fmt.replace("{s}", "`%s`" % self.schema(s)).replace("{n}", str(s)) + ")"
                     for s in shs]
            for i in range(0, len(parts), 200):
                rows.extend(self.sql(host, " UNION ALL ".join(parts[i:i + 200]), timeout=120))
        return rows

    # ------------------------------------------------------------ tools

    def devstack_cmd(self, *args, timeout=120):
        self.require_dir()
        return subprocess.run([self.devstack] + list(args) + ["--dir", self.dir],
                              capture_output=True, text=True, timeout=timeout)

    def restart_api(self, name, timeout=60):
        """devstack restart-host of API server name (api1, api2, ...), then waits
        for its /readyz 200; fails with restart-host's output otherwise."""
        p = self.devstack_cmd("restart-host", name, timeout=180)
        url = self.api_urls[int(name[3:]) - 1] + "/readyz"
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:  # refused, or 503 (HTTPError) while it loads its map
                pass
            time.sleep(0.2)
        raise AssertionError("%s not ready %d s after restart-host: %s"
                             % (name, timeout, (p.stdout + p.stderr)[-2000:]))

    def check_ledger(self):
        """(exit status, output) of bcadmin -c CLUSTER check-ledger."""
        if not os.access(self.bcadmin, os.X_OK):
            raise AssertionError("%s is missing: cannot check the ledger invariant" % self.bcadmin)
        if not self.cluster:
            raise AssertionError("BC_CLUSTER is not set")
        p = subprocess.run([self.bcadmin, "-c", self.cluster, "check-ledger"],
                           capture_output=True, text=True, timeout=300)
        return p.returncode, (p.stdout + p.stderr).strip()

    def secret(self):
        """The token signing key: the 32 bytes of the first key of DIR/api.secret
        (64 hex characters a line; later lines are older keys still accepted)."""
        self.require_dir()
        path = os.path.join(self.dir, "api.secret")
        try:
            with open(path) as f:
                keys = [ln.strip() for ln in f if ln.strip() and not ln.strip().startswith("#")]
                return bytes.fromhex(keys[0])
        except (OSError, ValueError, IndexError) as e:
            raise unittest.SkipTest("cannot read the token key %s: %s" % (path, e))


def _read_cnf_port(path):
    try:
        with open(path) as f:
            for line in f:
                m = re.match(r"\s*port\s*=\s*(\d+)", line)
                if m:
                    return m.group(1)
    except OSError:
        pass
    return None


_ESC = {"\\": "\\", "t": "\t", "n": "\n", "0": "\0", "r": "\r"}


def _unescape(cell):
    if cell == "NULL":
        return None
    if "\\" not in cell:
        return cell
    out, i = [], 0
    while i < len(cell):
        c = cell[i]
        if c == "\\" and i + 1 < len(cell):
            out.append(_ESC.get(cell[i + 1], cell[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def shard_of(ident):
    """The logical shard an id carries (bits 10..22, docs/shardmap.md)."""
    return (int(ident) >> 10) & 0x1FFF


def _task_states(pid):
    """The states (R, S, T, …) of the process's threads, from /proc."""
    states = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                states.append(f.read().rpartition(")")[2].split()[0])
        except OSError:
            pass  # the thread ended meanwhile
    return states


def sigstop(pid, timeout=5.0):
    """SIGSTOP pid and return once every thread of it is stopped. kill()
    returns before that: one thread takes the signal and stops the others,
    and on a loaded machine it may wait for a CPU while another thread still
    answers a request (a memcached stopped this way once answered the next
    mark at once, in CI)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.time() + timeout
    while True:
        states = _task_states(pid)
        if states and all(st in ("T", "t") for st in states):
            return
        if time.time() > deadline:
            raise AssertionError("pid %d not stopped %.0f s after SIGSTOP: its threads are %s"
                                 % (pid, timeout, "".join(states)))
        time.sleep(0.001)


def get():
    global _stack
    with _lock:
        if _stack is None:
            _stack = Stack()
        return _stack
