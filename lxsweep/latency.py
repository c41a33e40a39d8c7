"""Each finished trial's inference latency on this device, against dense: is the ticket faster here?

``lxsweep latency <store>`` rebuilds every finished trial that kept its weights as the model a user would
deploy (an unstructured ticket as it is, zeros in dense tensors; a ticket whose mask removes whole heads or
feed-forward neurons physically shrunk, as ``lxsweep export --shrink`` writes it), times its forward pass at
a batch size against the dense trial of the same seed, interleaved (dense, trial, dense, trial, ...), and
records the median time and the median ratio in ``<store>/latency.json`` under the device and batch size.
The report then draws accuracy against latency for that device (``accuracy_vs_latency.png``).

Inputs are random in the data's shapes (tokens: ``data.max_tokens``; regions and feature size: the
prepared data's): latency does not depend on their values.
"""
from __future__ import annotations

import platform
import statistics
import time
from typing import Callable, Iterable, Optional

import torch

from lxsweep import pruning
from lxsweep.plan import TrialKey, dense_key, trial_mask_name
from lxsweep.store import LATENCY_FILE, Store, finished_trials, weights_path


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` where there is none)."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return cpu


def device_name(device: torch.device) -> str:
    """What the numbers were measured on: the GPU's name, or the CPU's model and thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def deployable(store: Store, trial: str, log: Callable[[str], None]) -> tuple[torch.nn.Module, str]:
    """The trial's model as deployed (shrunk where its mask removes whole units) and which form it is."""
    from lxsweep.export import trial_model
    from lxsweep.masks import heads_of, load_mask
    from lxsweep.model import use_sdpa_attention
    from lxsweep.shrunk_lxmert import apply_shrink

    tm = trial_model(store, trial, log)
    model, form = tm.model, "unpruned" if tm.key.level == 0 else "masked"
    name = trial_mask_name(tm.exp, tm.key)
    if name:
        spec = pruning.shrink_spec(load_mask(store, name), heads_of(model))
        if spec:
            apply_shrink(model, spec)
            form = "shrunk"
    return use_sdpa_attention(model).eval(), form


def _inputs(store: Store, batch: int, vocab: int, device: torch.device) -> dict:
    from lxsweep.config import read_experiment
    from lxsweep.data.source import load_dataset

    exp = read_experiment(store)
    valid = load_dataset(exp, store).valid
    regions, feat = valid.features.shape[1], valid.features.shape[2]
    g = torch.Generator().manual_seed(batch)
    tokens = exp.data.max_tokens
    out = {"input_ids": torch.randint(1, vocab, (batch, tokens), generator=g),
           "attention_mask": torch.ones(batch, tokens, dtype=torch.long),
           "token_type_ids": torch.zeros(batch, tokens, dtype=torch.long),
           "visual_feats": torch.randn(batch, regions, feat, generator=g),
           "visual_pos": torch.rand(batch, regions, 4, generator=g)}
    return {k: v.to(device) for k, v in out.items()}


def measure(store: Store, batch: int = 32, reps: int = 20, device: str = "cpu",
            trials: Optional[Iterable[str]] = None, log: Callable[[str], None] = print) -> dict:
    """Time every finished trial with kept weights (or ``trials``) against its seed's dense trial; write
    ``latency.json`` (merged with what it holds for other devices and batch sizes) and return this entry."""
    from lxsweep.config import read_experiment

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    exp = read_experiment(store)
    names = sorted(n for n in (trials or finished_trials(store)) if store.exists(weights_path(n)))
    dense: dict[int, torch.nn.Module] = {}
    x = None
    out: dict[str, dict] = {}
    for name in names:
        key = TrialKey.parse(name)
        d = dense_key(key.seed, exp)
        if d.name not in names:
            log(f"lxsweep: skipped {name}: its dense trial {d.name} kept no weights to time against")
            continue
        if d.seed not in dense:
            dense[d.seed] = deployable(store, d.name, lambda s: None)[0].to(dev)
        model, form = deployable(store, name, lambda s: None)
        model = model.to(dev)
        if x is None:
            x = _inputs(store, batch, model.config.vocab_size, dev)
        times: dict[str, list[float]] = {"reference": [], "trial": []}
        with torch.no_grad():
            for m in (dense[d.seed], model):  # warm up
                m(**x)
            for r in range(reps):
                for which in (("reference", "trial") if r % 2 == 0 else ("trial", "reference")):
                    m = dense[d.seed] if which == "reference" else model
                    sync()
                    start = time.perf_counter()
                    m(**x)
                    sync()
                    times[which].append(time.perf_counter() - start)
        ratio = statistics.median(t / b for t, b in zip(times["trial"], times["reference"]))
        out[name] = {"ms": 1000 * statistics.median(times["trial"]), "vs_dense": ratio, "form": form,
                     "parameters": sum(p.numel() for p in model.parameters())}
        log(f"{name}: {out[name]['ms']:.2f} ms ({form}), {ratio:.2f}x dense's time")
    entry = {"device": device_name(dev), "device_type": dev.type, "batch": batch, "reps": reps,
             "measured_at": time.time(), "trials": out}
    recorded = store.read_json(LATENCY_FILE) if store.exists(LATENCY_FILE) else {}
    recorded[f"{entry['device']}|batch {batch}"] = entry
    store.write_json(LATENCY_FILE, recorded)
    return entry
