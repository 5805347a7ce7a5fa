"""Cases H3 and H4: many clients pushing to ``syncline serve`` processes over one PostgreSQL.

H3. 20 concurrent clients (4 processes x 5 threads of ``http_load.py load``, each client its own
    principal and ``memory://`` store, pushing 10 new posts at a time) against 1, 2 and 4
    ``syncline serve`` processes on one PostgreSQL schema (client ``c`` uses server
    ``c % servers``) for ``LOAD_SECONDS``. Reports mutations/s, push latency percentiles and
    server CPU per mutation, then checks the database holds every mutation exactly once
    (records, change log, mutation results). ``bare``: the same clients writing the same rows
    with plain psycopg (``http_load.py bare``: no counter row, no lock, one transaction per
    batch), the ceiling of the database and driver for this load.

H4. Pushes in flight: the servers reach PostgreSQL through :class:`LatencyProxy`, which holds
    every chunk 5 ms in each direction (a database across a network). ``t1`` is the median of
    one client's push of 5 creates alone; then 20 clients push 5 creates at a time through 2
    server processes for ``FLIGHT_SECONDS``. Pushes/s x ``t1`` is the number of pushes in
    flight on average (1 would be a global lock).

    python -m pytest benchmarks/test_scale_bench.py --benchmark-enable -p no:cacheprovider -s

Figures are printed at the end (``scale: concurrent clients``). Servers listen on 127.0.0.1 on
free ports and are stopped at the end; each case uses a schema of its own, dropped after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pytest
from http_load import HttpPost, make_http_posts

import syncline
from syncline.server.store import open_server_store
from syncline.testing.server import free_port

HERE = Path(__file__).parent
LOAD_PROCESSES, CLIENTS_PER_PROCESS, LOAD_BATCH = 4, 5, 10
LOAD_SECONDS = float(os.environ.get("SYNCLINE_SCALE_SECONDS", "15"))
N_CLIENTS = LOAD_PROCESSES * CLIENTS_PER_PROCESS
FLIGHT_BATCH, FLIGHT_SECONDS, FLIGHT_DELAY = 5, 12.0, 0.005
RESULTS: dict[str, dict[str, Any]] = {}


# -- processes --------------------------------------------------------------------------------

def serve(store_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A ``syncline serve`` process on a free port with the load's tokens, once healthy."""
    port = free_port()
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH"))
                                         if p)}
    tokens = [arg for c in range(N_CLIENTS) for arg in ("--token", f"t{c}=c{c}")]
    tokens += ["--token", "tsolo=solo"]  # H4's single client, apart from the load's
    with open(log, "ab") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "syncline.cli", "serve", "--store", store_url,
             "--entities", "http_load", "--host", "127.0.0.1", "--port", str(port), *tokens],
            stdout=subprocess.DEVNULL, stderr=err, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url + "v1/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    process.wait(10)
    raise RuntimeError(f"syncline serve did not start: {log.read_text()[-2000:]}")


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def serving(store_url: str, n: int, folder: Path
            ) -> Iterator[tuple[list[subprocess.Popen[bytes]], list[str]]]:
    """``n`` servers over ``store_url``, started one after the other (the first creates the
    tables): their processes and URLs, all stopped afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for i in range(n):
            process, url = serve(store_url, folder / f"serve{i}.log")
            procs.append(process)
            urls.append(url)
        yield procs, urls
    finally:
        for process in procs:
            stop(process)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds these processes used so far (Linux ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def postgres_cpu_seconds(pg_url: str) -> float | None:
    """CPU seconds of the PostgreSQL server at ``pg_url`` so far: the postmaster, its
    children that ended (their time is added to it) and those still running; None when it is
    not a server of this machine that we can read."""
    import psycopg

    tick = os.sysconf("SC_CLK_TCK")
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            row = conn.execute("SELECT setting FROM pg_settings "
                               "WHERE name = 'data_directory'").fetchone()
        assert row is not None
        postmaster = int((Path(row[0]) / "postmaster.pid").read_text().split()[0])
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
        total = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    child = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(child[1]) == postmaster:
                        total += int(child[11]) + int(child[12])
        return total / tick
    except Exception:
        return None


def machine_busy() -> tuple[float, float]:
    """The whole machine's busy and total CPU seconds so far."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(cpu) - cpu[3] - cpu[4]) / tick, sum(cpu) / tick


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_clients(command: str, urls: list[str], batch: int, seconds: float, folder: Path,
                servers: list[subprocess.Popen[bytes]], pg_url: str) -> dict[str, Any]:
    """``http_load.py <command>`` in ``LOAD_PROCESSES`` processes; their clients' results,
    the window, and the CPU the servers, the load processes, PostgreSQL and the whole
    machine used in it."""
    outs = [folder / f"{command}{k}.json" for k in range(LOAD_PROCESSES)]
    go = folder / f"{command}.start"
    loads, logs = [], []
    try:
        for k in range(LOAD_PROCESSES):
            logs.append(open(folder / f"{command}{k}.log", "ab"))  # noqa: SIM115
            loads.append(subprocess.Popen(
                [sys.executable, str(HERE / "http_load.py"), command,
                 *[arg for u in urls for arg in ("--url", u)],
                 "--first", str(k * CLIENTS_PER_PROCESS), "--clients",
                 str(CLIENTS_PER_PROCESS), "--batch", str(batch), "--start-file", str(go),
                 "--duration", str(seconds), "--out", str(outs[k])],
                stdout=subprocess.DEVNULL, stderr=logs[-1]))
        deadline = time.monotonic() + 300  # a busy machine takes long to import
        while not all(Path(f"{out}.ready").exists() for out in outs):
            assert time.monotonic() < deadline, "the load processes did not get ready"
            assert all(p.poll() is None for p in loads), "a load process ended early"
            time.sleep(0.05)
        start_at = time.time() + 0.5
        go.write_text(repr(start_at))
        time.sleep(max(0.0, start_at - time.time()))
        pids, load_pids = [s.pid for s in servers], [p.pid for p in loads]
        cpu0, busy0 = cpu_seconds(pids), machine_busy()
        clients0, pg0 = cpu_seconds(load_pids), postgres_cpu_seconds(pg_url)
        load0 = os.getloadavg()[0]
        time.sleep(seconds)
        cpu1, busy1 = cpu_seconds(pids), machine_busy()
        clients1, pg1 = cpu_seconds(load_pids), postgres_cpu_seconds(pg_url)
        for process in loads:
            process.wait(seconds + 300)
    finally:
        for process in loads:
            stop(process)
        for log in logs:
            log.close()
    clients = [c for out in outs for c in json.loads(out.read_text())["clients"]]
    errors = [c.get("error") for c in clients if "error" in c]
    assert not errors, errors
    assert len(clients) == N_CLIENTS
    latencies = [x for c in clients for x in c["latencies"]]
    timed = len(latencies) * batch
    window = max(c["t_end"] for c in clients) - start_at
    return {
        "servers": len(servers), "clients": N_CLIENTS, "batch": batch,
        "seconds": round(window, 2), "mutations_timed": timed,
        "mutations_per_s": round(timed / window), "pushes_per_s": round(len(latencies) / window,
                                                                        1),
        "p50_ms": round(percentile(latencies, 0.50) * 1e3, 1),
        "p90_ms": round(percentile(latencies, 0.90) * 1e3, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1e3, 1),
        "max_ms": round(max(latencies) * 1e3, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1e3, 1),
        "failed_pushes": sum(c.get("n_failures", 0) for c in clients),
        "server_cpu_s": round(cpu1 - cpu0, 2),
        "server_cpu_us_per_mutation": round((cpu1 - cpu0) / max(1, timed) * 1e6) if servers
        else None,
        "clients_cpu_s": round(clients1 - clients0, 2),
        "postgres_cpu_s": None if pg0 is None or pg1 is None else round(pg1 - pg0, 2),
        "machine_busy": f"{busy1[0] - busy0[0]:.1f} of {busy1[1] - busy0[1]:.1f} cpu s",
        "loadavg_1m_at_start": round(load0, 2), "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        "clients_out": clients,
    }


