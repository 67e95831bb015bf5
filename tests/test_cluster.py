"""A real two-node Ray cluster on loopback (issue 12 part 2b), the way a user joins one.

`ray start --head` (127.0.0.1, its own port and temp dir, custom resource node_a) and a second node
`ray start --address=...` (127.0.0.2, its own --num-cpus, custom resource node_b); a recipe with
`ray.address` at the head, `rollout.workers: 2` and `rollout.worker_resources` [{node_a: 1},
{node_b: 1}] (one worker per node), in async mode. Mid-run every process of the second node is
SIGKILLed by PID; the run must finish every step once with full batches. Ray's state API then
shows a RolloutWorker on each node (the one on node b dead). The cluster is stopped by PID in a
finally block (never `ray stop`, which would stop every Ray on the machine).

Runs in the default suite (~70 s on 2 quiet cores, ~3-5 min at load ~12); skipped where the `ray` CLI or a second loopback
address is missing.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray")

RAY = os.path.join(os.path.dirname(sys.executable), "ray")
NODE_B_IP = "127.0.0.2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_alias_ok() -> bool:
    try:
        with socket.socket() as s:
            s.bind((NODE_B_IP, 0))
        return True
    except OSError:
        return False


def _session_pids(*markers: str) -> set[int]:
    """Processes whose command line names every one of `markers` (the cluster's temp dir, node b's
    address), and everything they started."""
    found: set[int] = set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            line = " ".join(p.info["cmdline"] or [])
            if all(m in line for m in markers):
                found.add(p.pid)
                found.update(c.pid for c in p.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _kill(pids: set[int]) -> None:
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs([p for p in (_proc(pid) for pid in pids) if p], timeout=10)


def _proc(pid: int):
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _state_query(gcs: str, env: dict) -> dict:
    """Nodes and RolloutWorker actors from Ray's own tables, asked by a driver in a separate process.
    `ray.util.state` would need the dashboard's HTTP server, which a minimal Ray install (no
    ray[default]) does not run, so the GCS node and actor tables are read directly."""
    code = f"""
import json, ray
from ray._private import state
ray.init(address={gcs!r}, log_to_driver=False)
nodes = {{n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}}
actors = [dict(node=nodes.get(a["Address"].get("NodeID")), state=a["State"], pid=a.get("Pid"))
          for a in state.actors().values() if a["ActorClassName"] == "RolloutWorker"]
print(json.dumps(dict(nodes=sorted(nodes.values()), actors=actors)))
"""
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists(RAY), reason="the `ray` command line is not installed next to python")
@pytest.mark.skipif(not _loopback_alias_ok(), reason=f"{NODE_B_IP} (a second loopback address) is not usable here")
def test_two_node_cluster_survives_losing_a_node(tmp_path):
    temp = f"/tmp/crl-{os.getpid()}-{_free_port()}"  # Ray's socket paths must stay short
    port, dash, nm_port = _free_port(), _free_port(), _free_port()
    gcs = f"127.0.0.1:{port}"
    # Ray's own health-check timing: a tighter one (0.5-1 s periods) declared a live but CPU-starved
    # node dead at load ~14, so a lost node is noticed after Ray's default ~15-30 s
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    out = tmp_path / "runs"
    recipe = tmp_path / "cluster.yaml"
    recipe.write_text(f"""name: cluster
output: {out}
seed: 0
stages: [rl]
task: {{n_functions: 4, test_depths: [1]}}
rollout: {{max_new_tokens: 16, workers: 2, mode: async, max_lag: 1, worker_resources: [{{node_a: 1}}, {{node_b: 1}}]}}
ray: {{address: "{gcs}"}}
rl: {{steps: 24, prompts_per_step: 8, group_size: 8, checkpoint_every: 100, drop_uniform_groups: false, advantage: batch_mean, drop_zero_advantage: false, entropy_coef: 0.01}}
""")
    driver = None
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                        '--resources={"node_a": 1}', f"--temp-dir={temp}", f"--dashboard-port={dash}",
                        # workers at nice 0, not Ray's 15 (see ray_connect.connect_ray); applies to every node
                        '--system-config={"worker_niceness": 0}',
                        "--dashboard-host=127.0.0.1", "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=90)
        before = _session_pids(temp)
        subprocess.run([RAY, "start", f"--address={gcs}", f"--node-ip-address={NODE_B_IP}", "--num-cpus=1",
                        '--resources={"node_b": 1}', f"--node-manager-port={nm_port}", "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=90)
        node_b = _session_pids(temp, NODE_B_IP)  # the second node's raylet and log monitor, and their children
        assert node_b and not node_b & before, "the second node's processes were not found"

        driver = subprocess.Popen([sys.executable, "-m", "compose_rl.cli", "recipe", str(recipe)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        rows: list[dict] = []
        deadline = time.time() + 120
        while time.time() < deadline and driver.poll() is None:  # mid-run: a few steps done
            metrics = glob.glob(str(out / "*" / "metrics.jsonl"))
            if metrics:
                rows = [json.loads(x) for x in open(metrics[0]) if x.strip()]
                if sum(r["stage"] == "rl" for r in rows) >= 4:
                    break
            time.sleep(0.2)
        assert driver.poll() is None, f"the run ended before the kill: {driver.stderr.read()[-2000:]}"
        _kill(_session_pids(temp, NODE_B_IP))  # node b as started, and the workers it started since
        err = driver.communicate(timeout=180)[1]
        assert driver.returncode == 0, err[-3000:]

        rows = [json.loads(x) for x in open(glob.glob(str(out / "*" / "metrics.jsonl"))[0]) if x.strip()]
        rl = [r for r in rows if r["stage"] == "rl"]
        assert [r["step"] for r in rl] == list(range(24))  # no step lost or repeated
        assert all(r["rollout/samples"] == 64 and r["rollout/lag_max"] <= 1 for r in rl)  # full batches
        assert "rollout worker 1" in err and "died" in err  # the loss was noticed and said

        state = _state_query(gcs, env)
        assert len(state["nodes"]) == 2 and NODE_B_IP in state["nodes"]
        on = {}
        for a in state["actors"]:
            on.setdefault(a["node"], []).append(a["state"])
        assert set(on) == set(state["nodes"]), state  # workers ran on both nodes
        assert set(on[NODE_B_IP]) == {"DEAD"}  # node b's worker died with it; its replacement ran on the head
        # (no wall-clock bound: the machines are noisy; the subprocess timeouts above bound a hang)
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        _kill(_session_pids(temp))
        shutil.rmtree(temp, ignore_errors=True)
