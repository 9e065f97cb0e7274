"""Experiment (not part of the product): can a mask-conditioned restoration U-Net beat the mean
fill on held-out transplanted lesions?

Usage: python scripts/experiments/restorer.py DATA_DIR [--steps 3000] [--base 16] [--crop 128]
           [--cache-dir D]

Training data: any slice of the default model's training cases, with a hole shaped like a real
lesion of another training slice (random left-right flip and shift), kept inside the brain and
away from the slice's own lesion, so that the truth under the hole is known. Input: the slice
with the hole filled by the mean of its surroundings, the hole mask, and both mirrored left-right
(the other hemisphere as context). Output: a change inside the hole added to the mean fill (the
head starts at zero, so training starts at the baseline). Loss: mean squared error inside the
hole. Every 250 steps it prints the known-truth PSNR (evaluate.transplant_set, 32 lesions) on
the default model's validation and test case, with the mean fill beside it.
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from smilecore import metrics
from smilecore.cases import find_cases
from smilecore.dataset import cache_case
from smilecore.evaluate import mean_fill, transplant_set
from smilecore.modelfile import default_model_path, load_model
from smilecore.unet import UNet


def grow(m, r):
    return F.max_pool2d(m, 2 * r + 1, stride=1, padding=r) if r else m


def ring_fill(x, m, ring=5):
    around = (grow(m, ring) - m).clamp(min=0) * (x > 0).float()
    mean = (x * around).sum((2, 3), keepdim=True) / around.sum((2, 3), keepdim=True).clamp(min=1)
    return x * (1 - m) + mean * m


def net_input(x, m):
    f = ring_fill(x, m)
    return f, torch.cat([f, m, f.flip(2), m.flip(2)], 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--cache-dir", default="smile-cache")
    args = p.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    split = load_model(default_model_path()).config["training"]["split"]
    found = {c.case_id: c for c in find_cases(args.data_dir)}
    train = [cache_case(found[c], args.cache_dir) for c in split["train"]]
    slices = [(c, i) for c in train for i in range(len(c.z))]
    donors = [(c, i) for c in train for i in np.nonzero(c.abnormal)[0]]
    evalsets = {part: transplant_set([cache_case(found[c], args.cache_dir) for c in split[part]], 32, 0)
                for part in ("val", "test")}
    net = UNet(4, 1, args.base, 4, "none")
    torch.nn.init.zeros_(net.head.weight)
    torch.nn.init.zeros_(net.head.bias)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=args.steps, pct_start=max(0.05, 2 / args.steps))
    crop = args.crop

    def crop_at(arrs, cx, cy):
        h, w = arrs[0].shape[-2:]
        x0, y0 = int(np.clip(cx - crop // 2, 0, h - crop)), int(np.clip(cy - crop // 2, 0, w - crop))
        return [a[..., x0:x0 + crop, y0:y0 + crop] for a in arrs]

    def batch():
        X, M = [], []
        while len(X) < args.batch_size:
            c, i = slices[rng.integers(len(slices))]
            d, j = donors[rng.integers(len(donors))]
            img = np.asarray(c.image[i], np.float32)
            own = torch.from_numpy((np.asarray(c.mask[i]) > 0).astype(np.float32))[None, None]
            m = np.asarray(d.mask[j]) > 0
            if rng.random() < 0.5:
                m = m[::-1]
            m = np.roll(m, (rng.integers(-30, 31), rng.integers(-30, 31)), (0, 1))
            m = m & (img > 0) & ~(grow(own, 3)[0, 0].numpy() > 0)
            if m.sum() >= 50:
                X.append(img)
                M.append(m.astype(np.float32))
        return torch.from_numpy(np.stack(X))[:, None], torch.from_numpy(np.stack(M))[:, None]

    def evaluate():
        net.eval()
        out = {}
        with torch.no_grad():
            for part, t in evalsets.items():
                x, m = torch.from_numpy(t.image)[:, None], torch.from_numpy(t.lesion.astype(np.float32))[:, None]
                f, inp = net_input(x, m)
                restored = (f + net(inp) * m)[:, 0].numpy()
                out[part] = round(metrics.known_truth_errors(restored, t.truth, t.lesion)["psnr"], 2)
                out[f"{part}_mean_fill"] = round(
                    metrics.known_truth_errors(mean_fill(t.image, t.lesion), t.truth, t.lesion)["psnr"], 2)
        net.train()
        return out

    t0, running = time.time(), 0.0
    for step in range(args.steps):
        x, m = batch()
        f, inp = net_input(x, m)
        centres = [(int(np.median(np.nonzero(mk[0].numpy())[0])) + rng.integers(-16, 17),
                    int(np.median(np.nonzero(mk[0].numpy())[1])) + rng.integers(-16, 17)) for mk in m]
        parts = [crop_at([x[k:k + 1], f[k:k + 1], inp[k:k + 1], m[k:k + 1]], *centres[k]) for k in range(len(x))]
        xc, fc, ic, mc = (torch.cat([q[j] for q in parts]) for j in range(4))
        loss = (((fc + net(ic) * mc - xc) ** 2) * mc).sum() / mc.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 250 == 0 or step == args.steps - 1:
            print(step + 1, f"train {running / (1 - 0.98 ** (step + 1)):.5f}", f"{time.time() - t0:.0f} s",
                  json.dumps(evaluate()), flush=True)


if __name__ == "__main__":
    main()
