"""DVA's objective (``s3edit.train.objective``) with the paired-edit and keep terms: the
draws, the pair code, the pair and keep losses against hand-computed values, the keep
region, and a short run that lowers the pair loss."""

from __future__ import annotations

import pytest
import torch

from s3edit.train.data import CropData
from s3edit.train.loop import TrainConfig, evaluate, gather_batch
from s3edit.train.objective import (
    PAIR_T_MIN,
    DVAObjective,
    PairTerm,
    changed_region,
    freeze_encoders,
    noisy,
    precompute_semantics,
    predict_x0,
    train_dva,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pair_term(model, weight: float = 1.0) -> PairTerm:
    """Pairs (0 -> 1), (2 -> 3), (4 -> 5) of ``crops()``, one attribute along a random
    unit direction, the unit normalisation."""
    g = torch.Generator().manual_seed(5)
    D = model.config.id_dim
    direction = torch.nn.functional.normalize(torch.randn(1, D, generator=g), dim=1)
    return PairTerm(rows=torch.tensor([[0, 1], [2, 3], [4, 5]]), attribute=torch.zeros(3, dtype=torch.int64),
                    directions=direction, conds_mean=torch.zeros(1, D), conds_std=torch.ones(1, D),
                    names=("Eyeglasses",), weight=weight, batch=4)


def paired_data(crops) -> CropData:
    """crops() where frame 2k+1 is frame 2k with a dark band across the eyes (a twin)."""
    data = crops()
    data.crops[1::2] = data.crops[0::2]
    data.crops[1::2, :, 10:14, 6:26] = -1.0
    data.landmarks[1::2] = data.landmarks[0::2]
    return data


def test_pair_draws_name_both_frames_and_leave_the_plain_draws_unchanged(tiny_model):
    model = tiny_model()
    plain = DVAObjective(model).draw(torch.Generator().manual_seed(1), 4, 6, (3, 32, 32))
    objective = DVAObjective(model, pairs=pair_term(model))
    draws = objective.draw(torch.Generator().manual_seed(1), 4, 6, (3, 32, 32))
    for k, v in plain.items():  # the same numbers first: a run without pairs is as before
        assert torch.equal(draws[k], v), k
    assert draws["pair_src"].shape == (4,) and draws["pair_eps"].shape == (4, 3, 32, 32)
    pairs = {(0, 1), (2, 3), (4, 5)}
    for src, tgt, sign in zip(draws["pair_src"].tolist(), draws["pair_tgt"].tolist(), draws["pair_sign"].tolist()):
        assert ((src, tgt) if sign > 0 else (tgt, src)) in pairs
    from_src = draws["pair_noisy"] == draws["pair_src"]
    assert (from_src | (draws["pair_noisy"] == draws["pair_tgt"])).all()
    assert int(draws["pair_t"][from_src].min()) >= PAIR_T_MIN  # t_min only where src is noised
    wide = pair_term(model)
    wide.batch = 400
    many = DVAObjective(model, pairs=wide).draw(torch.Generator().manual_seed(1), 4, 6, (3, 4, 4))
    from_tgt = many["pair_noisy"] == many["pair_tgt"]
    assert 0.3 < float(from_tgt.float().mean()) < 0.7 and int(many["pair_t"][from_tgt].min()) < PAIR_T_MIN
    assert objective.index_keys == {"index": "", "pair_src": "src_", "pair_tgt": "tgt_", "pair_noisy": "noisy_"}
    assert objective.describe()["pairs"]["pairs"] == 3


def test_pair_code_is_the_edit_rule_on_the_source_identity(tiny_model):
    from s3edit.model.attributes import edit_identity

    model = tiny_model()
    term = pair_term(model)
    objective = DVAObjective(model, pairs=term)
    src = torch.nn.functional.normalize(torch.randn(4, 128, generator=torch.Generator().manual_seed(2)), dim=-1)
    batch = {"src_z_id": src, "pair_sign": torch.tensor([1.0, -1.0, 1.0, -1.0]),
             "pair_gamma": torch.tensor([0.3, 0.5, 0.7, 0.9]), "pair_attr": torch.zeros(4, dtype=torch.int64)}
    expected = edit_identity(src, term.directions[0], torch.tensor([0.3, -0.5, 0.7, -0.9]), term.conds_mean,
                             term.conds_std)
    torch.testing.assert_close(objective.pair_code(batch), expected)


def test_frames_past_plain_frames_feed_only_the_pair_term(tiny_model):
    model = tiny_model()
    term = pair_term(model)
    term.plain_frames, term.batch = 2, 64
    draws = DVAObjective(model, pairs=term).draw(torch.Generator().manual_seed(3), 64, 6, (3, 32, 32))
    assert set(draws["index"].tolist()) == {0, 1}
    assert set(draws["pair_src"].tolist()) | set(draws["pair_tgt"].tolist()) == set(range(6))


@pytest.mark.parametrize("space, target_form, form", [("noise", "frame", "l1"), ("x0", "frame", "l1"),
                                                       ("noise", "change", "l1"), ("x0", "frame", "l2")])
def test_pair_loss_is_the_l1_or_l2_error_to_the_noise_that_predicts_the_target(tiny_model, crops, space, target_form, form):
    from s3edit.model.attributes import edit_identity
    from s3edit.train.objective import X0_CAP

    model = tiny_model().eval()
    freeze_encoders(model)
    if target_form == "change":  # a network whose output depends on the code (the last conv starts at zero)
        with torch.no_grad():
            g = torch.Generator().manual_seed(8)
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    data = paired_data(crops)
    sem = precompute_semantics(model, data)
    term = pair_term(model, weight=0.5)
    term.space, term.target, term.loss = space, target_form, form
    objective = DVAObjective(model, pairs=term).eval()
    draws = objective.draw(torch.Generator().manual_seed(4), 2, len(data), (3, 32, 32))
    batch = gather_batch(objective, draws, sem.per_frame(data), "cpu")
    with torch.no_grad():
        parts = objective(batch)
        a = objective.abar[draws["pair_t"]].view(-1, 1, 1, 1)
        x_p = noisy(data.crops[draws["pair_noisy"]], draws["pair_eps"], a)
        eps = model(x_p, draws["pair_t"], model.fuse(objective.pair_code(batch), sem.z_lnd[draws["pair_src"]]))
        target = (x_p - a.sqrt() * data.crops[draws["pair_tgt"]]) / (1 - a).sqrt()
    # eps* is the noise whose one-step x0 prediction is the target frame (the draw's own
    # noise where the target itself was noised)
    torch.testing.assert_close(predict_x0(x_p, target, a), data.crops[draws["pair_tgt"]], atol=1e-4, rtol=0)
    from_tgt = draws["pair_noisy"] == draws["pair_tgt"]
    torch.testing.assert_close(target[from_tgt], draws["pair_eps"][from_tgt], atol=1e-4, rtol=0)
    region = changed_region(data.crops[draws["pair_src"]], data.crops[draws["pair_tgt"]])
    assert region[:, :, 9:15, 5:27].min() == 1 and region.sum() == 4 * 6 * 22  # the band, dilated 1 px
    from_src = draws["pair_noisy"] == draws["pair_src"]
    assert 0 < int(from_src.sum()) < len(from_src)
    if target_form == "change":  # from src: the plain code's prediction moved by tgt - src
        with torch.no_grad():
            plain_code = edit_identity(sem.z_id[draws["pair_src"]] + draws["pair_code_noise"], term.directions[0],
                                       torch.zeros(len(from_src)), term.conds_mean, term.conds_std)
            plain = model(x_p, draws["pair_t"], model.fuse(plain_code, sem.z_lnd[draws["pair_src"]]))
        change = data.crops[draws["pair_tgt"]] - data.crops[draws["pair_src"]]
        moved = plain - (a / (1 - a)).sqrt() * change
        torch.testing.assert_close(predict_x0(x_p, moved, a), predict_x0(x_p, plain, a) + change, atol=1e-3, rtol=0)
        target = torch.where(from_src.view(-1, 1, 1, 1), moved, target)
        assert term.describe()["target"] == "change"
        # the gradient reaches the plain twin's prediction too: the term trains the
        # answer to the edit's move, not a fixed target
        params = [p for p in model.parameters() if p.requires_grad]
        got = torch.autograd.grad(objective(batch)["pair"], params, allow_unused=True)
        plain = model(x_p, draws["pair_t"], model.fuse(plain_code, sem.z_lnd[draws["pair_src"]]))
        edited = model(x_p, draws["pair_t"], model.fuse(objective.pair_code(batch), sem.z_lnd[draws["pair_src"]]))
        wanted = torch.where(from_src.view(-1, 1, 1, 1), plain - (a / (1 - a)).sqrt() * change, target)
        err = (edited - wanted).abs()
        region = changed_region(data.crops[draws["pair_src"]], data.crops[draws["pair_tgt"]])
        want = torch.autograd.grad(err.mean() + (err * region).sum() / (region.sum() * 3), params, allow_unused=True,
                                   retain_graph=True)
        detached = torch.autograd.grad((edited - wanted.detach()).abs().mean(), params, allow_unused=True)
        assert any(g is not None and h is not None and not torch.allclose(g, h) for g, h in zip(want, detached))
        for g, h in zip(got, want):
            if h is not None:
                torch.testing.assert_close(g, h, rtol=1e-3, atol=1e-6)
    else:
        assert "target" not in term.describe()
    error = eps - target
    if space == "x0":  # the one-step x0 error below the cap, over the factor's mean on all t
        every = ((1 - objective.abar) / objective.abar).sqrt().clamp(max=X0_CAP)
        error = error * ((1 - a) / a).sqrt().clamp(max=X0_CAP) / every.mean()
        assert term.describe()["space"] == "x0"
    else:
        assert "space" not in term.describe()  # recorded only when used: older checkpoints resume
    if form == "l2":  # squared after the weight: the squared one-step error in x0 space
        error = error ** 2
        assert term.describe()["loss"] == "l2"
    else:
        error = error.abs()
        assert "loss" not in term.describe()
    expected = error.mean() + (error * region).sum() / (region.sum() * 3)
    torch.testing.assert_close(parts["pair"], expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(parts["loss"], parts["simple"] + parts["reg"] + 0.5 * parts["pair"] + parts["keep"])


def test_keep_loss_is_the_l1_to_the_frame_noise_outside_the_eye_band_under_an_edited_code(tiny_model, crops):
    from s3edit.face.mask import ATTRIBUTE_REGIONS, eye_band
    from s3edit.model.attributes import edit_identity

    model = tiny_model().eval()
    freeze_encoders(model)
    data = paired_data(crops)
    sem = precompute_semantics(model, data)
    term = pair_term(model)
    objective = DVAObjective(model, pairs=term).eval()
    draws = objective.draw(torch.Generator().manual_seed(6), 3, len(data), (3, 32, 32))
    assert draws["keep_attr"].tolist() == [0, 0, 0] and set(draws["keep_sign"].tolist()) <= {-1.0, 1.0}
    assert draws["keep_code_noise"].shape == (3, 128) and 0.2 < float(draws["keep_code_noise"].std()) < 0.4
    batch = gather_batch(objective, draws, sem.per_frame(data), "cpu")
    with torch.no_grad():
        parts = objective(batch)
        i, t = draws["index"], draws["t"]
        a = objective.abar[t].view(-1, 1, 1, 1)
        x_t = noisy(data.crops[i], draws["eps1"], a)
        z = sem.z_id[i]  # unit normalisation: noise is added to the code itself, then DVA's edit rule
        code = edit_identity(z + draws["keep_code_noise"], term.directions[0], draws["keep_sign"] * draws["keep_gamma"],
                             term.conds_mean, term.conds_std)
        eps = model(x_t, t, model.fuse(code, sem.z_lnd[i]))
    outside = torch.from_numpy(~eye_band(data.landmarks[i].numpy(), 32, pad=ATTRIBUTE_REGIONS["Eyeglasses"].pad))[:, None].float()
    assert 0.3 < float(outside.mean()) < 0.95
    expected = ((eps - draws["eps1"]).abs() * outside).sum() / (outside.sum() * 3)
    torch.testing.assert_close(parts["keep"], expected, rtol=1e-4, atol=1e-6)


def test_unedited_keep_target_is_the_capped_x0_distance_to_the_plain_codes_prediction(tiny_model, crops):
    from s3edit.face.mask import ATTRIBUTE_REGIONS, eye_band
    from s3edit.train.objective import X0_CAP

    model = tiny_model().eval()
    freeze_encoders(model)
    with torch.no_grad():  # a network whose output depends on the code (the last conv starts at zero)
        g = torch.Generator().manual_seed(8)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    data = paired_data(crops)
    sem = precompute_semantics(model, data)
    term = pair_term(model)
    term.keep_target = "unedited"
    assert term.describe()["keep_target"] == "unedited" and "keep_target" not in pair_term(model).describe()
    objective = DVAObjective(model, pairs=term)
    draws = objective.draw(torch.Generator().manual_seed(6), 3, len(data), (3, 32, 32))
    draws["t"] = torch.tensor([20, 500, 990])  # below, near and past the cap (abar ~ 0.0025 at t ~ 770)
    batch = gather_batch(objective, draws, sem.per_frame(data), "cpu")
    parts = objective(batch)
    i, t = draws["index"], draws["t"]
    a = objective.abar[t].view(-1, 1, 1, 1)
    x_t = noisy(data.crops[i], draws["eps1"], a)
    with torch.no_grad():
        plain = model(x_t, t, model.fuse(sem.z_id[i], sem.z_lnd[i]))
        edited = model(x_t, t, model.fuse(objective.keep_code(batch), sem.z_lnd[i]))
    factor = ((1 - a) / a).sqrt()
    assert factor[0] < 1 < factor[1] < X0_CAP < factor[2]
    gap = (predict_x0(x_t, edited, a) - predict_x0(x_t, plain, a)).abs()  # x0 space where under the cap
    gap[2] = (edited[2] - plain[2]).abs() * X0_CAP
    every = ((1 - objective.abar) / objective.abar).sqrt().clamp(max=X0_CAP)
    assert 5 < float(every.mean()) < 10  # over all t: the weights are divided by it
    gap = gap / every.mean()
    outside = torch.from_numpy(~eye_band(data.landmarks[i].numpy(), 32, pad=ATTRIBUTE_REGIONS["Eyeglasses"].pad))[:, None].float()
    expected = (gap * outside).sum() / (outside.sum() * 3)
    torch.testing.assert_close(parts["keep"], expected, rtol=1e-4, atol=1e-6)
    # the plain prediction is a fixed target: the term's gradient is that of the edited
    # rows alone
    params = [p for p in model.parameters() if p.requires_grad]
    got = torch.autograd.grad(parts["keep"], params, allow_unused=True)
    edited = model(x_t, t, model.fuse(objective.keep_code(batch), sem.z_lnd[i]))
    w = factor.clamp(max=X0_CAP) / every.mean()
    manual = ((w * edited - w * plain).abs() * outside).sum() / (outside.sum() * 3)
    want = torch.autograd.grad(manual, params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in want)
    for g, h in zip(got, want):
        if h is not None:
            torch.testing.assert_close(g, h, rtol=1e-3, atol=1e-6)


def test_fusion_gain_multiplies_the_response_to_the_edits_steps_only(tiny_model):
    from s3edit.model.attributes import edit_direction, edit_identity, edit_step
    from s3edit.train.objective import raise_fusion_gain

    model = tiny_model()
    D = model.config.id_dim
    g = torch.Generator().manual_seed(2)
    directions = edit_direction(torch.randn(2, D, generator=g))
    mean = torch.nn.functional.normalize(torch.randn(1, D, generator=g), dim=1)
    std = 0.05 + 0.1 * torch.rand(1, D, generator=g)
    term = PairTerm(rows=torch.zeros(1, 2, dtype=torch.int64), attribute=torch.tensor([0]), directions=directions,
                    conds_mean=mean, conds_std=std, names=("Eyeglasses", "Smiling"), gain=3.0)
    steps = edit_step(directions, std)
    torch.testing.assert_close(steps, torch.nn.functional.normalize(directions * std, dim=1))
    z_id = torch.nn.functional.normalize(mean + 0.05 * torch.randn(4, D, generator=g), dim=1)
    z_lnd = torch.randn(4, model.config.lnd_dim, generator=g)
    span = torch.linalg.qr(steps.T).Q  # (D, 2)
    other = torch.randn(D, generator=g)
    other = other - span @ (span.T @ other)  # orthogonal to both steps
    w0 = model.encoder.linear.weight[:, :D].detach().clone()

    def fuse(z):
        return model.fuse(z, z_lnd)

    with torch.no_grad():
        before = {"z": fuse(z_id), "mean": fuse(mean[0]), "other": fuse(z_id + other),
                  "edit": fuse(edit_identity(z_id, directions[1], 0.6, mean, std))}
        raise_fusion_gain(model, term)
        after = {"z": fuse(z_id), "mean": fuse(mean[0]), "other": fuse(z_id + other),
                 "edit": fuse(edit_identity(z_id, directions[1], 0.6, mean, std))}
    w = model.encoder.linear.weight[:, :D].detach()
    torch.testing.assert_close(w @ steps.T, 3.0 * w0 @ steps.T, atol=1e-5, rtol=1e-5)  # each step: 3x the response
    torch.testing.assert_close(w @ other, w0 @ other, atol=1e-5, rtol=1e-5)  # off the steps' span: as before
    torch.testing.assert_close(after["mean"], before["mean"], atol=1e-5, rtol=0)  # the mean code keeps its z_face
    moved = 2.0 * (z_id - mean) @ span @ span.T @ w0.T  # (g - 1) W P (z - mean)
    torch.testing.assert_close(after["z"] - before["z"], moved, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(after["other"] - after["z"], before["other"] - before["z"], atol=1e-5, rtol=1e-4)
    assert float((after["edit"] - after["z"]).norm()) > 2.5 * float((before["edit"] - before["z"]).norm())
    raise_fusion_gain(model, PairTerm(**{**term.__dict__, "gain": 1.0}))  # 1: nothing changes
    torch.testing.assert_close(fuse(z_id), after["z"])
    assert "gain" not in PairTerm(**{**term.__dict__, "gain": 1.0}).describe()  # older checkpoints still resume
    assert term.describe()["gain"] == 3.0


def test_training_raises_the_gain_once_and_a_resumed_run_keeps_it(tmp_path, tiny_model, crops):
    from s3edit.model.attributes import edit_step

    data = paired_data(crops)
    term = pair_term(tiny_model())
    term.gain = 3.0
    D = term.directions.shape[1]
    step = edit_step(term.directions, term.conds_std)[0]
    before = tiny_model().encoder.linear.weight[:, :D].detach() @ step
    for steps in (1, 2):  # the second run resumes the first's checkpoint
        cfg = TrainConfig(steps=steps, batch_size=4, lr=0.0, checkpoint_every=1, seed=1)
        result = train_dva(tiny_model(), data, cfg, tmp_path, pairs=term)
        assert len(result.losses) == 1  # one new step each time
        torch.testing.assert_close(result.ema.encoder.linear.weight[:, :D].detach() @ step, 3.0 * before,
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("field, value", [("keep_target", "x0"), ("space", "eps"), ("target", "delta"),
                                          ("gain", 0.0)])
def test_an_unknown_keep_target_or_pair_space_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        PairTerm(rows=torch.zeros(1, 2, dtype=torch.int64), attribute=torch.zeros(1, dtype=torch.int64),
                 directions=torch.ones(1, 4), conds_mean=torch.zeros(1, 4), conds_std=torch.ones(1, 4),
                 names=("Eyeglasses",), **{field: value})


def test_keep_term_is_off_at_weight_zero_and_for_attributes_without_a_region(tiny_model, crops):
    model = tiny_model()
    for change in ({"keep": 0.0}, {"names": ("Young",)}):
        term = pair_term(model)
        for k, v in change.items():
            setattr(term, k, v)
        objective = DVAObjective(model, pairs=term)
        draws = objective.draw(torch.Generator().manual_seed(7), 2, 6, (3, 32, 32))
        assert not any(k.startswith("keep_") for k in draws), change
        data = paired_data(crops)
        batch = gather_batch(objective, draws, precompute_semantics(model, data).per_frame(data), "cpu")
        assert "keep" not in objective(batch)
    assert pair_term(model).describe()["keep"] == 1.0


def test_off_directions_are_unit_rows_orthogonal_to_the_paired_directions():
    from s3edit.train.objective import off_directions

    directions = torch.nn.functional.normalize(torch.randn(2, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    v = off_directions(torch.Generator().manual_seed(1), 50, directions)
    assert v.shape == (50, 16)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(50))
    assert float((v @ directions.T).abs().max()) < 1e-5
    assert float((v @ v.T - torch.eye(50)).abs().max()) > 0.1  # random, not one direction


def test_random_keep_rows_move_off_the_paired_directions_and_keep_the_whole_frame(tiny_model, crops):
    from s3edit.face.mask import ATTRIBUTE_REGIONS, eye_band
    from s3edit.model.attributes import edit_identity

    model = tiny_model().eval()
    freeze_encoders(model)
    with torch.no_grad():  # a network whose output depends on the code
        g = torch.Generator().manual_seed(8)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    data = paired_data(crops)
    sem = precompute_semantics(model, data)
    before = DVAObjective(model, pairs=pair_term(model)).draw(torch.Generator().manual_seed(6), 8, len(data), (3, 32, 32))
    term = pair_term(model)
    term.keep_random = 0.5
    assert term.describe()["keep_random"] == 0.5 and "keep_random" not in pair_term(model).describe()
    objective = DVAObjective(model, pairs=term).eval()
    draws = objective.draw(torch.Generator().manual_seed(6), 8, len(data), (3, 32, 32))
    for k, v in before.items():  # the other draws as without random rows
        assert torch.equal(draws[k], v), k
    random = draws["keep_random"]
    assert 0 < int(random.sum()) < 8
    assert float((draws["keep_direction"] @ term.directions.T).abs().max()) < 1e-5
    batch = gather_batch(objective, draws, sem.per_frame(data), "cpu")
    i, t = draws["index"], draws["t"]
    z = sem.z_id[i] + draws["keep_code_noise"]  # unit normalisation
    direction = torch.where(random[:, None], draws["keep_direction"], term.directions[0].expand(8, -1))
    code = edit_identity(z, direction, draws["keep_sign"] * draws["keep_gamma"], term.conds_mean, term.conds_std)
    torch.testing.assert_close(objective.keep_code(batch), code)
    band = torch.from_numpy(eye_band(data.landmarks[i].numpy(), 32, pad=ATTRIBUTE_REGIONS["Eyeglasses"].pad))
    region = objective.keep_regions(batch)[:, 0].bool()
    assert torch.equal(region[~random], band[~random]) and not region[random].any()
    with torch.no_grad():
        parts = objective(batch)
        a = objective.abar[t].view(-1, 1, 1, 1)
        eps = model(noisy(data.crops[i], draws["eps1"], a), t, model.fuse(code, sem.z_lnd[i]))
    outside = (~region)[:, None].float()
    expected = ((eps - draws["eps1"]).abs() * outside).sum() / (outside.sum() * 3)
    torch.testing.assert_close(parts["keep"], expected, rtol=1e-4, atol=1e-6)


def test_without_a_region_every_keep_row_is_a_random_one(tiny_model, crops):
    model = tiny_model()
    term = pair_term(model)
    term.names, term.keep_random = ("Young",), 0.2  # Young has no region
    objective = DVAObjective(model, pairs=term)
    draws = objective.draw(torch.Generator().manual_seed(7), 4, 6, (3, 32, 32))
    assert draws["keep_random"].all()
    data = paired_data(crops)
    batch = gather_batch(objective, draws, precompute_semantics(model, data).per_frame(data), "cpu")
    assert not objective.keep_regions(batch).any() and "keep" in objective(batch)
    with pytest.raises(ValueError, match="keep_random"):
        PairTerm(rows=term.rows, attribute=term.attribute, directions=term.directions, conds_mean=term.conds_mean,
                 conds_std=term.conds_std, names=term.names, keep_random=1.5)


def test_the_keep_region_is_the_attributes_edit_region():
    from s3edit.face.mask import attribute_region
    from s3edit.train.objective import keep_region

    lnd01 = torch.rand(3, 68, 2) * 0.5 + 0.25
    region = keep_region("Eyeglasses", lnd01, 32)
    assert region.shape == (3, 1, 32, 32)
    assert torch.equal(region[:, 0].bool(), attribute_region("Eyeglasses", lnd01 * 32 - 0.5, 32))
    assert keep_region("Young", torch.zeros(1, 68, 2), 32) is None
    smile = keep_region("Smiling", lnd01, 32)
    assert torch.equal(smile[:, 0].bool(), attribute_region("Smiling", lnd01 * 32 - 0.5, 32))


def test_training_with_pairs_lowers_the_pair_loss(tmp_path, tiny_model, crops):
    model = tiny_model()
    data = paired_data(crops)
    freeze_encoders(model)
    frames = precompute_semantics(model, data).per_frame(data)
    before = evaluate(DVAObjective(model, pairs=pair_term(model)), frames, batch_size=4, batches=2)
    cfg = TrainConfig(steps=25, batch_size=4, lr=2e-3, checkpoint_every=100, seed=1)
    result = train_dva(model, data, cfg, tmp_path, pairs=pair_term(model))
    assert set(result.losses[0]) == {"loss", "simple", "reg", "pair", "keep"}
    after = evaluate(DVAObjective(result.ema, pairs=pair_term(model)), frames, batch_size=4, batches=2)
    assert after["pair"] < 0.8 * before["pair"]


def test_pair_rows_give_each_attribute_an_equal_share():
    """20 Eyeglasses pairs beside 2 Smiling ones: half the drawn rows are Smiling's, and
    each attribute's rows are drawn alike; one attribute alone draws as before."""
    rows = torch.arange(44).view(22, 2)
    attribute = torch.tensor([0] * 10 + [1] * 2 + [0] * 10)
    term = PairTerm(rows=rows, attribute=attribute, directions=torch.eye(2, 4), conds_mean=torch.zeros(1, 4),
                    conds_std=torch.ones(1, 4), names=("Eyeglasses", "Smiling"))
    pick = term.pick(torch.Generator().manual_seed(0), 8000)
    assert pick.min() >= 0 and pick.max() < 22
    share = (attribute[pick] == 1).float().mean()
    assert abs(float(share) - 0.5) < 0.03
    counts = torch.bincount(pick, minlength=22).float()
    assert counts[10:12].min() > 0.8 * counts[10:12].max()  # Smiling's two alike
    glasses = counts[attribute == 0]
    assert glasses.min() > 0.5 * glasses.max() and abs(float(glasses.mean()) - 200) < 10
    assert term.describe()["balanced"] is True

    single = PairTerm(rows=rows, attribute=torch.zeros(22, dtype=torch.int64), directions=torch.eye(1, 4),
                      conds_mean=torch.zeros(1, 4), conds_std=torch.ones(1, 4), names=("Eyeglasses",))
    assert torch.equal(single.pick(torch.Generator().manual_seed(3), 50),
                       torch.randint(22, (50,), generator=torch.Generator().manual_seed(3)))
    assert "balanced" not in single.describe()
