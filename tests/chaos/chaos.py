#!/usr/bin/env python3
"""potluck's chaos and soak runner.

Starts a coordinator and N workers on this machine, each in a network
namespace of its own (veth pairs on a bridge in a hub namespace, created and
removed here; addresses 10.231.0.0/24 exist only inside them), trains a small
job, and injects faults drawn from a seed with a given mean time between
failures:

  worker-kill       SIGKILL a worker; it comes back after a delay (a volunteer
                    returning), with the same state directory
  worker-freeze     SIGSTOP a worker, SIGCONT it later (a frozen laptop)
  coordinator-kill  SIGKILL the coordinator, restart it on the same directory
  checkpoint-kill   SIGKILL the coordinator while rank 0 uploads a checkpoint
                    (aimed at the upload: one step after the step before a
                    checkpoint step)
  link-cut          take a worker's interface down, bring it back later
  link-throttle     rate-limit a worker's interface with tc tbf for a while

At most one worker is impaired at a time and the coordinator faults do not
overlap, so the group always has a quorum to make progress with.

At the end it checks the invariants and prints a report (exit 1 if any
fails; the seed replays the schedule):
  - every worker that finished holds bitwise the same state (digests);
  - the committed ledger counts exactly the sequences the surviving lineage
    trained (every sample of each finished epoch exactly once);
  - the job committed its last step;
  - the final validation loss is within --loss-tolerance of a fault-free run
    of the same job (run first, on loopback);
  - no process is left, in any namespace.
Training efficiency = committed steps / steps the group computed.

Needs root (network namespaces) and python3, ip and tc (iproute2); with
--no-netns every process runs on loopback and the link faults are off.
Only Python's standard library is used.

  tests/chaos/chaos.py --potluck build/bin/potluck --profile short
  tests/chaos/chaos.py --potluck build/bin/potluck --profile long --minutes 60
"""

import argparse
import json
import math
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

SUBNET = "10.231.0"
PORT = 7070
CONTEXT = 64

PROFILES = {
    # CI: a few minutes, every kind of fault, at least 20 of them.
    # fill: the job's length as a share of the fault phase's fault-free steps
    # (faults slow the group down: about 30-55% of the fault-free rate at a
    # fault every 4 s, 90% at one a minute). The short profile's must keep
    # the faulted run inside the fault phase long enough for min_faults even
    # at the fast end (0.45 gave 15 faults in 87 s at 52%).
    "short": {"minutes": 2.5, "mtbf": 4.0, "min_faults": 20, "fill": 0.65,
              "kinds": ["worker-kill", "worker-freeze", "coordinator-kill",
                        "checkpoint-kill", "link-cut", "link-throttle"]},
    # Soak: hundreds of faults.
    "long": {"minutes": 60.0, "mtbf": 4.0, "min_faults": 0, "fill": 0.35,
             "kinds": ["worker-kill", "worker-freeze", "coordinator-kill",
                       "checkpoint-kill", "link-cut", "link-throttle"]},
    # The efficiency target: one worker failure per minute.
    "efficiency": {"minutes": 8.0, "mtbf": 60.0, "min_faults": 0, "fill": 0.9,
                   "kinds": ["worker-kill"]},
}


def skip(why):
    """77 (CTest: skipped), but 1 under CI=true: CI can run this, so a skip
    there would hide a failure."""
    print(f"chaos: {why}", file=sys.stderr)
    if os.environ.get("CI") == "true":
        print("chaos: CI=true, so this is a failure, not a skip", file=sys.stderr)
        return 1
    return 77


def log(message):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(*args, check=True):
    result = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result


def netns_path(ns):
    return f"/run/netns/{ns}"


def inside(ns, argv):
    """argv run in network namespace `ns`. nsenter switches the network
    namespace only; `ip netns exec` and `ip -n` also remount /sys, which
    fails where / is not a mount point (a chroot)."""
    return ["nsenter", f"--net={netns_path(ns)}"] + argv


