"""S3Editor's self-training objective: loss terms (golden values), what gets gradients,
a toy run (the objective falls, exactly Q zero groups), resume, the weight-set record,
and the zeroed-region invariance of the transforms.

The model is tiny-32 with dlib's 128-d identity net (torch port; L_id back-propagates
through it) and external landmarks."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from s3edit.face.dlib_resnet import mean_face
from s3edit.errors import InputError, WeightsError
from s3edit.model.attributes import CELEBA_ATTRIBUTES
from s3edit.model.config import preset
from s3edit.train.data import CropData
from s3edit.model.dva import build_dva
from s3edit.weights.registry import describe_s3
from s3edit.train.loop import TrainConfig
from s3edit.train.objective import DVAObjective, PairTerm, freeze_encoders, precompute_semantics
from s3edit.model.attributes import Classifier, edit_direction
from s3edit.weights.weightset import WeightSet, load_weight_set, save_weight_set
from s3edit.s3.groups import REGION_LND_COLUMNS
from s3edit.s3.routing import ClusterTransforms, face_code
from s3edit.s3.selftrain import (
    S3Config,
    S3Objective,
    check_trainable,
    faithfulness_loss,
    identity_loss,
    load_s3,
    routing_state,
    s3_tensors,
    train_s3,
    zero_group_names,
)

ID_DIM = 128


def tiny_weight_set(seed: int = 0) -> WeightSet:
    torch.manual_seed(seed)
    config = preset("tiny-32-dlib")
    model = build_dva(config).eval()
    for name, p in model.named_parameters():  # like a trained model: eps depends on z_face
        if not name.startswith("encoder.idnet.") and not p.detach().any():
            torch.nn.init.normal_(p, std=0.02)
    g = torch.Generator().manual_seed(seed)
    classifier = Classifier(torch.randn(40, ID_DIM, generator=g), torch.randn(40, generator=g),
                            torch.randn(1, ID_DIM, generator=g) * 0.01, torch.full((1, ID_DIM), 0.05),
                            list(CELEBA_ATTRIBUTES))
    return WeightSet(config, model, classifier, {"name": "tiny-s3-test"})


def random_crops(n: int = 12, seed: int = 0) -> CropData:
    """Noise crops with jittered mean-face landmarks (dlib's chip needs a face shape)."""
    g = torch.Generator().manual_seed(seed)
    crops = (torch.rand(n, 3, 32, 32, generator=g) * 2 - 1) * 0.5
    points, idx = mean_face(68, size=32)
    template = torch.full((68, 2), 16.0)
    template[torch.as_tensor(idx)] = torch.as_tensor(points, dtype=torch.float32)
    landmarks = template + 0.5 * torch.randn(n, 68, 2, generator=g)
    return CropData(crops, landmarks)


# --- loss terms -------------------------------------------------------------------------


def test_faithfulness_loss_golden():
    p_f = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.2, 0.2]])
    p_hat = torch.tensor([[0.3, 0.5, 0.6], [0.2, 0.7, 0.2]])
    attr, gamma = torch.tensor([0, 1]), torch.tensor([0.5, 1.0])
    # row 0: others |0| + |0.3| - 0.5*|0.2| = 0.2; row 1: others 0 - 1.0*0.5 = -0.5
    assert float(faithfulness_loss(p_f, p_hat, attr, gamma)) == pytest.approx((0.2 - 0.5) / 2)


