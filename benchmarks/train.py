"""Training throughput: segcheck's trainer step vs a plain fp32 PyTorch loop, side by side.

Same model, same data, same batches, one run each, images/s and the ratio. On CUDA the
trainer uses bf16 autocast, channels_last and non-blocking transfers; on CPU both are fp32.

    python benchmarks/train.py                                   # unet, 64x128, CPU
    python benchmarks/train.py --model deeplabv3_resnet50 --size 512x512 --device cuda --batch-size 16
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from segcheck.model import output_tensor
from segcheck.session import open_session
from segcheck.target import TargetSpec, resolve
from segcheck.train.loop import train_one_epoch
from segcheck.train.recipes import get as get_recipe
from segcheck_plugins.synthetic_streets import SyntheticStreets


def batches(size, batch_size, steps):
    data = SyntheticStreets("train", size=size, length=batch_size * steps)
    out = []
    for s in range(steps):
        pairs = [data[s * batch_size + i] for i in range(batch_size)]
        out.append(
            (torch.stack([torch.from_numpy(p[0]) for p in pairs]), torch.stack([torch.from_numpy(p[1]) for p in pairs]))
        )
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def fresh(target):
    """(module in train mode, its SegModel, AdamW): the same start for both loops."""
    seg = target.model.fresh(0)  # a new module of the architecture, moved to the device, in eval mode
    seg.module.train()
    return seg.module, seg, torch.optim.AdamW(seg.module.parameters(), lr=1e-3)


def plain_fp32(target, data, device):
    module, seg, opt = fresh(target)
    sync(device)
    start = time.perf_counter()
    for images, masks in data:
        x = seg.normalize(images.to(device))
        y = masks.to(device)
        loss = F.cross_entropy(output_tensor(module(x)), y, ignore_index=target.data.spec.ignore_index)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - start


def segcheck_trainer(target, data, device):
    module, seg, opt = fresh(target)
    if device.type == "cuda":
        module.to(memory_format=torch.channels_last)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    sync(device)
    start = time.perf_counter()
    with tqdm(disable=True) as bar:
        train_one_epoch(
            module, seg, data, opt, sched, get_recipe("naive"), target.data.spec, torch.Generator(), device, bar
        )
    sync(device)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="unet")
    p.add_argument("--size", default="64x128", help="HxW of the synthetic-streets images")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = p.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    session = open_session()
    target = resolve(session.plugins, TargetSpec(args.model, "synthetic-streets", device=args.device), session.config)
    device = target.model.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = batches(size, args.batch_size, args.steps + args.warmup)
    warm, timed = data[: args.warmup], data[args.warmup :]
    rows = []
    for name, fn in (("plain fp32 loop", plain_fp32), ("segcheck trainer", segcheck_trainer)):
        torch.manual_seed(0)
        fn(target, warm, device)
        seconds = fn(target, timed, device)
        rows.append((name, len(timed) * args.batch_size / seconds))
    mode = "bf16 + channels_last" if device.type == "cuda" else "fp32"
    print(
        f"model {args.model}, {args.size}, batch {args.batch_size}, {args.steps} steps, device {device} "
        f"(trainer: {mode}), torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"{'loop':<18}{'images/s':>10}{'ratio':>8}")
    for name, ips in rows:
        print(f"{name:<18}{ips:>10.1f}{ips / rows[0][1]:>8.2f}")


if __name__ == "__main__":
    main()