def run_in(ns, *argv, check=True):
    return run(*inside(ns, list(argv)), check=check)


class Network:
    """A hub namespace with a bridge, and one namespace per node on it."""

    def __init__(self, prefix, nodes, enabled):
        self.enabled = enabled
        self.prefix = prefix
        self.hub = prefix + "hub"
        self.namespaces = {}
        self.addresses = {}
        for index, node in enumerate(nodes):
            self.addresses[node] = f"{SUBNET}.{index + 1}" if enabled else "127.0.0.1"
        if not enabled:
            return
        run("ip", "netns", "add", self.hub)
        run_in(self.hub, "ip", "link", "add", "br0", "type", "bridge")
        run_in(self.hub, "ip", "link", "set", "br0", "up")
        for node in nodes:
            ns = prefix + node
            run("ip", "netns", "add", ns)
            self.namespaces[node] = ns
            run_in(ns, "ip", "link", "set", "lo", "up")
            run_in(self.hub, "ip", "link", "add", "v" + node, "type", "veth",
                "peer", "name", "eth0", "netns", ns)
            run_in(self.hub, "ip", "link", "set", "v" + node, "master", "br0", "up")
            run_in(ns, "ip", "addr", "add", self.addresses[node] + "/24", "dev", "eth0")
            run_in(ns, "ip", "link", "set", "eth0", "up")

    def command(self, node, argv):
        if not self.enabled:
            return argv
        return inside(self.namespaces[node], argv)

    def link(self, node, up):
        run_in(self.namespaces[node], "ip", "link", "set", "eth0", "up" if up else "down")

    def throttle(self, node, on):
        if on:
            run_in(self.namespaces[node], "tc", "qdisc", "replace", "dev", "eth0", "root",
                "tbf", "rate", "4mbit", "burst", "32kbit", "latency", "100ms")
        else:
            run_in(self.namespaces[node], "tc", "qdisc", "del", "dev", "eth0", "root",
                check=False)

    def leftover_pids(self):
        pids = []
        for ns in self.namespaces.values():
            out = run("ip", "netns", "pids", ns, check=False).stdout.split()
            pids += [int(p) for p in out if p.isdigit()]
        return pids

    def remove(self):
        if not self.enabled:
            return
        for ns in list(self.namespaces.values()) + [self.hub]:
            run("ip", "netns", "del", ns, check=False)


class Process:
    """A potluck process; its JSON stdout lines go to a shared queue."""

    def __init__(self, name, argv, log_path, lines):
        self.name = name
        self.log = open(log_path, "a")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     start_new_session=True)
        self.frozen = False
        self.thread = threading.Thread(target=self._read, args=(lines,), daemon=True)
        self.thread.start()

    def _read(self, lines):
        for raw in self.proc.stdout:
            raw = raw.strip()
            if raw.startswith("{"):
                try:
                    lines.put((self.name, json.loads(raw)))
                except json.JSONDecodeError:
                    pass
            else:
                lines.put((self.name, {"text": raw}))

    def alive(self):
        return self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None


def coordinator_step(line, inner_steps):
    """The step a worker's progress line ends, as the coordinator counts steps:
    the step (sync), or the round for a round's last line (diloco, where
    the other lines are inner steps and give None)."""
    if "step" not in line or "generation" not in line:
        return None
    if inner_steps == 0:
        return line["step"]
    return line["rounds"] if line.get("round_ended") else None


