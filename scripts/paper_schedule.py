"""The paper's schedule for the shipped models' data (busi-lesion, isic-lesion, polyp) on one CUDA GPU,
within a device-time budget.

    python scripts/paper_schedule.py pack --out .gpu     # on this machine: the splits, preprocessed, + the layer
    bash scripts/paper_schedule.sh                        # on the GPU machine: trains, writes $OUT
    bash scripts/paper_schedule.sh --tasks busi busi:jitter=1 polyp:jitter=1 busi:seed=1
    python scripts/paper_schedule.py train --data .gpu --out runs/paper --device cpu --epochs 1 --max-steps 4

The schedule is the paper's: 300 epochs of batch 8 at 256², SGD lr 0.01 (momentum 0.9, weight decay 1e-4),
poly 0.9 decay, a random square symmetry (flips + rot90) per image, BCE + Dice, the last weights kept. The
splits are the shipped models' own (busi-lesion: 362 train / 90 validation; isic-lesion: 2155 train / the
100 validation images; its 439 held-out images are never packed; polyp: CVC-ClinicDB, 100 validation frames),
so the results compare paired with the CPU models on the same images. A run may add llm4seg's training jitter
(``polyp:jitter=1``: rotation, zoom, shift and appearance, drawn on the device) or another seed.

``pack`` preprocesses with the library's own code (``llm4seg.train.build_slices``) at the size of the data
(BUSI 256², ISIC's 128² files as they are) and stores uint8 arrays; ``train`` resizes on the device with the
same operations as ``llm4seg.preprocess.to_model_input`` (normalisation is affine, so it commutes with the
bilinear resize), so what the network sees is what segmenting the same file sees. The frozen SmolLM2 layer
travels as its float32 tensors (no GGUF reader needed there); the checkpoints written reference it by sha256.

Speed: the whole training step (gather, augmentation, forward in bfloat16, backward, SGD) is captured once as
a CUDA graph and replayed, with the learning rate and the batch indices in device tensors; without CUDA (or
with ``--graph off``) the same step runs eagerly. A probe times the step first; when the whole schedule does
not fit ``--budget-s``, every run's epochs are scaled down by the same factor and the JSON says so. Several
runs train side by side, each on its own CUDA stream (one step of each in turn): the small kernels of a
batch-8 step leave most of the GPU idle, so the runs overlap.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from gpu_pack import TASKS, decode, pack, unpack_llm  # noqa: E402
from gpu_runs import RunSpec, interleave, parse_run, plan_epochs, streams_for, time_rounds  # noqa: E402
from llm4seg.preprocess import Preprocessing  # noqa: E402
from llm4seg.train.augment import apply_jitter, random_jitter  # noqa: E402

SIZE, BATCH, EPOCHS = 256, 8, 300
PAPER = dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="poly", poly_power=0.9,
             warmup_steps=0, batch_size=BATCH, augment=True, select="last")


def to_device(x: np.ndarray, y: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, s, s) and labels (N, s, s) at SIZE² on ``device``, resized as the library resizes."""
    import torch.nn.functional as F

    from llm4seg.preprocess import resize_labels

    xs, ys = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    if xs.shape[-1] != SIZE:  # bilinear + antialias, as llm4seg.preprocess.to_model_input; back to uint8
        xs = torch.cat([F.interpolate(c.float(), size=(SIZE, SIZE), mode="bilinear", align_corners=False,
                                      antialias=True).round().clamp(0, 255).to(torch.uint8) for c in xs.split(256)])
        ys = resize_labels(ys, SIZE)
    return xs.contiguous(), ys.contiguous()


