#!/usr/bin/env python3
"""`make bench`: load benchmarks of SERVER2 (verifying) and SERVER1 (minting).

Builds release binaries, pre-mints tokens outside the timed window, pins the server to CPU 0 and
the load generator (wrk, with scripts/bench.lua) to CPU 1, and reports requests/s, latency, the
server's CPU-seconds, handoffs per server CPU-second, resident memory, and the ratio to ring's own
Ed25519 verify (or sign) rate.

The yardstick runs *beside* the server: during each run, `handoff-bench ring` verifies (or signs)
in a loop on CPU 0 too, and its rate per CPU-second of its own is compared with the server's
handoffs per server CPU-second. The two share the core in millisecond slices, so they see the same
machine — on a VM whose speed drifts by a factor of two within seconds, measuring the yardstick
before or after the run does not. Latency at a constant offered load comes from `handoff-bench
load`, an open-loop generator (see bench/src/load.rs), with the yardstick not running. Stops by
itself.
"""
import json, os, re, shutil, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
DURATION = int(os.environ.get("BENCH_SECONDS", "5"))
if not 1 <= DURATION <= 20:
    # Tokens are minted once, with the longest lifetime allowed (600 s); longer runs outlive them.
    raise SystemExit("BENCH_SECONDS must be 1 to 20")
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
LOG = os.environ.get("BENCH_LOG", "info")
# `BENCH_ONLY=peer`: only SERVER2 beside the straightforward servers (about five minutes);
# `BENCH_ONLY=callgrind`: only SERVER2's instructions per accept (about a minute);
# `BENCH_ONLY=mint`: only SERVER1's mint beside the least possible mint, in rounds (about two minutes);
# `BENCH_ONLY=openloop`: only the open-loop latency at half the peak against the floor, in rounds,
# SERVER2 and the Rust peer at the same rate (about five minutes).
ONLY = os.environ.get("BENCH_ONLY", "")
TICK = os.sysconf("SC_CLK_TCK")
# Below Linux's ephemeral range (32768–60999), so no client socket of the runs can hold them.
P1, P2, P3 = 18101, 18102, 18103
ROUNDS = 3
# The Redis stores against the memory store: more rounds, since the difference sought (10%) is
# about the spread of one round on this VM.
REDIS_ROUNDS = 5


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class TokenLines:
    """Hands out consecutive line ranges of a token file, so no token is sent twice to one
    server: `take(n)` is (first, last), 1-based. Past `limit` it stops the run with `why`."""

    def __init__(self, limit=None, why=""):
        self.used, self.limit, self.why = 0, limit, why

    def take(self, n):
        if self.limit is not None and self.used + n > self.limit:
            raise SystemExit(self.why)
        self.used += n
        return self.used - n + 1, self.used


def wait_ready(url, log, timeout=10.0):
    """Seconds until `url` answers 200; on a timeout, exits with the end of the server's `log`
    (the work directory and its logs are removed on the way out)."""
    started = time.perf_counter()
    last = "no answer"
    while time.perf_counter() - started < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - started
                last = f"status {r.status}"
        except Exception as e:
            last = str(e)
            time.sleep(0.002)
    log.flush()
    with open(log.name) as f:
        tail = "".join(f.readlines()[-20:])
    raise SystemExit(f"{url} did not become ready in {timeout:.0f} s ({last}); the server's log ends:\n{tail}")


def wrk(url, args, seconds=DURATION, connections=CONNECTIONS, headers=()):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    if args:
        cmd += ["-s", os.path.join(ROOT, "scripts", "bench.lua"), url, "--"] + [str(a) for a in args]
    else:
        cmd += [url]
    out = run(cmd)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    errors = re.search(r"Socket errors: (.*)", out)
    return {"total": total, "rps": rps, "non_2xx_3xx": int(bad.group(1)) if bad else 0,
            "p50": lat.get("50", "?"), "p99": lat.get("99", "?"), "socket_errors": errors.group(1) if errors else ""}


def measure(pid, url, args, yardstick=None, **kw):
    """One wrk run against the server `pid`; with `yardstick` ("verify" or "sign"), ring's rate is
    measured on the server's core at the same time."""
    ring = None
    if yardstick:
        ring = subprocess.Popen(["taskset", "-c", "0", f"{BIN}/handoff-bench", "ring", "--only", yardstick,
                                 "--seconds", str(kw.get("seconds", DURATION))],
                                stdout=subprocess.PIPE, text=True)
    before = cpu_seconds(pid)
    result = wrk(url, args, **kw)
    cpu = cpu_seconds(pid) - before
    result["cpu"] = cpu
    result["per_cpu_s"] = result["total"] / cpu if cpu > 0 else float("inf")
    result["rss"] = rss_mib(pid)
    if ring:
        out, _ = ring.communicate(timeout=60)
        result["ring"] = json.loads(out)[f"{yardstick}_per_cpu_sec"]
        result["vs_ring"] = result["per_cpu_s"] / result["ring"]
    return result


