"""Run exchangelib's own live tests against a fresh Exchange emulator and print the pass count.

    .venv/bin/python tools/ews_conformance.py /path/to/exchangelib [-k EXPR] [--module M ...]
    make ews-conformance SUITE=/path/to/exchangelib

The suite is exchangelib's public repository (a checkout of ecederstrand/exchangelib): its tests
under `tests/` talk to the server named in its `settings.yml`. This script starts the emulator
over HTTPS on a free port with an empty mailbox, writes that `settings.yml` (the suite's own
checkout is left as it was: the file is removed afterwards, or the one there put back), runs the
in-scope modules with pytest and prints passed / failed / skipped. It is not part of `make test`:
CI has no copy of the suite. What the suite needs beyond the project's venv (requests_mock,
psutil) is installed once into `var/ews-conformance/deps`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parents[1]
VAR = ROOT / "var" / "ews-conformance"
# The live modules issue #15 puts in scope (public folders, personas, archive: out of scope).
IN_SCOPE = [
    "tests/test_items/test_basics.py",
    "tests/test_items/test_bulk.py",
    "tests/test_items/test_calendaritems.py",
    "tests/test_items/test_contacts.py",
    "tests/test_items/test_messages.py",
    "tests/test_items/test_queryset.py",
    "tests/test_items/test_sync.py",
    "tests/test_items/test_tasks.py",
    "tests/test_extended_properties.py",
    "tests/test_folder.py",
    "tests/test_account.py",
    "tests/test_autodiscover.py",
]
SUITE_DEPS = ["requests_mock", "psutil", "pytz"]
ACCOUNT = "exchangelib-test@concord.test"
PASSWORD = "exchangelib-test-password"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _deps() -> pathlib.Path:
    """The suite's extra packages in a directory of their own, never in the project's venv."""
    target = VAR / "deps"
    marker = target / ".installed"
    if not marker.exists():
        uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
        command = [uv, "pip", "install", "--quiet", "--no-deps", "--python", sys.executable]
        subprocess.run(
            [*command, "--target", str(target), *SUITE_DEPS],
            check=True,
        )
        marker.write_text(" ".join(SUITE_DEPS))
    return target


def _admin(base: str, path: str, body: object) -> object:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(
        f"{base}/__admin/{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10, context=context) as resp:
        return json.loads(resp.read() or b"null")


def _start_emulator(
    data_dir: pathlib.Path, port: int, log: pathlib.Path
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "concord_exchange_emulator", "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--tls"]
    proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the emulator exited ({proc.returncode}); see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the emulator did not start within 30 s")


def _counts(junit: pathlib.Path) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failures: list[tuple[str, str, str]] = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            counts["failed"] += 1
            failures.append((name, bad.tag, (bad.get("message") or "").splitlines()[0][:160]))
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=pathlib.Path, help="a checkout of ecederstrand/exchangelib")
    parser.add_argument("--module", action="append", help="run these test paths instead")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per test")
    parser.add_argument("--list-failures", action="store_true", help="print each failure")
    args = parser.parse_args(argv)
    suite: pathlib.Path = args.suite.resolve()
    if not (suite / "tests" / "common.py").is_file():
        parser.error(f"{suite} is not a checkout of exchangelib (no tests/common.py)")
    VAR.mkdir(parents=True, exist_ok=True)
    deps = _deps()
    work = pathlib.Path(tempfile.mkdtemp(prefix="run-", dir=VAR))
    port = _free_port()
    emulator = _start_emulator(work / "exchange", port, work / "emulator.log")
    settings = suite / "settings.yml"
    saved = settings.read_bytes() if settings.exists() else None
    try:
        _admin(
            f"https://127.0.0.1:{port}",
            "users",
            # The suite's own test mailbox is a Danish one (its tests run with locale da_DK), with
            # an archive (its ArchiveItem tests passed there before Exchange Online broke them).
            {
                "username": ACCOUNT,
                "password": PASSWORD,
                "display_name": "Exchangelib Test",
                "language": "da-DK",
                "archive": True,
            },
        )
        settings.write_text(
            f"server: '127.0.0.1:{port}'\n"
            f"autodiscover_server: '127.0.0.1:{port}'\n"
            f"username: '{ACCOUNT}'\npassword: '{PASSWORD}'\n"
            f"account: '{ACCOUNT}'\nalias: '{ACCOUNT}'\nverify_ssl: False\n"
        )
        junit = work / "junit.xml"
        pytest_args = [sys.executable, "-m", "pytest", *(args.module or IN_SCOPE)]
        # The suite's own rootdir and no config of ours (our pytest settings turn warnings into
        # errors and add plugins the suite was not written for).
        pytest_args += ["-c", os.devnull, "--rootdir", str(suite), "-p", "no:cacheprovider"]
        pytest_args += ["-p", "no:randomly", "-q", "--junitxml", str(junit)]
        pytest_args += ["--timeout", str(args.timeout), "-o", "junit_family=xunit2"]
        if args.keyword:
            pytest_args += ["-k", args.keyword]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(suite), str(deps)])}
        subprocess.run(pytest_args, cwd=suite, env=env, check=False)
        counts, failures = _counts(junit)
    finally:
        emulator.terminate()
        try:
            emulator.wait(10)
        except subprocess.TimeoutExpired:
            emulator.kill()
        if saved is None:
            settings.unlink(missing_ok=True)
        else:
            settings.write_bytes(saved)
    total = counts["passed"] + counts["failed"]
    share = 100 * counts["passed"] / total if total else 0.0
    if args.list_failures:
        for name, kind, message in failures:
            print(f"{kind.upper():7} {name}: {message}")
    print(
        f"exchangelib live tests against the emulator: {counts['passed']} passed, "
        f"{counts['failed']} failed, {counts['skipped']} skipped "
        f"({share:.1f}% of {total} run); details in {work}"
    )
    return 0 if counts["failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