class Lineage:
    """What the group trained: per step, the newest generation's line wins (a
    redone step comes from a newer generation)."""

    def __init__(self, inner_steps=0):
        self.inner_steps = inner_steps  # > 0: a diloco job, whose steps are rounds
        self.steps = {}          # step -> (generation, samples, validation loss or None)
        self.computed = set()    # (generation, step): every step the group computed
        self.digests = {}        # worker -> digest of its state when it finished

    def add(self, worker, line):
        if line.get("done"):
            if line.get("job_finished"):
                return  # restarted after the end: it trained nothing
            # What every member must hold alike (diloco: inner optimizer
            # state is each worker's own).
            self.digests[worker] = line["shared_digest"]
            return
        step = coordinator_step(line, self.inner_steps)
        if step is None:
            return
        generation = line["generation"]
        self.computed.add((generation, step))
        old = self.steps.get(step)
        if old is None or old[0] <= generation:
            validation = line.get("validation_loss", old[2] if old and old[0] == generation
                                  else None)
            self.steps[step] = (generation, line["samples"], validation)

    def trained_sequences(self, up_to):
        return sum(samples for step, (_, samples, _) in self.steps.items() if step <= up_to)


class Run:
    def __init__(self, args, dirs, potluck, dataset, name, network, job):
        self.args = args
        self.potluck = potluck
        self.dataset = dataset
        self.dir = os.path.join(dirs, name)
        os.makedirs(self.dir, exist_ok=True)
        self.net = network
        self.job = job
        self.lines = queue.Queue()
        self.lineage = Lineage(args.inner_steps)
        self.workers = {}
        self.coordinator = None
        self.address = f"{network.addresses['c']}:{PORT}"
        self.last_step = 0
        self.step_seconds = 0.5
        self.first_ms = None  # when the first step ended
        self.last_ms = None

    def start_coordinator(self):
        argv = self.net.command("c", [self.potluck, "coordinator", "--listen", self.address,
                                      "--data-dir", os.path.join(self.dir, "coordinator"),
                                      "--lease-seconds", str(self.args.lease_seconds)])
        self.coordinator = Process("coordinator", argv, os.path.join(self.dir, "coordinator.log"),
                                   self.lines)

    def coordinator_listening(self, timeout):
        """HOST:PORT from the coordinator's "listening on HOST:PORT" line
        (the port it chose, for --listen HOST:0)."""
        deadline = time.time() + timeout
        others = []  # lines of other processes, put back for drain()
        try:
            while True:
                try:
                    name, line = self.lines.get(timeout=0.1)
                except queue.Empty:
                    if not self.coordinator.alive() or time.time() > deadline:
                        raise RuntimeError(
                            "the coordinator printed no 'listening on' line; see "
                            + self.coordinator.log.name) from None
                    continue
                text = line.get("text", "")
                if name == "coordinator" and "listening on " in text:
                    return text.split("listening on ", 1)[1].split()[0]
                others.append((name, line))
        finally:
            for item in others:
                self.lines.put(item)

    def submit(self):
        spec_path = os.path.join(self.dir, "job.json")
        with open(spec_path, "w") as f:
            json.dump(self.job, f)
        deadline = time.time() + 30
        while True:
            result = run(*self.net.command("c", [
                self.potluck, "job", "submit", "--coordinator", self.address, "--data-dir",
                os.path.join(self.dir, "coordinator"), "--spec", spec_path]), check=False)
            if result.returncode == 0:
                return
            if time.time() > deadline:
                raise RuntimeError(f"job submit failed: {result.stderr.strip()}")
            time.sleep(0.3)

    def start_worker(self, index):
        node = f"w{index}"
        argv = self.net.command(node, [
            self.potluck, "worker", "--coordinator", self.address, "--job", self.job["job_id"],
            "--state-dir", os.path.join(self.dir, node), "--bind", self.net.addresses[node],
            "--threads", "1", "--progress", "json"])
        self.workers[index] = Process(node, argv, os.path.join(self.dir, node + ".log"),
                                      self.lines)

    def drain(self):
        while True:
            try:
                name, line = self.lines.get_nowait()
            except queue.Empty:
                return
            if name.startswith("w"):
                self.lineage.add(name, line)
                step = coordinator_step(line, self.args.inner_steps)
                if step is not None and step > self.last_step:
                    ms = line["unix_ms"]
                    if self.last_ms is not None:
                        dt = (ms - self.last_ms) / 1000.0 / (step - self.last_step)
                        if 0 < dt < 30:
                            self.step_seconds = 0.8 * self.step_seconds + 0.2 * dt
                    if self.first_ms is None:
                        self.first_ms = ms
                    self.last_ms = ms
                    self.last_step = step

    def finished(self):
        return all(not w.alive() for w in self.workers.values())

    def stop_all(self):
        for process in list(self.workers.values()) + [self.coordinator]:
            if process is None:
                continue
            if process.frozen:
                process.signal(signal.SIGCONT)
            process.signal(signal.SIGTERM)
        for process in list(self.workers.values()) + [self.coordinator]:
            if process is not None and process.wait(10) is None:
                process.signal(signal.SIGKILL)
                process.wait(5)

    def ledger(self):
        result = run(self.potluck, "job", "ledger", self.job["job_id"], "--data-dir",
                     os.path.join(self.dir, "coordinator"), "--json")
        return json.loads(result.stdout)


