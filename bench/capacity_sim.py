"""A discrete-event model of N model replicas behind Ray Serve, under a load curve, with Serve's autoscaler.

    python -m bench.capacity_sim                          # the figures of docs/scaling.md (seeded: reruns agree)
    python -m bench.capacity_sim --batch-overhead-ms 4 --per-image-ms 0.25 --startup-s 8

What is modelled (nothing here is measured; the inputs are, in bench.ray_serve and bench.run):
- Requests of one image arrive as a Poisson process whose rate follows a load curve (base, ramp, peak, back).
- A replica runs one forward pass at a time: it takes what waits (up to `--max-batch` images) as one batch, which
  costs `batch_overhead + per_image x images` (a line fitted to the measured batch-1 and batch-64 throughputs).
  Every request also pays `--hop-ms` for the proxy and handle hops (measured: Ray's cost per request).
- The router sends each request to the less loaded of two random replicas (Serve's power of two choices).
- The autoscaler (Serve's rule): every `--interval-s`, desired = ceil(requests in flight / target per replica),
  clamped to [min, max]; a change must hold for upscale_delay_s / downscale_delay_s before it is applied, and a new
  replica serves only after `--startup-s` (process start, checkpoint load, warm-up). A removed replica finishes
  what it holds.

Two outputs: (1) the tail under a fixed number of replicas as the offered load grows (where p99 breaks), and
(2) a timeline of the load curve with autoscaling: replicas, p50 and p99 per window, for the settings given.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Replica:
    started_at: float  # when it begins serving (after the cold start)
    queue: list[float] = field(default_factory=list)  # arrival times of the waiting requests
    busy_until: float = 0.0
    running: int = 0  # requests in the pass now running
    draining: bool = False

    def in_flight(self) -> int:
        return len(self.queue) + self.running


@dataclass
class Model:
    batch_overhead_s: float
    per_image_s: float
    max_batch: int
    hop_s: float

    def pass_time(self, images: int) -> float:
        return self.batch_overhead_s + self.per_image_s * images

    def capacity(self) -> float:
        """Requests/s of one replica that always runs full batches."""
        return self.max_batch / self.pass_time(self.max_batch)


@dataclass
class Autoscaling:
    min_replicas: int
    max_replicas: int
    target: float  # requests in flight per replica
    upscale_delay_s: float
    downscale_delay_s: float
    interval_s: float
    startup_s: float


def load_curve(t: float, base: float, peak: float, ramp_s: float, hold_s: float) -> float:
    """Requests/s at time t: base for ramp_s, a linear ramp to peak over ramp_s, peak for hold_s, back down."""
    if t < ramp_s:
        return base
    if t < 2 * ramp_s:
        return base + (peak - base) * (t - ramp_s) / ramp_s
    if t < 2 * ramp_s + hold_s:
        return peak
    if t < 3 * ramp_s + hold_s:
        return peak - (peak - base) * (t - 2 * ramp_s - hold_s) / ramp_s
    return base


def simulate(
    model: Model,
    rate: object,
    duration_s: float,
    replicas: int,
    scaling: Autoscaling | None,
    seed: int,
    window_s: float = 10.0,
) -> dict[str, object]:
    """Run the model; -> latencies (all, and per window), replicas per window."""
    rng = random.Random(seed)
    rate_at = rate if callable(rate) else (lambda _t: float(rate))  # type: ignore[arg-type]
    pool = [Replica(started_at=0.0) for _ in range(replicas)]
    events: list[tuple[float, int, str, Any]] = []
    counter = 0

    def push(time: float, kind: str, payload: object = None) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(events, (time, counter, kind, payload))

    # Arrivals of a non-homogeneous Poisson process by thinning against the curve's maximum.
    top = max(rate_at(t / 10) for t in range(int(duration_s * 10) + 1)) or 1.0
    t = 0.0
    while True:
        t += rng.expovariate(top)
        if t >= duration_s:
            break
        if rng.random() < rate_at(t) / top:
            push(t, "arrive")
    if scaling is not None:
        push(scaling.interval_s, "scale")

    latencies: list[tuple[float, float]] = []  # (completed at, latency)
    replica_samples: list[tuple[float, int]] = []
    want_since: float | None = None
    wanted = replicas

    def start_pass(replica: Replica, now: float) -> None:
        if replica.running or not replica.queue or now < replica.started_at:
            return
        batch = replica.queue[: model.max_batch]
        del replica.queue[: len(batch)]
        replica.running = len(batch)
        replica.busy_until = now + model.pass_time(len(batch))
        push(replica.busy_until, "done", (replica, batch))

    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == "arrive":
            serving = [r for r in pool if not r.draining and r.started_at <= now]
            if not serving:  # everything is starting: wait at the router for the first replica
                first = min((r for r in pool if not r.draining), key=lambda r: r.started_at)
                push(first.started_at, "arrive_retry", now)
                continue
            choice = min(rng.sample(serving, min(2, len(serving))), key=Replica.in_flight)
            choice.queue.append(now)
            start_pass(choice, now)
        elif kind == "arrive_retry":
            serving = [r for r in pool if not r.draining and r.started_at <= now]
            choice = min(rng.sample(serving, min(2, len(serving))), key=Replica.in_flight)
            choice.queue.append(float(payload))
            start_pass(choice, now)
        elif kind == "done":
            assert isinstance(payload, tuple)
            replica, batch = payload
            replica.running = 0
            for arrived in batch:
                latencies.append((now, now - arrived + model.hop_s))
            start_pass(replica, now)
            if replica.draining and not replica.in_flight():
                pool.remove(replica)
        elif kind == "start":
            for replica in pool:
                start_pass(replica, now)
        elif kind == "scale" and scaling is not None:
            active = [r for r in pool if not r.draining]
            in_flight = sum(r.in_flight() for r in pool)
            desired = max(scaling.min_replicas, min(scaling.max_replicas, math.ceil(in_flight / scaling.target)))
            if desired != wanted:
                wanted, want_since = desired, now
            elif want_since is not None:
                delay = scaling.upscale_delay_s if desired > len(active) else scaling.downscale_delay_s
                if desired != len(active) and now - want_since >= delay:
                    for _ in range(desired - len(active)):
                        pool.append(Replica(started_at=now + scaling.startup_s))
                        push(now + scaling.startup_s, "start")
                    for replica in sorted(active, key=Replica.in_flight)[: max(0, len(active) - desired)]:
                        replica.draining = True
                        if not replica.in_flight():
                            pool.remove(replica)
                    want_since = None
            replica_samples.append((now, len([r for r in pool if not r.draining and r.started_at <= now])))
            if now + scaling.interval_s < duration_s + 60:
                push(now + scaling.interval_s, "scale")

    windows = []
    for start in range(0, int(duration_s), int(window_s)):
        inside = sorted(lat for done, lat in latencies if start <= done < start + window_s)
        counts = [n for at, n in replica_samples if start <= at < start + window_s]
        windows.append(
            {
                "t_s": start,
                "offered_per_s": round(rate_at(start + window_s / 2), 1),
                "replicas": max(counts) if counts else replicas,
                "p50_ms": round(percentile(inside, 0.5) * 1000, 1) if inside else None,
                "p99_ms": round(percentile(inside, 0.99) * 1000, 1) if inside else None,
            }
        )
    everything = sorted(lat for _, lat in latencies)
    return {
        "completed": len(latencies),
        "p50_ms": round(percentile(everything, 0.5) * 1000, 1) if everything else None,
        "p99_ms": round(percentile(everything, 0.99) * 1000, 1) if everything else None,
        "windows": windows,
    }


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Defaults: mnist-denoise on one core, the line through the measured in-process throughputs at batch 1 and
    # 64 (docs/benchmarks.md: 1,262 and 2,474 images/s): 0.79 ms for 1 image, 25.9 ms for 64.
    parser.add_argument("--batch-overhead-ms", type=float, default=0.39, help="fixed cost of one forward pass")
    parser.add_argument("--per-image-ms", type=float, default=0.40, help="cost of each image in a pass")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--hop-ms", type=float, default=3.0, help="proxy and handle hops per request (assumed)")
    parser.add_argument("--base", type=float, default=200.0, help="requests/s before and after the peak")
    parser.add_argument("--peak", type=float, default=5000.0, help="requests/s at the peak")
    parser.add_argument("--ramp-s", type=float, default=60.0)
    parser.add_argument("--hold-s", type=float, default=120.0)
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=8)
    parser.add_argument("--target", type=float, default=16.0, help="target_ongoing_requests per replica")
    parser.add_argument("--upscale-delay-s", type=float, default=5.0)
    parser.add_argument("--downscale-delay-s", type=float, default=60.0)
    parser.add_argument("--interval-s", type=float, default=1.0, help="autoscaler control loop period")
    parser.add_argument("--startup-s", type=float, default=8.0, help="a new replica's cold start")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    model = Model(args.batch_overhead_ms / 1000, args.per_image_ms / 1000, args.max_batch, args.hop_ms / 1000)
    capacity = model.capacity()
    fixed = []
    for replicas in (1, 2, 4):
        for load in (0.5, 0.7, 0.8, 0.9, 0.95, 1.0):
            offered = load * capacity * replicas
            result = simulate(model, offered, 30.0, replicas, None, args.seed)
            fixed.append(
                {
                    "replicas": replicas,
                    "utilisation": load,
                    "offered_per_s": round(offered),
                    "p50_ms": result["p50_ms"],
                    "p99_ms": result["p99_ms"],
                }
            )
    duration = 4 * args.ramp_s + args.hold_s
    curve = lambda t: load_curve(t, args.base, args.peak, args.ramp_s, args.hold_s)  # noqa: E731
    scenarios = {}
    for name, target, upscale, startup in (
        ("as configured", args.target, args.upscale_delay_s, args.startup_s),
        ("target 4 in flight", 4.0, args.upscale_delay_s, args.startup_s),
        ("target 4, upscale delay 30 s", 4.0, 30.0, args.startup_s),
        ("target 4, cold start 60 s", 4.0, args.upscale_delay_s, 60.0),
    ):
        scaling = Autoscaling(
            args.min_replicas, args.max_replicas, target, upscale, args.downscale_delay_s, args.interval_s, startup
        )
        scenarios[name] = simulate(model, curve, duration, args.min_replicas, scaling, args.seed)
    print(
        json.dumps(
            {"inputs": vars(args), "replica_capacity_per_s": round(capacity), "fixed": fixed, "autoscaling": scenarios},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
