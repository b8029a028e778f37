"""Parameters, config/page4d.yaml, launch/page4d.launch.py (parsed with ast) and config/page4d.rviz agree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from page4d_ros.pipeline.config import PipelineConfig
from page4d_ros.ros import parameters
from page4d_ros.ros.outputs import TOPIC_TYPES

LAUNCH_ARGUMENTS_REQUIRED = {
    "namespace",
    "params_file",
    "image_topic",
    "camera_info_topic",
    "image_transport",
    "checkpoint_path",
    "device",
    "precision",
    "window_size",
    "tf_mode",
    "base_frame",
    "odom_frame",
    "scale_source",
    "require_metric_for_tf",
    "use_sim_time",
    "autostart",
    "log_level",
    "use_rviz",
}


def test_validation_fills_defaults_and_names_every_problem():
    checked = parameters.validate_parameters({})
    assert checked["tf_mode"] == "odom" and checked["window_size"] == PipelineConfig().window_size
    assert checked["camera_info_slop_s"] == 0.01
    assert (
        parameters.validate_parameters({"camera_info_slop_s": 1})["camera_info_slop_s"] == 1.0
    )  # int -> float
    with pytest.raises(ValueError, match="unknown parameters"):
        parameters.validate_parameters({"windowsize": 4})
    with pytest.raises(ValueError, match=r"tf_mode.*one of"):
        parameters.validate_parameters({"tf_mode": "world"})
    with pytest.raises(ValueError, match="must be an integer"):
        parameters.validate_parameters({"window_size": 4.5})
    with pytest.raises(ValueError, match="device"):
        parameters.validate_parameters({"device": "gpu"})
    with pytest.raises(ValueError, match="window_stride"):
        parameters.validate_parameters({"window_size": 4, "window_stride": 6})  # from PipelineConfig.validate
    with pytest.raises(ValueError, match="base_to_optical_xyz"):
        parameters.validate_parameters({"base_to_optical_xyz": [0.0, 1.0]})
    with pytest.raises(ValueError, match="leading"):
        parameters.validate_parameters({"base_frame": "/base_link"})


def test_range_checks_name_each_parameter_and_its_bound():
    bad = {"camera_info_slop_s": 0.0, "frame_queue_size": 0, "warmup_iters": -1, "map_voxel_size": -1.0}
    with pytest.raises(ValueError) as error:
        parameters.validate_parameters(bad)
    for expected in (
        "parameter 'camera_info_slop_s' must be > 0, got 0.0",
        "parameter 'frame_queue_size' must be in [1, 1000], got 0",
        "parameter 'warmup_iters' must be in [0, 100], got -1",
        "parameter 'map_voxel_size' must be > 0, got -1.0",
    ):
        assert expected in str(error.value)
    # The bounds themselves are allowed where the check is ">=".
    checked = parameters.validate_parameters({"frame_queue_size": 1, "warmup_iters": 0})
    assert (checked["frame_queue_size"], checked["warmup_iters"]) == (1, 0)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(ValueError, match="parameter 'transform_tolerance' must be a finite number"):
        parameters.validate_parameters({"transform_tolerance": value})


def test_every_pipeline_field_is_a_parameter_with_its_tunability():
    for name in PipelineConfig.runtime_tunable_fields():
        assert parameters.PARAMETERS_BY_NAME[name].tunable, name
    assert not parameters.PARAMETERS_BY_NAME["window_size"].tunable
    assert not parameters.PARAMETERS_BY_NAME["device"].tunable
    assert set(parameters.PARAMETERS_BY_NAME) >= parameters.PIPELINE_PARAMETER_NAMES


def test_parameters_file_sections(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "/**": {"ros__parameters": {"device": "cpu", "window_size": 4}},
                "/page4d/page4d": {"ros__parameters": {"window_size": 6}},
                "other_node": {"ros__parameters": {"device": "cuda"}},
            }
        )
    )
    assert parameters.load_parameters_file(path) == {"device": "cpu", "window_size": 6}
    path.write_text("page4d: [1, 2]\n")
    assert parameters.load_parameters_file(path) == {}
    path.write_text("page4d: {rosparams: {}}\n")
    with pytest.raises(ValueError, match="ros__parameters"):
        parameters.load_parameters_file(path)
    with pytest.raises(ValueError, match="cannot read"):
        parameters.load_parameters_file(tmp_path / "missing.yaml")


def test_config_file_lists_every_parameter_with_its_default(repo_root: Path):
    values = parameters.load_parameters_file(repo_root / "config" / "page4d.yaml")
    difference = set(values) ^ set(parameters.PARAMETERS_BY_NAME)
    assert not difference, (
        f"{difference}: regenerate with python -m page4d_ros.ros.parameters > config/page4d.yaml"
    )
    assert parameters.render_parameters_yaml() == (repo_root / "config" / "page4d.yaml").read_text(), (
        "regenerate with python -m page4d_ros.ros.parameters > config/page4d.yaml"
    )
    for name, value in values.items():
        default = parameters.PARAMETERS_BY_NAME[name].default
        if isinstance(default, list):
            assert value == pytest.approx(default, abs=1e-6), name
        else:
            assert value == default, name
    text = (repo_root / "config" / "page4d.yaml").read_text().splitlines()
    for index, line in enumerate(text):  # every parameter line is preceded by its documentation comment
        if line.startswith("    ") and not line.strip().startswith("#") and ":" in line:
            assert text[index - 1].strip().startswith("#"), line
    parameters.validate_parameters(values)


def launch_tree(repo_root: Path) -> ast.Module:
    source = (repo_root / "launch" / "page4d.launch.py").read_text()
    compile(source, "page4d.launch.py", "exec")
    return ast.parse(source)


def module_constant(tree: ast.Module, name: str):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not found in the launch file")


def test_launch_file_declares_the_arguments_and_maps_them_to_node_parameters(repo_root: Path):
    tree = launch_tree(repo_root)
    arguments = module_constant(tree, "ARGUMENTS")
    names = [name for name, _, _ in arguments]
    assert len(names) == len(set(names))
    assert set(names) >= LAUNCH_ARGUMENTS_REQUIRED, LAUNCH_ARGUMENTS_REQUIRED - set(names)
    assert all(description for _, _, description in arguments)
    defaults = {name: default for name, default, _ in arguments}
    assert defaults["namespace"] == parameters.DEFAULT_NAMESPACE and defaults["use_rviz"] == "false"
    node_arguments = module_constant(tree, "NODE_PARAMETER_ARGUMENTS")
    assert set(node_arguments) <= set(names)
    assert set(node_arguments) <= set(parameters.PARAMETERS_BY_NAME), set(node_arguments) - set(
        parameters.PARAMETERS_BY_NAME
    )
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert {"LifecycleNode", "DeclareLaunchArgument", "LaunchDescription", "OpaqueFunction"} <= calls
    executables = {
        keyword.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for keyword in node.keywords
        if keyword.arg == "executable"
    }
    assert executables == {"page4d_node", "rviz2"}


def test_rviz_config_shows_depth_mask_cloud_path_and_tf_in_odom(repo_root: Path):
    config = yaml.safe_load((repo_root / "config" / "page4d.rviz").read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "odom"
    displays = {d["Class"].split("/")[-1]: d for d in manager["Displays"]}
    assert {"TF", "PointCloud2", "Path", "Image"} <= set(displays)
    topics = {d["Topic"]["Value"]: d["Topic"] for d in manager["Displays"] if "Topic" in d}
    for topic in ("depth/image", "dynamic_mask/image", "points", "path"):
        assert f"/page4d/{topic}" in topics, topic
        assert f"{topic}" in TOPIC_TYPES
        assert topics[f"/page4d/{topic}"]["Reliability Policy"] == "Reliable"
    assert topics["/page4d/path"]["Durability Policy"] == "Transient Local"


def test_model_long_side_zero_takes_the_checkpoint_size(tmp_path: Path, tiny_checkpoint: Path):
    """The node's default (0) runs a model at the size stored in its checkpoint, else at the native 518; an
    explicit size always wins."""
    from page4d_ros.model import load_checkpoint, save_checkpoint
    from page4d_ros.ros.pipeline_factory import build_pipeline

    model, _ = load_checkpoint(tiny_checkpoint)
    hinted = save_checkpoint(model, tmp_path / "hinted.safetensors", inference={"model_long_side": 56})

    def long_side(checkpoint: Path, **overrides) -> int:
        values = {"checkpoint_path": str(checkpoint), "warmup_iters": 0, "device": "cpu", **overrides}
        bundle = build_pipeline(parameters.validate_parameters(values), log=lambda message: None)
        return bundle.pipeline.config.model_long_side

    assert parameters.validate_parameters({})["model_long_side"] == 0
    assert long_side(hinted) == 56
    assert long_side(hinted, model_long_side=112) == 112
    assert long_side(tiny_checkpoint) == parameters.NATIVE_LONG_SIDE == 518


def test_readme_parameter_table_is_the_generated_one(repo_root: Path):
    """The README's parameter table (ranges, choices, tunability) is what the descriptors hold."""
    text = (repo_root / "README.md").read_text()
    start = "<!-- parameter table: generated by python -m page4d_ros.ros.parameters --table"
    end = "<!-- end of parameter table -->"
    assert start in text and end in text
    table = text.split(start, 1)[1].split("-->", 1)[1].split(end, 1)[0].strip("\n") + "\n"
    assert table == parameters.render_parameters_table(), (
        "regenerate with python -m page4d_ros.ros.parameters --table"
    )
    rows = {line.split("|")[1].strip().strip("`"): line for line in table.splitlines()[2:]}
    assert set(rows) == set(parameters.PARAMETERS_BY_NAME)
    assert "in [0, 100]" in rows["conf_percentile"] and "a multiple of 14" in rows["model_long_side"]