def sequences_in(ledger):
    """Sequences the committed ledger counts: a shard of `size` tokens holds
    (size - 1) // CONTEXT of them (each reads CONTEXT + 1 tokens, CONTEXT
    apart); a partly read one, offset // CONTEXT."""
    per_epoch = sum((s["size"] - 1) // CONTEXT for s in ledger["shards"])
    total = ledger["epoch"] * per_epoch
    for s in ledger["shards"]:
        o = s["committed_offset"]
        total += (s["size"] - 1) // CONTEXT if o == s["size"] else o // CONTEXT
    return total


def make_job(args, steps):
    """The job; `steps` are rounds for a diloco job (--inner-steps)."""
    job = {
        "job_id": "chaos",
        "seed": args.seed % 1000003,
        "mode": "SYNC_MODE_SYNC",
        "model": {"gpt": {"vocab_size": 256, "context_length": CONTEXT, "layers": 2,
                          "heads": 2, "width": 64}},
        "optimizer": {"learning_rate": 3e-3, "warmup_steps": 10},
        "batch": {"micro_batch_size": 4, "global_batch_size": 4 * args.workers},
        "dataset": {"manifest": args.dataset, "epochs": 1000},
        "checkpoint": {"every_steps": args.checkpoint_every, "keep_last": 2},
        "access": {"open": True},
        "max_steps": str(steps),
        "eval_every_steps": steps,
        "eval_sequences": 64,
    }
    if args.inner_steps > 0:
        job["mode"] = "SYNC_MODE_DILOCO"
        job["diloco"] = {"inner_steps": args.inner_steps, "outer_learning_rate": 0.7,
                         "outer_momentum": 0.9}
        job["max_steps"] = str(steps * args.inner_steps)
    return job


def fault_free(args, dirs, potluck, steps):
    """The same job without faults, on loopback: its final validation loss
    and how long a step takes."""
    net = Network("", ["c"] + [f"w{i}" for i in range(args.workers)], enabled=False)
    r = Run(args, dirs, potluck, args.dataset, "fault-free", net, make_job(args, steps))
    # Port 0: the coordinator binds a free port itself and prints it, so no
    # other process can take it between a probe and the bind. This run never
    # restarts its coordinator, so the port need not be known in advance.
    r.address = "127.0.0.1:0"
    r.start_coordinator()
    r.address = r.coordinator_listening(timeout=60)
    r.submit()
    for i in range(args.workers):
        r.start_worker(i)
    start = time.time()
    deadline = start + args.timeout
    while not r.finished() and time.time() < deadline:
        r.drain()
        time.sleep(0.1)
    r.drain()
    seconds = time.time() - start
    r.stop_all()
    if r.last_step != steps:
        raise RuntimeError(f"the fault-free run stopped at step {r.last_step} of {steps}; "
                           f"see {r.dir}")
    final = r.lineage.steps.get(steps)
    rate = (steps - 1) / max((r.last_ms - r.first_ms) / 1000.0, 1e-3)
    return (final[2] if final else None), seconds, rate, r.lineage.trained_sequences(steps)


def tail(path, lines=3):
    with open(path, errors="replace") as f:
        return " | ".join(f.read().strip().splitlines()[-lines:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--potluck", required=True, help="the potluck binary")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short")
    parser.add_argument("--minutes", type=float, help="fault phase length (profile default)")
    parser.add_argument("--mtbf", type=float, help="mean seconds between faults")
    parser.add_argument("--kinds", help="comma-separated fault kinds (profile default)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--checkpoint-every", type=int, default=10,
                        help="steps (rounds for --inner-steps) between checkpoints")
    parser.add_argument("--inner-steps", type=int, default=0,
                        help="train a DiLoCo job with this many inner steps a round "
                             "(steps, checkpoints and efficiency then count rounds)")
    parser.add_argument("--lease-seconds", type=int, default=3)
    parser.add_argument("--loss-tolerance", type=float, default=0.10,
                        help="relative; the final validation loss against the fault-free run's")
    parser.add_argument("--dir", help="work directory (default: a temporary one, removed)")
    parser.add_argument("--no-netns", action="store_true", help="loopback, no link faults")
    parser.add_argument("--json", help="also write the report here")
    parser.add_argument("--timeout", type=float, default=0,
                        help="give up after this many seconds (default: 3x the fault phase + 5 min)")
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    minutes = args.minutes if args.minutes is not None else profile["minutes"]
    mtbf = args.mtbf if args.mtbf is not None else profile["mtbf"]
    kinds = args.kinds.split(",") if args.kinds else list(profile["kinds"])
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 2**31)
    args.timeout = args.timeout or minutes * 180 + 300
    use_netns = not args.no_netns
    if use_netns and (os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "tc", "nsenter"))):
        return skip("network namespaces need root, iproute2 (ip, tc) and nsenter; "
                    "run as root or pass --no-netns")
    if not use_netns:
        kinds = [k for k in kinds if not k.startswith("link-")]
    log(f"seed {args.seed}, profile {args.profile}: {minutes:g} min of faults, mean "
        f"{mtbf:g} s apart, {args.workers} workers, kinds {','.join(kinds)}")

    prefix = f"pl{os.getpid() % 100000}"
    nodes = ["c"] + [f"w{i}" for i in range(args.workers)]
    try:
        net = Network(prefix, nodes, use_netns)
    except RuntimeError as error:
        for ns in [prefix + "hub"] + [prefix + node for node in nodes]:
            run("ip", "netns", "del", ns, check=False)
        return skip(f"cannot build the network namespaces ({error}); "
                    "run where root may create them, or pass --no-netns")
    try:
        return chaos(args, net, minutes, mtbf, kinds, profile)
    finally:
        net.remove()