def test_identity_loss_is_one_minus_cosine():
    a = F.normalize(torch.randn(4, 8), dim=1)
    assert float(identity_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(identity_loss(a, -a)) == pytest.approx(2.0)
    b = F.normalize(torch.randn(4, 8), dim=1)
    half_sq = 0.5 * (a - b).pow(2).sum(1).mean()  # unit vectors: 1 - cos = ½‖a − b‖²
    assert float(identity_loss(a, b)) == pytest.approx(float(half_sq), rel=1e-5)


# --- what trains ----------------------------------------------------------------------------


def one_backward(cfg: S3Config):
    ws = tiny_weight_set()
    freeze_encoders(ws.model)
    data = random_crops(4)
    clusters, transforms = routing_state(ws, cfg)
    obj = S3Objective(ws.model, transforms, clusters, ws.classifier, cfg)
    if cfg.train == "transforms":
        ws.model.requires_grad_(False)
    sem = precompute_semantics(ws.model, data)
    batch = obj.draw(torch.Generator().manual_seed(0), 4, len(data), (3, 32, 32))
    batch |= {k: v[batch["index"]] for k, v in sem.per_frame(data).items()}
    parts = obj(batch)
    parts["loss"].backward()
    drawn = set(clusters.labels[batch["attr"]].tolist()) if "attr" in batch else set()
    return ws.model, transforms, parts, drawn


def test_all_terms_reach_transforms_fusion_and_unet():
    model, transforms, parts, drawn = one_backward(S3Config())
    assert set(parts) == {"loss", "gen", "simple", "reg", "id", "faith"}
    expected = parts["gen"] + 0.5 * parts["id"] + 0.1 * parts["faith"]
    assert float(parts["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    for k in range(transforms.k):
        grad = transforms.transforms[k][2].weight.grad
        assert (grad is not None and bool(grad.any())) == (k in drawn)
    assert model.encoder.linear.weight.grad.abs().sum() > 0
    assert model.out[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.encoder.idnet.parameters())  # frozen


def test_no_self_train_leaves_the_transforms_without_gradient():
    model, transforms, parts, _ = one_backward(S3Config(self_train=False))
    assert set(parts) == {"loss", "gen", "simple", "reg"}
    assert all(p.grad is None for p in transforms.parameters())
    assert model.encoder.linear.weight.grad is not None


def test_train_transforms_only_freezes_the_dva():
    model, transforms, _, drawn = one_backward(S3Config(train="transforms"))
    assert all(p.grad is None for p in model.parameters())
    assert any(transforms.transforms[k][2].weight.grad.any() for k in drawn)


def test_config_errors():
    with pytest.raises(InputError, match="--sparsity must be between 0 and 1"):
        S3Config(sparsity=1.5)
    transforms_only = S3Config(train="transforms", self_train=False)
    with pytest.raises(InputError, match="trains nothing"):
        check_trainable(transforms_only, pairs=False)
    check_trainable(transforms_only, pairs=True)  # the pair and keep rows train the transforms
    with pytest.raises(InputError, match="--pair-gain changes the network's fusion layer"):
        check_trainable(transforms_only, pairs=True, pair_gain=2.0)
    check_trainable(S3Config(self_train=False), pairs=True, pair_gain=2.0)  # "all" trains the network anyway
    with pytest.raises(InputError, match="unknown --train 'unet'"):
        S3Config(train="unet")
    assert S3Config(routing=False, clusters=5).k == 1


# --- a toy run ------------------------------------------------------------------------------

TOY = TrainConfig(steps=16, batch_size=4, lr=2e-3, ema_decay=0.9, checkpoint_every=4, seed=1)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    ws = tiny_weight_set()
    run = train_s3(ws, random_crops(), TOY, S3Config(), tmp_path_factory.mktemp("ck") / "run")
    return ws, run


def test_toy_run_lowers_the_objective_and_ends_with_exactly_Q_zero_groups(toy_run):
    _, run = toy_run
    assert run.record["K"] == 5 and run.record["Q"] == 3  # ⌊0.1 · 7 · 5⌋
    assert run.after["loss"] < run.before["loss"]
    assert sorted(zero_group_names(run.transforms)) == sorted(run.zeroed)
    assert len(run.zeroed) == 3 == len(run.record["groups_zeroed"])
    per_cluster = sum(len(v) for v in run.record["zeroed_per_cluster"].values())
    assert per_cluster == 3
    assert all(len(step) == 6 for step in run.train.losses)  # every term, every step


def test_weight_set_records_the_s3_state(toy_run, tmp_path):
    ws, run = toy_run
    out = save_weight_set(tmp_path / "tuned", run.train.ema, ws.config, ws.classifier,
                          {"name": "tuned", "s3": run.record}, s3_tensors=s3_tensors(run.transforms))
    back = load_weight_set(out)
    state = load_s3(back)
    assert state.clusters.labels.tolist() == run.clusters.labels.tolist()
    for key, value in run.transforms.state_dict().items():
        assert torch.equal(state.transforms.state_dict()[key], value)
    assert describe_s3(back.meta["s3"]) == "K=5 q=0.1 zeroed=3"
    assert load_s3(tiny_weight_set()) is None  # "s3": null


def test_damaged_s3_state_is_one_clear_error(toy_run, tmp_path):
    ws, run = toy_run
    tensors = s3_tensors(run.transforms)
    tensors.pop("transforms.0.0.bias")
    ws2 = WeightSet(ws.config, ws.model, ws.classifier, {"name": "bad", "s3": run.record}, tensors)
    with pytest.raises(WeightsError, match="S3Editor state of weight set 'bad' is damaged"):
        load_s3(ws2)


def test_interrupted_run_resumes_to_the_same_weights(toy_run, tmp_path):
    _, run = toy_run
    ws = tiny_weight_set()
    folder = tmp_path / "ck"

    def dies_after_5(step, parts):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_s3(ws, random_crops(), TOY, S3Config(), folder, on_step=dies_after_5)
    resumed = train_s3(tiny_weight_set(), random_crops(), TOY, S3Config(), folder)
    assert len(resumed.train.losses) == TOY.steps - 4  # resumed from the step-4 checkpoint
    for key, value in run.transforms.state_dict().items():
        assert torch.allclose(resumed.transforms.state_dict()[key], value, atol=1e-6)
    for (name, a), b in zip(run.train.ema.state_dict().items(), resumed.train.ema.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


# --- sparsity keeps regions out -----------------------------------------------------------


def test_zeroed_region_does_not_reach_the_transform_output():
    torch.manual_seed(0)
    tr = ClusterTransforms(k=2, id_dim=ID_DIM, lnd_dim=102, face_dim=64, hidden=16)
    for k in range(2):
        torch.nn.init.normal_(tr.transforms[k][2].weight)  # a trained, non-zero T_k
    cols = [ID_DIM + c for c in REGION_LND_COLUMNS["mouth"]]
    with torch.no_grad():
        for k in range(2):
            tr.first_layer(k).weight[:, cols] = 0.0
    assert {n for n in zero_group_names(tr) if n.endswith("mouth")} == {"T0/mouth", "T1/mouth"}
    z_id, z_lnd = F.normalize(torch.randn(3, ID_DIM), dim=1), torch.rand(3, 102)
    moved = z_lnd.clone()
    moved[:, list(REGION_LND_COLUMNS["mouth"])] += torch.randn(3, 40)
    eyes = z_lnd.clone()
    eyes[:, list(REGION_LND_COLUMNS["left_eye"])] += 0.5
    fuse = torch.nn.Linear(ID_DIM + 102, 64)

    def f(a, b):
        return fuse(torch.cat([a, b], 1))

    for k in range(2):
        assert torch.equal(tr(z_id, moved, k), tr(z_id, z_lnd, k))  # mouth: no contribution
        assert not torch.allclose(tr(z_id, eyes, k), tr(z_id, z_lnd, k))  # eyes still do
        delta = face_code(f, tr, z_id, moved, k) - face_code(f, tr, z_id, z_lnd, k)
        assert torch.allclose(delta, f(z_id, moved) - f(z_id, z_lnd), atol=1e-6)  # only DVA's fusion moves


# --- with paired edits ---------------------------------------------------------------------


def eyeglasses_pairs(ws: WeightSet, keep_random: float = 0.0) -> PairTerm:
    """Pairs (0 -> 1), (2 -> 3), (4 -> 5) of ``random_crops()`` as Eyeglasses edits, along
    the set's own Eyeglasses head (the direction an edit moves along)."""
    c = ws.classifier
    row = c.weight[list(c.names).index("Eyeglasses")][None]
    return PairTerm(rows=torch.tensor([[0, 1], [2, 3], [4, 5]]), attribute=torch.zeros(3, dtype=torch.int64),
                    directions=edit_direction(row.float()), conds_mean=c.conds_mean.float(),
                    conds_std=c.conds_std.float(), names=("Eyeglasses",), batch=4, keep_random=keep_random)


def paired_batch(obj, ws: WeightSet, data: CropData) -> dict:
    sem = precompute_semantics(ws.model, data).per_frame(data)
    batch = obj.draw(torch.Generator().manual_seed(0), 4, len(data), (3, 32, 32))
    for key, prefix in obj.index_keys.items():
        batch |= {prefix + k: v[batch[key]] for k, v in sem.items()}
    return batch


def test_untuned_transforms_with_pairs_give_dvas_paired_terms_plus_self_training():
    ws = tiny_weight_set()
    freeze_encoders(ws.model)
    data = random_crops()
    pairs = eyeglasses_pairs(ws)
    clusters, transforms = routing_state(ws, S3Config())
    obj = S3Objective(ws.model, transforms, clusters, ws.classifier, S3Config(), pairs=pairs)
    batch = paired_batch(obj, ws, data)
    with torch.no_grad():
        torch.manual_seed(1)
        parts = obj(batch)
        torch.manual_seed(1)
        dva = DVAObjective(ws.model, pairs=pairs)(batch)  # T_k output 0: the same codes
    assert set(parts) == {"loss", "gen", "simple", "reg", "pair", "keep", "id", "faith"}
    for key in ("simple", "reg", "pair", "keep"):
        assert torch.allclose(parts[key], dva[key], atol=1e-6), key
    expected = parts["gen"] + parts["pair"] + parts["keep"] + 0.5 * parts["id"] + 0.1 * parts["faith"]
    assert float(parts["loss"]) == pytest.approx(float(expected), rel=1e-6)


def test_paired_edits_train_the_transform_of_their_attributes_cluster():
    ws = tiny_weight_set()
    freeze_encoders(ws.model)
    cfg = S3Config(self_train=False)  # only the pair and keep rows pass through T_k
    clusters, transforms = routing_state(ws, cfg)
    obj = S3Objective(ws.model, transforms, clusters, ws.classifier, cfg, pairs=eyeglasses_pairs(ws))
    obj(paired_batch(obj, ws, random_crops()))["loss"].backward()
    routed = clusters.route_name("Eyeglasses")
    for k in range(transforms.k):
        grad = transforms.transforms[k][2].weight.grad
        assert (grad is not None and bool(grad.any())) == (k == routed), k


def test_pairs_train_the_transforms_alone_with_the_network_as_it_was(tmp_path):
    cfg = TrainConfig(steps=3, batch_size=4, lr=2e-3, ema_decay=0.9, checkpoint_every=3, seed=1)
    ws = tiny_weight_set()
    start = {k: v.clone() for k, v in ws.model.state_dict().items()}
    run = train_s3(ws, random_crops(), cfg, S3Config(train="transforms", self_train=False), tmp_path / "ck",
                   pairs=eyeglasses_pairs(ws))
    for key, value in run.train.ema.state_dict().items():
        assert torch.equal(value, start[key]), key
    routed = run.clusters.route_name("Eyeglasses")
    for k in range(run.transforms.k):
        assert bool(run.transforms.transforms[k][2].weight.any()) == (k == routed), k
    with pytest.raises(InputError, match="trains nothing"):
        train_s3(tiny_weight_set(), random_crops(), cfg, S3Config(train="transforms", self_train=False),
                 tmp_path / "none")


def test_edited_codes_route_as_an_edit_does():
    ws = tiny_weight_set()
    clusters, transforms = routing_state(ws, S3Config())
    for k in range(transforms.k):
        torch.nn.init.normal_(transforms.transforms[k][2].weight)  # a tuned T_k: the route shows
    obj = S3Objective(ws.model, transforms, clusters, ws.classifier, S3Config())
    g = torch.Generator().manual_seed(3)
    directions = torch.cat([clusters.embeddings[[4, 15, 31]], F.normalize(torch.randn(5, ID_DIM, generator=g), dim=1)])
    assert clusters.route_rows(directions).tolist() == [int(clusters.labels[i]) for i in (4, 15, 31)] + [
        int(torch.argmax(clusters.centroids @ d)) for d in directions[3:]]  # known: own cluster; else nearest
    z_id, z_lnd = F.normalize(torch.randn(8, ID_DIM, generator=g), dim=1), torch.rand(8, 102, generator=g)
    with torch.no_grad():
        for i, d in enumerate(directions):
            expected = face_code(ws.model.fuse, transforms, z_id[i:i + 1], z_lnd[i:i + 1], clusters.route(d))
            assert torch.allclose(obj.edited_face(z_id[i:i + 1], z_lnd[i:i + 1], d[None]), expected, atol=1e-6)


def test_a_run_with_pairs_resumes_and_records_them(tmp_path):
    cfg = TrainConfig(steps=4, batch_size=4, lr=2e-3, ema_decay=0.9, checkpoint_every=2, seed=1)
    ws = tiny_weight_set()
    run = train_s3(ws, random_crops(), cfg, S3Config(), tmp_path / "ck", pairs=eyeglasses_pairs(ws))
    assert all({"pair", "keep", "id", "faith"} <= set(step) for step in run.train.losses)
    assert "pair" in run.before and "pair" in run.after
    ws2 = tiny_weight_set()

    def dies_at_3(step, parts):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_s3(ws2, random_crops(), cfg, S3Config(), tmp_path / "ck2", on_step=dies_at_3,
                 pairs=eyeglasses_pairs(ws2))
    ws3 = tiny_weight_set()
    resumed = train_s3(ws3, random_crops(), cfg, S3Config(), tmp_path / "ck2", pairs=eyeglasses_pairs(ws3))
    assert len(resumed.train.losses) == 2  # from the step-2 checkpoint
    for key, value in run.transforms.state_dict().items():
        assert torch.allclose(resumed.transforms.state_dict()[key], value, atol=1e-6), key
    ws4 = tiny_weight_set()
    with pytest.raises(InputError, match="holds the checkpoint of another run"):  # pairs are part of the run
        train_s3(ws4, random_crops(), cfg, S3Config(), tmp_path / "ck2", keep_other=True)
