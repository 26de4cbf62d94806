"""The chaos harness (issue #17): the stack as `make up` runs it, plus a second reconciler
replica, both reconcilers over PostgreSQL, while a driver edits both sides of several mailboxes
and faults are injected: kill -9 of every service in turn (the devstack starts them again, as
Kubernetes would), a NATS restart, a database restart, and the emulators' own faults
(throttling, 5xx, latency, a response dropped after its write committed).

At the end the faults stop, every mailbox is synced until it settles, and the invariants are
checked on the emulators' own state: every meeting exactly once on each side, showing its last
edit (NEWEST_WINS, the org's default policy: the newest write wins, so the last edit the
driver made is the one both sides must show), and no mailbox stuck. Loopback only; bounded in
time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from concord_testing import OtlpReceiver, PostgresCluster, free_port
from tests.chaos.sides import CrmSide, ExchangeSide, GraphSide, Side
from tests.e2e.clients import demo_mailbox, demo_org
from tests.e2e.conftest import RunningStack, start_stack, stop_stack

__all__ = ["Outcome", "run"]

SERVICES = ("mail-connector", "crm-connector", "mapping", "linker", "reconciler", "gateway")
# Edits of one meeting are this far apart, so modification times order them (EWS keeps
# seconds) and NEWEST_WINS has one right answer.
EDIT_SPACING_SECONDS = 2.5
GRAPH_CRM_USERNAME = "sales@concord-demo.example"


@dataclass
class Meeting:
    token: str
    n: int
    pair: int
    version: int = 0
    last: str = ""
    # Writes whose outcome is unknown (the side failed or dropped its answer): any of them
    # newer than `last` may be what the sides show.
    maybe: list[str] = field(default_factory=list)

    def allowed(self) -> set[str]:
        newest = _version(self.last)
        return {self.last} | {s for s in self.maybe if _version(s) > newest}


@dataclass
class Pair:
    mailbox: str
    mail: Side
    crm: Side


@dataclass
class Outcome:
    seconds: float
    mailboxes: int
    faults: Counter[str]
    creates: int
    updates: int
    uncertain: int
    lost: list[str]
    duplicated: list[str]
    stuck: list[str]
    # From the last fault to the invariants holding (or the settle bound).
    converged_in: float = 0.0
    # How many kinds of fault the loop could inject (a run of one round meets them all).
    fault_kinds: int = 0

    def table(self) -> str:
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.faults.items()))
        rows = [
            ("faults injected", f"{sum(self.faults.values())}  ({kinds})"),
            (
                "edits made",
                f"{self.creates + self.updates}  (creates {self.creates}, updates "
                f"{self.updates}; {self.uncertain} with an unknown outcome)",
            ),
            ("lost", f"{len(self.lost)}  {' '.join(self.lost[:5])}".rstrip()),
            ("duplicated", f"{len(self.duplicated)}  {' '.join(self.duplicated[:5])}".rstrip()),
            ("stuck", f"{len(self.stuck)}  {' '.join(self.stuck)}".rstrip()),
        ]
        head = (
            f"chaos: {self.seconds:.0f} s, {self.mailboxes} mailboxes, converged "
            f"{self.converged_in:.0f} s after the faults stopped"
        )
        return "\n".join([head, *(f"  {k:<16} {v}" for k, v in rows)])


def _version(subject: str) -> int:
    try:
        return int(subject.rsplit(" v", 1)[1])
    except (IndexError, ValueError):
        return -1


class Cluster:
    """The stack, PostgreSQL under both reconcilers, and the second reconciler (this harness
    is its supervisor, the devstack the others')."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        # Settings every process gets (both reconcilers included), e.g. a shorter lease.
        self.env = dict(env or {})
        self.pg = PostgresCluster().start()
        self.database = self.pg.new_database("reconciler")
        self.receiver = OtlpReceiver().__enter__()
        self.stack: RunningStack = start_stack(
            tmp, self.receiver, {**self.env, "RECONCILER_DATABASE_URL": self.database}
        )
        self.second: subprocess.Popen[bytes] | None = None
        self.start_second()

    def info(self) -> dict[str, Any]:
        with suppress(OSError, ValueError):
            self.stack.info = json.loads(self.stack.up_file.read_text())
        return self.stack.info

    def start_second(self) -> None:
        info = self.info()
        env = dict(os.environ) | self.env
        env.update(
            CONCORD_VAR_DIR=str(self.stack.var_dir),
            NATS_URL=info["nats"]["url"],
            OTEL_SERVICE_NAME="reconciler",
            RECONCILER_HOST="127.0.0.1",
            RECONCILER_PORT=str(free_port()),
            RECONCILER_DATABASE_URL=self.database,
            RECONCILER_ROLE="worker",
            PYTHONUNBUFFERED="1",
        )
        for name in SERVICES:
            env[name.upper().replace("-", "_") + "_ADDR"] = info["services"][name]["address"]
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        with (self.stack.var_dir / "log" / "reconciler-2.log").open("ab") as log:
            self.second = subprocess.Popen(
                [sys.executable, "-m", "concord_reconciler"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def revive_second(self) -> None:
        if self.second is not None and self.second.poll() is not None:
            self.start_second()

    def kill(self, service: str) -> None:
        if service == "reconciler-2":
            assert self.second is not None
            self.second.kill()
            self.second.wait(15)
            return
        info = self.info()
        pid = int(info["nats"]["pid"] if service == "nats" else info["services"][service]["pid"])
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def all_up(self) -> bool:
        info = self.info()
        pids = [info["nats"]["pid"], *(s["pid"] for s in info["services"].values())]
        alive = all(Path(f"/proc/{pid}").exists() for pid in pids)
        return alive and self.second is not None and self.second.poll() is None

    def concord(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        self.info()
        try:
            return self.stack.concord(*args, timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            return subprocess.CompletedProcess(expired.cmd, 124, "", "timed out")

    def dump_spans(self, path: Path) -> None:
        """Every span received, one JSON object a line (for reading a run afterwards)."""
        with path.open("w") as out:
            for span in self.receiver.spans():
                out.write(json.dumps(span.__dict__, default=str) + "\n")

    def close(self) -> None:
        if self.second is not None and self.second.poll() is None:
            self.second.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.second.wait(15)
            self.second.kill()
        self.info()
        stop_stack(self.stack)
        self.receiver.__exit__(None, None, None)
        self.pg.stop()


def _admin(cluster: Cluster) -> dict[str, tuple[str, str | bool]]:
    """Each emulator's fault endpoint, with the CA to trust it by."""
    emulators = cluster.info()["emulators"]
    return {
        "exchange": (emulators["exchange"]["url"].split("/EWS/")[0] + "/__admin/faults", True),
        "salesforce": (
            emulators["salesforce"]["admin_url"] + "/faults",
            emulators["salesforce"]["ca_cert"],
        ),
        "graph": (
            emulators["graph"]["url"].removesuffix("/v1.0") + "/__admin/faults",
            emulators["graph"]["ca_cert"],
        ),
    }


def _http() -> requests.Session:
    http = requests.Session()
    http.trust_env = False
    return http


def _faults(cluster: Cluster) -> list[tuple[str, Callable[[], None]]]:
    """Every fault the loop may inject, named by kind."""
    admin = _admin(cluster)
    http = _http()

    def post(emulator: str, spec: dict[str, Any]) -> Callable[[], None]:
        url, verify = admin[emulator]
        return lambda: http.post(url, json=spec, verify=verify, timeout=10).raise_for_status()

    kills: list[tuple[str, Callable[[], None]]] = [
        (f"kill -9 {name}", lambda name=name: cluster.kill(name))  # type: ignore[misc]
        for name in (*SERVICES, "reconciler-2")
    ]
    slow_write = {"kind": "latency", "path": "composite", "latency_ms": 800, "count": 4}
    return [
        *kills,
        ("nats restart", lambda: cluster.kill("nats")),
        ("database restart", cluster.pg.restart),
        ("exchange busy", post("exchange", {"kind": "server_busy", "times": 3})),
        ("exchange 500", post("exchange", {"kind": "http_error", "status": 500, "times": 2})),
        ("exchange latency", post("exchange", {"kind": "latency", "latency_ms": 1500, "times": 4})),
        ("exchange dropped answer", post("exchange", {"kind": "drop_response", "times": 1})),
        ("salesforce throttle", post("salesforce", {"kind": "throttle", "count": 3})),
        ("salesforce 500", post("salesforce", {"kind": "error", "status": 500, "count": 2})),
        ("salesforce slow write", post("salesforce", slow_write)),
        ("salesforce dropped answer", post("salesforce", {"kind": "drop_response", "count": 1})),
        ("graph throttle", post("graph", {"kind": "throttle", "times": 2})),
        ("graph dropped answer", post("graph", {"kind": "drop_response", "times": 1})),
    ]


class Injector:
    """Injects faults from a thread of its own, paced by the clock and not by the driver
    (whose edits may wait on a slow emulator), every kind once per round in a new order each
    round: a short run still meets each kind, as a random choice with replacement does not."""

    def __init__(
        self,
        cluster: Cluster,
        faults: list[tuple[str, Callable[[], None]]],
        rng: random.Random,
        say: Callable[[str], None],
    ) -> None:
        self.cluster = cluster
        self.faults = faults
        self.rng = rng
        self.say = say
        self.injected: Counter[str] = Counter()
        self.stop = threading.Event()

    def run(self, count: int, every: float, started: float) -> None:
        rounds: list[tuple[str, Callable[[], None]]] = []
        for n in range(1, count + 1):
            if self.stop.wait(max(0.0, started + n * every - time.monotonic())):
                return
            # The second reconciler has no supervisor but this harness.
            self.cluster.revive_second()
            if not rounds:
                rounds = self.rng.sample(self.faults, len(self.faults))
            name, inject = rounds.pop()
            for attempt in range(3):
                try:
                    inject()
                except Exception as error:
                    self.say(f"{time.monotonic() - started:6.1f} s  fault {name} failed: {error}")
                    time.sleep(0.5 * (attempt + 1))
                    continue
                self.injected[name] += 1
                self.say(f"{time.monotonic() - started:6.1f} s  fault: {name}")
                break


def _clear_faults(cluster: Cluster) -> None:
    with _http() as http:
        for url, verify in _admin(cluster).values():
            http.delete(url, verify=verify, timeout=10)


def _pairs(cluster: Cluster) -> list[Pair]:
    stack = cluster.stack
    sf = demo_org(stack)
    admin = sf.query(
        "SELECT Id FROM User WHERE Username = '"
        + stack.info["emulators"]["salesforce"]["username"]
        + "'"
    )["records"][0]["Id"]
    sales = sf.query(f"SELECT Id FROM User WHERE Username = '{GRAPH_CRM_USERNAME}'")["records"]
    pairs = [Pair("demo", ExchangeSide("exchange", demo_mailbox(stack)), CrmSide("sf", sf, admin))]
    if sales:
        graph = GraphSide("graph", stack.info["emulators"]["graph"])
        pairs.append(Pair("demo-graph", graph, CrmSide("sf", sf, sales[0]["Id"])))
    return pairs


class Driver:
    """Edits both sides of every pair, as people would, and remembers what it wrote."""

    def __init__(self, pairs: list[Pair], run_id: str, rng: random.Random, per_pair: int) -> None:
        self.pairs = pairs
        self.run_id = run_id
        self.rng = rng
        self.per_pair = per_pair
        self.meetings: list[Meeting] = []
        self.last_edit: dict[str, float] = {}
        self.creates = 0
        self.updates = 0
        self.uncertain = 0

    @property
    def prefix(self) -> str:
        return f"chaos{self.run_id}-"

    def step(self) -> None:
        p = self.rng.randrange(len(self.pairs))
        pair = self.pairs[p]
        mine = [m for m in self.meetings if m.pair == p]
        if len(mine) < self.per_pair and (not mine or self.rng.random() < 0.3):
            meeting = Meeting(f"{self.prefix}{len(self.meetings):03d}", len(self.meetings), p)
            self.meetings.append(meeting)
            self._write(meeting, self.rng.choice([pair.mail, pair.crm]), create=True)
            return
        now = time.monotonic()
        ready = [m for m in mine if now - self.last_edit.get(m.token, 0) >= EDIT_SPACING_SECONDS]
        if not ready:
            return
        meeting = self.rng.choice(ready)
        sides = [pair.mail, pair.crm]
        self.rng.shuffle(sides)
        for side in sides:
            if self._write(meeting, side, create=False):
                return

    def _write(self, meeting: Meeting, side: Side, *, create: bool) -> bool:
        subject = f"{meeting.token} v{meeting.version + 1}"
        for attempt in range(3):
            try:
                if create:
                    if attempt and side.holdings(meeting.token):
                        break  # the failed try had created it (its answer was lost)
                    side.create(meeting.n, subject)
                elif not side.update(meeting.token, subject):
                    return False
                break
            except Exception:
                time.sleep(1.0)
        else:
            meeting.version += 1
            meeting.maybe.append(subject)
            self.uncertain += 1
            self.last_edit[meeting.token] = time.monotonic()
            return True
        meeting.version += 1
        meeting.last = subject
        self.last_edit[meeting.token] = time.monotonic()
        if create:
            self.creates += 1
        else:
            self.updates += 1
        return True

    def judge(self) -> tuple[list[str], list[str]]:
        """(lost, duplicated): tokens missing from a side or not showing their last edit, and
        tokens held more than once on a side."""
        lost: list[str] = []
        duplicated: list[str] = []
        for p, pair in enumerate(self.pairs):
            mail = pair.mail.holdings(self.prefix)
            crm = pair.crm.holdings(self.prefix)
            for meeting in (m for m in self.meetings if m.pair == p):
                held = meeting.token in mail or meeting.token in crm
                if not meeting.last and not held:
                    continue  # its one create failed, and it never happened
                shown = [*mail.get(meeting.token, []), *crm.get(meeting.token, [])]
                if len(mail.get(meeting.token, [])) > 1 or len(crm.get(meeting.token, [])) > 1:
                    duplicated.append(f"{pair.mailbox}:{meeting.token}")
                allowed = meeting.allowed()
                both = meeting.token in mail and meeting.token in crm
                if not both or len(set(shown)) != 1 or shown[0] not in allowed:
                    lost.append(
                        f"{pair.mailbox}:{meeting.token}={sorted(set(shown))}!={sorted(allowed)}"
                    )
        return lost, duplicated


def _settle(
    cluster: Cluster, driver: Driver, seconds: float
) -> tuple[list[str], list[str], list[str]]:
    """Sync every mailbox until the invariants hold or `seconds` pass; then who is stuck."""
    deadline = time.monotonic() + seconds
    while not cluster.all_up() and time.monotonic() < deadline:
        cluster.revive_second()
        time.sleep(0.5)
    lost: list[str] = []
    duplicated: list[str] = []
    failed: set[str] = set()
    while time.monotonic() < deadline:
        failed = {
            pair.mailbox
            for pair in driver.pairs
            if cluster.concord("sync", pair.mailbox, "--wait").returncode != 0
        }
        lost, duplicated = driver.judge()
        if not (lost or duplicated or failed):
            break
        time.sleep(2)
    stuck = sorted(failed)
    for pair in driver.pairs:
        shown = cluster.concord("--json", "status", pair.mailbox)
        with suppress(ValueError, KeyError):
            state = json.loads(shown.stdout)["status"]["mailbox"].get("state", "")
            if state != "MAILBOX_STATE_ACTIVE" and pair.mailbox not in stuck:
                stuck.append(f"{pair.mailbox}({state})")
    return lost, duplicated, stuck


@contextmanager
def _cluster(tmp: Path, env: dict[str, str] | None, *, keep_spans: bool) -> Iterator[Cluster]:
    cluster = Cluster(tmp, env)
    try:
        yield cluster
    finally:
        if keep_spans:
            cluster.dump_spans(tmp / "spans.jsonl")
        cluster.close()


def run(
    tmp: Path,
    *,
    seconds: float,
    fault_every: float,
    per_pair: int = 12,
    settle_seconds: float = 240,
    seed: int | None = None,
    say: Callable[[str], None] = print,
    keep_spans: bool = False,
    env: dict[str, str] | None = None,
) -> Outcome:
    rng = random.Random(seed)
    with _cluster(tmp, env, keep_spans=keep_spans) as cluster:
        say(f"stack up in {cluster.stack.start_seconds:.0f} s")
        # Start from synced mailboxes, so the first edits do not wait behind a first sync.
        for mailbox in ("demo", "demo-graph"):
            cluster.concord("sync", mailbox, "--wait")
        say("first syncs done; faults and edits start")
        pairs = _pairs(cluster)
        driver = Driver(pairs, uuid.uuid4().hex[:6], rng, per_pair)
        faults = _faults(cluster)
        injector = Injector(cluster, faults, random.Random(rng.random()), say)
        count = max(1, int(seconds / fault_every))
        started = time.monotonic()
        thread = threading.Thread(
            target=injector.run, args=(count, fault_every, started), name="chaos-faults"
        )
        thread.start()
        try:
            # The edits go on until the time is up and every fault is in (an injection may
            # take seconds: a database restart, a loaded machine).
            while thread.is_alive() or time.monotonic() - started < seconds:
                driver.step()
                time.sleep(0.1)
        finally:
            injector.stop.set()
            thread.join()
        injected = injector.injected
        _clear_faults(cluster)
        faults_over = time.monotonic()
        try:
            lost, duplicated, stuck = _settle(cluster, driver, settle_seconds)
        finally:
            for pair in pairs:
                pair.mail.close()
                pair.crm.close()
        return Outcome(
            seconds=time.monotonic() - started,
            mailboxes=len(pairs),
            faults=injected,
            creates=driver.creates,
            updates=driver.updates,
            uncertain=driver.uncertain,
            lost=lost,
            duplicated=duplicated,
            stuck=stuck,
            converged_in=time.monotonic() - faults_over,
            fault_kinds=len(faults),
        )