def chaos(args, net, minutes, mtbf, kinds, profile):
    potluck = os.path.abspath(args.potluck)
    dirs = args.dir or tempfile.mkdtemp(prefix="potluck-chaos-")
    os.makedirs(dirs, exist_ok=True)
    args.dataset = os.path.join(dirs, "data")
    if not os.path.exists(os.path.join(args.dataset, "manifest.json")):
        run(potluck, "data", "prepare", "--out", args.dataset, "--shard-tokens", "20000")

    # How many steps fit the fault phase: measure the fault-free rate on a
    # short run first, then train the chaos job and its fault-free twin for
    # the same number of steps.
    _, _, rate, _ = fault_free(args, os.path.join(dirs, "probe"), potluck, 20)
    steps = max(40, int(rate * minutes * 60 * profile["fill"]))
    steps -= steps % args.checkpoint_every
    log(f"fault-free rate {rate:.1f} steps/s: the job trains {steps} steps")
    baseline_loss, baseline_seconds, _, baseline_sequences = fault_free(
        args, os.path.join(dirs, "baseline"), potluck, steps)
    log(f"fault-free run: {steps} steps in {baseline_seconds:.0f} s, validation loss "
        f"{baseline_loss}")

    rng = random.Random(args.seed)
    r = Run(args, dirs, potluck, args.dataset, "chaos", net, make_job(args, steps))
    faults = {}
    pending = []  # (time, action, description): recoveries
    report = {"seed": args.seed, "profile": args.profile, "workers": args.workers,
              "steps": steps, "netns": net.enabled}
    violations = []
    try:
        r.start_coordinator()
        r.submit()
        for i in range(args.workers):
            r.start_worker(i)
        started = time.time()
        fault_until = started + minutes * 60
        deadline = started + args.timeout
        next_fault = started + 5 + rng.expovariate(1 / mtbf)
        impaired_worker = None   # index of the one impaired worker, if any
        coordinator_down = False
        checkpoint_armed = None  # (step to wait for) for a checkpoint-kill

        def kill_coordinator(kind, restart_after):
            r.coordinator.signal(signal.SIGKILL)
            r.coordinator.wait(5)
            faults[kind] = faults.get(kind, 0) + 1
            log(f"{kind}: coordinator SIGKILLed after step {r.last_step}")

            def restart():
                nonlocal coordinator_down
                r.start_coordinator()
                coordinator_down = False
            pending.append((time.time() + restart_after, restart, "restart coordinator"))
        while time.time() < deadline:
            r.drain()
            now = time.time()
            for item in sorted(pending, key=lambda item: item[0]):
                if item[0] <= now:
                    pending.remove(item)
                    item[1]()
            if r.finished() and not pending:
                break
            done = bool(r.lineage.digests)
            if checkpoint_armed is not None and r.last_step >= checkpoint_armed:
                time.sleep(min(2.0, r.step_seconds * 0.7))
                kill_coordinator("checkpoint-kill", 1.0)
                checkpoint_armed = None
            if now >= next_fault and now < fault_until and not done and r.last_step > 0:
                # A fault that cannot land now (its target is already
                # impaired) is tried again shortly instead of dropped.
                next_fault = now + 0.5
                kind = rng.choice(kinds)
                if kind in ("coordinator-kill", "checkpoint-kill"):
                    if coordinator_down:
                        continue
                    next_fault = now + rng.expovariate(1 / mtbf)
                    coordinator_down = True
                    if kind == "checkpoint-kill":
                        every = args.checkpoint_every
                        checkpoint_armed = (r.last_step // every + 1) * every - 1
                        continue
                    kill_coordinator(kind, rng.uniform(0.5, 3))
                    continue
                if impaired_worker is not None:
                    continue
                index = rng.randrange(args.workers)
                worker = r.workers[index]
                if not worker.alive():
                    continue
                next_fault = now + rng.expovariate(1 / mtbf)
                impaired_worker = index
                node = f"w{index}"
                faults[kind] = faults.get(kind, 0) + 1
                log(f"{kind} of {node} at step {r.last_step}")

                def healed(i=index):
                    nonlocal impaired_worker
                    if impaired_worker == i:
                        impaired_worker = None
                if kind == "worker-kill":
                    worker.signal(signal.SIGKILL)
                    worker.wait(5)

                    def back(i=index):
                        if not r.lineage.digests:  # the job is not over yet
                            r.start_worker(i)
                        healed(i)
                    pending.append((now + rng.uniform(1, 5), back, "restart worker"))
                elif kind == "worker-freeze":
                    worker.signal(signal.SIGSTOP)
                    worker.frozen = True

                    def thaw(w=worker, i=index):
                        w.signal(signal.SIGCONT)
                        w.frozen = False
                        healed(i)
                    pending.append((now + rng.uniform(1, 8), thaw, "SIGCONT"))
                elif kind == "link-cut":
                    net.link(node, False)

                    def up(n=node, i=index):
                        net.link(n, True)
                        healed(i)
                    pending.append((now + rng.uniform(1, 6), up, "link up"))
                elif kind == "link-throttle":
                    net.throttle(node, True)

                    def unthrottle(n=node, i=index):
                        net.throttle(n, False)
                        healed(i)
                    pending.append((now + rng.uniform(3, 10), unthrottle, "unthrottle"))
            time.sleep(0.05)
        elapsed = time.time() - started
        r.drain()
        timed_out = not r.finished()
        if timed_out:
            violations.append(f"the run did not finish within {args.timeout:.0f} s "
                              f"(last step {r.last_step} of {steps})")
        codes = {}
        for index, worker in r.workers.items():
            codes[f"w{index}"] = code = worker.proc.poll()
            # A volunteer that came back after the job's end is told so.
            if code not in (0, None) and "is finished" not in tail(worker.log.name):
                violations.append(f"w{index} exited with {code}: {tail(worker.log.name)}")
        r.stop_all()
        leaked = net.leftover_pids()
        if leaked:
            violations.append(f"processes left in the namespaces: {leaked}")
            for pid in leaked:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

        # Invariants.
        digests = sorted(set(r.lineage.digests.values()))
        if len(digests) != 1:
            violations.append(f"finished workers hold different states: {r.lineage.digests}")
        ledger = r.ledger()
        committed = ledger["committed_step"]
        if committed != steps:
            violations.append(f"committed step {committed}, not the job's last ({steps})")
        trained = r.lineage.trained_sequences(committed)
        counted = sequences_in(ledger)
        if trained != counted:
            violations.append(f"the ledger counts {counted} sequences, the group trained "
                              f"{trained}: a sample was lost or trained twice")
        final = r.lineage.steps.get(steps)
        loss = final[2] if final else None
        if loss is None or baseline_loss is None:
            violations.append("no final validation loss to compare")
        elif abs(loss - baseline_loss) > args.loss_tolerance * baseline_loss:
            violations.append(f"final validation loss {loss:.4f} is more than "
                              f"{args.loss_tolerance:.0%} from the fault-free run's "
                              f"{baseline_loss:.4f}")
        computed = len(r.lineage.computed)
        report.update({
            "faults": faults,
            "faults_total": sum(faults.values()),
            "seconds": round(elapsed, 1),
            "fault_free_seconds": round(baseline_seconds, 1),
            "steps_computed": computed,
            "steps_committed": committed,
            "efficiency": round(committed / computed, 4) if computed else 0.0,
            # Throughput: a step of a smaller group holds fewer sequences,
            # so sequences per second compare the runs, not steps.
            "time_efficiency": round((trained / elapsed) / (baseline_sequences / baseline_seconds),
                                     4) if elapsed and baseline_sequences else 0.0,
            "sequences_per_s": round(trained / elapsed, 1) if elapsed else 0.0,
            "fault_free_sequences_per_s": round(baseline_sequences / baseline_seconds, 1),
            "sequences_trained": trained,
            "sequences_in_ledger": counted,
            "digests": r.lineage.digests,
            "worker_exit_codes": codes,
            "validation_loss": loss,
            "fault_free_validation_loss": baseline_loss,
            "violations": violations,
        })
        if report["faults_total"] < profile["min_faults"] and args.minutes is None:
            violations.append(f"only {report['faults_total']} faults injected; the profile "
                              f"needs {profile['min_faults']}")
    finally:
        for item in pending:
            if item[2] in ("link up", "unthrottle", "SIGCONT"):
                try:
                    item[1]()
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
        r.stop_all()
        if not args.dir:
            shutil.rmtree(dirs, ignore_errors=True)

    print(json.dumps(report, indent=2, sort_keys=True))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
    log(f"{report['faults_total']} faults {report['faults']}; efficiency "
        f"{report['efficiency']:.1%} (steps), {report['time_efficiency']:.1%} (throughput); "
        f"{len(violations)} invariant violation(s); seed {args.seed}")
    for v in violations:
        log("VIOLATION: " + v)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
