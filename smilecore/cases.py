"""Finding BraTS cases in a folder, and splitting them by case.

Three naming schemes are recognised (the file extension is `.nii.gz` or `.nii`):

- BraTS 2018-2020: ``<case>/<case>_t2.nii.gz``, ``_t1``, ``_t1ce``, ``_flair``, ``_seg``
- BraTS 2021:      ``BraTS2021_00000/BraTS2021_00000_t2.nii.gz`` (same suffixes)
- BraTS 2023+:     ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2w.nii.gz``, ``-t1n``,
                   ``-t1c``, ``-t2f``, ``-seg``

A case is a folder holding at least one image or segmentation file (a case with no image of
the chosen modality is reported, not skipped); a case without a segmentation file is
unlabelled. Cases are found at any depth (``DATA/<case>/``, the release layout
``DATA/HGG/<case>/``, or flat files), keyed by their file prefix; hidden files (macOS ``._*``)
and files that are not NIfTI are skipped with one warning.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Canonical modality name -> every suffix used for it by some BraTS release.
MODALITY_ALIASES: dict[str, tuple[str, ...]] = {
    "t2": ("t2", "t2w"),
    "t1": ("t1", "t1n"),
    "t1ce": ("t1ce", "t1c", "t1gd"),
    "flair": ("flair", "t2f"),
}
SEG_SUFFIXES = ("seg",)
_SUFFIX_TO_MODALITY = {s: m for m, ss in MODALITY_ALIASES.items() for s in ss}
_FILE_RE = re.compile(r"^(?P<case>.+?)[_-](?P<suffix>[A-Za-z0-9]+)\.nii(\.gz)?$")


def canonical_modality(name: str) -> str:
    """'T2w' -> 't2', 'FLAIR' -> 'flair'; raises ValueError for an unknown name."""
    key = name.strip().lower()
    if key in _SUFFIX_TO_MODALITY:
        return _SUFFIX_TO_MODALITY[key]
    known = ", ".join(f"{m} ({'/'.join(a)})" for m, a in MODALITY_ALIASES.items())
    raise ValueError(f"unknown modality {name!r}; known: {known}")


_NAME_RE = re.compile(r"^(?P<case>.+?)[_-](?P<suffix>[A-Za-z0-9]+)$")


def case_and_modality(name: str | Path) -> tuple[str, str] | None:
    """The case and the modality a BraTS-style name states ('Brats18_X_flair.nii.gz' ->
    ('Brats18_X', 'flair'), 'BraTS-GLI-00000-000-t2w' -> ('BraTS-GLI-00000-000', 't2')), or None
    when its last suffix is not a modality. Names that differ only in that suffix are one case."""
    stem = Path(str(name)).name
    for ext in (".nii.gz", ".nii"):
        if stem.lower().endswith(ext):
            stem = stem[:-len(ext)]
            break
    m = _NAME_RE.match(stem)
    modality = _SUFFIX_TO_MODALITY.get(m["suffix"].lower()) if m else None
    return (m["case"], modality) if modality else None


def modality_from_name(name: str | Path) -> str | None:
    """The modality a BraTS-style name states ('Brats18_X_flair.nii.gz' -> 'flair',
    'BraTS-GLI-00000-000-t2w' -> 't2'), or None when its last suffix is not a modality."""
    named = case_and_modality(name)
    return named[1] if named else None


@dataclass
class Case:
    case_id: str
    images: dict[str, Path] = field(default_factory=dict)  # canonical modality -> file
    seg: Path | None = None

    @property
    def labeled(self) -> bool:
        return self.seg is not None

    def image(self, modality: str) -> Path:
        modality = canonical_modality(modality)
        if modality not in self.images:
            have = ", ".join(sorted(self.images)) or "none"
            raise FileNotFoundError(
                f"case {self.case_id}: no {modality} image (looked for suffixes "
                f"{'/'.join(MODALITY_ALIASES[modality])}; found modalities: {have})")
        return self.images[modality]


class DataFolderWarning(UserWarning):
    """Files in a data folder that were skipped (the CLI prints it once as a note)."""


class NoCasesFound(FileNotFoundError):
    """A data folder without any BraTS-named case at any depth."""


def _is_nifti_name(name: str) -> bool:
    return name.lower().endswith((".nii.gz", ".nii"))


def find_cases(data_dir: str | Path, require: bool = False) -> list[Case]:
    """All BraTS-named cases under `data_dir`, at any depth (so both ``DATA/<case>/`` and the
    release layout ``DATA/HGG/<case>/`` work), sorted by id.

    Skipped, and named in one `DataFolderWarning`: hidden files and folders (``.*``, among them
    macOS's ``._*`` AppleDouble files, which carry a NIfTI name but no image) and files that are
    not NIfTI; NIfTI files without a BraTS suffix are skipped silently. The same case file found twice (a copy of
    the data inside the folder) is an error naming both. `require`: raise `NoCasesFound`, saying
    where and how deep it looked, when there is no case."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist or is not a folder")
    cases: dict[str, Case] = {}
    seen: dict[tuple[str, str], Path] = {}
    hidden, not_nifti = [], []
    n_folders, depth, visited = 0, 0, set()
    for root, dirs, files in os.walk(data_dir, followlinks=True):  # linked case folders count ...
        real = os.path.realpath(root)
        if real in visited:  # ... but a link back up the tree is walked once
            dirs[:] = []
            continue
        visited.add(real)
        n_folders += 1
        depth = max(depth, len(Path(root).relative_to(data_dir).parts))
        hidden += [d + "/" for d in dirs if d.startswith(".")]
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            m = _FILE_RE.match(name)
            if name.startswith("."):
                hidden.append(name)
            elif not _is_nifti_name(name):
                not_nifti.append(name)
            elif m and m["suffix"].lower() in (*SEG_SUFFIXES, *_SUFFIX_TO_MODALITY):
                suffix = m["suffix"].lower()
                key = (m["case"], suffix if suffix in SEG_SUFFIXES else _SUFFIX_TO_MODALITY[suffix])
                if key in seen:
                    raise FileExistsError(f"data folder {data_dir}: case {key[0]} has two {key[1]} files, "
                                          f"{seen[key]} and {path}; keep one")
                seen[key] = path
                case = cases.setdefault(m["case"], Case(m["case"]))
                if suffix in SEG_SUFFIXES:
                    case.seg = path
                else:
                    case.images[key[1]] = path
    skipped = [(hidden, "hidden"), (not_nifti, "not NIfTI")]  # other NIfTI files (a brain mask, ...) are no news
    if any(names for names, _ in skipped):
        parts = [f"{len(names)} {kind} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
                 for names, kind in skipped if names]
        warnings.warn(f"data folder {data_dir}: skipped {'; '.join(parts)}", DataFolderWarning, stacklevel=2)
    found = [c for _, c in sorted(cases.items())]
    if require and not found:
        raise NoCasesFound(
            f"data folder {data_dir}: no BraTS cases found in it or in the {n_folders - 1} folders below it "
            f"(searched every depth, {depth} level{'s' if depth != 1 else ''} here; expected files like "
            "<case>_t2.nii.gz or <case>-t2w.nii.gz)")
    return found


