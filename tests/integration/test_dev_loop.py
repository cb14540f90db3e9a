"""The developer loop for real, in one boot of the dev-mariadb image: 'dev
up' (a temporary state folder, a copy of the Trove tree the image was built
from), 'dev status', a change to the agent's code seen through an RPC
answer after 'dev sync', 'dev prepare', 'dev reset' back to an agent that
answers and was never prepared, 'dev down' leaving no process, mount, loop
device or folder behind. The split of the wall time is printed."""
import json
from pathlib import Path
import re
import secrets
import shutil
import subprocess
import time

import pytest

from tests.helpers.cli import cli

pytestmark = pytest.mark.integration

MANAGER_PY = Path("trove/guestagent/datastore/manager.py")
STATS_RETURN = "        stats['mgr_extra_info'] = self.get_volume_info()\n        return stats\n"


def dev(state: Path, *args, timeout=1800) -> subprocess.CompletedProcess:
    proc = cli("dev", "--state", str(state), *args, timeout=timeout)
    assert proc.returncode == 0, f"dev {args[0]}: {proc.stderr[-4000:]}"
    return proc


def answer(proc: subprocess.CompletedProcess):
    return json.loads(proc.stdout)


def mark_filesystem_stats(tree: Path, token: str) -> None:
    """The agent's get_filesystem_stats also returns dev_loop: token."""
    path = tree / MANAGER_PY
    text = path.read_text()
    assert text.count(STATS_RETURN) == 1, "Trove's get_filesystem_stats changed shape"
    path.write_text(text.replace(STATS_RETURN, STATS_RETURN.replace(
        "        return stats", f"        stats['dev_loop'] = {token!r}\n        return stats")))


def epmd_serves_others() -> bool:
    """Erlang's port mapper has nodes registered: another broker on this
    host uses it (epmd -kill leaves it running then, rightly)."""
    names = subprocess.run(["epmd", "-names"], capture_output=True, text=True).stdout
    return "\nname " in names


def what_remains(state: Path) -> dict:
    """Processes naming the state folder (qemu, RabbitMQ, the conductor:
    in their command line or environment), mounts under it, loop devices
    backed by a file under it."""
    marker = str(state).encode()
    procs = []
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit():
            continue
        try:
            head, _, tail = pid.joinpath("stat").read_text().rpartition(")")
            if tail.split()[0] in ("Z", "X"):
                continue        # exited, not yet reaped by its parent
            seen = pid.joinpath("cmdline").read_bytes() + pid.joinpath("environ").read_bytes()
        except OSError:
            continue
        if marker not in seen:
            continue
        if head.endswith("(epmd") and epmd_serves_others():
            continue            # started by our broker, shared by another one since
        procs.append(f"{pid.name}: {pid.joinpath('cmdline').read_bytes()[:200]!r}")
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if str(state) in line]
    loops = subprocess.run(["losetup", "--list", "--noheadings", "-O", "NAME,BACK-FILE"],
                           capture_output=True, text=True).stdout
    return {"processes": procs, "mounts": mounts,
            "loops": [line for line in loops.splitlines() if str(state) in line]}


def test_dev_loop_in_one_boot(dev_mariadb, trove_checkout, tmp_path):
    state = tmp_path / "state"
    tree = tmp_path / "trove"
    shutil.copytree(trove_checkout, tree, symlinks=True)
    token = f"dev-loop-{secrets.token_hex(4)}"
    split = {}
    start = time.monotonic()

    def lap(name):
        nonlocal start
        now = time.monotonic()
        split[name] = round(now - start, 1)
        start = now

    try:
        up = answer(dev(state, "up", "--image", str(dev_mariadb.path),
                        "--trove-src", str(tree)))
        assert up["state"] == str(state) and up["trove_src"] == str(tree)
        assert set(up["seconds"]) == {"boot", "agent"}
        status = answer(dev(state, "status"))
        assert status["vm"]["running"] and status["broker"]["running"]
        assert status["conductor"]["running"]
        assert status["agent"]["answers"] is True, status["agent"]
        assert status["prepared"] is False
        before = answer(dev(state, "rpc", "get_filesystem_stats", "fs_path=/var/lib/mysql"))
        assert "dev_loop" not in before and before["total_blocks"] > 0
        lap("up")

        mark_filesystem_stats(tree, token)
        synced = answer(dev(state, "sync"))
        assert synced["sent"] > 0 and synced["seconds"]["first_answer"] > 0
        assert synced["installed"] is True      # the first sync: the editable install
        stats = answer(dev(state, "rpc", "get_filesystem_stats", "fs_path=/var/lib/mysql"))
        assert stats["dev_loop"] == token
        lap("sync_to_answer")

        prepared = answer(dev(state, "prepare"))
        assert prepared["database"] and prepared["user"]
        assert 0 < prepared["prepare_to_healthy"] <= prepared["prepare_to_query"]
        assert answer(dev(state, "status"))["prepared"] is True
        lap("prepare")

        reset = answer(dev(state, "reset"))
        assert reset["seconds"]["first_answer"] > 0
        status = answer(dev(state, "status"))
        assert status["agent"]["answers"] is True, status["agent"]
        assert status["prepared"] is False and status["last_heartbeat"] is None
        lap("reset")
    finally:
        down = cli("dev", "--state", str(state), "down", timeout=600)
    assert down.returncode == 0, down.stderr[-3000:]
    stopped = answer(down)["stopped"]
    names = [re.sub(r" \(pid \d+\)", "", what) for what in stopped]
    assert names == ["conductor", "qemu", "RabbitMQ"], stopped
    lap("down")
    split["total"] = round(sum(split.values()), 1)
    print(f"dev loop in one boot (up: {up['seconds']}; sync: {synced['seconds']}): "
          + ", ".join(f"{name} {seconds} s" for name, seconds in split.items()))
    assert what_remains(state) == {"processes": [], "mounts": [], "loops": []}
    assert not state.exists()