def check_exactly_once(pg_url: str, schema: str, clients: list[dict[str, Any]],
                       changes_have_mutation_ids: bool = True) -> str:
    """Every client's records on the server exactly once: rows, change log, results (of the
    load's principals ``c<n>``: H4's single client is ``solo``)."""
    import psycopg

    assert all(c["pending"] == 0 and c["acknowledged"] == c["created"] for c in clients)
    expected = {f"c{c['client']:02d}-{n:07d}" for c in clients for n in range(c["created"])}
    created = sum(c["created"] for c in clients)
    assert len(expected) == created
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute(
            f"SELECT id FROM \"{schema}\".http_posts WHERE id NOT LIKE 'single%'")]
        changes = conn.execute(
            f"SELECT count(*), count(DISTINCT mutation_id), count(DISTINCT record_id) "
            f"FROM \"{schema}\"._syncline_changes WHERE owner <> 'solo'").fetchone()
        applied = conn.execute(f"SELECT count(*) FROM \"{schema}\"._syncline_mutations "
                               f"WHERE key NOT LIKE 'solo/%'").fetchone()[0]
    assert len(ids) == created and set(ids) == expected
    assert changes == (created, created, created)
    assert applied == created
    return f"{created} records, {changes[0]} log rows, {applied} results: each exactly once"


