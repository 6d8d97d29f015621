"""Config loading, overrides and validation messages."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
import yaml
from torch.distributions import Independent, Normal

from vinaflow.config import (
    DEFAULT_CONFIG,
    EVALUATION_KEYS,
    MODEL_KEYS,
    OBJECTIVE_KEYS,
    SPLINE_NLL_CINN_DEFAULTS,
    TRAINING_TYPES,
    apply_overrides,
    default_arch,
    load_config,
    resolve_config,
)
from vinaflow.errors import ConfigError
from vinaflow.models import MODEL_KINDS, ConditionalINN, JointINN, model_keys
from vinaflow.objectives import (
    DIVERGENCES,
    MMD,
    NLL,
    Composite,
    FDivergence,
    PriorPenalty,
    Sinkhorn,
    build_objective,
    check_objective_model,
    objective_config,
    parse_objective,
)
from vinaflow.objectives.losses import OBJECTIVES, CompositeObjective, FDivergenceObjective
from vinaflow.objectives.specs import term_settings
from vinaflow.studies.kinematics import DIVERGENCES as STUDY_DIVERGENCES
from vinaflow.training import TrainingConfig


def test_defaults_resolve() -> None:
    cfg = resolve_config(None)
    assert cfg["problem"]["name"] == "gaussian-linear"
    assert cfg["objective"]["name"] == "nll"


def test_default_architecture_follows_kind_objective_and_settings() -> None:
    def arch(model: dict | None = None, objective: dict | None = None) -> str | None:
        raw = {"model": model or {}, "objective": objective or {}}
        return resolve_config(raw)["model"].get("arch")

    # the measured default: a maximum-likelihood cinn gets splines ...
    assert arch() == "spline"
    assert arch({"kind": "cinn", "hidden": 64, "bins": 4}) == "spline"
    # ... unless the config names an architecture or sets an affine-only option
    assert arch({"arch": "coupling"}) == "coupling"
    assert arch({"clamp": 1.5}) == "coupling"
    assert arch({"clamp_activation": "tanh"}) == "coupling"
    # other objectives and kinds were not measured with splines: affine couplings
    assert arch(objective={"name": "fdiv", "divergence": "kl"}) == "coupling"
    hybrid = {"name": "nll", "terms": [{"name": "fdiv", "divergence": "kl", "weight": 0.5}]}
    assert arch(objective=hybrid) == "coupling"
    assert arch({"kind": "inn"}, {"name": "nll"}) == "coupling"
    assert arch({"kind": "cnf"}) is None  # no invertible blocks, no architecture
    # the built model is what the config names
    cfg = resolve_config(None)["model"]
    assert default_arch(cfg, {"name": "nll"}) == "spline"
    net = ConditionalINN(dim_x=2, dim_y=1, **{k: v for k, v in cfg.items() if k != "kind"})
    kinds = {type(m).__name__ for m in net.modules()}
    assert "SplineCoupling" in kinds and "AffineCoupling" not in kinds


def test_spline_nll_cinn_gets_its_own_width_and_learning_rate() -> None:
    def resolved(raw: dict) -> tuple[int, float | None]:
        cfg = resolve_config(raw)
        return cfg["model"]["hidden"], cfg["training"].get("lr")

    narrow = (SPLINE_NLL_CINN_DEFAULTS["model"]["hidden"],
              SPLINE_NLL_CINN_DEFAULTS["training"]["lr"])  # fmt: skip
    assert narrow == (64, 5e-4)
    untimed = {"training": {"max_seconds": None}}  # trains to its stopping rule
    assert resolved(untimed) == narrow
    assert resolved({**untimed, "model": {"arch": "spline"}}) == narrow
    # what the config sets is kept, one setting at a time
    assert resolved({**untimed, "model": {"hidden": 128}}) == (128, 5e-4)
    assert resolved({"training": {"max_seconds": None, "lr": 1e-3}}) == (64, 1e-3)
    # under a time budget (DEFAULT_CONFIG has one) the trainer's own rate
    assert resolved({}) == (64, None)
    # other architectures, kinds and objectives keep DEFAULT_CONFIG's width and the
    # trainer's own learning rate
    wide = (DEFAULT_CONFIG["model"]["hidden"], None)
    assert resolved({"model": {"arch": "coupling"}}) == wide
    assert resolved({"model": {"kind": "inn"}}) == wide
    assert resolved({"objective": {"name": "fdiv", "divergence": "kl"}}) == wide
    hybrid = {"name": "nll", "terms": [{"name": "fdiv", "divergence": "kl", "weight": 0.5}]}
    assert resolved({"objective": hybrid}) == wide


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
        ({"objective": {"name": "nll", "divergence": "js"}}, "objective.divergence: unknown key"),
        ({"objective": {"name": "sinkhorn", "blur": "wide"}}, "objective.blur must be a number"),
        (
            {"objective": {"name": "fdiv", "terms": [{"name": "mmd", "critic_hidden": 8}]}},
            "objective.terms[0].critic_hidden: unknown key of objective 'mmd'; allowed keys: "
            "direction, whiten, widths, y_weight",
        ),
        ({"objective": {"name": "nll", "weight": 0.0}}, "at least one term with weight > 0"),
        ({"objective": {"name": "nll", "weight": -1.0}}, "weights must be numbers >= 0"),
        ({"objective": {"name": "nll", "prior_weight": 1.0}}, "set objective.prior to gaussian"),
        (
            {"objective": {"name": "nll", "prior": "gaussian", "prior_low": [0.0]}},
            "objective.prior_low: not a parameter of a gaussian prior; allowed: prior_loc",
        ),
        ({"evaluation": {"certificate_divergence": "chi"}}, "allowed: kl, reverse-kl, js"),
        ({"model": {"kind": "inn", "embedding_dim": 8}}, "model.embedding_dim: not a setting of"),
        ({"model": {"arch": "coupling", "logdet": "exact"}}, "model.logdet: not a setting of"),
        ({"model": {"arch": "iresnet", "logdet": "fast"}}, "allowed: auto, exact, series"),
        ({"model": {"arch": "iresnet", "explicit": "up"}}, "allowed: auto, forward, inverse"),
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


def test_divergence_names_come_from_the_one_registry() -> None:
    names = tuple(DIVERGENCES)
    # fdiv also takes the PR family ("pr" with lam), beside every registered member
    fdiv_choices = FDivergenceObjective.CHOICES["divergence"]
    assert OBJECTIVE_KEYS["divergence"].choices == fdiv_choices
    assert set(names) <= set(fdiv_choices)
    assert EVALUATION_KEYS["certificate_divergence"].choices == names
    assert STUDY_DIVERGENCES == names
    model = JointINN(dim_x=2, dim_y=1, latent_dim=1, blocks=1, hidden=8)
    for name in names:
        cfg = resolve_config(
            apply_overrides({}, ["objective.name=fdiv", f"objective.divergence={name}"])
        )
        assert cfg["objective"]["divergence"] == name
        objective = build_objective(cfg["objective"], model)
        assert objective.terms[0].divergence is DIVERGENCES[name]
        assert parse_objective(name) == FDivergence(name, direction="backward")


def test_objective_keys_are_the_constructor_arguments() -> None:
    for name, cls in OBJECTIVES.items():
        params = [
            p.name
            for p in inspect.signature(cls.__init__).parameters.values()
            if p.name not in ("self", "model") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        assert list(term_settings(name)) == params
        assert set(params) <= set(OBJECTIVE_KEYS)
    # every default comes from the constructor
    defaults = inspect.signature(FDivergenceObjective.__init__).parameters
    assert all(FDivergence().settings[k] == defaults[k].default for k in FDivergence().settings)


def test_training_keys_are_the_dataclass_fields() -> None:
    assert list(TRAINING_TYPES) == [f.name for f in dataclasses.fields(TrainingConfig)]
    cfg = resolve_config({"training": {"lr": 1, "threads": None, "critic_warmup": 3}})
    assert cfg["training"]["lr"] == 1.0 and isinstance(cfg["training"]["lr"], float)
    with pytest.raises(ConfigError, match="training.threads must be an integer or null"):
        resolve_config({"training": {"threads": 1.5}})


def test_model_keys_follow_the_model_and_block_constructors() -> None:
    assert MODEL_KEYS["kind"].choices == tuple(MODEL_KINDS) == ("inn", "cinn", "cnf")
    cinn = model_keys("cinn", "coupling")
    assert {"embedding_dim", "clamp", "actnorm"} <= set(cinn)
    assert not {"y_weight", "logdet"} & set(cinn)
    inn = model_keys("inn", "iresnet")
    assert {"y_weight", "logdet", "lipschitz", "explicit"} <= set(inn) and "clamp" not in inn
    for kind, cls in MODEL_KINDS.items():
        own = set(inspect.signature(cls.__init__).parameters) - {"self", "dim_x", "dim_y"}
        assert own - {"block_kwargs"} <= set(model_keys(kind, "coupling"))


SPECS = [
    NLL(),
    FDivergence("js"),
    FDivergence("reverse-kl", direction="forward", critic_hidden=32, gradient_penalty=0.5),
    Sinkhorn(blur=0.2),
    MMD(widths=(0.1, 0.5)),
    0.5 * NLL() + FDivergence("js"),
    NLL() + 0.1 * PriorPenalty("gaussian"),
    NLL() + MMD() + 2.0 * PriorPenalty("uniform", low=[0.0, 0.0], high=[1.0, 1.0]),
    Composite([(Sinkhorn(), 1.0), (NLL(), 0.25)]),
    sum([NLL(), FDivergence("kl")]),
]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_objective_specs_round_trip_through_the_config(spec) -> None:  # noqa: ANN001
    cfg = spec.to_config()
    assert yaml.safe_load(yaml.safe_dump(cfg)) == cfg
    assert parse_objective(cfg) == spec
    assert objective_config(spec) == cfg
    assert resolve_config({"model": {"kind": "inn"}, "objective": cfg})["objective"] == cfg


def test_composite_config_form_and_build() -> None:
    spec = 0.5 * NLL() + FDivergence("js", critic_hidden=8) + 0.1 * PriorPenalty("gaussian")
    cfg = spec.to_config()
    assert cfg["name"] == "nll" and cfg["weight"] == 0.5
    assert [(t["name"], t["divergence"], t["weight"]) for t in cfg["terms"]] == [
        ("fdiv", "js", 1.0)
    ]
    assert (cfg["prior"], cfg["prior_weight"]) == ("gaussian", 0.1)
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=1, hidden=8)
    prior = Independent(Normal(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])), 1)
    objective = build_objective(cfg, model, prior)
    assert isinstance(objective, CompositeObjective) and objective.weights == [0.5, 1.0, 0.1]
    torch.testing.assert_close(objective.terms[2].scale, torch.tensor([3.0, 4.0]))
    with pytest.raises(ConfigError, match="the problem's prior is not gaussian"):
        build_objective(cfg, model, None)
    # a prior penalty of weight 0 is kept in the config but needs no parameters
    zero = objective_config({"name": "nll", "prior": "gaussian", "prior_weight": 0.0})
    assert zero["prior_weight"] == 0.0 and len(build_objective(zero, model).terms) == 1
    with pytest.raises(ConfigError, match="besides the prior penalty"):
        (0.1 * PriorPenalty("gaussian")).to_config()


def test_plain_names_and_options() -> None:
    assert parse_objective("nll") == NLL()
    assert parse_objective("sinkhorn") == Sinkhorn()
    assert objective_config("kl")["direction"] == "backward"
    assert (
        objective_config("js", critic_hidden=64) == FDivergence("js", critic_hidden=64).to_config()
    )
    assert objective_config(NLL(), weight=0.5) == (0.5 * NLL()).to_config()
    with pytest.raises(
        ConfigError, match="allowed: objective names nll, fdiv.*divergence names kl"
    ):
        parse_objective("wasserstein")
    with pytest.raises(ConfigError, match="objective.blur: unknown key of objective 'fdiv'"):
        objective_config("kl", blur=0.1)


@pytest.mark.parametrize(
    ("objective", "model", "message"),
    [
        (
            {"name": "fdiv", "direction": "forward", "y_weight": 5.0},
            {"kind": "cinn"},
            "it applies to direction=forward with model.kind in (inn)",
        ),
        (
            {"name": "nll", "terms": [{"name": "mmd", "y_weight": 1.0}]},
            {"kind": "inn"},
            "objective.terms[0].y_weight=1.0 has no effect with model.kind=inn and "
            "direction=backward",
        ),
        (
            {"name": "fdiv", "divergence": "pr", "lam": 2.0},
            {"kind": "inn"},
            "trains through the model's log-density, which model.kind=inn does not have; "
            "valid combinations: model.kind in (cinn)",
        ),
        (
            {"name": "fdiv", "direction": "forward", "nonsaturating": True},
            {"kind": "inn"},
            "objective.nonsaturating applies to direction=backward only",
        ),
    ],
)
def test_combinations_that_cannot_train_are_refused(objective, model, message) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError) as err:
        resolve_config({"model": model, "objective": objective})
    assert message in str(err.value)
    with pytest.raises(ConfigError):
        check_objective_model(objective, {**model, "arch": "coupling"})


def test_combinations_that_train_are_accepted() -> None:
    check_objective_model(
        {"name": "fdiv", "direction": "forward", "y_weight": 5.0}, {"kind": "inn"}
    )
    check_objective_model(FDivergence("kl", nonsaturating=True), {"kind": "cinn"})
    check_objective_model(FDivergence("pr", lam=2.0), {"kind": "cinn"})
    check_objective_model(FDivergence("pr", gradient="pathwise"), {"kind": "inn"})
    check_objective_model({"name": "sinkhorn", "y_weight": 0.0}, {"kind": "cinn"})
