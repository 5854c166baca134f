"""Weight sets on disk: round trip (fp16 storage cast on load), classifier, meta kept,
and one clear WeightsError for every way a folder can be wrong."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from s3edit.errors import InputError, OutputError, WeightsError
from s3edit.model.attributes import CELEBA_ATTRIBUTES
from s3edit.model.config import preset
from s3edit.model.dva import build_dva
from s3edit.model.attributes import Classifier
from s3edit.weights.weightset import load_weight_set, read_config, save_weight_set


def classifier(dim: int = 512) -> Classifier:
    g = torch.Generator().manual_seed(0)
    return Classifier(torch.randn(40, dim, generator=g), torch.randn(40, generator=g),
                      torch.randn(1, dim, generator=g), torch.rand(1, dim, generator=g) + 0.5,
                      list(CELEBA_ATTRIBUTES))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = build_dva(preset("tiny-32")).eval()
    folder = tmp_path_factory.mktemp("sets") / "tiny"
    meta = {"name": "tiny", "licence": "test only", "source": {"kind": "test"}, "trained_steps": 7}
    save_weight_set(folder, model, classifier=classifier(), meta=meta, dtype=torch.float16)
    return folder, model


def copy_set(saved, tmp_path, edit=None):
    folder = tmp_path / "set"
    shutil.copytree(saved[0], folder)
    if edit is not None:
        data = json.loads((folder / "config.json").read_text())
        edit(data)
        (folder / "config.json").write_text(json.dumps(data))
    return folder


def test_round_trip_casts_fp16_storage_and_keeps_meta(saved):
    folder, model = saved
    ws = load_weight_set(folder)
    assert ws.config == preset("tiny-32") and ws.name == "tiny" and not ws.model.training
    state = ws.model.state_dict()
    for key, value in model.state_dict().items():
        loaded = state[key]
        expected = value.half().to(value.dtype) if value.is_floating_point() else value
        assert loaded.dtype == value.dtype and torch.equal(loaded, expected), key
    assert ws.meta["trained_steps"] == 7 and ws.meta["s3"] is None and ws.meta["licence"] == "test only"
    assert ws.classifier.names == list(CELEBA_ATTRIBUTES)
    torch.testing.assert_close(ws.classifier.weight, classifier().weight.half().float())
    assert not any(p.requires_grad for p in ws.model.encoder.idnet.parameters())


def test_load_in_bfloat16_runs(saved):
    ws = load_weight_set(saved[0], dtype=torch.bfloat16)
    assert ws.model.out[2].weight.dtype == torch.bfloat16
    with torch.no_grad():
        eps = ws.model(torch.randn(1, 3, 32, 32, dtype=torch.bfloat16), 10, torch.randn(1, 64))
    assert eps.dtype == torch.bfloat16 and eps.shape == (1, 3, 32, 32)


def test_classifier_normalisation_and_names():
    c = classifier()
    z = torch.randn(3, 512)
    torch.testing.assert_close(c.denormalize(c.normalize(z)), z)
    torch.testing.assert_close(c.logits(z), ((z - c.conds_mean) / c.conds_std) @ c.weight.T + c.bias)
    assert c.index("Eyeglasses") == 15 and c.index("eyeglasses") == 15
    with pytest.raises(InputError, match="unknown attribute 'Eyeglass'; did you mean Eyeglasses"):
        c.index("Eyeglass")


def test_existing_folder_is_not_overwritten(saved, tmp_path):
    folder = copy_set(saved, tmp_path)
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        save_weight_set(folder, saved[1])
    save_weight_set(folder, saved[1], meta={"name": "again"}, overwrite=True, dtype=torch.float16)
    assert read_config(folder)["name"] == "again" and not (folder / "classifier.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no temporary folders left behind


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(format="other"), "is not an s3edit weight-set config"),
    (lambda d: d.update(version=2), "has format version 2; this s3edit reads version 1"),
    (lambda d: d["model"].update(id_encoder="vgg"), "model config .* is invalid"),
    (lambda d: d["model"].update(face_parser=True), r"1\d\d missing tensor\(s\): encoder.bgnet.backbone.cp.resnet"),
    (lambda d: d["model"].update(lnd_encoder="external"), r"326 unexpected tensor\(s\): encoder.lndnet.backbone.linear1"),
    (lambda d: d["model"]["unet"].update(model_channels=64),
     r"mis-shaped tensor\(s\): time_embed.time_embed.0.weight \(64, 32\) != \(64, 64\)"),
])
def test_broken_config_or_tensors_give_one_clear_error(saved, tmp_path, edit, message):
    with pytest.raises(WeightsError, match=message):
        load_weight_set(copy_set(saved, tmp_path, edit))


def test_missing_or_damaged_files(saved, tmp_path):
    with pytest.raises(WeightsError, match="does not exist; run `s3edit weights list`"):
        load_weight_set(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="is not a weight set: it has no config.json"):
        load_weight_set(tmp_path / "empty")
    folder = copy_set(saved, tmp_path)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="is not valid JSON"):
        load_weight_set(folder)
    shutil.rmtree(folder)
    folder = copy_set(saved, tmp_path)
    (folder / "classifier.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="classifier.safetensors' is 64 bytes where checksums.json records"):
        load_weight_set(folder)
    (folder / "checksums.json").unlink()  # a set written before checksums: the header check finds it
    with pytest.raises(WeightsError, match="classifier.safetensors' is not a readable safetensors file"):
        load_weight_set(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="has no model.safetensors"):
        load_weight_set(folder)


def test_classifier_rows_must_match_attribute_names(saved, tmp_path):
    folder = copy_set(saved, tmp_path, lambda d: d.update(attributes=d["attributes"][:39]))
    with pytest.raises(WeightsError, match=r"classifier .* mis-shaped tensor\(s\): .*weight \(40, 512\) != \(39, 512\)"):
        load_weight_set(folder)


def test_random_weight_set_takes_extra_config_keys(tmp_path):
    """benchmarks/speed.py times DVA's architecture with DVA's sampler this way."""
    from s3edit.weights.weightset import DVA_RULES, random_weight_set

    plain = load_weight_set(random_weight_set(tmp_path / "plain", "tiny-32-dlib"))
    dva = load_weight_set(random_weight_set(tmp_path / "dva", "tiny-32-dlib", meta=DVA_RULES))
    assert plain.meta.get("sampler", "s3edit") == "s3edit"
    assert dva.meta["sampler"] == "dva" and dva.meta["identity"] == "mean"
