"""`smile bench`: how fast synthesis, training and preprocessing are, each against the naive path
measured in the same run on the same machine.

Naive path (what a first implementation does): synthesis slice by slice, unbatched, fp32, on
full-size slices including the empty ones, decoding the NIfTI file again for every slice;
training from a dataset that decodes the case's NIfTI files for every sample. Fast path: the
product's own code (synthesis.synthesize: brain box crop, brain slices only, batches,
inference_mode, bf16 autocast on GPU; the trainer's memory-mapped slice cache).

Figures: synthesis seconds per volume end to end (array in, arrays out), split into G, S, R and
the rest (normalisation, reorientation, blend); training slices/s per phase; preprocessing
cases/s (.nii.gz -> cache); forward FLOPs per slice of each network and the FLOP/s achieved
(FLOPs counted by torch.utils.flop_counter: for synthesis per pixel of each network, times the
pixels each call was given; for training over one step of the phase, backward included; the
timed runs themselves go without the counter, which would slow them); peak RSS of the process after each stage (and peak GPU memory on GPU). The fast
synthesis is compared with the naive one voxel by voxel inside the brain.

Network sizes: "default" (the bundled model's U-Nets, width 16) and "paper" (width 32, depth 4,
the paper's size), randomly initialised: speed does not depend on the weights, and the paper-
size model is not shipped.
"""
from __future__ import annotations

import copy
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .gated import COVER_RIM, GatedGenerator, context_of, neighbour_index
from .modelfile import SmileModel, default_model_path, recipe_channels, load_model, model_config
from . import fillnet
from .flair import flip_averaged, mirror_sum, mirrored, segmentor_volumes
from .networks import FILL_NET, RECIPE_SEGMENTORS, T2_NET, build_networks
from .precision import autocast_dtype, describe
from .synthesis import synthesize
from .synthesis_segmentor import main_components, mask_rule
from .train import resolve_device
from .volume import CanonicalVolume, load_label, load_nifti

SIZES = {"default": {"base": 16, "depth": 4, "norm": "batch"}, "paper": {"base": 32, "depth": 4, "norm": "batch"}}
# dense bf16 tensor-core peak (FLOP/s) of cards this project may run on, for the "share of peak"
GPU_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timed(nn.Module):
    """Wraps a network; adds the wall time of each forward call to `seconds` and the pixels it
    was given to `pixels` (FLOPs then follow from the FLOPs per pixel, without a counter
    slowing the timed run)."""

    def __init__(self, net: nn.Module, device):
        super().__init__()
        self.net, self.unet, self.device = net, net.unet, device
        self.context = context_of(net)   # synthesis gives a 2.5D G its neighbouring slices
        self.seconds, self.pixels = 0.0, 0

    def __deepcopy__(self, memo):
        """A copy of the network (synthesis folds a copy, unet.folded) whose calls count here."""
        twin = Timed(copy.deepcopy(self.net, memo), self.device)
        twin.forward = self.counted(twin.net)
        return twin

    def forward(self, *args):
        return self.counted(self.net)(*args)

    def counted(self, net: nn.Module):
        """`net`'s forward, its time and pixels added to this wrapper's."""
        def call(*args):
            _sync(self.device)
            t0 = time.perf_counter()
            out = net(*args)
            _sync(self.device)
            self.seconds += time.perf_counter() - t0
            self.pixels += args[0].shape[0] * args[0].shape[-2] * args[0].shape[-1]
            return out
        return call


def random_model(size: str, modality: str = "t2", seed: int = 0) -> SmileModel:
    torch.manual_seed(seed)
    sizes = {n: dict(SIZES[size]) for n in "GSR"}
    nets = build_networks(sizes)
    for net in nets.values():
        net.eval()
    return SmileModel(nets, model_config(sizes, modality))


