"""`smile info`'s summary of a model file: a few lines, recorded paths as file names only (the
folders of the machine a model was trained on are not the reader's business); `smile info
--json` prints the whole configuration."""
from __future__ import annotations

from pathlib import Path


def base_name(value) -> str:
    """A recorded path as its file name (a machine's folders are not the reader's business); an
    init_from record {file, sha256} as its file and the hash's start."""
    if isinstance(value, dict):
        return f"{base_name(value.get('file', '?'))} (sha256 {str(value.get('sha256', '?'))[:12]})"
    return Path(str(value).replace("\\", "/")).name or str(value)


def model_summary(name: str, config: dict) -> str:
    """A model file's configuration in a few lines (`smile info --json`: all of it)."""
    nets = config.get("networks", {})
    norm = config.get("normalisation", {})
    tr = config.get("training", {})
    split = tr.get("split", {})
    lines = [f"model file     {name} (format {config.get('format_version', '?')}, written by smilecore "
             f"{config.get('smilecore_version', '?')})",
             f"modality       {config.get('modality', '?')}",
             "networks       " + "; ".join(f"{role}: {'' if n.get('kind', 'unet') == 'unet' else n['kind'] + ' '}U-Net, width "
                                         f"{n.get('base')}, depth {n.get('depth')}" for role, n in nets.items()),
             f"normalisation  {norm.get('method', 'clip-percentile')} (V{norm.get('clip_percentile', 99.5):g}); "
             f"voxel size {' x '.join(f'{v:g}' for v in config.get('spacing_mm', (1, 1, 1)))} mm; lesion "
             f"threshold {config.get('lesion_threshold', 0.5)}"]
    if tr:
        lines.append(f"training       {tr.get('variant', '?')}, labelled fraction {tr.get('labeled_fraction', '?')}, "
                     f"phases {tr.get('phases', '?')}, seed {tr.get('seed', '?')}; cases: "
                     + ", ".join(f"{len(split.get(k, ()))} {k}" for k in ("train", "val", "test") if k in split))
        if tr.get("data_dir"):
            lines.append(f"trained on     data folder {base_name(tr['data_dir'])}")
        if tr.get("init_from"):
            lines.append(f"started from   {base_name(tr['init_from'])}")
        val = tr.get("last_val", {})
        if "dice_S" in val:
            lines.append(f"last val Dice  {val['dice_S']:.3f} (lesion mask of S)")
    lines += networks_used(config)
    lines.append("the whole configuration: smile info --json")
    return "\n".join(lines)


def networks_used(config: dict) -> list[str]:
    """What synthesis does with the optional networks: the FLAIR segmentor, the T2 segmentor S_t2
    (which replaces S's lesion mask without a FLAIR) and the fill network."""
    from .flair import DEFAULT_FLIPS
    from .synthesis_blend import change_reach, pass_sigma
    nets = config.get("networks", {})   # roles by name (networks.FLAIR_NET, ...): networks.py imports torch
    flair = config.get("flair_segmentor") if "S_flair" in nets else None
    t2 = config.get("t2_segmentor") if "S_t2" in nets else None
    fill = nets.get("Fill")
    lines = ["FLAIR input    " + ("not accepted (no FLAIR segmentor)" if flair is None else
                                  f"accepted (smile synthesize --flair): S_flair sees {', '.join(flair['modalities'])}"
                                  f"{', both mirrored left-right' if flair['mirror'] else ''}; "
                                  f"{flair['normalisation']} scaling" + mask_rule_text(flair))]
    if t2 is not None:   # the segmentor without a FLAIR (synthesis_segmentor.segmentor_input)
        lines.append(f"T2 segmentor   S_t2: the T2{' and its left-right mirror' if t2['mirror'] else ''}; "
                     f"{t2['normalisation']} scaling; test-time flips {t2.get('test_time_flips', DEFAULT_FLIPS)}"
                     + mask_rule_text(t2) + " (replaces S's lesion mask)")
    lines.append("Lesion fill    " + ("G's own (no fill network)" if fill is None else
                                      f"fill network ({fill['start']} start, U-Net base {fill['base']}, "
                                      f"depth {fill['depth']}; synthesis_fill.py)")
                 + f"; through-plane pass sigma {pass_sigma(config):g} slices"
                 + f"; {reach_text(*change_reach(config))}")
    return lines


def mask_rule_text(recipe: dict) -> str:
    """What a recipe segmentor's mask keeps (synthesis_segmentor.mask_rule), where the recipe names it."""
    return ((f"; lesion above p {recipe['lesion_threshold']}" if "lesion_threshold" in recipe else "")
            + (f"; parts under {recipe['min_component_share']} of the largest dropped"
               if recipe.get("min_component_share") else ""))


def reach_text(mm: float, p: float) -> str:
    if mm <= 0:
        return "G's change kept wherever its gate opens"
    return f"G's change kept within {mm:g} mm of the lesion" + (f" and of S's p > {p:g}" if p < 1 else "")