@contextlib.contextmanager
def schema_url(pg_url: str, name: str) -> Iterator[str]:
    """A store URL on a schema of its own, dropped afterwards."""
    import psycopg

    schema = f"{name}{os.getpid()}"
    try:
        yield schema
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def report(case: str, result: dict[str, Any], benchmark: Any) -> None:
    shown = {k: v for k, v in result.items() if k != "clients_out"}
    RESULTS[case] = shown
    benchmark.extra_info.update(shown)
    print(f"\n{case}: {shown}")


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest) -> None:
    manager = request.config.pluginmanager
    if not manager.has_plugin("syncline-scale-bench"):
        manager.register(_Report(), "syncline-scale-bench")


class _Report:
    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if RESULTS:
            terminalreporter.section("scale: concurrent clients", sep="-", bold=True)
            for case, result in RESULTS.items():
                terminalreporter.write_line(f"{case}: {result}")


# -- H3 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("servers", [1, 2, 4])
def test_concurrent_clients(benchmark: Any, syncline_postgres_url: str, tmp_path: Path,
                            servers: int) -> None:
    benchmark.group = f"H3 http: {N_CLIENTS} clients, {servers} servers, postgresql"
    with schema_url(syncline_postgres_url, f"h3s{servers}x") as schema:
        store_url = f"{syncline_postgres_url}?schema={schema}"
        out: dict[str, Any] = {}
        with serving(store_url, servers, tmp_path) as (procs, urls):

            def run() -> None:
                out.update(run_clients("load", urls, LOAD_BATCH, LOAD_SECONDS, tmp_path,
                                       procs, syncline_postgres_url))

            benchmark.pedantic(run, rounds=1, iterations=1)
        out["verified"] = check_exactly_once(syncline_postgres_url, schema, out["clients_out"])
    report(f"H3 {servers} server(s)", out, benchmark)


