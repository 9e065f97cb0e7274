"""Markdown table of `smile evaluate --report` files, one row per model, with the measures of
pseudo-normal quality side by side (README, "Pseudo-normal quality").

Usage: python scripts/ablation_table.py NAME=REPORT.json [NAME=REPORT.json ...]
"""
import json
import sys

COLUMNS = ("PSNR no mask, pooled (per host) / SSIM", "mask given", "changed > 4 px from lesion (worst case)",
           "iD", "h", "Dice S", "healthy brain: S lesion (worst) / G changed", "through-plane / truth")


def row(name: str, r: dict) -> str:
    kt, per = r["known_truth"], r["known_truth_per_case"]
    hosts = " / ".join(f"{per[h]['model']['psnr']:.2f}" for h in sorted(per))
    away = r["outside_lesion_changed"]
    hb = r["healthy_brain"]["pooled"]
    tp = r.get("known_truth_through_plane", {})
    cells = [f"{kt['model']['psnr']:.2f} ({hosts}) / {kt['model']['ssim']:.3f}",
             f"{kt['model_mask_given']['psnr']:.2f}",
             f"{100 * away['pooled']:.1f} % ({100 * max(away['per_case'].values()):.1f} %)",
             " / ".join(f"{v['identity']:.3f}" for v in r["per_case"].values()),
             " / ".join(f"{v['healthiness']:.3f}" for v in r["per_case"].values()),
             " / ".join(f"{v:.3f}" for v in r["dice_S_per_case"].values()),
             f"{100 * hb['lesion_share_worst']:.2f} % / {100 * hb['changed_share']:.1f} %",
             f"{tp['model'] / tp['truth']:.2f}" if tp else "n/a"]
    return f"| {name} | " + " | ".join(cells) + " |"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    reports = [(a.split("=", 1)[0], json.load(open(a.split("=", 1)[1]))) for a in argv]
    first = reports[0][1]
    print(f"hosts (per-host PSNR): {', '.join(sorted(first['known_truth_per_case']))}; cases (iD, h, Dice): "
          f"{', '.join(first['per_case'])}; mean fill {first['known_truth']['mean_fill']['psnr']:.2f} dB, "
          f"untouched {first['known_truth']['untouched']['psnr']:.2f} dB\n")
    print("| model | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, r in reports:
        print(row(name, r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