def forward_flops(model: SmileModel, shape: tuple[int, int]) -> dict[str, int]:
    """Forward FLOPs of each network (G, S, R, and S_flair, S_t2 and the fill network if the model has them)
    for one slice of `shape`."""
    out = {}
    with torch.inference_mode():
        for name, net in model.nets.items():
            device = next(net.parameters()).device
            # a 2.5D G sees its neighbours; S_flair and S_t2 their recipe's channels (T2, FLAIR, mirrors)
            channels = (recipe_channels(model.recipe(name)) if name in RECIPE_SEGMENTORS
                        else fillnet.IN_CH if name == FILL_NET else 2 * context_of(net) + 1)
            x = torch.zeros(1, channels, *shape, device=device)
            counter = FlopCounterMode(display=False)
            with counter:
                net(x, *([x] if name == "R" else []))
            out[name] = int(counter.get_total_flops())
    return out


# ---- synthesis ------------------------------------------------------------------------------
def naive_synthesis(path: Path, model: SmileModel) -> dict[str, np.ndarray]:
    """Slice by slice, batch 1, fp32, every slice at full size, the file decoded for every slice.
    Returns G, the lesion probability, its mask and R in canonical order (normalised intensities). The lesion
    probability is S's, or where the model has one S_t2's as synthesis runs it (its recipe's scaling,
    the mirror about the brain's centre, its test-time flips); with its recipe's min_component_share (and threshold),
    over every slice first and its mask's small components dropped before G and R
    (synthesis_segmentor)."""
    recipe = model.recipe(T2_NET)
    S = model.nets["S"] if recipe is None else flip_averaged(model.nets[T2_NET], recipe)
    threshold, share = mask_rule(model, "S" if recipe is None else T2_NET)
    device = next(S.parameters()).device
    with torch.no_grad():
        p = _naive_slices(path, lambda vol, z: _naive_lesion(S, vol, z, recipe, str(path), device))
        mask = p > threshold if share is None else main_components(p > threshold, share)
        out = _naive_slices(path, lambda vol, z: _naive_G_R(model, vol, z, mask[:, :, z], device))
    return {"G": out[0], "p": p, "R": out[1], "mask": mask}


def _naive_slices(path: Path, step) -> np.ndarray:
    """`step(vol, z)` for every axial slice z, the file decoded again for each; stacked on the last axis
    (one output, or a tuple of them)."""
    outs, z, n = [], 0, None
    while n is None or z < n:
        data, affine, _ = load_nifti(path)
        vol = CanonicalVolume.from_array(data, affine, where=str(path))
        n = vol.image.shape[2]
        outs.append(step(vol, z))
        z += 1
    if isinstance(outs[0], tuple):
        return tuple(np.stack(o, axis=2) for o in zip(*outs))
    return np.stack(outs, axis=2)


def _naive_lesion(S, vol: CanonicalVolume, z: int, recipe: dict | None, where: str, device) -> np.ndarray:
    """The segmentor's lesion probability on slice z, at full size."""
    if recipe is None:
        x = vol.image[:, :, z][None, None]
    else:   # S_t2's channels, each mirrored about the brain's centre after them
        x = np.stack([v[:, :, z] for v in segmentor_volumes(vol, None, None, recipe, None, where)])[None]
        if recipe["mirror"]:
            x = np.concatenate([x, mirrored(x, mirror_sum(vol.brain))], 1)
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    return torch.softmax(S(x), dim=1)[0, 1].cpu().numpy()


def _naive_G_R(model: SmileModel, vol: CanonicalVolume, z: int, mask: np.ndarray, device) -> tuple:
    """G and R on slice z at full size, G held open over `mask` (X x Y) as synthesis holds it."""
    G, R = model.nets["G"], model.nets["R"]
    # a G that sees k neighbouring slices gets them as synthesis does: among the slices with brain
    k, zs = context_of(G), np.nonzero(vol.brain.any(axis=(0, 1)))[0]
    rows = zs[neighbour_index(zs, k)[np.searchsorted(zs, z)]] if z in zs else [z] * (2 * k + 1)
    X = torch.from_numpy(np.moveaxis(vol.image[:, :, rows], 2, 0).copy())[None].to(device)
    M = torch.from_numpy(np.asarray(mask, bool))[None, None].to(device)
    G_I = G(X, cover=M) if isinstance(G, GatedGenerator) else G(X)
    return G_I[0, 0].cpu().numpy(), R(G_I, M.float())[0, 0].cpu().numpy()