def test_bare_ceiling(benchmark: Any, syncline_postgres_url: str, tmp_path: Path) -> None:
    """The same clients writing the same rows with plain psycopg, no shared counter."""
    benchmark.group = f"H3 http: {N_CLIENTS} clients, bare psycopg, postgresql"
    with schema_url(syncline_postgres_url, "h3bare") as schema:
        open_server_store(f"{syncline_postgres_url}?schema={schema}",
                          [HttpPost]).close()  # the tables
        url = f"{syncline_postgres_url}?options={quote(f'-c search_path={schema}')}"
        out: dict[str, Any] = {}

        def run() -> None:
            out.update(run_clients("bare", [url], LOAD_BATCH, LOAD_SECONDS, tmp_path, [],
                                   syncline_postgres_url))

        benchmark.pedantic(run, rounds=1, iterations=1)
        out["verified"] = check_exactly_once(syncline_postgres_url, schema, out["clients_out"])
    report("H3 bare psycopg", out, benchmark)


# -- H4: pushes in flight behind a 5 ms proxy ---------------------------------------------------

class LatencyProxy:
    """A TCP proxy on 127.0.0.1 that delivers every chunk ``delay`` seconds after it arrived,
    in both directions, in order (latency without a bandwidth limit). Runs an asyncio loop in
    a thread of its own."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay = target_port, delay
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.base_events.Server | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                at, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, at - self.loop.time()))
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((self.loop.time() + self.delay, data))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(Exception):
                await sender
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)

    def __enter__(self) -> LatencyProxy:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self.loop).result(30)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def via(pg_url: str, port: int) -> str:
    """``pg_url`` with its port replaced (the proxy's)."""
    parts = urlsplit(pg_url)
    netloc = parts.netloc.rsplit(":", 1)[0] if ":" in parts.netloc.rsplit("@", 1)[-1] \
        else parts.netloc
    return urlunsplit(parts._replace(netloc=f"{netloc}:{port}"))


def single_push_seconds(url: str, rounds: int = 15) -> float:
    """The median of ``rounds`` pushes of ``FLIGHT_BATCH`` creates by one client alone."""
    store = syncline.open("memory://", entities=[HttpPost], transport=url,
                          transport_options={"token": "tsolo", "timeout": 60})
    try:
        posts, times = store.repository(HttpPost), []
        for r in range(rounds + 2):
            posts.upsert_many(make_http_posts(FLIGHT_BATCH, f"single{r:03d}-"))
            t0 = time.perf_counter()
            report_ = store.sync_engine.push()
            times.append(time.perf_counter() - t0)
            assert report_.pushed == FLIGHT_BATCH and not report_.failures
        return statistics.median(times[2:])  # the first ones open connections
    finally:
        store.close()


def test_pushes_in_flight(benchmark: Any, syncline_postgres_url: str, tmp_path: Path) -> None:
    benchmark.group = "H4 pushes in flight: 20 clients, 2 servers, 5 ms to postgresql"
    port = urlsplit(syncline_postgres_url).port
    assert port is not None
    with schema_url(syncline_postgres_url, "h4flight") as schema, \
            LatencyProxy(port, FLIGHT_DELAY) as proxy:
        store_url = f"{via(syncline_postgres_url, proxy.port)}?schema={schema}"
        out: dict[str, Any] = {}
        with serving(store_url, 2, tmp_path) as (procs, urls):
            t1 = single_push_seconds(urls[0])

            def run() -> None:
                out.update(run_clients("load", urls, FLIGHT_BATCH, FLIGHT_SECONDS, tmp_path,
                                       procs, syncline_postgres_url))

            benchmark.pedantic(run, rounds=1, iterations=1)
        clients = out["clients_out"]
        assert out["failed_pushes"] == 0, [c["failures"] for c in clients if c["failures"]]
        out["verified"] = check_exactly_once(syncline_postgres_url, schema, clients)
    # in_flight: the measure (pushes/s x one push's time alone). concurrent: Little's
    # law over the same window (pushes/s x their mean time): how many were open at once. On a
    # machine short of CPU the first falls when t1 does, though pushes overlap as much.
    out.update(t1_ms=round(t1 * 1e3, 1), in_flight=round(out["pushes_per_s"] * t1, 2),
               concurrent=round(out["pushes_per_s"] * out["mean_ms"] / 1e3, 1))
    report("H4 pushes in flight", out, benchmark)
