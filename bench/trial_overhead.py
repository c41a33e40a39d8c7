"""A trial's fixed cost against Ray's own floor, side by side in one run.

Three measurements on the same machine, one after the other:

(a) **floor**: Ray's own cost of a trial the way lxsweep runs one — a Tune
    function trial (``{"cpu": 0, "driver_slot": 1}``, ``reuse_actors``) that
    builds a ``TorchTrainer`` with one worker whose loop only reports once —
    with lxsweep's Ray settings (health-check interval, no preemption watcher);
(b) **lxsweep**: a tiny sweep of the smoke experiment through ``lxsweep
    launch`` (one trial at a time); each trial's wall time from its Tune
    trial's start to its end, split by the marks every trial records
    (``driver.json``; ``metrics.json`` ``timeline``, ``first_step_at``,
    ``last_step_at``);
(c) **plain torch**: the same trials' fine-tunes (same model, mask, data,
    epochs and evaluation) run by :class:`lxsweep.train.Fit` in this process,
    no Ray.

``fixed_s`` = median over trials of (b) − (c): everything a trial costs
beyond its training steps and evaluations. ``floor_s`` = median wall time of
(a). ``helper_cpu_s`` = machine CPU time (``/proc/stat``) during (b), minus the
CPU of the Train worker processes (their ``process_cpu_s``), per trial: the
CPU Ray's controllers, actors, raylet, GCS and the Tune driver burn around the
work. The same figure for (a) is ``floor_helper_cpu_s``.

    python bench/trial_overhead.py [--trials-levels 2] [--floor-trials 4] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lxsweep.config import load_experiment  # noqa: E402
from lxsweep.store import Store, driver_path, finished_trials, metrics_path  # noqa: E402

# The smoke experiment, tiny and one trial at a time (as bench/ray_overhead.py).
TINY = ["data.synthetic.train_questions=600", "data.synthetic.valid_questions=300",
        "data.synthetic.pretrain_questions=600", "model.pretraining.steps=20", "training.epochs=1",
        "model.pretrained=null",
        "model.config={hidden_size: 64, num_attention_heads: 4, intermediate_size: 128, l_layers: 2, x_layers: 1, r_layers: 1}",
        "pruning.sparsities=null", "pruning.rate=0.3", "tracking.backend=none", "resources.max_concurrent_trials=1"]
CLK = os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine since boot (every core, user + system)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK


# -- (a) Ray's floor ---------------------------------------------------------------


def _empty_loop(config: dict) -> None:
    import ray.train

    Path(config["marks"], f"{config['i']}.json").write_text(json.dumps({"loop_at": time.time(), "cpu": time.process_time()}))
    ray.train.report({"reported": 1})  # not "done": Tune would end the trial before its function returns


def _floor_trial(config: dict) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    started = time.time()
    TorchTrainer(
        _empty_loop, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": config["cpus"]}),
        run_config=RunConfig(name=f"floor-{config['i']}", storage_path=config["storage"],
                             callbacks=[TuneReportCallback()]),
    ).fit()
    Path(config["marks"], f"{config['i']}-driver.json").write_text(json.dumps({"started_at": started,
                                                                             "finished_at": time.time()}))


def floor(trials: int, cpus: float) -> dict:
    """Ray's own cost per trial, the way lxsweep runs one (lxsweep.sweep: launch, _connect, trial_driver)."""
    import ray
    from ray import tune

    from lxsweep.sweep import DRIVER_RESOURCE

    with tempfile.TemporaryDirectory() as tmp:
        marks = Path(tmp, "marks")
        marks.mkdir()
        env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
        os.environ.update(env)
        cpu0, t0 = machine_cpu_s(), time.time()
        ray.init(address="local", resources={DRIVER_RESOURCE: 64}, log_to_driver=False, include_dashboard=False,
                 runtime_env={"env_vars": env})
        ray_up = time.time() - t0
        try:
            tune.Tuner(
                tune.with_resources(_floor_trial, {"cpu": 0, DRIVER_RESOURCE: 1}),
                param_space={"i": tune.grid_search(list(range(trials))), "marks": str(marks), "cpus": cpus,
                             "storage": str(Path(tmp, "ray"))},
                tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True),
                run_config=tune.RunConfig(storage_path=str(Path(tmp, "tune")), verbose=0),
            ).fit()
        finally:
            ray.shutdown()
        wall, cpu = time.time() - t0, machine_cpu_s() - cpu0
        rows = []
        for i in range(trials):
            d = json.loads(Path(marks, f"{i}-driver.json").read_text())
            m = json.loads(Path(marks, f"{i}.json").read_text())
            rows.append({"trial_s": d["finished_at"] - d["started_at"], "to_loop_s": m["loop_at"] - d["started_at"],
                         "after_loop_s": d["finished_at"] - m["loop_at"], "worker_cpu_s": m["cpu"]})
    return {"rows": rows, "ray_init_s": ray_up, "wall_s": wall, "machine_cpu_s": cpu,
            "helper_cpu_s": (cpu - sum(r["worker_cpu_s"] for r in rows)) / trials}


# -- (b) lxsweep's trials --------------------------------------------------------------


SPLIT = (("Tune trial start -> Train worker start (controller, worker group, process group)", "driver", "worker_started_at"),
         ("worker imports (torch, lxsweep)", "worker_started_at", "imports_done_at"),
         ("checkpoint lookup, tracker", "imports_done_at", "trial_started_at"),
         ("data open", "trial_started_at", "data_opened_at"),
         ("model load + mask", "data_opened_at", "model_loaded_at"),
         ("fit setup (tokens, optimizer)", "model_loaded_at", "fit_ready_at"),
         ("fit setup -> first step", "fit_ready_at", "first_step_at"))


