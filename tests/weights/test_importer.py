"""Import of DVA's published files: a fake Lightning checkpoint built from the
reference table imports with every value equal to its ``ema_model.`` copy, the
classifier and statistics are taken as DVA stores them, and files that are damaged,
incomplete or try to run code are refused with one clear message. Into the weights
home (``import_weights``), a source whose sha256 the registry knows must match it and
an existing set is not replaced."""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors import safe_open

from s3edit.errors import InputError, OutputError, WeightsError
from s3edit.model.attributes import CELEBA_ATTRIBUTES
from s3edit.model.config import preset
from s3edit.model.dva import build_dva
from s3edit.weights import registry as reg
from s3edit.weights.importer import ALIAS_PREFIX, ALIAS_TARGET, import_dva, import_weights, safe_load
from s3edit.weights.weightset import load_weight_set

TINY = preset("tiny-32")

# --- fake DVA files: Lightning-style checkpoints whose tensors cost almost no memory (each
# is a stride-0 expansion of one small block), with values exactly representable in
# float16 and different in ``model.`` and ``ema_model.``.


def pattern(index: int, shape: tuple[int, ...], dtype: torch.dtype, sign: int = 1) -> torch.Tensor:
    """A cheap tensor of ``shape`` that differs between indices and between signs: a
    block over the fewest trailing dims that hold >= 64 values expanded over
    the leading ones, so large tensors share one small storage."""
    if not dtype.is_floating_point:
        return torch.tensor(sign * index, dtype=dtype).expand(shape)
    k = len(shape)
    while k > 0 and math.prod(shape[k:]) < 64:
        k -= 1
    block = (index % 64) + (torch.arange(math.prod(shape[k:])) % 16) / 16
    block = (sign * block - float(sign < 0)).to(dtype).reshape(shape[k:])
    return block.expand(shape)



def dtype_of(name: str) -> torch.dtype:
    return torch.int64 if name.endswith("num_batches_tracked") else torch.float32