def to_input(images: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 [0, 255] images → the normalised float input ``llm4seg.preprocess.normalise`` gives."""
    return images.float().div_(255).sub_(prep.mean).div_(prep.std)


class Step:
    """One training step on device tensors: gather, symmetry, forward, BCE + Dice, backward, SGD.

    Everything that changes per step (batch indices, symmetries, learning rate) lives in static tensors,
    so the same step can be captured once as a CUDA graph and replayed."""

    def __init__(self, model, x_all: torch.Tensor, y_all: torch.Tensor, prep: Preprocessing, amp: bool,
                 channels_last: bool, jitter: float = 0.0) -> None:
        from llm4seg.train.losses import make_loss
        from llm4seg.train.steps import select_trainable

        dev = x_all.device
        self.model, self.x_all, self.y_all, self.prep = model, x_all, y_all, prep
        self.amp, self.channels_last, self.jitter = amp, channels_last, jitter
        _, self.params, _ = select_trainable(model, "all")
        self.bufs = [torch.zeros_like(p) for p in self.params]
        self.loss_fn = make_loss(1)
        self.idx = torch.zeros(BATCH, dtype=torch.long, device=dev)
        self.bits = torch.zeros(BATCH, 3, dtype=torch.bool, device=dev)
        self.lr = torch.zeros((), device=dev)
        self.loss_sum = torch.zeros((), device=dev)
        self.graph = None

    def set(self, idx: torch.Tensor, bits: torch.Tensor, lr: torch.Tensor) -> None:
        self.idx.copy_(idx, non_blocking=True)
        self.bits.copy_(bits, non_blocking=True)
        self.lr.copy_(lr, non_blocking=True)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_input(self.x_all.index_select(0, self.idx), self.prep)
        y = self.y_all.index_select(0, self.idx)
        for j, flip in enumerate((lambda t: t.transpose(-1, -2), lambda t: t.flip(-1), lambda t: t.flip(-2))):
            on = self.bits[:, j]  # the 8 symmetries of the square: transpose?, then flip x?, then flip y?
            x = torch.where(on.view(-1, 1, 1, 1), flip(x), x)
            y = torch.where(on.view(-1, 1, 1), flip(y), y)
        if self.jitter:  # drawn on the device: a CUDA graph replays fresh draws each step
            drawn = random_jitter(tuple(x.shape), self.jitter, device=x.device)
            x, y = apply_jitter(x, y, drawn, self.prep.mean, self.prep.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def body(self) -> torch.Tensor:
        x, y = self._batch()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False):
            logits = self.model(x)
        loss = self.loss_fn(logits.float(), y)
        loss.backward()
        with torch.no_grad():
            grads = [p.grad for p in self.params]
            torch._foreach_add_(grads, self.params, alpha=PAPER["weight_decay"])  # as torch.optim.SGD
            torch._foreach_mul_(self.bufs, PAPER["momentum"])
            torch._foreach_add_(self.bufs, grads)
            torch._foreach_sub_(self.params, torch._foreach_mul(self.bufs, self.lr))
            self.loss_sum.add_(loss.detach())
        return loss

    def capture(self) -> None:
        """Warm up on a side stream (3 steps), then record the step as a CUDA graph."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.zero_grad()
                self.body()
        torch.cuda.current_stream().wait_stream(stream)
        self.zero_grad()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.body()

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.zero_grad()
            self.body()


def validate(model, x: torch.Tensor, y: torch.Tensor, prep: Preprocessing, amp: bool) -> dict[str, float]:
    """Mean per-image IoU and Dice at SIZE², as ``llm4seg.train.steps.validate`` scores them."""
    from llm4seg.train.metrics import confusion_counts, scores

    was = model.training
    model.eval()
    ious, dices = [], []
    with torch.no_grad():
        for xs, ys in zip(x.split(32), y.split(32)):
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
                pred = (model(to_input(xs, prep))[:, 0].float() > 0).to(torch.uint8)
            s = scores(confusion_counts(pred, ys, 1))
            ious.append(s["iou"].mean(1))
            dices.append(s["dice"].mean(1))
    model.train(was)  # the booster keeps its frozen layer in eval mode
    return {"val_iou": float(np.concatenate(ious).mean()), "val_dice": float(np.concatenate(dices).mean()),
            "val_n": len(x)}


def build(spec: RunSpec, info: dict, folder: Path, layer, args: argparse.Namespace, device: torch.device) -> dict:
    """Model, device data and (on CUDA) the captured step of one run, with its step time measured alone."""
    from llm4seg.model import ModelConfig, build_model
    from llm4seg.train.steps import set_modes

    task = spec.label
    arrays = np.load(folder / f"{spec.task}.npz")
    x, y = to_device(decode(arrays, "train_x"), arrays["train_y"], device)
    vx, vy = to_device(decode(arrays, "val_x"), arrays["val_y"], device)
    prep = Preprocessing(size=SIZE, channels=info["channels"])
    model = build_model(ModelConfig(in_channels=info["channels"], num_classes=1, llm=layer.descriptor),
                        weights=layer, seed=spec.seed).to(device)
    cuda = device.type == "cuda"
    channels_last = cuda and args.channels_last == "on"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    set_modes(model, "all")
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    step = Step(model, x, y, prep, amp=cuda and args.amp == "bf16", channels_last=channels_last, jitter=spec.jitter)
    graph = args.graph == "on" or (args.graph == "auto" and cuda)
    note = ""
    if graph:
        try:
            step.capture()
        except Exception as exc:  # an op that cannot be captured: run eagerly, and say so
            if args.graph == "on":
                raise
            step.graph, note = None, f"CUDA graph capture failed ({type(exc).__name__}: {exc}); eager steps"
            print(f"{task}: {note}", flush=True)
    run = {"task": task, "spec": spec, "info": info, "model": model, "step": step, "val": (vx, vy), "prep": prep,
           "n": len(x), "note": note, "init": init,
           "probe": probe_step(step, len(x), torch.Generator(device=device).manual_seed(spec.seed + 99))}
    run["s_per_step"] = time_rounds([run["probe"]], [None], args.probe_steps, device)
    reset(run)
    print(f"{task}: {run['n']} train / {len(vx)} validation at {SIZE}², {run['s_per_step'] * 1e3:.2f} ms per "
          f"step alone ({'CUDA graph' if step.graph is not None else 'eager'})", flush=True)
    return run


def probe_step(step: Step, n: int, gen: torch.Generator):
    """A step on a random batch at the paper's learning rate (for timing; :func:`reset` undoes it)."""
    dev = step.idx.device

    def one() -> None:
        step.set(torch.randint(0, n, (BATCH,), device=dev, generator=gen),
                 torch.rand(BATCH, 3, device=dev, generator=gen) < 0.5, torch.tensor(PAPER["lr"]))
        step()
    return one


def reset(run: dict) -> None:
    """Back to the initial weights and an empty momentum: the probes' steps never count."""
    with torch.no_grad():
        for k, v in run["model"].state_dict().items():
            v.copy_(run["init"][k])
        for b in run["step"].bufs:
            b.zero_()
        run["step"].loss_sum.zero_()


def fit_steps(run: dict, epochs: int, args: argparse.Namespace, device: torch.device, deadline: float):
    """Train one run for ``epochs`` (poly schedule over them), validating every ``--val-every`` epochs; a
    generator that yields after each step (so that runs can share a GPU) and returns the result."""
    from llm4seg.train.config import TrainConfig

    step, model, n, spec = run["step"], run["model"], run["n"], run["spec"]
    per_epoch = n // BATCH
    total = per_epoch * epochs
    if args.max_steps:
        total = min(total, args.max_steps)
    config = TrainConfig(preset="paper", steps=total, jitter=spec.jitter, seed=spec.seed, **PAPER)
    gen = torch.Generator(device=device).manual_seed(spec.seed)
    lrs = torch.tensor([config.lr_at(i, total) for i in range(total)], dtype=torch.float32, device=device)
    curve, started, done, stopped = [], time.perf_counter(), 0, ""
    val_every = max(1, args.val_every) * per_epoch
    while done < total and not stopped:
        order = torch.randperm(n, device=device, generator=gen)[: per_epoch * BATCH].view(per_epoch, BATCH)
        bits = torch.rand(per_epoch, BATCH, 3, device=device, generator=gen) < 0.5
        for i in range(min(per_epoch, total - done)):
            step.set(order[i], bits[i], lrs[done])
            step()
            done += 1
            if time.perf_counter() > deadline:
                stopped = f"the device-time deadline came at step {done} of {total}"
            if done % val_every == 0 or done == total or stopped:
                curve.append(checkpoint_scores(run, done, curve, started))
                if not math.isfinite(curve[-1]["loss"]):
                    stopped = f"the loss became {curve[-1]['loss']} at step {done}"
                if stopped:
                    break
            yield
    final = validate(model, *run["val"], run["prep"], step.amp)
    return {"config": config, "steps": done, "total_steps": total, "epochs": round(done / per_epoch, 2),
            "planned_epochs": epochs, "seconds": round(time.perf_counter() - started, 1), "curve": curve,
            "final": final, "stopped": stopped}


def checkpoint_scores(run: dict, done: int, curve: list[dict], started: float) -> dict:
    """The mean training loss since the last point and the validation scores now, printed and returned."""
    step, per_epoch = run["step"], run["n"] // BATCH
    loss = float(step.loss_sum) / (done - (curve[-1]["step"] if curve else 0))
    step.loss_sum.zero_()
    m = validate(run["model"], *run["val"], run["prep"], step.amp)
    point = {"step": done, "epoch": round(done / per_epoch, 2), "loss": round(loss, 4),
             **{k: round(v, 4) for k, v in m.items() if k != "val_n"}, "seconds": round(time.perf_counter() - started, 1)}
    print(f"{run['task']}: step {done} epoch {point['epoch']:.1f} loss {loss:.4f} val IoU {m['val_iou']:.4f} "
          f"Dice {m['val_dice']:.4f} ({point['seconds']} s)", flush=True)
    return point


def save(run: dict, result: dict, out: Path, device: torch.device) -> Path:
    """The last weights as an llm4seg checkpoint that references the frozen layer by sha256."""
    from llm4seg.checkpoint import ModelCard, save_checkpoint

    info, model, spec = run["info"], run["model"], run["spec"]
    model = model.to(memory_format=torch.contiguous_format).eval()
    training = {"preset": "paper", "config": result["config"].to_dict(), "steps": result["steps"],
                "total_steps": result["total_steps"], "epochs": result["epochs"],
                "planned_epochs": result["planned_epochs"], "best_step": result["steps"], "train_items": run["n"],
                "val_items": len(run["val"][0]), "device": training_device(device),
                "cuda_graph": run["step"].graph is not None, "amp": "bfloat16" if run["step"].amp else None,
                "seconds": result["seconds"], "torch": torch.__version__, "data": info["data"],
                "val_list": info["val_list"], "never_trained_on": info["never_packed"]}
    card = ModelCard(name=spec.checkpoint, classes=["background", info.get("label", "lesion")],
                     preprocessing=run["prep"].to_dict(), training=training,
                     metrics={k: round(v, 4) for k, v in result["final"].items()})
    return save_checkpoint(out / f"{spec.checkpoint}.safetensors", model, card, embed_llm=False)


def train(args: argparse.Namespace) -> int:
    from llm4seg.llm import DEFAULT_LLM, load_layer_weights

    t_start = time.perf_counter()
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    meta = json.loads((args.data / "meta.json").read_text())
    layer = load_layer_weights(DEFAULT_LLM)
    print(f"frozen layer {layer.descriptor}, sha256 {layer.sha256[:16]}", flush=True)
    specs = [parse_run(t, args.seed) for t in args.tasks]
    runs = [build(s, meta["tasks"][s.task], args.data, layer, args, device) for s in specs]
    streams = streams_for(len(runs), device, args.side_by_side == "on")
    round_s = None
    if streams[0] is not None:
        round_s = time_rounds([r["probe"] for r in runs], streams, args.probe_steps, device)
        for r in runs:
            reset(r)
        print(f"side by side on {len(runs)} CUDA streams: {round_s * 1e3:.2f} ms per round of one step each "
              f"(alone, one after another: {sum(r['s_per_step'] for r in runs) * 1e3:.2f} ms)", flush=True)
    left = args.budget_s - (time.perf_counter() - t_start)
    epochs, need = plan_epochs([r["n"] // BATCH for r in runs], [r["s_per_step"] for r in runs], left,
                               args.epochs, round_s)
    print(f"the whole schedule needs {need:.0f} s; {left:.0f} s left in the budget: {epochs} epochs", flush=True)
    report = {"device": training_device(device), "torch": torch.__version__, "budget_s": args.budget_s,
              "schedule_needs_s": round(need, 1), "epochs_asked": args.epochs,
              "round_ms": round(round_s * 1e3, 3) if round_s else None, "tasks": {}}
    deadline = t_start + args.budget_s + args.grace_s

    def finished(i: int, result: dict) -> None:
        run = runs[i]
        path = save(run, result, args.out, device)
        report["tasks"][run["task"]] = {
            "checkpoint": path.name, "ms_per_step": round(run["s_per_step"] * 1e3, 3), "note": run["note"],
            "jitter": run["spec"].jitter, "seed": run["spec"].seed,
            **{k: v for k, v in result.items() if k != "config"}}
        (args.out / "metrics.json").write_text(json.dumps(report, indent=1))
        print(f"{run['task']}: wrote {path.name}: {result['final']}", flush=True)

    if streams[0] is not None:
        interleave([fit_steps(r, epochs, args, device, deadline) for r in runs], streams, finished)
    else:  # one after another
        for i, r in enumerate(runs):
            interleave([fit_steps(r, epochs, args, device, deadline)], [None], lambda _, res, i=i: finished(i, res))
    print(f"done in {time.perf_counter() - t_start:.0f} s", flush=True)
    return 0


def training_device(device: torch.device) -> str:
    return torch.cuda.get_device_name() if device.type == "cuda" else "cpu"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="preprocess the splits and the frozen layer (on this machine)")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=ROOT / ".gpu")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=["busi", "isic"],
                   help="the tasks to pack (the device machine takes 64 MiB in all: busi + isic + polyp fit)")
    p.add_argument("--no-llm", action="store_true", help="skip the GGUF parts (tests)")
    u = sub.add_parser("unpack-llm", help="rebuild the embedded GGUF from the packed parts (on the GPU machine)")
    u.add_argument("--data", type=Path, default=ROOT / ".gpu")
    u.add_argument("--site", type=Path, required=True, help="a folder on PYTHONPATH")
    t = sub.add_parser("train", help="the paper's schedule on the packed data")
    t.add_argument("--data", type=Path, default=ROOT / ".gpu")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--tasks", nargs="+", default=["busi", "isic"], metavar="RUN",
                   help=f"runs, each TASK[:jitter=S][:seed=N] with TASK one of {', '.join(TASKS)} "
                        "(jitter: llm4seg's rotation/zoom/appearance jitter after flips + rot90; default 0: the paper's)")
    t.add_argument("--side-by-side", choices=("on", "off"), default="on",
                   help="on CUDA, run the runs at once, each on its own stream (else one after another)")
    t.add_argument("--device", default="auto")
    t.add_argument("--epochs", type=int, default=EPOCHS, help="the paper's 300 unless testing")
    t.add_argument("--budget-s", type=float, default=360.0, help="device seconds for everything after loading")
    t.add_argument("--grace-s", type=float, default=30.0, help="stop a run this long after the budget ends")
    t.add_argument("--max-steps", type=int, help="cap each task's steps (tests)")
    t.add_argument("--val-every", type=int, default=25, help="epochs between validations")
    t.add_argument("--probe-steps", type=int, default=30)
    t.add_argument("--graph", choices=("auto", "on", "off"), default="auto")
    t.add_argument("--amp", choices=("bf16", "off"), default="bf16", help="bfloat16 autocast on CUDA")
    t.add_argument("--channels-last", choices=("on", "off"), default="on", help="NHWC tensors on CUDA")
    t.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    return {"pack": pack, "unpack-llm": unpack_llm, "train": train}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