def median_round(results):
    """The median of runs by their ratio to ring's rate, with the spread when there are several:
    the VM's speed wanders within a run, and the yardstick cannot follow it perfectly."""
    ranked = sorted(results, key=lambda r: r["vs_ring"])
    r = ranked[len(ranked) // 2]
    if len(ranked) > 1:
        r["spread"] = f"{ranked[0]['vs_ring']:.0%}–{ranked[-1]['vs_ring']:.0%}"
        r["rounds"] = len(ranked)
    return r


def unaccepted(name, r):
    """Why a run of distinct valid tokens failed, if it did: a refusal means a replay (too few
    tokens) or a bug."""
    if r["non_2xx_3xx"] or r["socket_errors"]:
        return f"{name}: {r['non_2xx_3xx']} refused, socket errors: {r['socket_errors'] or 'none'}"
    return None


# Ed25519 verification: SERVER2's signature checks (handoff::ed25519 on curve25519-dalek, ring's
# SHA-512) and ring's own verify (its C field and group arithmetic), which SERVER2 still uses for
# keys it does not hand to curve25519-dalek. SERVER2 does nothing else with these, so their share
# of SERVER2's CPU samples is the share of verify in a handoff.
VERIFY_SYMBOLS = re.compile(r"(ge_|x25519_|fe_|slide$|sc_|fiat_25519|ring_core_\S*(x25519|sha512)|"
                            r"\S*curve25519_dalek::|\S*handoff::ed25519::)")
# The same functions as callgrind_annotate names them (`file:function`; inlined code is filed
# under the file it came from, so the name is searched anywhere in the line).
VERIFY_FUNCTIONS = re.compile(r"(curve25519_dalek::|handoff::ed25519::|ring_core_\S*sha512|"
                              r":(ring_core_\S*)?(ge_|x25519_|fe_|slide|sc_)|fiat_25519)")
PROFILE_ROUNDS = 3


def verify_share(pid, url, args, work, name):
    """One wrk run against `pid` with `perf record` sampling its CPU (user and kernel): the share
    of the samples in ring's verify. The verify costs the same in every handoff, so the ratio of
    two servers' shares is the inverse ratio of their CPU per handoff. Both sides of that ratio
    come from one process's own samples, so the VM's drift in speed cancels out. None when perf
    cannot sample here."""
    data = os.path.join(work, f"perf.{name}.data")
    perf = subprocess.Popen(["perf", "record", "-F", "1999", "-o", data, "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        result = wrk(url, args)
    finally:
        perf.send_signal(2)
        perf.wait(timeout=60)
    report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "sym", "-g", "none",
                             "--percent-limit", "0"], capture_output=True, text=True)
    share = 0.0
    for line in report.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[\.\]\s+(\S+)", line)
        if m and VERIFY_SYMBOLS.match(m.group(2)):
            share += float(m.group(1)) / 100
    os.remove(data)
    return (share or None), result


def operation_requests(pid, base, work, audience):
    """Hands over a freshly minted token for its grant, then GETs that report with the grant,
    beside the yardstick: what every operation request costs — the grant's check and the
    revocation store's look-up (has a logout ended this session or user?). The token is minted
    now: the run's first ones may have outlived their ten minutes by this point."""
    fresh = tempfile.mkdtemp(prefix="op-", dir=work)
    shutil.copy(os.path.join(work, "signing.pk8"), fresh)
    run([f"{BIN}/handoff-bench", "prepare-server2", "--dir", fresh, "--issuer", "https://portal.bench.example",
         "--audience", audience, "--count", "1"])
    with open(os.path.join(fresh, "valid.txt")) as f:
        token = f.readline().strip()
    head = run(["curl", "-s", "-o", "/dev/null", "-D", "-", "--data-urlencode", f"token={token}", f"{base}/handoff"])
    grant = re.search(r"^set-cookie: ((?:__Host-)?handoff_grant=[^;]+)", head, re.I | re.M)
    if not grant:
        raise SystemExit(f"{base} did not accept a fresh token for the operation runs:\n{head}")
    # prepare-server2 gives the token on line n the report n.
    return measure(pid, f"{base}/reports/1", None, headers=[f"Cookie: {grant.group(1)}"], yardstick="verify")


PEER_DIR = os.path.join(ROOT, "bench", "peer")
PEER_PORT = P2 + 50
NODE_PEER_DIR = os.path.join(ROOT, "bench", "peer-node")
PEER_SECONDS = 3
PEER_ROUNDS = 3


def build_peer():
    """The straightforward axum + jsonwebtoken server (bench/peer, its own workspace)."""
    subprocess.run(["cargo", "build", "--release", "--locked", "--manifest-path", os.path.join(PEER_DIR, "Cargo.toml")],
                   cwd=PEER_DIR, check=True)
    return os.path.join(PEER_DIR, "target", "release", "handoff-peer")


def node_peer():
    """The straightforward node:http + jose server (bench/peer-node), its package installed from
    its lock file; None (and the comparison goes on without it) when Node is not installed."""
    if not shutil.which("node") or not shutil.which("npm"):
        return None
    if not os.path.isdir(os.path.join(NODE_PEER_DIR, "node_modules", "jose")):
        subprocess.run(["npm", "ci", "--prefix", NODE_PEER_DIR, "--no-audit", "--no-fund", "--loglevel=error"], check=True)
    return ["node", os.path.join(NODE_PEER_DIR, "server.mjs")]


def ring_alone(seconds=3):
    """ring's verify rate per CPU-second on CPU 0 with nothing else running there."""
    out = run(["taskset", "-c", "0", f"{BIN}/handoff-bench", "ring", "--only", "verify", "--seconds", str(seconds)])
    return json.loads(out)["verify_per_cpu_sec"]


def start_peer(work, name, cmd, port, jwks, server2_url):
    env = dict(os.environ, PEER_LISTEN=f"127.0.0.1:{port}", PEER_JWKS_FILE=jwks,
               PEER_ISSUER="https://portal.bench.example", PEER_AUDIENCE=server2_url)
    log = open(os.path.join(work, f"{name}.log"), "w")
    peer = subprocess.Popen(["taskset", "-c", "0"] + cmd, env=env, stderr=log, stdout=log)
    deadline = time.time() + 10
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/handoff?token=x", timeout=1)
        except urllib.error.HTTPError:
            return peer
        except Exception:
            if time.time() > deadline:
                peer.terminate()
                raise SystemExit(f"the peer server {name} did not start; see {work}/{name}.log")
            time.sleep(0.05)


def peer_comparison(work, peers, server_pid, server2_url):
    """SERVER2 and the straightforward peers taking turns on CPU 0 under the same wrk load (the
    same tokens, each used once by each server), form POST and GET, 16 and 64 connections, in
    rounds that rotate who goes first; ring's verify alone on the idle core before and after.
    `peers`: (name, command) pairs."""
    jwks = os.path.join(work, "jwks.json")
    # Fresh tokens under the same key, minted now that SERVER2 has long been up.
    tokens_dir = os.path.join(work, "peer-tokens")
    os.makedirs(tokens_dir)
    shutil.copy(os.path.join(work, "signing.pk8"), tokens_dir)
    tokens_per_run = 30_000 * PEER_SECONDS
    run([f"{BIN}/handoff-bench", "prepare-server2", "--dir", tokens_dir, "--issuer", "https://portal.bench.example",
         "--audience", server2_url, "--count", str(tokens_per_run * PEER_ROUNDS * 4)])
    valid = os.path.join(tokens_dir, "valid.txt")
    tokens = TokenLines().take
    started = []
    try:
        servers = [("SERVER2", server_pid, server2_url)]
        for n, (name, cmd) in enumerate(peers):
            port = PEER_PORT + n
            process = start_peer(work, name, cmd, port, jwks, server2_url)
            started.append(process)
            servers.append((name, process.pid, f"http://127.0.0.1:{port}"))
        ring_before = ring_alone()
        runs = {}
        for round_ in range(PEER_ROUNDS):
            for conns in (16, 64):
                for mode in ("post", "get"):
                    first, last = tokens(tokens_per_run)
                    shift = round_ % len(servers)
                    for who, pid, base in servers[shift:] + servers[:shift]:
                        r = measure(pid, f"{base}/handoff", [valid, mode, first, last, 0], seconds=PEER_SECONDS,
                                    connections=conns)
                        runs.setdefault((who, conns, mode), []).append(r)
        ring_after = ring_alone()
    finally:
        for process in started:
            process.terminate()
            process.wait(timeout=15)
    failures = [unaccepted(f"{who}, {mode}, {conns} connections", r)
                for (who, conns, mode), rs in runs.items() for r in rs]
    return runs, ring_before, ring_after, [f for f in failures if f]


def open_loop(pid, port, valid, first, rate, path="/handoff", mode="post"):
    """`handoff-bench load` against the server `pid` at `rate`, 16 connections, tokens from line
    `first` on; with the server's CPU time per request over the run (`cpu_us`) and the share of
    the core that is (`busy`)."""
    before = cpu_seconds(pid)
    load = json.loads(run(["taskset", "-c", "1", f"{BIN}/handoff-bench", "load", "--addr", f"127.0.0.1:{port}",
                           "--path", path, "--mode", mode, "--tokens", valid, "--first", str(first),
                           "--rate", str(rate), "--seconds", str(DURATION), "--connections", "16"]))
    load["cpu_us"] = (cpu_seconds(pid) - before) * 1e6 / max(1, load["completed"])
    load["busy"] = load["cpu_us"] * rate / 1e6
    return load


def latency_floor(rate, work_us):
    """`handoff-bench floor`: the open-loop schedule at `rate` on CPU 0 with each request replaced
    by `work_us` of plain computation."""
    return json.loads(run(["taskset", "-c", "0", f"{BIN}/handoff-bench", "floor", "--rate", str(rate),
                           "--work-us", f"{work_us:.1f}", "--seconds", str(DURATION)]))


def empty_open_loop(pid, port, valid, rate):
    """The same schedule against `GET /healthz` (no work at all): the latency of the generator,
    the loopback and the wake-ups alone, which the floor leaves out."""
    empty = open_loop(pid, port, valid, 1, rate, path="/healthz", mode="get")
    if empty["status_2xx"] != empty["completed"]:
        raise SystemExit(f"GET /healthz: {empty['completed'] - empty['status_2xx']} of {empty['completed']} failed")
    return empty


def ms(r):
    """An open-loop result's p50 and p99 in milliseconds."""
    return f"{r['p50_us'] / 1000:.2f} / {r['p99_us'] / 1000:.2f} ms"


def open_loop_rounds(work, peer_cmd, server_pid, server2_url, valid, tokens):
    """`BENCH_ONLY=openloop`: rounds of SERVER2's peak (wrk, form POST), the open-loop run at half
    of it, the floor fed with the CPU per accept at the peak (the target's floor), an empty
    request at the same rate, and the Rust peer at the same rate. One line per round."""
    peer = start_peer(work, "peer", peer_cmd, PEER_PORT, os.path.join(work, "jwks.json"), server2_url)
    try:
        print("| round | peak/s | µs/accept at peak | offered/s | SERVER2 p50 / p99 | µs/accept here (busy) | "
              "floor p50 / p99 | p99 ÷ floor | GET /healthz p50 / p99 | peer p50 / p99 (µs/request) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for round_ in range(ROUNDS):
            first, last = tokens(25_000 * DURATION)
            peak = measure(server_pid, f"{server2_url}/handoff", [valid, "post", first, last, 0])
            rate = max(1, int(peak["rps"] / 2))
            peak_us = 1e6 / peak["per_cpu_s"]
            first, _ = tokens(rate * DURATION)
            load = open_loop(server_pid, P2, valid, first, rate)
            floor = latency_floor(rate, peak_us)
            empty = empty_open_loop(server_pid, P2, valid, rate)
            peer_load = open_loop(peer.pid, PEER_PORT, valid, first, rate)
            for who, r in (("SERVER2", load), ("peer", peer_load)):
                if r["status_3xx"] != r["completed"]:
                    raise SystemExit(f"{who}: {r['completed'] - r['status_3xx']} of {r['completed']} not accepted")
            print(f"| {round_ + 1} | {peak['rps']:,.0f} | {peak_us:.0f} | {rate:,} | {ms(load)} | "
                  f"{load['cpu_us']:.0f} ({load['busy']:.0%}) | {ms(floor)} | {load['p99_us'] / floor['p99_us']:.1f}× | "
                  f"{ms(empty)} | {ms(peer_load)} ({peer_load['cpu_us']:.0f}) |")
    finally:
        peer.terminate()
        peer.wait(timeout=15)


def mint_rounds(work, server1_url, server2_url):
    """`BENCH_ONLY=mint`: rounds of SERVER1's mint on SQLite, its empty request and the least
    possible mint, each beside ring's sign. One line per round."""
    print("| round | SERVER1 mint, % of sign (µs) | empty GET /healthz (µs) | least possible mint, % of sign (µs) | "
          "mint ÷ least |")
    print("|---|---:|---:|---:|---:|")
    for round_ in range(ROUNDS):
        rows, failures = [], []
        mint_on(work, f"SQLite-{round_ + 1}", None, server2_url, server1_url, rows, failures)
        if failures:
            raise SystemExit("\n".join(failures))
        (_, mint, _), (_, empty, _), (_, least, _) = rows
        us = lambda r: 1e6 / r["per_cpu_s"]
        print(f"| {round_ + 1} | {mint['vs_ring']:.0%} ({us(mint):.0f}) | {us(empty):.1f} | "
              f"{least['vs_ring']:.0%} ({us(least):.0f}) | {mint['vs_least']:.0%} |")


def latency_ms(text):
    """wrk's latency text (`1.23ms`, `850.00us`, `1.02s`) in milliseconds."""
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def print_peer_table(runs, ring_before, ring_after):
    def median(values):
        values = sorted(values)
        return values[len(values) // 2]
    clean = (ring_before + ring_after) / 2
    servers = list(dict.fromkeys(who for who, _, _ in runs))
    print(f"SERVER2 beside the straightforward servers (peer: axum 0.8, jsonwebtoken's RustCrypto backend, a "
          f"Mutex<HashMap> of seen jti, a 303, fat LTO; node peer: node:http and jose, a Map), taking turns on CPU 0, "
          f"the same tokens, each used once by each, {PEER_SECONDS} s per run, median of {PEER_ROUNDS} rounds "
          f"(spread in brackets):")
    print()
    print("| server | handoffs per server CPU-s, POST | GET | p99 at 16 conn., POST / GET | p99 at 64 conn., POST / GET | vs ring alone |")
    print("|---|---:|---:|---:|---:|---:|")
    per = {}
    for who in servers:
        cells = []
        for mode in ("post", "get"):
            rates = [r["per_cpu_s"] for r in runs[(who, 16, mode)] + runs[(who, 64, mode)]]
            per[(who, mode)] = median(rates)
            cells.append(f"{median(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f})")
        tails = []
        for conns in (16, 64):
            pair = [median([latency_ms(r["p99"]) for r in runs[(who, conns, mode)]]) for mode in ("post", "get")]
            tails.append(f"{pair[0]:.1f} / {pair[1]:.1f} ms")
        vs_ring = per[(who, "post")] / clean
        print(f"| {who} | {cells[0]} | {cells[1]} | {tails[0]} | {tails[1]} | {vs_ring:.0%} |")
    print(f"| ring's Ed25519 verify alone, idle CPU 0 | {clean:,.0f} (before {ring_before:,.0f}, after {ring_after:,.0f}) | | | | 100% |")
    print()
    for who in servers[1:]:
        print(f"SERVER2 ÷ {who}, handoffs per server CPU-second: form POST {per[('SERVER2', 'post')] / per[(who, 'post')]:.2f}×, "
              f"GET {per[('SERVER2', 'get')] / per[(who, 'get')]:.2f}×")
    print()


def redis_store(work, env, server2_url, per_run, rate, memory_pid, memory_load):
    """SERVER2 with the Redis replay store (a real redis-server on CPU 1, beside the load
    generator), reached over TCP and through its socket file: two more SERVER2s beside the
    memory-store one (each idle while another is measured). Accepts beside the yardstick, the
    rounds of the three alternating so all see the same machine (the medians are compared),
    Redis's CPU per handoff, and the open-loop latency at the same offered load."""
    port = P2 + 100
    redis_dir = os.path.join(work, "redis")
    os.makedirs(redis_dir)
    sock = os.path.join(redis_dir, "redis.sock")
    redis = subprocess.Popen(["taskset", "-c", "1", "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--unixsocket", sock, "--unixsocketperm", "700",
                              "--save", "", "--appendonly", "no", "--dir", redis_dir],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows, notes, failures, servers = [], [], [], []
    try:
        variants = [("TCP", f"redis://127.0.0.1:{port}/0", P2 + 1), ("socket file", f"redis+unix://{sock}", P2 + 2)]
        for name, store, listen in variants:
            # The same audience (the tokens' `aud`), on a port of its own.
            env2 = dict(env, SERVER2_REPLAY_STORE=store, SERVER2_LISTEN=f"127.0.0.1:{listen}", SERVER2_METRICS_LISTEN="127.0.0.1:0")
            log = open(os.path.join(work, f"server2-redis-{listen}.log"), "w")
            servers.append(subprocess.Popen(["taskset", "-c", "0", f"{BIN}/server2"], env=env2, stderr=log, stdout=log))
            wait_ready(f"http://127.0.0.1:{listen}/readyz", log)
        # Tokens minted once these servers (and so the store's epochs) are up, under the same key.
        tokens_dir = os.path.join(work, "redis-tokens")
        os.makedirs(tokens_dir)
        shutil.copy(os.path.join(work, "signing.pk8"), tokens_dir)
        count = per_run * REDIS_ROUNDS * 2 + rate * DURATION * 2 + per_run * PROFILE_ROUNDS * 2 + 10
        run([f"{BIN}/handoff-bench", "prepare-server2", "--dir", tokens_dir, "--issuer",
             "https://portal.bench.example", "--audience", server2_url, "--count", str(count)])
        valid = os.path.join(tokens_dir, "valid.txt")
        # The memory-store SERVER2 takes its tokens from this fresh set too (its own replay
        # store; the first set, minted at the start, may be near the end of its ten minutes).
        memory_tokens = TokenLines().take
        memory_valid = valid
        results = {name: [] for name, _, _ in variants}
        memory, first, redis_cpu = [], 1, {name: 0.0 for name, _, _ in variants}
        for _ in range(REDIS_ROUNDS):
            m_first, m_last = memory_tokens(per_run)
            memory.append(measure(memory_pid, f"{server2_url}/handoff", [memory_valid, "post", m_first, m_last, 0],
                                  yardstick="verify"))
            for (name, _, listen), server in zip(variants, servers):
                last = first + per_run - 1
                before = cpu_seconds(redis.pid)
                results[name].append(measure(server.pid, f"http://127.0.0.1:{listen}/handoff",
                                             [valid, "post", first, last, 0], yardstick="verify"))
                redis_cpu[name] += cpu_seconds(redis.pid) - before
                first = last + 1
        # The same comparison from profiles: the share of verify in each server's CPU samples.
        profiled = {name: [] for name in ["memory"] + [name for name, _, _ in variants]}
        if shutil.which("perf"):
            for i in range(PROFILE_ROUNDS):
                m_first, m_last = memory_tokens(per_run)
                share, r = verify_share(memory_pid, f"{server2_url}/handoff", [memory_valid, "post", m_first, m_last, 0],
                                        work, f"memory{i}")
                failures += filter(None, [unaccepted("accept, memory store (profiled)", r)])
                profiled["memory"].append(share)
                for (name, _, listen), server in zip(variants, servers):
                    last = first + per_run - 1
                    share, r = verify_share(server.pid, f"http://127.0.0.1:{listen}/handoff",
                                            [valid, "post", first, last, 0], work, f"{listen}-{i}")
                    failures += filter(None, [unaccepted(f"accept with Redis ({name}, profiled)", r)])
                    profiled[name].append(share)
                    first = last + 1
        # Operation requests with a grant: the revocation look-up in Redis (one script) on each.
        op_memory = operation_requests(memory_pid, server2_url, work, server2_url)
        rows.append(("operation request with a grant, memory stores", op_memory, "verify"))
        for (name, _, listen), server in zip(variants, servers):
            r = operation_requests(server.pid, f"http://127.0.0.1:{listen}", work, server2_url)
            r["vs_accept"] = r["vs_ring"] / op_memory["vs_ring"]
            rows.append((f"operation request with a grant, Redis ({name})", r, "verify"))
            notes.append(f"operation requests with Redis over {name} (its revocation look-up on each): "
                         f"{r['per_cpu_s']:,.0f} per SERVER2 CPU-second, {r['vs_accept']:.0%} of the memory "
                         f"stores' {op_memory['per_cpu_s']:,.0f} (each beside the yardstick); p99 {r['p99']} "
                         f"against {op_memory['p99']}")
            failures += filter(None, [unaccepted(f"operation request, Redis ({name})", r)])
        failures += filter(None, [unaccepted("operation request, memory", op_memory)])
        base = median_round(memory)
        rows.append(("accept, form POST, memory store (alternating with Redis)", base, "verify"))
        failures += filter(None, (unaccepted("accept, memory store", x) for x in memory))
        for (name, _, listen), server in zip(variants, servers):
            r = median_round(results[name])
            r["vs_accept"] = r["vs_ring"] / base["vs_ring"]
            rows.append((f"accept, form POST, Redis replay store ({name})", r, "verify"))
            failures += filter(None, (unaccepted(f"accept with Redis ({name})", x) for x in results[name]))
            load = open_loop(server.pid, listen, valid, first, rate)
            first += rate * DURATION
            if load["status_3xx"] != load["completed"]:
                failures.append(f"constant load, Redis ({name}): {load['completed'] - load['status_3xx']} of "
                                f"{load['completed']} not accepted")
            handled = sum(x["total"] for x in results[name])
            pairs = [m / x for m, x in zip(profiled["memory"], profiled[name]) if m and x]
            if pairs:
                pairs.sort()
                notes.append(
                    f"Redis replay store over {name}, from profiles (`perf record` of each server under the same wrk "
                    f"load, {len(pairs)} rounds alternating; the share of ring's verify in each server's CPU samples, "
                    f"verify costing the same in every handoff): SERVER2 handles {pairs[len(pairs) // 2]:.0%} as many "
                    f"handoffs per CPU-second as with the memory store (rounds {', '.join(f'{x:.0%}' for x in pairs)})")
            else:
                notes.append(f"Redis replay store over {name}, from profiles: skipped (perf is not installed or cannot "
                             "sample here: apt-get install linux-perf)")
            notes.append(
                f"Redis replay store over {name}: SERVER2 handles {r['vs_accept']:.0%} as many handoffs per CPU-second "
                f"as with the memory store (each beside the yardstick, {REDIS_ROUNDS} rounds of each alternating, medians); "
                f"Redis spends {redis_cpu[name] / max(handled, 1) * 1e6:.1f} µs of CPU per handoff; at {rate:,}/s "
                f"offered (open loop) p50 {load['p50_us'] / 1000:.2f} ms and p99 {load['p99_us'] / 1000:.2f} ms against "
                f"the memory store's {memory_load['p50_us'] / 1000:.2f} ms and {memory_load['p99_us'] / 1000:.2f} ms")
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=15)
        redis.terminate()
        redis.wait(timeout=15)
    return rows, notes, failures


def postgres_cluster(work):
    """A throwaway PostgreSQL cluster on CPU 1 (beside the load generator), from `work/pg`, run as
    the `postgres` user when this runs as root; returns (its URL, the process). None when
    PostgreSQL is not installed."""
    bins = sorted(d for d in (os.path.join("/usr/lib/postgresql", v, "bin") for v in
                              (os.listdir("/usr/lib/postgresql") if os.path.isdir("/usr/lib/postgresql") else []))
                  if os.path.exists(os.path.join(d, "initdb")))
    if not bins:
        return None
    bin_dir, data, port = bins[-1], os.path.join(work, "pg", "data"), P1 + 200
    os.makedirs(data)
    as_owner = []
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", os.path.join(work, "pg")], check=True)
        os.chmod(work, 0o755)
        as_owner = ["runuser", "-u", "postgres", "--"]
    run(as_owner + [os.path.join(bin_dir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"])
    server = subprocess.Popen(["taskset", "-c", "1"] + as_owner + [
        os.path.join(bin_dir, "postgres"), "-D", data, "-p", str(port), "-k", data,
        "-c", "listen_addresses=127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while subprocess.run(as_owner + [os.path.join(bin_dir, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode:
        if time.time() > deadline:
            server.terminate()
            raise SystemExit("the benchmark's PostgreSQL did not start")
        time.sleep(0.1)
    return f"postgres://postgres@127.0.0.1:{port}/postgres", server


def mint_on(work, name, database_url, server2_url, server1_url, rows, failures):
    """SERVER1 minting for a signed-in session, its users and sessions in `database_url` (None:
    a SQLite file); adds its rows. Returns SERVER1's environment, session cookie and the mint's
    result."""
    s1_dir = os.path.join(work, "s1-" + name)
    extra = ["--database-url", database_url] if database_url else []
    s1 = json.loads(run([f"{BIN}/handoff-bench", "prepare-server1", "--dir", s1_dir, "--audience", server2_url] + extra))
    env1 = dict(os.environ, RUST_LOG=LOG, SERVER1_LISTEN=f"127.0.0.1:{P1}", SERVER1_METRICS_LISTEN="127.0.0.1:0", SERVER1_PUBLIC_URL=server1_url,
                SERVER1_DATABASE_URL=database_url or "sqlite://" + os.path.join(s1_dir, "server1.sqlite3"),
                SERVER1_KEYS_DIR=os.path.join(s1_dir, "keys"),
                SERVER1_TARGETS_FILE=os.path.join(s1_dir, "targets.toml"))
    log1 = open(os.path.join(work, f"server1-{name}.log"), "w")
    server = subprocess.Popen(["taskset", "-c", "0", f"{BIN}/server1", "serve"], env=env1, stderr=log1, stdout=log1)
    try:
        wait_ready(f"{server1_url}/healthz", log1)
        r = measure(server.pid, f"{server1_url}/handoff/partner/report.view?report_id=42", None,
                    yardstick="sign", headers=[f"Cookie: {s1['cookie']}", "Sec-Fetch-Site: same-origin"])
        rows.append((f"SERVER1: mint (session look-up, page), {name}", r, "sign"))
        if r["non_2xx_3xx"]:
            failures.append(f"SERVER1 mint on {name}: {r['non_2xx_3xx']} failed")
        # What a request costs SERVER1 before it does anything: a mint costs at least this plus
        # one sign, which caps its ratio to ring's sign on this machine.
        empty = measure(server.pid, f"{server1_url}/healthz", None, yardstick="sign")
        rows.append((f"SERVER1: floor GET /healthz (no work), {name}", empty, "sign"))
    finally:
        server.terminate()
        server.wait(timeout=15)
    # The least a mint can be here: the same session look-up in the same database, the product's
    # minter and a page of the same size over poem, and nothing else (`handoff-bench least-mint`).
    least = subprocess.Popen(["taskset", "-c", "0", f"{BIN}/handoff-bench", "least-mint", "--dir", s1_dir,
                              "--listen", f"127.0.0.1:{P3}"] + extra, stderr=log1, stdout=log1)
    try:
        wait_ready(f"http://127.0.0.1:{P3}/healthz", log1)
        least_r = measure(least.pid, f"http://127.0.0.1:{P3}/mint", None, yardstick="sign",
                          headers=[f"Cookie: {s1['cookie']}"])
        rows.append((f"least possible mint (session look-up, sign, page; `handoff-bench least-mint`), {name}", least_r, "sign"))
        if least_r["non_2xx_3xx"]:
            failures.append(f"least mint on {name}: {least_r['non_2xx_3xx']} failed")
        r["vs_least"] = r["vs_ring"] / least_r["vs_ring"]
    finally:
        least.terminate()
        least.wait(timeout=15)
    return env1, s1, r


RING_SIGN = r"Ed25519KeyPair::sign \["


def callgrind(work, name, cmd, env, ready_url, load, ring_symbol=None, symbols=None):
    """A server under callgrind while `load()` drives it (returning wrk's result): the share of all
    its user-space instructions spent in `ring_symbol`, and the instructions per request. Unlike
    CPU time, instruction counts do not drift with the VM, so these figures are repeatable.
    Counting starts once the server is ready, so start-up (SERVER1 hashes a dummy password with
    argon2 then) is left out."""
    out = os.path.join(work, f"callgrind.{name}.out")
    log = open(os.path.join(work, f"callgrind.{name}.log"), "w")
    server = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
                              + cmd, env=env, stderr=log, stdout=log)
    try:
        wait_ready(ready_url, log, timeout=60)
        if server.poll() is not None:
            raise SystemExit(f"{name} under valgrind exited; see {work}/callgrind.{name}.log")
        run(["callgrind_control", "--instr=on", str(server.pid)])
        r = load()
    finally:
        server.terminate()
        server.wait(timeout=60)
    if ring_symbol:
        # One function and all it calls.
        text = run(["callgrind_annotate", "--inclusive=yes", out])
        ring = int(re.search(r"^\s*([\d,]+) \([\d. ]+%\)\s+\S*" + ring_symbol, text, re.M).group(1).replace(",", ""))
    else:
        # Every function whose name matches `symbols`, each counted for its own instructions.
        text = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", out],
                              capture_output=True, text=True, check=True).stdout
        ring = 0
        for line in text.splitlines():
            m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*)$", line)
            if m and "PROGRAM TOTALS" not in line and symbols.search(m.group(2)):
                ring += int(m.group(1).replace(",", ""))
    total = int(re.search(r"([\d,]+) \(100\.0+%\)\s+PROGRAM TOTALS", text).group(1).replace(",", ""))
    done = r["total"] - r["non_2xx_3xx"]
    return {"share": ring / total, "per_request": total / max(1, done), "ring_per_request": ring / max(1, done),
            "requests": done, "refused": r["non_2xx_3xx"]}


def server2_callgrind(work, env, server2_url):
    """SERVER2 under callgrind for a few thousand accepts (2 connections)."""
    def accepts():
        # Fresh tokens under the same key (prepare-server2 reuses signing.pk8), minted once this
        # server has started.
        cg_dir = os.path.join(work, "cg")
        os.makedirs(cg_dir, exist_ok=True)
        shutil.copy(os.path.join(work, "signing.pk8"), cg_dir)
        run([f"{BIN}/handoff-bench", "prepare-server2", "--dir", cg_dir, "--issuer",
             "https://portal.bench.example", "--audience", server2_url, "--count", "8000"])
        return wrk(f"{server2_url}/handoff", [os.path.join(cg_dir, "valid.txt"), "post", 1, 8000, 0],
                   seconds=8, connections=2)
    return callgrind(work, "server2", [f"{BIN}/server2"], env, f"{server2_url}/readyz", accepts,
                     symbols=VERIFY_FUNCTIONS)


def print_instructions(name, i):
    what = "ring's Ed25519 sign" if "SERVER1" in name else "the Ed25519 signature checks"
    print(f"Instructions (callgrind, user space, {name} under valgrind for {i['requests']:,} requests, "
          f"start-up left out): {what} {i['share']:.1%} of all; "
          f"{i['per_request'] / 1000:,.0f}k instructions per request, {i['ring_per_request'] / 1000:,.0f}k "
          f"of them in {what}")


def main():
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install wrk util-linux")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "server1", "-p", "server2", "-p", "handoff-bench"],
                   cwd=ROOT, check=True)
    peers = [("peer", [build_peer()])]
    node = node_peer()
    if node:
        peers.append(("node peer", node))
    work = tempfile.mkdtemp(prefix="handoff-bench-")
    rows, notes, failures = [], [], []
    try:
        # Distinct tokens for every request: the peak run, the open-loop run (half of it) and the
        # rounds beside the yardstick, each at up to 25,000 accepts a second, well over any rate
        # this machine reaches. A round beside the yardstick gets the same budget as the peak: it
        # can take most of the core (14,400/s beside it against 17,100/s alone in one run).
        per_run = 25_000 * DURATION
        count = per_run * (2 + 2 * ROUNDS) + 10
        server1_url, server2_url = f"http://127.0.0.1:{P1}", f"http://127.0.0.1:{P2}"
        if ONLY == "mint":
            mint_rounds(work, server1_url, server2_url)
            return
        prepare = [f"{BIN}/handoff-bench", "prepare-server2", "--dir", work, "--issuer", "https://portal.bench.example",
                   "--audience", server2_url, "--count", str(count)]
        # The key and JWKS first: SERVER2 refuses tokens issued before it started, so the tokens
        # are minted once it is up.
        run(prepare + ["--keys-only"])
        env = dict(os.environ, RUST_LOG=LOG, SERVER2_LISTEN=f"127.0.0.1:{P2}", SERVER2_METRICS_LISTEN="127.0.0.1:0", SERVER2_PUBLIC_URL=server2_url,
                   SERVER2_ISSUER="https://portal.bench.example", SERVER2_JWKS_FILE=os.path.join(work, "jwks.json"),
                   SERVER2_MAX_TOKEN_LIFETIME_SECS="600", SERVER2_REPLAY_CAPACITY=str(min(count * 2, 100_000_000)),
                   # The load generator posts pre-minted tokens as a client that is not a browser
                   # would: without a browser nonce, which SERVER2 refuses by default.
                   SERVER2_UNBOUND_HANDOFFS="accept")
        if ONLY == "callgrind":
            print_instructions("SERVER2 accept", server2_callgrind(work, env, server2_url))
            return
        log = open(os.path.join(work, "server2.log"), "w")
        server = subprocess.Popen(["taskset", "-c", "0", f"{BIN}/server2"], env=env, stderr=log, stdout=log)
        try:
            startup = wait_ready(f"{server2_url}/readyz", log)
            time.sleep(0.5)
            idle = rss_mib(server.pid)
            notes.append(f"SERVER2 start-up to ready (pinned JWKS): {startup * 1000:.0f} ms; idle resident memory {idle:.1f} MiB")
            if ONLY == "peer":
                runs, ring_before, ring_after, peer_failures = peer_comparison(work, peers, server.pid, server2_url)
                print_peer_table(runs, ring_before, ring_after)
                if peer_failures:
                    raise SystemExit("\n".join(peer_failures))
                return
            t0 = time.perf_counter()
            # Tokens bound to a browser (the product's default), for the rounds beside the yardstick.
            run(prepare + (["--bound-count", str(per_run * ROUNDS + 10)] if not ONLY else []))
            if ONLY == "openloop":
                open_loop_rounds(work, peers[0][1], server.pid, server2_url, os.path.join(work, "valid.txt"),
                                 TokenLines(count).take)
                return
            notes.append(f"pre-minted {count} tokens (and invalid sets) in {time.perf_counter() - t0:.1f} s, outside the timed window")
            url = f"{server2_url}/handoff"
            valid = os.path.join(work, "valid.txt")
            tokens = TokenLines(count, f"the run needs more than the {count} tokens minted; this machine is faster "
                                       "than the bench assumes (25,000 accepts/s): raise per_run in scripts/bench.py").take

            # The peak, alone on the core: the base of the constant-load run.
            first, last = tokens(per_run)
            peak = measure(server.pid, url, [valid, "post", first, last, 0])
            rows.append(("accept, form POST, alone (peak)", peak, None))
            # How steady the core is in 10 ms windows: on a shared VM a window can run at a tenth
            # of the usual speed, which a latency tail at half load cannot hide.
            steady = json.loads(run(["taskset", "-c", "0", f"{BIN}/handoff-bench", "steadiness", "--seconds", "5"]))
            rate = max(1, int(peak["rps"] / 2))
            first, _ = tokens(rate * DURATION)
            load = open_loop(server.pid, P2, valid, first, rate)
            # The same schedule with the server replaced by its own CPU time per request spent
            # in a plain loop on CPU 0, no network: no server that costs that much per request
            # can have a shorter tail on this machine.
            floor = latency_floor(rate, 1e6 / peak["per_cpu_s"])
            empty_load = empty_open_loop(server.pid, P2, valid, rate)
            # Three rounds of each, alternating, and the median round.
            rounds = {"post": [], "get": [], "bound": []}
            bound = os.path.join(work, "bound.txt")
            for round_ in range(ROUNDS):
                for mode in ("post", "get"):
                    first, last = tokens(per_run)
                    rounds[mode].append(measure(server.pid, url, [valid, mode, first, last, 0], yardstick="verify"))
                # Bound tokens, each with its browser's nonce cookie: what SERVER2 does by default.
                first = 1 + round_ * per_run
                rounds["bound"].append(measure(server.pid, url, [bound, "post", first, first + per_run - 1, 0],
                                               yardstick="verify"))
            for name, mode in [("accept, form POST", "post"), ("accept, GET ?token=", "get"),
                               ("accept, form POST, bound to the browser (nonce cookie; the default)", "bound")]:
                rows.append((name, median_round(rounds[mode]), "verify"))
                failures += filter(None, (unaccepted(name, r) for r in rounds[mode]))
            accept = rows[1][1]["vs_ring"]
            rows[3][1]["vs_accept"] = rows[3][1]["vs_ring"] / accept
            failures += filter(None, [unaccepted(rows[0][0], peak)])
            if load["status_3xx"] != load["completed"]:
                failures.append(f"constant load: {load['completed'] - load['status_3xx']} of {load['completed']} not accepted")
            # Refusals that cost a signature check: as many rounds as the accepts, for a fair
            # comparison with them; the garbage ones, far from any threshold, once.
            for name, file, n in [("reject: bad signature", "bad_signature.txt", ROUNDS),
                                  ("reject: expired", "expired.txt", ROUNDS), ("reject: replay", "replay.txt", ROUNDS),
                                  ("reject: malformed", "malformed.txt", 1), ("reject: wrong typ", "wrong_typ.txt", 1),
                                  ("reject: unknown kid", "unknown_kid.txt", 1),
                                  ("reject: oversize (9 KiB)", "oversize.txt", 1)]:
                r = median_round([measure(server.pid, url, [os.path.join(work, file), "post", 1, 0, 0], yardstick="verify")
                                  for _ in range(n)])
                r["vs_accept"] = r["vs_ring"] / accept
                rows.append((name, r, "verify"))
            # The HTTP floor: a request that does no work at all, through the same stack.
            r = median_round([measure(server.pid, f"{server2_url}/healthz", None, yardstick="verify")
                              for _ in range(ROUNDS)])
            r["vs_accept"] = r["vs_ring"] / accept
            rows.append(("floor: GET /healthz (no work)", r, "verify"))
            empty = r
            notes.append(f"SERVER2 resident memory after the runs: {rss_mib(server.pid):.1f} MiB")
            if shutil.which("redis-server"):
                more_rows, more_notes, more_failures = redis_store(work, env, server2_url, per_run, rate, server.pid, load)
                rows += more_rows
                notes += more_notes
                failures += more_failures
            else:
                notes.append("Redis replay store: redis-server is not installed (apt-get install redis-server), "
                             "so it is skipped")
            # Last, on tokens of its own: the runs before it use up much of the first set's life.
            peer_runs = peer_comparison(work, peers, server.pid, server2_url)
            failures += peer_runs[3]
        finally:
            server.terminate()
            server.wait(timeout=15)


        instructions = {}
        # callgrind_control and callgrind_annotate are Perl scripts.
        callgrind_tools = all(shutil.which(t) for t in ("valgrind", "callgrind_control", "callgrind_annotate", "perl"))
        if callgrind_tools:
            instructions["SERVER2 accept"] = server2_callgrind(work, env, server2_url)

        # SERVER1 minting for a signed-in session: on SQLite, then on PostgreSQL.
        env1, s1, sqlite_mint = mint_on(work, "SQLite", None, server2_url, server1_url, rows, failures)
        cluster = postgres_cluster(work)
        if cluster:
            pg_url, pg = cluster
            try:
                _, _, pg_mint = mint_on(work, "PostgreSQL", pg_url, server2_url, server1_url, rows, failures)
                pg_mint["vs_accept"] = pg_mint["vs_ring"] / sqlite_mint["vs_ring"]
                notes.append(f"SERVER1 on PostgreSQL mints {pg_mint['vs_accept']:.0%} as many tokens per SERVER1 "
                             "CPU-second as on SQLite (each beside the yardstick; PostgreSQL on CPU 1)")
            finally:
                pg.terminate()
                pg.wait(timeout=15)
        else:
            notes.append("SERVER1 on PostgreSQL: PostgreSQL is not installed (apt-get install postgresql), so it is skipped")
        if callgrind_tools:
            mint_url = f"{server1_url}/handoff/partner/report.view?report_id=42"
            instructions["SERVER1 mint"] = callgrind(
                work, "server1", [f"{BIN}/server1", "serve"], env1, f"{server1_url}/healthz",
                lambda: wrk(mint_url, None, seconds=8, connections=2, headers=[f"Cookie: {s1['cookie']}", "Sec-Fetch-Site: same-origin"]), RING_SIGN)

        memory = json.loads(run([f"{BIN}/handoff-bench", "replay-memory", "--entries", "1000000"]))
        notes.append(
            f"replay store: {memory['bytes_per_entry']:.0f} bytes per live entry over 1,000,000 entries "
            f"(resident {memory['rss_before_kib'] / 1024:.1f} → {memory['rss_full_kib'] / 1024:.1f} MiB, "
            f"{memory['rss_after_expiry_kib'] / 1024:.1f} MiB once they expired)")

        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        print()
        print(f"Machine: {os.cpu_count()} CPUs ({cpu}); server on CPU 0, load generator on CPU 1; {DURATION} s per run, "
              f"{CONNECTIONS} connections; RUST_LOG={LOG}")
        print()
        print_peer_table(*peer_runs[:3])
        print("Yardstick: ring's Ed25519 verify (sign for SERVER1) on one thread, running on CPU 0 beside the server "
              "during each run, per CPU-second of its own")
        print()
        print("| scenario | requests/s | p50 | p99 | server CPU-s | per server CPU-s | ring per CPU-s | vs ring | vs accept |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, r, yard in rows:
            ring = f"{r['ring']:,.0f}" if "ring" in r else "—"
            ratio = f"{r['vs_ring']:.0%} of {yard}" if "vs_ring" in r else "—"
            if "spread" in r:
                ratio += f" (median of {r['rounds']}: {r['spread']})"
            faster = f"{r['vs_accept']:.1f}×" if "vs_accept" in r else "—"
            print(f"| {name} | {r['rps']:,.0f} | {r['p50']} | {r['p99']} | {r['cpu']:.2f} | "
                  f"{r['per_cpu_s']:,.0f} | {ring} | {ratio} | {faster} |")
        print()
        print(f"Constant offered load, open loop (`handoff-bench load`, 16 connections, latency from each request's due time): "
              f"{load['offered_per_sec']:,.0f}/s offered (half the peak), {load['achieved_per_sec']:,.0f}/s answered; "
              f"p50 {load['p50_us'] / 1000:.2f} ms, p90 {load['p90_us'] / 1000:.2f} ms, p99 {load['p99_us'] / 1000:.2f} ms, "
              f"p99.9 {load['p999_us'] / 1000:.2f} ms, max {load['max_us'] / 1000:.2f} ms; "
              f"{load['cpu_us']:.0f} µs of server CPU per accept at that load, {load['busy']:.0%} of the core")
        print(f"The machine's own floor at that load (`handoff-bench floor`: the same schedule on CPU 0 with each request "
              f"replaced by {floor['work_us']:.0f} µs of plain computation, the server's CPU time per accept; no server, "
              f"no network): p50 {floor['p50_us'] / 1000:.2f} ms, p90 {floor['p90_us'] / 1000:.2f} ms, "
              f"p99 {floor['p99_us'] / 1000:.2f} ms, p99.9 {floor['p999_us'] / 1000:.2f} ms, max {floor['max_us'] / 1000:.2f} ms")
        print(f"An empty request at that rate (GET /healthz, the same generator: loopback and wake-ups, no work): "
              f"p50 {empty_load['p50_us'] / 1000:.2f} ms, p99 {empty_load['p99_us'] / 1000:.2f} ms")
        print()
        # An accept cannot cost less than the empty request plus one verify, and a refusal cannot
        # cost less than the empty request.
        ceiling = 1 / (1 + 1 / empty["vs_ring"])
        print(f"Floors of the HTTP stack: an empty GET /healthz costs {1e6 / empty['per_cpu_s']:.1f} µs of server CPU, "
              f"{empty['vs_accept']:.1f}× less than an accept, so no refusal can be faster than that; "
              f"ring's verify plus that empty request would be {ceiling:.0%} of verify")
        for name, r, _ in rows:
            if name.startswith("SERVER1: floor"):
                print(f"{name}: {1e6 / r['per_cpu_s']:.1f} µs of server CPU; ring's sign plus that empty request "
                      f"would be {1 / (1 + 1 / r['vs_ring']):.0%} of sign")
            if "vs_least" in r:
                print(f"{name}: {r['vs_ring']:.0%} of sign, {r['vs_least']:.0%} of the least possible mint's rate "
                      f"(its look-up, sign and page alone: {r['vs_ring'] / r['vs_least']:.0%} of sign, "
                      f"the most any mint could reach here)")
        print()
        if instructions:
            for name, i in instructions.items():
                print_instructions(name, i)
                if i["refused"]:
                    failures.append(f"callgrind run of {name}: {i['refused']} refused")
        else:
            print("Instructions: valgrind or Perl is not installed (apt-get install valgrind perl), so the callgrind shares are skipped")
        print()
        print(f"Steadiness of CPU 0 (one Ed25519 verify at a time, counted in {steady['windows']} windows of 10 ms): "
              f"{steady['share_below_half_speed']:.1%} of windows ran below half the median speed; "
              f"the slowest 1% at {steady['p1_vs_median']:.0%} of it, the slowest at {steady['min_vs_median']:.0%}")
        print()
        for n in notes:
            print(f"- {n}")
        if failures:
            print()
            for f in failures:
                print(f"FAILED: {f}")
            sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
