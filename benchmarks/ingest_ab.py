"""Ingest A/B: this tree's ingest path against an older tree's, on the same backlog, in one run.

    .venv/bin/python benchmarks/ingest_ab.py --old-tree /tmp/old [--rounds 60 --repeats 2]

(`--old-tree`: a checkout of the older code, e.g. `git worktree add --detach /tmp/old e0de4f3`.)

Why: an absolute readings/s from another day and another benchmark says little (docs/storage.md
once reported 104,600-121,400 readings/s drained; the same machine gave 33-37k since). Only two
trees measured on the same backlog, the same Mosquitto and the same influxd, alternately, say
which change cost what.

One Mosquitto and one influxd serve every run. Each run: a fresh persistent session (its own share group: a shared subscription would split the
backlog with the sessions before) and a fresh database; the fleet (this tree's simulators/fleet.py, in a child process) publishes the
same backlog (`rounds` polls of every meter) into the session; then a drain child runs the
tree's own `AccountingService` with its own `InfluxStore` (the tree first on `sys.path`, its
own numba cache) until every reading is accepted, and reports readings/s (readings accepted
per second from the first message's arrival in its inbox; `start_s`, from service.start()
to then, is not counted: engine set-up and connecting are not ingest), its CPU cores, and its stage seconds. The parent counts
the readings back from influxd exactly (`lost`). Trees alternate (old, new, old, new, ...), so
the machine's other load falls on both alike; each tree's best and all its runs are printed.
The old tree runs with this tree's interpreter and packages (it needs a subset of them).
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def drain(spec: dict) -> None:
    """Child mode: `spec["tree"]`'s accounting drains the backlog queued for `spec["client_id"]`;
    prints one JSON line.

    `spec`: tree, broker (host:port), influx_url, db, client_id, gateways, meters, readings (to
    wait for), spill (the store's spill directory); optionally signatures (the site's mode) with
    keys_dir (the fleet's key files, `<gateway>.key`: their public keys are registered in the
    site file, as an operator registers a gateway's) and evidence_dir (the store's evidence log,
    as `tanji serve` keeps it under its state directory)."""
    tree = spec["tree"]
    sys.path.insert(0, tree)
    os.environ["NUMBA_CACHE_DIR"] = str(Path(tree) / ".numba-cache")
    import psutil

    from accounting.service import AccountingService
    from accounting.store.influx import InfluxStore
    from simulators.fleet import Fleet
    from tanji.site import parse_site_text

    host, port = spec["broker"].split(":")
    readings, client_id = spec["readings"], spec["client_id"]
    if spec.get("signatures"):
        from gateway.signing_key import load_key
        from simulators.fleet import gateway_ids

        keys_dir = Path(spec["keys_dir"]) if spec.get("keys_dir") else None
        signers = {g: load_key(keys_dir / f"{g}.key") for g in gateway_ids("fleet", spec["gateways"])} if keys_dir else {}
        text = Fleet(host, int(port), gateways=spec["gateways"], meters_per_gateway=spec["meters"], site_id="fleet",
                     signers=signers).site_text(spec["signatures"])
    else:  # the site file as older trees' fleets write it (they know no signatures)
        text = Fleet(host, int(port), gateways=spec["gateways"], meters_per_gateway=spec["meters"],
                     site_id="fleet").site_text()
    site = parse_site_text(text, "fleet.yaml")
    store = InfluxStore(spec["influx_url"], token="bench", org="tanji", bucket=spec["db"], spill_dir=spec["spill"],
                        **({"evidence_dir": spec["evidence_dir"]} if spec.get("evidence_dir") else {}))
    service = AccountingService([site], store, broker_host=host, broker_port=int(port), client_id=client_id,
                                share_group=client_id)  # the tree's own cycle size, as it runs
    proc = psutil.Process()
    inbox = service._subscriber.inbox  # both trees have it; the clock starts at the first message
    put, first = inbox.put, []

    def timed_put(item: object, *args: object, **kwargs: object) -> None:
        if not first:
            first.append((time.monotonic(), proc.cpu_times(), _thread_cpu(proc), proc.num_ctx_switches()))
        put(item, *args, **kwargs)

    inbox.put = timed_put
    deliver, deliveries = service.pipeline._deliver, []  # both trees have it: how many engine deliveries

    def counted_deliver(cycles: list) -> None:
        if cycles:
            deliveries.append(sum(len(c.admitted.rows) for c in cycles))
        deliver(cycles)

    service.pipeline._deliver = counted_deliver
    started = time.monotonic()
    service.start()
    while service.stats.accepted < readings and time.monotonic() - started < 300:
        time.sleep(0.005)
    t0, times0, threads0, switches0 = first[0] if first else (started, proc.cpu_times(), {}, proc.num_ctx_switches())
    seconds = time.monotonic() - t0
    times, switches = proc.cpu_times(), proc.num_ctx_switches()
    cpu = times.user + times.system - times0.user - times0.system
    threads = {name: (u - threads0.get(name, (0.0, 0.0))[0], s - threads0.get(name, (0.0, 0.0))[1])
               for name, (u, s) in _thread_cpu(proc).items()}
    stages = dict(service.stats.stage_s)
    store.flush(120)
    service.stop()
    verified = getattr(service, "signatures", None)  # older trees have none
    try:
        from accounting.ingest.hot_path import compiled_passes
        passes = compiled_passes()
    except ImportError:  # a tree from before the compiled passes: all Python
        passes = None
    print(json.dumps({"accepted": service.stats.accepted, "quarantined": service.stats.quarantined,
                      "compiled_passes": passes,
                      "signatures": verified.to_dict() if verified is not None else None,
                      "seconds": seconds, "start_s": t0 - started, "readings_per_s": service.stats.accepted / seconds,
                      "accounting_cores": cpu / seconds,
                      "accounting_cpu_us_per_reading": round(cpu / service.stats.accepted * 1e6, 2),
                      "thread_cpu_us_per_reading": {name: round((u + s) / service.stats.accepted * 1e6, 2)
                                                    for name, (u, s) in sorted(threads.items()) if u + s > 0},
                      # the kernel's share (system calls, and futex waits for the interpreter lock)
                      "accounting_system_us_per_reading": round((times.system - times0.system)
                                                                / service.stats.accepted * 1e6, 2),
                      "thread_system_us_per_reading": {name: round(s / service.stats.accepted * 1e6, 2)
                                                       for name, (u, s) in sorted(threads.items()) if s > 0},
                      "context_switches_per_1000_readings": {
                          "voluntary": round((switches.voluntary - switches0.voluntary) / service.stats.accepted * 1e3, 1),
                          "involuntary": round((switches.involuntary - switches0.involuntary)
                                               / service.stats.accepted * 1e3, 1)},
                      "cycles": service.stats.cycles, "engine_deliveries": len(deliveries),
                      "readings_per_delivery": round(sum(deliveries) / max(1, len(deliveries))),
                      "stage_share": {k: round(v / sum(stages.values()), 3) for k, v in stages.items()},
                      "stage_s": {k: round(v, 2) for k, v in stages.items()}}))


def drain_command(spec: dict) -> list[str]:
    """The command line of a drain child (`drain(spec)`), as this interpreter runs it."""
    return [sys.executable, str(Path(__file__).resolve()), "--drain", json.dumps(spec)]


def _thread_cpu(proc: object) -> dict[str, tuple[float, float]]:
    """CPU seconds (user, system) of each live thread of this process, by thread name (paho's
    network thread, the admitting, store and engine threads, ...); threads of one name summed."""
    names = {t.native_id: t.name.split("-ab-")[0] for t in threading.enumerate()}
    out: dict[str, tuple[float, float]] = {}
    for t in proc.threads():  # type: ignore[attr-defined]
        name = names.get(t.id, "other")
        u, s = out.get(name, (0.0, 0.0))
        out[name] = (u + t.user_time, s + t.system_time)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-tree", required=False, help="checkout of the older code (e.g. e0de4f3)")
    parser.add_argument("--gateways", type=int, default=50)
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=60, help="backlog polls of every meter, per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each tree (alternating)")
    parser.add_argument("--py-spy", action="store_true", help="record each drain with py-spy (collapsed stacks, threads, idle included: /tmp/ab-TREE-RUN.txt)")
    parser.add_argument("--py-spy-gil", action="store_true",
                        help="as --py-spy, but sample only the thread holding the interpreter lock: where a GIL-bound "
                             "process spends its interpreter time (wall samples also count a thread waiting to get "
                             "the lock back, e.g. after hashlib released it)")
    parser.add_argument("--drain", help=argparse.SUPPRESS)  # child mode: a JSON spec (drain())
    args = parser.parse_args()
    if args.drain:
        drain(json.loads(args.drain))
        return 0
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba-cache"))
    import paho.mqtt.client as mqtt
    import psutil

    from accounting.ingest.subscriber import subscriptions
    from benchmarks.ingest import _count, _cpu_s, _Fleet
    from benchmarks.machine import machine_baseline
    from tests.services import InfluxServer, MosquittoServer

    machine = machine_baseline()
    trees = {"new": str(REPO)}
    if args.old_tree:
        trees = {"old": str(Path(args.old_tree).resolve()), **trees}
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    lost = 0
    with tempfile.TemporaryDirectory(prefix="tanji-ab-") as tmp:
        tmp_path = Path(tmp)
        broker = MosquittoServer(tmp_path / "mosquitto", extra_conf="max_inflight_messages 1000\n")
        influx = InfluxServer(tmp_path / "influxdb")
        broker.start()
        influx.start()
        fleet = _Fleet(broker.host, broker.port, args.gateways, args.meters)
        start_ms = int(time.time() * 1000) - ((args.repeats * args.rounds + 2) * len(trees) + 5) * 1000
        try:
            cursor_ms = start_ms
            for i in range(-1, args.repeats):  # run -1: a short warm-up of each tree (numba cache, imports)
                for name, tree in trees.items():
                    rounds = 2 if i < 0 else args.rounds
                    cid, db = f"ab-{name}-{i + 1}", f"ab_{name}_{i + 1}"
                    influx.create_database(db)
                    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False)
                    done = threading.Event()
                    client.on_subscribe = lambda *a, done=done: done.set()
                    client.connect(broker.host, broker.port)
                    client.loop_start()
                    client.subscribe([(t, 1) for t in subscriptions(["fleet"], cid)])
                    done.wait(10)
                    client.disconnect()
                    client.loop_stop()
                    # each run its own time span, so no tree meets readings older than a run before
                    backlog = fleet.publish(rounds, cursor_ms, 1000, realtime=False)
                    cursor_ms += rounds * 1000
                    influxd = psutil.Process(influx.influxd.proc.pid)
                    cpu0 = _cpu_s(influxd)
                    spy = f"/tmp/ab-{name}-{i + 1}.txt" if args.py_spy or args.py_spy_gil else None
                    cmd = drain_command({"tree": tree, "broker": f"{broker.host}:{broker.port}",
                                         "influx_url": influx.url, "db": db, "client_id": cid,
                                         "gateways": args.gateways, "meters": args.meters,
                                         "readings": backlog["readings"], "spill": str(tmp_path / f"spill-{db}")})
                    if spy:
                        sampled = ["--gil"] if args.py_spy_gil else ["--idle"]
                        rate = os.environ.get("AB_PY_SPY_RATE", "100")  # samples a second
                        cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "-r", rate, "--threads", *sampled,
                               "-f", "raw", "-o", spy, "--", *cmd]
                    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                    sys.stderr.write(out.stderr[-4000:])
                    if out.returncode != 0:
                        raise SystemExit(f"{name} drain failed:\n{out.stderr[-3000:]}")
                    result = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
                    result["influxd_cores"] = round((_cpu_s(influxd) - cpu0) / result["seconds"], 2)
                    result["lost"] = backlog["readings"] - _count(influx, db)
                    lost += result["lost"]
                    result["readings_per_s"] = round(result["readings_per_s"])
                    result["accounting_cores"] = round(result["accounting_cores"], 2)
                    if i >= 0:
                        runs[name].append(result)
                    print(name, json.dumps(result), file=sys.stderr, flush=True)
        finally:
            fleet.stop()
            influx.stop()
            broker.stop()
    best = {k: max(r["readings_per_s"] for r in v) for k, v in runs.items()}
    out = {"benchmark": "ingest_ab", "trees": trees, "readings_per_run": args.gateways * args.meters * args.rounds,
           **{f"{k}_readings_per_s": v for k, v in best.items()},
           "runs": runs, "lost": lost, "machine": machine}
    if "old" in best:
        out["ratio_new_to_old"] = round(best["new"] / best["old"], 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