def lxsweep_sweep(levels: int, storage: str) -> dict:
    sets = [*TINY, f"pruning.levels={levels}", f"storage={storage}"]
    exp = load_experiment(ROOT / "experiments" / "smoke.yaml", sets)
    args = [sys.executable, "-m", "lxsweep.cli", "launch", str(ROOT / "experiments" / "smoke.yaml"), "--quiet"]
    for s in sets:
        args += ["--set", s]
    cpu0, t0 = machine_cpu_s(), time.time()
    subprocess.run(args, check=True, capture_output=True, text=True)
    wall, cpu = time.time() - t0, machine_cpu_s() - cpu0
    store = Store.for_experiment(exp)
    rows = []
    for name in sorted(finished_trials(store)):
        m, d = store.read_json(metrics_path(name)), store.read_json(driver_path(name))
        marks = {"driver": d["started_at"], **m["timeline"], "first_step_at": m["first_step_at"]}
        rows.append({"trial": name, "trial_s": d["finished_at"] - d["started_at"],
                     "split": {label: marks[b] - marks[a] for label, a, b in SPLIT},
                     "after_last_step_s": d["finished_at"] - m["last_step_at"],
                     "worker_cpu_s": m["timeline"]["process_cpu_s"]})
    return {"exp": exp, "store": store, "rows": rows, "wall_s": wall, "machine_cpu_s": cpu,
            "helper_cpu_s": (cpu - sum(r["worker_cpu_s"] for r in rows)) / len(rows)}


# -- (c) the same fine-tunes, plain torch ------------------------------------------------


def plain_fits(exp, store: Store, names: list[str]) -> dict[str, float]:
    """Seconds of :meth:`Fit.run` (steps and evaluations) for each trial, in this process, no Ray."""
    import torch

    from lxsweep.data.source import load_dataset
    from lxsweep.plan import TrialKey
    from lxsweep.train import Fit, runtime
    from lxsweep.trial import initial_model

    rt, data, out = runtime(exp), load_dataset(exp, store), {}
    for name in names:
        key = TrialKey.parse(name)
        model, tokenizer, mask = initial_model(exp, key, store, data.num_answers, log=lambda s: None,
                                               answers=data.answers)
        torch.manual_seed(key.seed_for("dropout"))
        fit = Fit(exp, rt, model, mask, data, tokenizer, epochs=exp.training.epochs, name=name,
                  shuffle_seed=lambda epoch: key.seed_for(f"data{epoch}"))
        t0 = time.perf_counter()
        fit.run(log=lambda s: None)
        out[name] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials-levels", type=int, default=2, help="pruning levels of the lxsweep sweep (1 + 3L trials)")
    ap.add_argument("--floor-trials", type=int, default=4)
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp:
        b = lxsweep_sweep(args.trials_levels, tmp)
        exp, store = b["exp"], b["store"]
        plain = plain_fits(exp, store, [r["trial"] for r in b["rows"]])
        a = floor(args.floor_trials, exp.resources.cpus_per_worker)
    fixed = [r["trial_s"] - plain[r["trial"]] for r in b["rows"]]
    out = {
        "floor_s": round(statistics.median(r["trial_s"] for r in a["rows"]), 3),
        "fixed_s": round(statistics.median(fixed), 3),
        "helper_cpu_s": round(b["helper_cpu_s"], 3),
        "floor_helper_cpu_s": round(a["helper_cpu_s"], 3),
        "lxsweep_trial_s": round(statistics.median(r["trial_s"] for r in b["rows"]), 3),
        "plain_fit_s": round(statistics.median(plain.values()), 3),
        "trials": len(b["rows"]), "floor_trials": len(a["rows"]),
        "floor_split": {"to_loop_s": round(statistics.median(r["to_loop_s"] for r in a["rows"]), 3),
                        "after_loop_s": round(statistics.median(r["after_loop_s"] for r in a["rows"]), 3)},
        "split": {label: round(statistics.median(r["split"][label] for r in b["rows"]), 3) for label, _, _ in SPLIT},
        "after_last_step_s": round(statistics.median(r["after_last_step_s"] for r in b["rows"]), 3),
        "sweep_wall_s": round(b["wall_s"], 1), "cpus": os.cpu_count(),
    }
    print(f"Ray's floor (empty TorchTrainer in a Tune trial): {out['floor_s']:.2f} s per trial "
          f"(to the loop {out['floor_split']['to_loop_s']:.2f} s, after it {out['floor_split']['after_loop_s']:.2f} s); "
          f"helper CPU {out['floor_helper_cpu_s']:.1f} s per trial")
    print(f"lxsweep trial: {out['lxsweep_trial_s']:.2f} s, of which plain-torch fit {out['plain_fit_s']:.2f} s -> "
          f"fixed cost {out['fixed_s']:.2f} s ({out['fixed_s'] - out['floor_s']:+.2f} s over the floor); "
          f"helper CPU {out['helper_cpu_s']:.1f} s per trial")
    print("split of lxsweep's fixed cost (median over trials):")
    for label, seconds in out["split"].items():
        print(f"  {seconds:7.2f} s  {label}")
    print(f"  {out['after_last_step_s']:7.2f} s  last step -> Tune trial end (last evaluation, child masks, "
          f"metrics, teardown)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