def _timed_synthesis(data, affine, model: SmileModel, batch_size: int, channels_last: bool, precision: str):
    """One timed `synthesize` (after a warm-up): its figures (seconds, G/S/R/other, FLOPs, FLOP/s,
    peak RSS) and its result."""
    device = next(model.nets["G"].parameters()).device
    timed = {n: Timed(net, device) for n, net in model.nets.items()}
    fast_model = SmileModel(timed, model.config)
    if device.type == "cuda":   # warm-up at the real shapes (cuDNN picks its kernels per shape)
        synthesize(data, affine, fast_model, batch_size=batch_size, channels_last=channels_last, precision=precision)
        for t in timed.values():
            t.seconds, t.pixels = 0.0, 0
    else:                       # one small pass is enough on a CPU
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16,
                                                    enabled=autocast_dtype(precision, device) is not None):
            x = torch.zeros(2, 1, 64, 64, device=device)
            X = torch.zeros(2, 2 * context_of(model.nets["G"]) + 1, 64, 64, device=device)
            model.nets["R"](model.nets["G"](X), model.nets["S"](x)[:, :1])
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    result = synthesize(data, affine, fast_model, batch_size=batch_size, channels_last=channels_last,
                        precision=precision)
    _sync(device)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    per_pixel = {n: f / (data.shape[0] * data.shape[1]) for n, f in forward_flops(model, data.shape[:2]).items()}
    flops = sum(per_pixel[n] * t.pixels for n, t in timed.items())
    nets_s = sum(t.seconds for t in timed.values())
    return {"seconds": total, "cpu_s": cpu, "G_s": timed["G"].seconds, "S_s": timed[model.segmentor_without_flair].seconds,
            "R_s": timed["R"].seconds, "other_s": total - nets_s, "flops": flops,
            "flop_per_s": flops / max(nets_s, 1e-9), "peak_rss_mb": peak_rss_mb(),
            "arithmetic": describe(precision, device)}, result


