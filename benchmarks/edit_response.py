"""Does a weight set's decoder follow z_id? How much an attribute edit changes the crops.

    python benchmarks/edit_response.py clip.s3job                        # the default set
    python benchmarks/edit_response.py ~/.cache/s3edit/faces-aligned/job --weights W --picture r.png

Takes ``--frames`` crops spread over an aligned job, encodes them (DDIM inversion,
``--steps``), decodes them at scale 0 and at each ``--scales`` value of ``--attr``
(DVA's edit rule, no routing; ``--identity clip``: under the job's one z_id_rep, as
the pipeline edits, instead of each crop's own z_id), and prints the mean absolute
change against the scale-0 decode, in % of the pixel range, inside the attribute's band
and over the rest of the crop (the band: for Eyeglasses, and attributes without a
region, the box around the 12 eye landmarks widened by half the eye distance, where
glasses go; for the others their edit region, ``ATTRIBUTE_REGIONS``, e.g. Smiling's
mouth and cheeks) (rows decoded with ``ddim_decode_in_region``, which keeps the crop itself outside
the region, against the crop). A decoder that follows z_id changes the band far more than the rest as the
scale grows; one that ignores it changes little anywhere. The last columns are the mean
signed change of R, G and B outside the band (negative: the face darkens).
``--edited-below T ...`` adds rows decoded under the edited code only at the steps with
t < T: how much of the change the first, high-noise steps make. ``--confined`` adds
rows confined to the attribute's region, as ``edit --region auto`` decodes
(``ddim_decode_in_region``; ``--edited-below 700`` is its default start). ``--picture``:
rows = source, scale 0, each scale (and its confined row).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job", type=Path, help="an aligned job (s3edit align, or a portrait dataset's job/)")
    parser.add_argument("--weights", default=None, help="weight set (default: the registry's default)")
    parser.add_argument("--attr", default="Eyeglasses")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.6, 1.2, 2.5])
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--picture", type=Path, default=None)
    parser.add_argument("--edited-below", type=int, nargs="+", default=None, metavar="T",
                        help="also decode with the edited code only at the steps with t < T (on the crop's own path "
                             "above): which steps of a decode make the change")
    parser.add_argument("--identity", choices=("frame", "clip"), default="frame",
                        help="frame: each crop's own z_id; clip: the job's one z_id_rep, as encode/edit use")
    parser.add_argument("--confined", action="store_true",
                        help="also decode each row confined to the attribute's region, as `edit --region auto`")
    args = parser.parse_args()

    import cv2

    from s3edit.face.mask import attribute_region, edit_region, eye_band
    from s3edit.job import Job
    from s3edit.model import ddim
    from s3edit.train.data import load_job_crops
    from s3edit.weights.registry import resolve_weights
    from s3edit.weights.weightset import load_weight_set
    from s3edit.model.attributes import edited_identity
    from s3edit.pipeline.edit import resolve_attributes
    from s3edit.pipeline.encode import clip_identity

    folder = resolve_weights(args.weights)
    ws = load_weight_set(folder)
    model, size = ws.model, ws.config.image_size
    (name, _), = resolve_attributes([(args.attr, 1.0)], ws.classifier, str(folder))
    data = load_job_crops(Job.open(args.job), size)
    index = torch.as_tensor(np.unique(np.linspace(0, len(data) - 1, args.frames).round().astype(int)))
    x, lnd = data.crops[index], data.landmarks[index]
    lnd01 = (lnd + 0.5) / size
    band = attribute_region(name, lnd, size) if name != "Eyeglasses" else None
    band = torch.from_numpy(eye_band(lnd.numpy(), size)) if band is None else band
    with torch.no_grad():
        z_id, z_lnd = model.z_id(x, lnd01), model.z_lnd(x, lnd01)
        if args.identity == "clip":  # z_id_rep over every frame of the job
            every = torch.cat([model.z_id(c, (l + 0.5) / size)
                               for c, l in zip(data.crops.split(64), data.landmarks.split(64))])
            z_id = clip_identity(every).expand_as(z_id)
        x_T = ddim.ddim_encode(model, x, model.fuse(z_id, z_lnd), args.steps)
        base = ddim.ddim_decode(model, x_T, model.fuse(z_id, z_lnd), args.steps)
        rows = [x, base]
        print(f"{folder.name}: {len(index)} crops of {args.job}, {args.steps} DDIM steps, {name}")
        regions = {"whole": torch.ones(len(x), 1, size, size)}
        if args.confined:
            regions[name] = edit_region([name], lnd, size)
            if regions[name] is None:
                parser.error(f"{name} has no region to confine its edit to")
        print(f"{'scale':>6} {'t <':>5} {'region':>10} {'band %':>11} {'elsewhere %':>12}  "
              "mean RGB shift elsewhere %")
        for scale in args.scales:
            z_new = torch.stack([edited_identity(z, [(name, scale)], ws.classifier) for z in z_id])
            edited = model.fuse(z_new, z_lnd)
            for below in [None] + (args.edited_below or []):
                for region_name, region in regions.items():
                    if region_name == "whole" and below is None:  # the plain edit: one trajectory
                        out, ref = ddim.ddim_decode(model, x_T, edited, args.steps), base
                    else:  # decoded on the crop's own path, so measured against the crop
                        out, ref = ddim.ddim_decode_in_region(model, x_T, x, edited, region, args.steps,
                                                              edit_start=below or ddim.NUM_TRAIN_TIMESTEPS), x
                    change = (out - ref).abs().mean(1) / 2 * 100  # % of the [-1, 1] range, (N, S, S)
                    shift = ((out - ref).permute(1, 0, 2, 3)[:, ~band].mean(1) / 2 * 100).tolist()
                    print(f"{scale:>6g} {below or 'all':>5} {region_name:>10} {change[band].mean().item():>11.2f} "
                          f"{change[~band].mean().item():>12.2f}  " + " ".join(f"{v:+.2f}" for v in shift))
                    if below is None:
                        rows.append(out)
    if args.picture is not None:
        grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)
        image = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        cv2.imwrite(str(args.picture), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        print(f"wrote {args.picture} (rows: source, scale 0, {', '.join(f'{s:g}' for s in args.scales)})")


if __name__ == "__main__":
    main()