def table_with_aliases(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Our state_dict's shapes plus DVA's ``base_net.0`` alias names."""
    table = {k: tuple(v.shape) for k, v in state.items()}
    for k in list(table):
        if k.startswith(ALIAS_TARGET):
            table[ALIAS_PREFIX + k[len(ALIAS_TARGET):]] = table[k]
    return table


def expected_ema(table: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """name -> the ``ema_model.`` tensor the fake checkpoint holds (aliases share)."""
    out = {}
    for i, (name, shape) in enumerate(sorted(table.items())):
        if name.startswith(ALIAS_PREFIX):
            continue
        out[name] = pattern(i, shape, dtype_of(name))
    for name in table:
        if name.startswith(ALIAS_PREFIX):
            out[name] = out[ALIAS_TARGET + name[len(ALIAS_PREFIX):]]
    return out


def lightning_checkpoint(table: dict[str, tuple[int, ...]], drop: tuple[str, ...] = (), extra_hparams=None) -> dict:
    """A dict shaped like DVA's Lightning checkpoint."""
    ema = expected_ema(table)
    state = {}
    for i, (name, shape) in enumerate(sorted(table.items())):
        state[f"model.{name}"] = pattern(i, shape, dtype_of(name), sign=-1)
    for name, t in ema.items():
        if name not in drop:
            state[f"ema_model.{name}"] = t
    first = next(iter(sorted(table)))
    hparams = {"lr": 1e-4, "batch_size": 32, "ema_decay": 0.9999, "beta_scheduler": "linear"}
    if extra_hparams is not None:
        hparams["conf"] = extra_hparams
    return {
        "epoch": 51,
        "global_step": 1_000_000,
        "pytorch-lightning_version": "1.4.5",
        "state_dict": state,
        "optimizer_states": [{
            "state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}},
            "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "params": [0]}],
        }],
        "lr_schedulers": [{"last_epoch": 51, "base_lrs": [1e-4]}],
        "callbacks": {"ModelCheckpoint": {"monitor": None, "best_model_path": ""}},
        "hyper_parameters": hparams,
        "_first": first,
    }


def classifier_checkpoint(rows: int = 40, dim: int = 512, with_stats: bool = True) -> dict:
    g = torch.Generator().manual_seed(3)
    state = {
        "classifier.weight": torch.randn(rows, dim, generator=g),
        "classifier.bias": torch.randn(rows, generator=g),
        "ema_classifier.weight": torch.randn(rows, dim, generator=g),
        "ema_classifier.bias": torch.randn(rows, generator=g),
    }
    if with_stats:
        state["conds_mean"] = torch.randn(1, dim, generator=g)
        state["conds_std"] = torch.rand(1, dim, generator=g) + 0.5
    return {"epoch": 10, "global_step": 300, "state_dict": state, "hyper_parameters": {"lr": 1e-3}}


def matches(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """actual == expected everywhere, for an ``expected`` made by ``pattern`` (compared
    block by block, so a 100 M-value tensor costs one pass over ``actual``)."""
    if tuple(actual.shape) != tuple(expected.shape):
        return False
    lead = 0
    while lead < expected.ndim and expected.stride(lead) == 0:
        lead += 1
    block = expected[(0,) * lead].to(actual.dtype)
    return bool((actual.reshape(-1, block.numel()) == block.reshape(1, -1)).all())


# --- tests


@pytest.fixture(scope="module")
def tiny_table():
    return table_with_aliases(build_dva(TINY, device="meta").state_dict())


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny_table):
    path = tmp_path_factory.mktemp("ckpt") / "dva.ckpt"
    torch.save(lightning_checkpoint(tiny_table), path)
    return path


def test_full_reference_checkpoint_imports_every_tensor(dva_reference_table, tmp_path):
    """All 1,986 tensors of DVA's table map; every value equals the EMA copy (stored
    as float16 here to keep the test light; the patterns are exact in float16)."""
    table = dva_reference_table
    ckpt = tmp_path / "epoch=51-step=1000000.ckpt"
    torch.save(lightning_checkpoint(table), ckpt)
    report = import_dva(ckpt, tmp_path / "dva", dtype=torch.float16)
    assert report.ok and report.loader == "weights_only" and report.copy == "ema_model"
    assert report.tensors == 1986 and report.mapped == 1986 and report.aliases == 312
    assert report.written == 1986 - 312 and not report.unmapped
    ema = expected_ema(table)
    with safe_open(str(tmp_path / "dva" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert keys == {k for k in table if ".base_net." not in k}
        bad = [k for k in keys if not matches(f.get_tensor(k), ema[k])]
    assert bad == []


def test_tiny_import_loads_as_a_weight_set_with_classifier(tmp_path, tiny_ckpt, tiny_table):
    cls_path = tmp_path / "cls.ckpt"
    cls = classifier_checkpoint()
    torch.save(cls, cls_path)
    stats = tmp_path / "latent.pkl"
    mean, std = np.full(512, 0.5, np.float32), np.full(512, 2.0, np.float32)
    with open(stats, "wb") as f:  # a plain pickle of numpy arrays, DiffAE-style keys
        pickle.dump({"conds": np.zeros((3, 512), np.float32), "conds_mean": mean, "conds_std": std}, f)

    report = import_dva(tiny_ckpt, tmp_path / "ws", classifier_ckpt=cls_path, stats=stats,
                        config=TINY, dtype=torch.float16)
    assert report.ok and report.classifier == "ema_classifier" and report.stats == "stats file"
    assert report.attributes == 40

    ws = load_weight_set(tmp_path / "ws")
    ema = expected_ema(tiny_table)
    state = ws.model.state_dict()
    assert [k for k, v in state.items() if not matches(v, ema[k])] == []
    assert ws.classifier.names == list(CELEBA_ATTRIBUTES)
    assert torch.equal(ws.classifier.weight, cls["state_dict"]["ema_classifier.weight"])  # heads stay float32
    assert torch.all(ws.classifier.conds_mean == 0.5) and torch.all(ws.classifier.conds_std == 2.0)
    assert ws.meta["source"]["checkpoint"] == "dva.ckpt" and ws.meta["s3"] is None


def test_classifier_statistics_come_from_its_checkpoint_without_stats(tmp_path, tiny_ckpt):
    cls_path = tmp_path / "cls.ckpt"
    cls = classifier_checkpoint()
    del cls["state_dict"]["ema_classifier.weight"]  # no EMA pair: the plain heads are used
    torch.save(cls, cls_path)
    report = import_dva(tiny_ckpt, tmp_path / "ws", classifier_ckpt=cls_path, config=TINY, dtype=torch.float16)
    assert report.classifier == "classifier" and report.stats == "classifier checkpoint"
    with safe_open(str(tmp_path / "ws" / "classifier.safetensors"), "pt") as f:
        torch.testing.assert_close(f.get_tensor("conds_mean"), cls["state_dict"]["conds_mean"])


def test_checkpoint_missing_tensors_is_refused_with_their_names(tmp_path, tiny_table):
    dropped = ("out.2.weight", "encoder.linear.bias")
    ckpt = tmp_path / "partial.ckpt"
    torch.save(lightning_checkpoint(tiny_table, drop=dropped), ckpt)
    with pytest.raises(WeightsError, match="2 missing: out.2.weight, encoder.linear.bias") as info:
        import_dva(ckpt, tmp_path / "ws", config=TINY)
    assert set(info.value.report.missing) == set(dropped)
    assert not (tmp_path / "ws").exists()


def test_wrong_architecture_lists_mis_shaped_tensors(tmp_path, tiny_ckpt):
    with pytest.raises(WeightsError, match=r"72 mis-shaped: encoder.linear.bias \(64,\) != \(256,\)") as info:
        import_dva(tiny_ckpt, tmp_path / "ws", config=preset("small-64"))
    assert info.value.report.mismatched and info.value.report.missing


class Mode(enum.Enum):  # stands for the training-config enums DVA's hyper_parameters hold
    AUTOENC = "autoenc"


def test_authors_classes_in_hyper_parameters_load_as_inert_placeholders(tmp_path, tiny_table):
    ckpt = tmp_path / "hp.ckpt"
    torch.save(lightning_checkpoint(tiny_table, extra_hparams={"model_type": Mode.AUTOENC}), ckpt)
    report = import_dva(ckpt, tmp_path / "ws", config=TINY, dtype=torch.float16)
    assert report.ok and report.loader == "restricted"
    assert report.opaque_globals == [f"{__name__}.Mode"]


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickles_that_run_code_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(RunsCode(marker)))
    zipped = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": RunsCode(marker)}, zipped)
    for path in (plain, zipped):
        with pytest.raises(WeightsError, match="tries to run code .*refusing it"):
            safe_load(path)
    assert not marker.exists()


def test_user_errors(tmp_path, tiny_ckpt):
    with pytest.raises(InputError, match="does not exist"):
        import_dva(tmp_path / "nope.ckpt", tmp_path / "ws")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="is not a PyTorch checkpoint or pickle"):
        import_dva(text, tmp_path / "ws")
    other = tmp_path / "other.pt"
    torch.save({"weights": [1, 2, 3]}, other)
    with pytest.raises(WeightsError, match="is not a DVA checkpoint"):
        import_dva(other, tmp_path / "ws")
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        import_dva(tiny_ckpt, tmp_path / "taken")
    with pytest.raises(InputError, match="pass --classifier as well"):
        import_dva(tiny_ckpt, tmp_path / "ws", stats=tiny_ckpt, config=TINY)
    cls_path = tmp_path / "cls.ckpt"
    torch.save(classifier_checkpoint(with_stats=False), cls_path)
    with pytest.raises(WeightsError, match="pass DVA's latent.pkl with --stats"):
        import_dva(tiny_ckpt, tmp_path / "ws", classifier_ckpt=cls_path, config=TINY)
    assert not (tmp_path / "ws").exists()


# --- into the weights home


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def import_env(offline):
    """Offline, isolated; a registry whose import set 'dva' records its checkpoint's sha256."""
    path = offline / "registry.json"
    path.write_text(json.dumps({
        "format": "s3edit-weights-registry", "version": 1, "default": "dva",
        "sets": {
            "dva": {"kind": "import", "licence": "MIT", "description": "d",
                    "files": [{"role": "checkpoint", "filename": "dva.ckpt", "url": "https://example.org/dva",
                               "sha256": sha(b"the real checkpoint")}]},
        },
    }))
    return reg.load_registry(path), offline


def test_import_refuses_a_source_with_the_wrong_sha256(import_env):
    registry, tmp = import_env
    ckpt = tmp / "dva.ckpt"
    ckpt.write_bytes(b"not the real checkpoint")
    with pytest.raises(WeightsError) as err:
        import_weights(ckpt, name="dva", registry=registry)
    assert str(err.value) == (
        f"checkpoint file {str(ckpt)!r} has sha256 {sha(b'not the real checkpoint')}, but weight set 'dva' "
        f"expects {sha(b'the real checkpoint')}; the file is damaged or a different release, so download it again."
    )
    assert not (tmp / "home" / "weights" / "dva").exists()


def test_import_refuses_to_overwrite(import_env):
    registry, tmp = import_env
    (tmp / "home" / "weights" / "dva").mkdir(parents=True)
    with pytest.raises(OutputError, match=r"weight set 'dva' already exists at .*; pass --overwrite to replace it"):
        import_weights(tmp / "x.ckpt", name="dva", registry=registry)
