"""Fit the default model's attribute heads in the dlib z_id space
(``weights/default/TRAINING.md``, step 3).

    python scripts/fit_heads.py                      # ~/.cache/s3edit/faces-aligned -> ~/.cache/s3edit/default-heads
    python scripts/fit_heads.py DATA -o OUT --into SET   # also put them into a weight-set folder
    python scripts/fit_heads.py DATA -o OUT --add-to SET # fit only the heads SET lacks, add them to it

Reads an aligned dataset (``scripts/prepare_faces.py``), computes z_id of every face
and of a synthetic-glasses twin of the faces in ``GLASSES_SOURCES`` (dlib's 128-d
ResNet, torch port, on the aligned crops with their landmarks), fits Eyeglasses,
Smiling, Male, Young and Sunglasses (label rules in ``s3edit.portraits.heads.LABEL_RULES``), prints
held-out accuracies and writes, in OUT:

    classifier.safetensors   weight (A, 128), bias (A,), conds_mean/conds_std (1, 128)
    attributes.json          row names (CelebA spelling)
    heads.json               label rules, counts, accuracies, pseudo-label shares
    embeddings.safetensors   the z_id cache (a rerun with the same data skips the net)
    glasses_examples.png     drawn glasses on the first faces, for a look
    eyeglasses_congress.png  congress photos the Eyeglasses head rates most / least
                             likely (real glasses, never seen in training)
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import typer
from safetensors import safe_open
from safetensors.numpy import save_file
from scipy.stats import spearmanr

from s3edit import console
from s3edit.portraits.glasses import glasses_twins, is_tinted, style_for
from s3edit.portraits.heads import (
    LABEL_RULES, ORTHOGONAL_TO, PortraitHeadsConfig, append_heads, attach_classifier, embed_aligned, fit_head, glasses_rows,
    head_datasets, make_classifier, normalisation, resized, save_classifier, share_positive,
)
from s3edit.portraits.prepare import Portraits, load_portraits
from s3edit.errors import InputError, S3EditError
from s3edit.face.dlib_resnet import TorchDlibIdentity
from s3edit.weights.weightset import load_weight_set, read_config
from s3edit.paths import atomic_path

DEFAULT_DATA = Path("~/.cache/s3edit/faces-aligned")
DEFAULT_OUT = Path("~/.cache/s3edit/default-heads")
CACHE_FILE = "embeddings.safetensors"
SHEET = 16  # faces per contact-sheet row


def embeddings(portraits: Portraits, out: Path, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z_real (M, 128), z_glasses (K, 128), glasses_idx (K,)), cached in OUT."""
    glasses_idx = glasses_rows(portraits.items)
    key = json.dumps({"dataset": portraits.meta["params"], "size": size, "seed": seed,
                      "faces": len(portraits), "glasses": len(glasses_idx)}, sort_keys=True)
    cache = out / CACHE_FILE
    if cache.is_file():
        with safe_open(str(cache), framework="numpy") as f:
            if f.metadata().get("key") == key:
                return f.get_tensor("z_real"), f.get_tensor("z_glasses"), f.get_tensor("glasses_idx")
    crops, lms = portraits.arrays["crops"], portraits.arrays["landmarks"]
    twins = glasses_twins(crops[glasses_idx], lms[glasses_idx], portraits.arrays["rows"][glasses_idx], seed)
    identity = TorchDlibIdentity()
    with console.progress("z_id", len(crops) + len(twins)) as advance:
        z_real = embed_aligned(identity, *resized(crops, lms, size), on_batch=advance)
        z_glasses = embed_aligned(identity, *resized(twins, lms[glasses_idx], size), on_batch=advance)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp:
        save_file({"z_real": z_real, "z_glasses": z_glasses, "glasses_idx": glasses_idx}, str(tmp),
                  metadata={"key": key})
    write_sheet(out / "glasses_examples.png", twins[:2 * SHEET])
    return z_real, z_glasses, glasses_idx


def write_sheet(path: Path, crops: np.ndarray) -> None:
    """Crops (N, S, S, 3) as rows of SHEET tiles in one PNG."""
    if len(crops) == 0:
        return
    n = int(np.ceil(len(crops) / SHEET)) * SHEET
    tiles = np.concatenate([crops, np.full((n - len(crops),) + crops.shape[1:], 255, np.uint8)])
    grid = tiles.reshape(n // SHEET, SHEET, *crops.shape[1:]).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(n // SHEET * crops.shape[1], SHEET * crops.shape[2], 3)
    with atomic_path(path) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(np.ascontiguousarray(grid), cv2.COLOR_RGB2BGR))


def congress_checks(portraits: Portraits, classifier, z_real: np.ndarray, out: Path) -> dict:
    """Figures on the congress photos, which have no glasses/gender label: Spearman
    correlation of the Young logit with birth year, and a sheet of the top / bottom
    Eyeglasses scores."""
    import torch

    source = portraits.column("source")
    rows = np.flatnonzero(source == "congress")
    if len(rows) == 0:
        return {}
    logits = classifier.logits(torch.as_tensor(z_real[rows], dtype=torch.float32)).numpy()
    checks: dict = {}
    born = np.array([int(b) if b.isdigit() else -1 for b in portraits.column("born")[rows]])
    if "Young" in classifier.names and (born > 0).sum() > 2:
        r = spearmanr(logits[born > 0, classifier.names.index("Young")], born[born > 0])
        checks["young_logit_vs_born_spearman"] = float(r.statistic)
    if "Eyeglasses" in classifier.names:
        order = np.argsort(-logits[:, classifier.names.index("Eyeglasses")])
        pick = np.concatenate([order[:SHEET], order[-SHEET:]])
        write_sheet(out / "eyeglasses_congress.png", portraits.arrays["crops"][rows[pick]])
        checks["eyeglasses_congress_sheet"] = "row 1: most likely glasses, row 2: least likely"
    return checks