@dataclass
class Split:
    train: list[Case]
    val: list[Case]
    test: list[Case]
    unlabeled_train_ids: list[str]  # training cases used without their label

    def summary(self) -> dict:
        return {
            "train": [c.case_id for c in self.train],
            "val": [c.case_id for c in self.val],
            "test": [c.case_id for c in self.test],
            "train_unlabeled": list(self.unlabeled_train_ids),
        }


# The paper splits 259 cases 130/104/25.
PAPER_FRACTIONS = (130 / 259, 104 / 259, 25 / 259)


def split_cases(cases: list[Case], seed: int = 0, fractions=PAPER_FRACTIONS,
                labeled_fraction: float = 1.0, val_ids=(), test_ids=()) -> Split:
    """Case-level train/val/test split, reproducible from `seed`.

    Cases named in `val_ids`/`test_ids` go there; the remaining labelled cases are shuffled
    and divided by `fractions` (at least one training case). Cases without a segmentation can
    neither be validated nor tested, so they always join the training set as unlabelled.
    `labeled_fraction` F then removes the labels of a seeded (1-F) share of the labelled
    training cases, as the paper does for SMILE-50/75.
    """
    if not 0.0 <= labeled_fraction <= 1.0:
        raise ValueError(f"labeled fraction must lie in [0, 1], got {labeled_fraction}")
    by_id = {c.case_id: c for c in cases}
    for cid in (*val_ids, *test_ids):
        if cid not in by_id:
            raise ValueError(f"case {cid!r} named for val/test is not among the cases found")
        if not by_id[cid].labeled:
            raise ValueError(f"case {cid!r} named for val/test has no segmentation")
    fixed = set(val_ids) | set(test_ids)
    pool = [c for c in cases if c.labeled and c.case_id not in fixed]
    unlabeled = [c for c in cases if not c.labeled and c.case_id not in fixed]
    rng = np.random.default_rng(seed)
    pool = [pool[i] for i in rng.permutation(len(pool))]
    total = sum(fractions)
    n = len(pool)
    n_test = 0 if test_ids else int(round(n * fractions[2] / total))
    n_val = 0 if val_ids else int(round(n * fractions[1] / total))
    while n_test + n_val >= n and (n_test or n_val):  # keep one training case
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    test = [by_id[i] for i in test_ids] + pool[:n_test]
    val = [by_id[i] for i in val_ids] + pool[n_test:n_test + n_val]
    train_labeled = pool[n_test + n_val:]
    n_keep = int(round(len(train_labeled) * labeled_fraction))
    order = np.random.default_rng([seed, 1]).permutation(len(train_labeled))
    drop = sorted(train_labeled[i].case_id for i in order[n_keep:])
    if labeled_fraction > 0 and not any(c.labeled for c in cases):
        raise ValueError(
            f"labeled fraction {labeled_fraction}: none of the {len(cases)} cases has a segmentation "
            "(<case>_seg.nii.gz or <case>-seg.nii.gz beside its image); SMILE needs at least one "
            "labelled training case")
    if labeled_fraction > 0 and n_keep == 0:
        raise ValueError(
            f"labeled fraction {labeled_fraction} keeps no labelled training case "
            f"(there are {len(train_labeled)} labelled training cases after the val/test split); "
            "raise the fraction, or give more labelled cases")
    train = sorted(train_labeled + unlabeled, key=lambda c: c.case_id)
    return Split(train, val, test, drop + [c.case_id for c in unlabeled])
