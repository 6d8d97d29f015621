"""Config loading, overrides and validation messages."""

from __future__ import annotations

import pytest

from vinaflow.config import apply_overrides, load_config, resolve_config
from vinaflow.errors import ConfigError


def test_defaults_resolve() -> None:
    cfg = resolve_config(None)
    assert cfg["problem"]["name"] == "gaussian-linear"
    assert cfg["objective"]["name"] == "nll"


def test_overrides_parse_yaml_values() -> None:
    cfg = apply_overrides({}, ["training.steps=10", "objective.prior_loc=[0, 1]", "model.kind=inn"])
    assert cfg == {
        "training": {"steps": 10},
        "objective": {"prior_loc": [0, 1]},
        "model": {"kind": "inn"},
    }
    resolved = resolve_config(apply_overrides({}, ["objective.name=fdiv"]))
    assert resolved["objective"]["divergence"] == "kl"
    assert resolved["objective"]["direction"] == "backward"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"objective": {"name": "fdiv", "divergence": "kld"}}, "objective.divergence"),
        ({"objective": {"name": "gan"}}, "objective.name"),
        ({"model": {"kind": "resnet"}}, "model.kind: unknown value 'resnet'; allowed: inn, cinn"),
        ({"model": {"blocks": "four"}}, "model.blocks must be an integer"),
        ({"model": {"hidden": 0}}, "model.hidden must be between 1 and 65536"),
        ({"model": {"blocks": 10**12}}, "model.blocks must be between 1 and 1000"),
        ({"training": {"lr": "1e30"}}, "training.lr must be a number or null"),
        ({"training": {"steps": 2.5}}, "training.steps must be an integer"),
        ({"model": {"colour": 1}}, "model.colour: unknown key"),
        ({"training": {"steps": 0}}, "training.steps"),
        ({"training": {"speed": 1}}, "training.speed: unknown key"),
        ({"training": {"lr_schedule": "wavy"}}, "training.lr_schedule"),
        ({"evaluation": {"num_samples": 0}}, "evaluation.num_samples"),
        ({"problem": {"name": "gaussian-linear", "num_simulations": 5}}, "num_simulations"),
        ({"extras": {}}, "unknown config section"),
        ({"objective": {"name": "fdiv", "direction": "sideways"}}, "objective.direction"),
        ({"objective": {"name": "nll", "terms": [{"weight": 1.0}]}}, "objective.terms[0].name"),
    ],
)
def test_validation_names_the_field(config: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config(config)
    assert message in str(err.value)


def test_load_config_errors(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("problem: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)
    with pytest.raises(ConfigError, match="section"):
        load_config(None, ["steps=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["training.steps"])


def test_flow_configs_accept_their_own_sections(tmp_path) -> None:  # noqa: ANN001
    from vinaflow.experiments.generative import load_flow_config

    cfg = load_flow_config(None, ["target.name=two-moons", "training.steps=7"])
    assert cfg["target"]["name"] == "two-moons" and cfg["training"]["steps"] == 7
    with pytest.raises(ConfigError, match="section"):
        load_flow_config(None, ["problem.name=x"])