def bench_synthesis(path: Path, model: SmileModel, batch_size: int = 16, naive: bool = True,
                    channels_last: bool = True, precisions=("fp32",)) -> dict:
    """The synthesis figures in each of `precisions` ("precisions": seconds, and the largest
    difference from the first inside the brain); "fast" and the naive comparison are the first's."""
    device = next(model.nets["G"].parameters()).device
    data, affine, _ = load_nifti(path)
    vol = CanonicalVolume.from_array(data, affine)
    runs = {}
    for precision in precisions:
        runs[precision] = _timed_synthesis(data, affine, model, batch_size, channels_last, precision)
    first, result = runs[precisions[0]]
    out = {"volume_shape": list(data.shape), "brain_slices": int(vol.brain.any(axis=(0, 1)).sum()), "fast": first,
           "precisions": {p: {**figures, "difference": compare_results(result, other, vol)}
                          for p, (figures, other) in runs.items()}}
    if device.type == "cuda":
        out["fast"]["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    if naive:
        t0 = time.perf_counter()
        ref = naive_synthesis(path, model)
        _sync(device)
        out["naive"] = {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}
        out["speedup"] = out["naive"]["seconds"] / first["seconds"]
        out["difference"] = compare_with_naive(result, ref, vol, model)
    return out


def compare_results(a, b, vol: CanonicalVolume) -> dict:
    """Two syntheses of one volume (e.g. fp32 and bf16) inside the brain: the pseudo-normal's and
    pseudo-abnormal's largest and mean absolute difference in units of V99.5, and the lesion masks' Dice.
    A voxel whose lesion decision differs is replaced in one run and kept in the other (a gated G
    is held open over S's mask), so the pseudo-normal is also compared where the two masks agree
    (`pseudo_normal_max_abs_masks_agree`: outside their disagreement and its COVER_RIM px rim)."""
    brain, canon = vol.brain, vol.to_canonical_order
    ma, mb = canon(a.lesion_mask) > 0, canon(b.lesion_mask) > 0
    rim = np.ones((2 * COVER_RIM + 1, 2 * COVER_RIM + 1, 1), bool)
    agree = brain & ~ndimage.binary_dilation(ma != mb, structure=rim)
    out = {}
    for name in ("pseudo_normal", "pseudo_abnormal"):
        d = np.abs(canon(getattr(a, name)) - canon(getattr(b, name))) / vol.norm.scale
        out[f"{name}_max_abs"], out[f"{name}_mean_abs"] = float(d[brain].max()), float(d[brain].mean())
        if name == "pseudo_normal":
            out["pseudo_normal_max_abs_masks_agree"] = float(d[agree].max()) if agree.any() else 0.0
    total = float(ma.sum() + mb.sum())
    out["mask_dice"] = 2 * float((ma & mb).sum()) / total if total else 1.0
    return out


def compare_with_naive(result, ref: dict, vol: CanonicalVolume, model: SmileModel) -> dict:
    """Fast-path outputs against the naive path's, inside the brain, in normalised intensity (the
    naive G given synthesis's reach rule first: G's change kept near the lesion only)."""
    from .synthesis_blend import change_reach, kept_near_lesion, reach_seed
    brain = vol.brain
    to_canon = vol.to_canonical_order
    g_fast = (to_canon(result.pseudo_normal) - vol.raw) / vol.norm.scale + vol.image
    p_fast = to_canon(result.lesion_probability)
    m_fast, m_ref = to_canon(result.lesion_mask) > 0, ref["mask"] & brain
    g_ref, (mm, p) = np.array(ref["G"], np.float32), change_reach(model.config)
    kept_near_lesion(g_ref, vol.image, reach_seed(m_ref, ref["p"] * brain, p), vol.spacing, mm)
    inter, total = float((m_fast & m_ref).sum()), float(m_fast.sum() + m_ref.sum())
    return {"pseudo_normal_max_abs": float(np.abs(g_fast - g_ref)[brain].max()),
            "pseudo_normal_mean_abs": float(np.abs(g_fast - g_ref)[brain].mean()),
            "probability_max_abs": float(np.abs(p_fast - ref["p"])[brain].max()),
            "mask_dice": 2 * inter / total if total else 1.0}


# ---- training -------------------------------------------------------------------------------
class NaiveSlices(torch.utils.data.Dataset):
    """Training items decoded from the NIfTI files for every sample (the naive data path)."""

    def __init__(self, cases, modality: str, z_of: list[tuple[int, int]]):
        self.cases, self.modality, self.items = cases, modality, z_of

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        ci, z = self.items[i]
        case = self.cases[ci]
        data, affine, _ = load_nifti(case.image(self.modality))
        vol = CanonicalVolume.from_array(data, affine)
        mask = vol.to_canonical_order(load_label(case.seg, data.shape, affine))[:, :, z] if case.seg else \
            np.zeros(vol.image.shape[:2], np.int64)
        return {"image": torch.from_numpy(vol.image[:, :, z].copy())[None],
                "mask": torch.from_numpy(mask.astype(np.int64)), "labeled": bool(case.seg), "index": i}


def bench_training(data_dir: Path, size: str, steps: int, batch_size: int, device: str, naive: bool = True,
                   max_cases: int = 4, channels_last: bool = True) -> dict:
    """Slices/s of each phase's training step, fast (cache) and naive (decode per sample), whole slices."""
    from .cases import find_cases
    from .dataset import SliceSet, cache_case
    from .train import Trainer, TrainConfig, collate
    cases = [c for c in find_cases(data_dir) if c.labeled][:max_cases]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(data_dir=str(data_dir), out_dir=tmp, device=device, batch_size=batch_size,
                          lr=1e-4, **SIZES[size], epochs=1, channels_last=channels_last)
        trainer = Trainer(cfg)
        t0 = time.perf_counter()
        cached = [cache_case(c, Path(tmp) / "cache") for c in cases]
        prep = time.perf_counter() - t0
        fast_set = SliceSet(cached)
        n = steps * batch_size + batch_size
        rng = np.random.default_rng(0)
        order = rng.integers(len(fast_set), size=n)
        naive_set = NaiveSlices(cases, cfg.modality, [(int(fast_set.index[i][0]),
                                                      int(cached[fast_set.index[i][0]].z[fast_set.index[i][1]]))
                                                     for i in order])
        workers = cfg.num_workers if cfg.num_workers is not None else (2 if trainer.device.type == "cuda" else 0)
        loaders = {"fast": lambda: torch.utils.data.DataLoader(
                       fast_set, batch_size=batch_size, sampler=[(int(i), 0, 0) for i in order], collate_fn=collate,
                       num_workers=workers, pin_memory=trainer.device.type == "cuda"),
                   "naive": lambda: torch.utils.data.DataLoader(naive_set, batch_size=batch_size, collate_fn=collate)}
        out = {"preprocess_cases_per_s": len(cases) / prep, "phases": {},
               "slices_per_case": len(fast_set) / len(cases)}
        for phase in (1, 2, 3, 4):
            trainer._phase = phase
            trainer._set_modes(phase)
            row = {}
            for path in ("fast", "naive") if naive else ("fast",):
                it = iter(loaders[path]())
                counter = FlopCounterMode(display=False)
                with counter:                                   # warm-up step, FLOPs counted
                    trainer.train_step(phase, next(it))
                _sync(trainer.device)
                t0, waiting = time.perf_counter(), 0.0
                for _ in range(steps):
                    t_data = time.perf_counter()
                    batch = next(it)
                    waiting += time.perf_counter() - t_data
                    trainer.train_step(phase, batch)
                _sync(trainer.device)
                seconds = time.perf_counter() - t0
                row[path] = {"slices_per_s": steps * batch_size / seconds,
                             "flop_per_s": counter.get_total_flops() * steps / seconds,
                             "data_wait_share": waiting / seconds}
            if naive:
                row["speedup"] = row["fast"]["slices_per_s"] / row["naive"]["slices_per_s"]
            out["phases"][str(phase)] = row
        out["peak_rss_mb"] = peak_rss_mb()
        if trainer.device.type == "cuda":
            out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(trainer.device) / 2 ** 20
    return out


def paper_schedule_hours(train: dict, cases: int = 130, epochs: int = 10) -> float:
    """Hours for the paper's schedule (four phases x 10 epochs over 130 cases, with as many kept
    slices per case as measured here) at the measured training rates."""
    per_epoch = cases * train["slices_per_case"]
    return sum(per_epoch * epochs / train["phases"][p]["fast"]["slices_per_s"] for p in ("1", "2", "3", "4")) / 3600


# ---- the whole benchmark -------------------------------------------------------------------------
def run_bench(volume: Path, data_dir: Path, sizes=("default", "paper"), device: str = "auto", steps: int = 3,
              batch_size: int = 8, naive: bool = True, training: bool = True, channels_last: bool = True,
              log=print, precisions=("fp32", "bf16")) -> dict:
    dev = resolve_device(device)
    report = {"device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "volume": str(volume),
              "data_dir": str(data_dir), "channels_last": channels_last, "sizes": {}}
    from .benchmark import hardware
    report["hardware"] = hardware()
    for size in sizes:
        model = (load_model(default_model_path(), dev) if size == "default" and default_model_path().is_file()
                 else random_model(size).to(dev))
        log(f"bench: {size} networks, synthesis")
        shape = load_nifti(volume)[0].shape[:2]
        row = {"networks": SIZES[size], "forward_flops_per_slice": forward_flops(model, shape),
               "synthesis": bench_synthesis(volume, model, naive=naive, channels_last=channels_last,
                                            precisions=precisions)}
        if training:
            log(f"bench: {size} networks, training")
            row["training"] = bench_training(data_dir, size, steps, batch_size, device, naive=naive,
                                             channels_last=channels_last)
            row["paper_schedule_hours"] = paper_schedule_hours(row["training"])
        peak = next((v for k, v in GPU_BF16_PEAK.items() if report["gpu"] and k in report["gpu"]), None)
        if peak and training:
            row["training_share_of_bf16_peak"] = {p: r["fast"]["flop_per_s"] / peak
                                                  for p, r in row["training"]["phases"].items()}
        report["sizes"][size] = row
    return report


def markdown(report: dict) -> str:
    hw = report["hardware"]
    lines = [f"Hardware: {hw['cpu']} ({hw['cpu_cores']} cores, {report['threads']} torch threads), "
             f"device {report['device']}{' (' + report['gpu'] + ')' if report['gpu'] else ''}, torch {report['torch']}.",
             "", "| networks | synthesis fast s | G / S / R / other s | naive s | speedup | fast vs naive max abs (mean) "
             "| GFLOP/s synthesis |", "|---|---|---|---|---|---|---|"]
    for size, row in report["sizes"].items():
        s = row["synthesis"]
        f = s["fast"]
        diff = s.get("difference")
        lines.append(f"| {size} (width {row['networks']['base']}) | {f['seconds']:.2f} | {f['G_s']:.2f} / {f['S_s']:.2f} / "
                     f"{f['R_s']:.2f} / {f['other_s']:.2f} | {s['naive']['seconds']:.1f} | {s['speedup']:.1f}x | "
                     f"{diff['pseudo_normal_max_abs']:.2e} ({diff['pseudo_normal_mean_abs']:.1e}) | "
                     f"{f['flop_per_s'] / 1e9:.1f} |" if "naive" in s else
                     f"| {size} | {f['seconds']:.2f} | {f['G_s']:.2f} / {f['S_s']:.2f} / {f['R_s']:.2f} / {f['other_s']:.2f} "
                     f"| – | – | – | {f['flop_per_s'] / 1e9:.1f} |")
    lines += _precision_table(report)
    if not all("training" in row for row in report["sizes"].values()):
        return "\n".join(lines) + "\n"
    lines += ["", "| networks | phase | fast slices/s | naive slices/s | speedup | GFLOP/s (fast) | waiting for data (fast) |",
              "|---|---|---|---|---|---|---|"]
    for size, row in report["sizes"].items():
        for p, r in row["training"]["phases"].items():
            lines.append(f"| {size} | {p} | {r['fast']['slices_per_s']:.2f} | "
                         f"{r['naive']['slices_per_s']:.2f} | {r['speedup']:.1f}x | {r['fast']['flop_per_s'] / 1e9:.1f} | "
                         f"{100 * r['fast']['data_wait_share']:.0f} % |"
                         if "naive" in r else f"| {size} | {p} | {r['fast']['slices_per_s']:.2f} | – | – | "
                         f"{r['fast']['flop_per_s'] / 1e9:.1f} | {100 * r['fast']['data_wait_share']:.0f} % |")
    lines.append("")
    for size, row in report["sizes"].items():
        fl = row["forward_flops_per_slice"]
        lines.append(f"- {size}: forward GFLOPs per slice G {fl['G'] / 1e9:.2f}, S {fl['S'] / 1e9:.2f}, "
                     f"R {fl['R'] / 1e9:.2f}; preprocessing {row['training']['preprocess_cases_per_s']:.2f} cases/s; "
                     f"peak RSS {row['training']['peak_rss_mb']:.0f} MB; paper schedule (4 phases x 10 epochs, "
                     f"130 cases) at these rates: {row['paper_schedule_hours']:.1f} h."
                     + (" Training FLOP/s as a share of the card's dense bf16 peak, by phase: "
                        + ", ".join(f"{p}: {100 * v:.1f} %" for p, v in row["training_share_of_bf16_peak"].items())
                        if "training_share_of_bf16_peak" in row else ""))
    return "\n".join(lines) + "\n"


def _precision_table(report: dict) -> list[str]:
    """Synthesis in each precision side by side: seconds (wall, CPU), and how far each is from the
    first inside the brain (units of V99.5) with the lesion masks' Dice."""
    lines = ["", "| networks | precision | synthesis s (CPU s) | G / S / R / other s | pseudo-normal vs first: max abs "
             "(mean), of V99.5 | pseudo-abnormal max abs | lesion mask Dice |", "|---|---|---|---|---|---|---|"]
    for size, row in report["sizes"].items():
        for precision, f in row["synthesis"].get("precisions", {}).items():
            d = f["difference"]
            lines.append(f"| {size} | {precision}: {f['arithmetic']} | {f['seconds']:.2f} ({f['cpu_s']:.1f}) | "
                         f"{f['G_s']:.2f} / {f['S_s']:.2f} / {f['R_s']:.2f} / {f['other_s']:.2f} | "
                         f"{d['pseudo_normal_max_abs']:.2e} ({d['pseudo_normal_mean_abs']:.1e}) | "
                         f"{d['pseudo_abnormal_max_abs']:.2e} | {d['mask_dice']:.4f} |")
    return lines


def save_report(report: dict, path: Path):
    path.write_text(json.dumps(report, indent=1))