def main(
    data: Path = typer.Argument(DEFAULT_DATA, help="Aligned dataset folder (scripts/prepare_faces.py)."),
    out: Path = typer.Option(DEFAULT_OUT, "-o", "--output", help="Folder for classifier.safetensors and the report."),
    size: int = typer.Option(None, "--size", min=16, help="Crop side z_id is computed at (default: that of the "
                             "set of --into / --add-to, else the dataset's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the held-out split and the glasses styles."),
    into: Path = typer.Option(None, "--into", help="Also put the heads into this weight-set folder."),
    add_to: Path = typer.Option(None, "--add-to", help="Weight-set folder that gains the heads it lacks: "
                                "fitted in its normalisation, its own heads kept as they are."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Fit Eyeglasses/Smiling/Male/Young/Sunglasses heads on dlib z_id; prints held-out accuracy.

    Example: python scripts/fit_heads.py ~/.cache/s3edit/faces-aligned -o ~/.cache/s3edit/default-heads
    """
    console.set_quiet(quiet)
    try:
        if into is not None and add_to is not None:
            raise InputError("--into replaces a set's heads and --add-to adds to them; give one.")
        report = run(data.expanduser(), out.expanduser(), size, seed, into, add_to)
    except S3EditError as exc:
        typer.echo(f"error: {exc}", err=True)  # one line, unwrapped (as s3edit's CLI)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{out}: {len(report['heads'])} heads on {report['faces']} faces (z_id at {report['size']} px)")
    for h in report["heads"]:
        typer.echo(f"  {h['name']:<11} held-out acc {h['test_accuracy']:.3f} "
                   f"(balanced {h['test_balanced_accuracy']:.3f}) on {h['n_test']} of {h['n']} examples, "
                   f"{h['n_positive']} positive; l2 {h['l2']:g}")


def crop_size(portraits: Portraits, size: int | None, weight_set: Path | None) -> int:
    """The crop side z_id is computed at: ``size``, else the side of the crops the
    weight set the heads go into sees (its heads must live in the z_id space its
    network is conditioned on), else the dataset's."""
    if weight_set is None:
        return size or int(portraits.meta["params"]["size"])
    seen = int(read_config(weight_set.expanduser())["model"]["unet"]["image_size"])
    if size is not None and size != seen:
        raise InputError(f"weight set {str(weight_set)!r} sees {seen}-px crops, so its heads must be fitted on "
                         f"z_id at {seen} px, not {size}; drop --size or give --size {seen}.")
    return seen


def run(data: Path, out: Path, size: int | None, seed: int, into: Path | None, add_to: Path | None = None) -> dict:
    portraits = load_portraits(data)
    if len(portraits) == 0:
        raise InputError(f"{str(data)!r} holds no aligned faces.")
    cfg = PortraitHeadsConfig(seed=seed)
    base = None
    if add_to is not None:
        # A set that gains a head keeps its others and its normalisation: its edit
        # directions, and a decoder trained on them, stay as they were.
        base = load_weight_set(add_to.expanduser()).classifier
        if base is None:
            raise InputError(f"weight set {str(add_to)!r} has no heads to add to; use --into.")
        wanted = [a for a in cfg.attributes if a not in base.names]
        if not wanted:
            raise InputError(f"weight set {str(add_to)!r} has every head already ({', '.join(base.names)}).")
        cfg.attributes = tuple(wanted)
    size = crop_size(portraits, size, into or add_to)
    z_real, z_glasses, glasses_idx = embeddings(portraits, out, size, seed)
    if base is None:
        mean, std = normalisation(z_real)
    else:
        mean, std = base.conds_mean.double().numpy(), base.conds_std.double().numpy()
    keys = portraits.arrays["rows"][glasses_idx]
    tinted = np.array([is_tinted(style_for(seed, int(k))) for k in keys], bool)
    datasets = head_datasets(portraits.items, z_real, z_glasses, glasses_idx, tinted)
    missing = [a for a in cfg.attributes if a not in datasets]
    if missing:
        raise InputError(f"the dataset has no labels of both classes for {', '.join(missing)}; "
                         "prepare the full ../shared/faces set.")
    rows = {} if base is None else dict(zip(base.names, base.weight.double().numpy()))
    fits = []
    for a in cfg.attributes:
        off = np.array([rows[o] for o in ORTHOGONAL_TO.get(a, ()) if o in rows]).reshape(-1, len(mean[0]))
        fits.append(fit_head(datasets[a], mean, std, cfg.test_fraction, seed, off=off))
        rows[a] = fits[-1].weight
    classifier = make_classifier(fits, mean, std) if base is None else append_heads(base, fits)
    report = {
        "faces": len(portraits), "size": size, "seed": seed, "identity": "dlib_face_recognition_resnet_model_v1 "
        "(torch port, TorchDlibIdentity.embed_crops on the aligned crop + crop landmarks)",
        "label_rules": {a: LABEL_RULES[a] for a in cfg.attributes},
        "heads": [f.summary() for f in fits],
        "positive_share_by_source": share_positive(classifier, z_real, portraits.column("source")),
        "congress": congress_checks(portraits, classifier, z_real, out),
        "dataset": portraits.meta["params"], "counts": portraits.meta["counts"],
    }
    save_classifier(out, classifier, report)
    if into is not None or add_to is not None:
        attach_classifier(into or add_to.expanduser(), classifier)
    return report


if __name__ == "__main__":
    typer.run(main)
