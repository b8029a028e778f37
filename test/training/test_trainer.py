"""The trainer on a tiny PAGE-4D config: learning, exact resume, trainable sets, outputs and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from page4d_ros.model import build_model
from page4d_ros.tools.train import main as train_main
from page4d_ros.training.data import sample_batch
from page4d_ros.training.trainer import MODEL_FILE, STATE_FILE, Trainer, select_trainable


def _fixed_batch_loss(trainer: Trainer, steps: range) -> float:
    """Mean training loss of the model on the batches of the given steps (no update)."""
    trainer.model.train()
    total = 0.0
    with torch.no_grad():
        for step in steps:
            batch = sample_batch(trainer.pool, trainer.config.data, trainer.config.batch_size, step)
            total += float(trainer.compute_losses(batch, trainer.model(batch["images"]))["loss"])
    return total / len(steps)


def test_training_from_scratch_decreases_the_loss(tmp_path, tiny_train_config) -> None:
    trainer = Trainer(tiny_train_config(steps=30), tmp_path / "run")
    trainer._ensure_data()
    before = _fixed_batch_loss(trainer, range(4))
    trainer.run()
    after = _fixed_batch_loss(trainer, range(4))
    assert trainer.step == 30
    assert after < before - 0.1 * abs(before), (before, after)


def test_resume_continues_exactly(tmp_path, tiny_train_config) -> None:
    config = tiny_train_config(steps=6, mask={"mode": "cosine", "hold_fraction": 0.3, "end_fraction": 0.8})
    uninterrupted = Trainer(config, tmp_path / "a")
    uninterrupted.run()

    first_half = Trainer(config, tmp_path / "b")
    first_half.run(max_steps=3)
    assert first_half.step == 3
    resumed = Trainer(config, tmp_path / "b", resume=True)
    assert resumed.step == 3
    resumed.run()
    assert resumed.step == 6
    for (name, expected), actual in zip(
        uninterrupted.model.state_dict().items(), resumed.model.state_dict().values()
    ):
        assert torch.equal(expected, actual), name
    expected_steps = [record["step"] for record in uninterrupted.history if "loss" in record]
    assert [record["step"] for record in resumed.history if "loss" in record] == expected_steps
    assert resumed.history[-1]["loss"] == uninterrupted.history[-1]["loss"]


def test_middle_trainable_set_freezes_the_rest(tmp_path, tiny_train_config, tiny_model_config) -> None:
    model = build_model(tiny_model_config)
    names = select_trainable(model, "middle")
    # Depth 4: upstream blocks [10, 20) of 24 scale to [10/24*4, 20/24*4) = [1.67, 3.33) -> block 2 only.
    blocks = {".".join(name.split(".")[:3]) for name in names if "_blocks." in name}
    assert blocks == {"aggregator.frame_blocks.2", "aggregator.global_blocks.2"}
    assert any(name.startswith("aggregator.spatial_mask_head.") for name in names)
    assert all(
        name.startswith(
            ("aggregator.frame_blocks.2.", "aggregator.global_blocks.2.", "aggregator.spatial_mask_head.")
        )
        for name in names
    )
    frozen = [name for name, parameter in model.named_parameters() if not parameter.requires_grad]
    assert any(name.startswith("camera_head.") for name in frozen)
    assert any(name.startswith("aggregator.frame_blocks.3.") for name in frozen)
    assert select_trainable(model, "middle", middle_blocks=[1, 4]) and {
        ".".join(name.split(".")[:3])
        for name in select_trainable(model, "middle", [1, 4])
        if "_blocks." in name
    } == {f"aggregator.{kind}_blocks.{index}" for kind in ("frame", "global") for index in (1, 2, 3)}
    assert all(
        parameter.requires_grad
        for parameter in [dict(model.named_parameters())[n] for n in select_trainable(model, "all")]
    )


def test_middle_fine_tuning_updates_only_the_middle(tmp_path, tiny_train_config, tiny_model_config) -> None:
    from page4d_ros.model import save_checkpoint

    init = tmp_path / "init.safetensors"
    save_checkpoint(build_model(tiny_model_config), init, tiny_model_config)
    trainer = Trainer(
        tiny_train_config(steps=2, trainable="middle", init_checkpoint=str(init)), tmp_path / "run"
    )
    before = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    trainer.run()
    trainable = set(trainer.trainable_names)
    changed = {
        name for name, value in trainer.model.state_dict().items() if not torch.equal(value, before[name])
    }
    assert changed, "nothing was trained"
    assert changed <= trainable
    with pytest.raises(ValueError, match="init_checkpoint"):
        Trainer(tiny_train_config(trainable="middle"), tmp_path / "bad")


def test_run_writes_checkpoint_metrics_and_curves(tmp_path, tiny_train_config) -> None:
    from page4d_ros.model import load_checkpoint

    out = tmp_path / "run"
    trainer = Trainer(tiny_train_config(steps=3), out)
    trainer.run()
    for name in (STATE_FILE, MODEL_FILE, "loss_curves.png", "metrics.jsonl", "config.yaml"):
        assert (out / name).is_file(), name
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [1, 2, 3]
    assert all(record["mask_alpha"] == 64.0 for record in records)
    model, _ = load_checkpoint(out / MODEL_FILE)
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value.cpu()), name


def test_cli_trains_and_reports_bad_input(tmp_path, tiny_train_config, capsys) -> None:
    import yaml

    config_path = tmp_path / "train.yaml"
    config_path.write_text(yaml.safe_dump(tiny_train_config().to_dict()))
    out = tmp_path / "run"
    assert (
        train_main(["--config", str(config_path), "--out", str(out), "--steps", "2", "--threads", "1"]) == 0
    )
    assert (out / STATE_FILE).is_file()
    assert train_main(["--config", str(config_path), "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    config_path.write_text("steps: 5\nlearning_rate: 0.1\n")
    assert train_main(["--config", str(config_path), "--out", str(out)]) == 2
    assert "unknown keys" in capsys.readouterr().err


def test_dense_mask_supervision_enters_the_total(tmp_path, tiny_train_config, tiny_model_config) -> None:
    config = tiny_train_config(
        model={**tiny_model_config, "dense_dynamics": True},
        dense_mask_weight=2.0,
        dense_mask_positive_weight=3.0,
    )
    trainer = Trainer(config, tmp_path / "run")
    trainer._ensure_data()
    batch = sample_batch(trainer.pool, config.data, config.batch_size, 0)
    losses = trainer.compute_losses(batch, trainer.model(batch["images"]))
    expected = (
        losses["loss_camera"] + losses["loss_depth"] + losses["loss_point"] + 2.0 * losses["loss_dense_mask"]
    )
    torch.testing.assert_close(losses["loss"], expected)
    record = trainer.train_step()
    assert record["loss_dense_mask"] > 0
