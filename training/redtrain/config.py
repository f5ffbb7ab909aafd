"""Typed training configuration, loaded from YAML and checked strictly.

Every section is a frozen dataclass. Loading rejects unknown keys and wrong types with a message
that names the key, so a typo in a config never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from redtrain.errors import UserError

METHODS = ("independent", "independent-at", "red", "ps-red", "barre")
DATASETS = ("fashion-mnist", "cifar10")
ARCHS = ("cnn-small", "cnn-strided", "resnet20")
DEVICES = ("auto", "cpu", "cuda")
STACKABLE = ("cnn-small", "cnn-strided")  # architectures the vectorised trainer (redtrain.stacked) handles
ADVERSARIAL_LOSSES = ("ce", "trades")
TRAINERS = ("auto", "stacked", "loop")


@dataclass(frozen=True)
class DataConfig:
    name: str = "fashion-mnist"
    root: str = "/usr/share/datasets/fashion-mnist"
    # Use only the first N training examples (None: all). For smoke runs and tests.
    train_limit: typing.Optional[int] = None
    # Test examples used for the per-epoch and export accuracy figures (None: all).
    test_limit: typing.Optional[int] = None


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "cnn-small"
    # Channel widths of the conv stages and the hidden width (cnn-small: 3x3 conv + 2x2 pool per
    # stage; cnn-strided: 4x4 conv of stride 2 per stage; resnet20 ignores both).
    widths: typing.Tuple[int, ...] = (8, 16, 32)
    hidden: int = 64


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "adam"  # adam | sgd
    lr: float = 0.003
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 5
    batch_size: int = 128
    schedule: str = "cosine"  # cosine | constant
    # Exponential moving average of the weights (decay per step; 0: off). With it on, the per-epoch
    # figures, the overfitting check and export all use the averaged weights; the raw weights are
    # kept only to resume training. The decay warms up as min(ema, (1 + t) / (10 + t)) at step t.
    ema: float = 0.0


@dataclass(frozen=True)
class AttackConfig:
    """Linf PGD in pixel space [0, 1]."""

    eps: float = 0.1
    steps: int = 3
    # Step size as a multiple of eps (their CIFAR-10 setting is eps/4 with 10 steps).
    step_ratio: float = 0.5
    random_start: bool = True


@dataclass(frozen=True)
class DistillConfig:
    """Optional knowledge distillation on the clean CE term: member i also matches the softened
    output of member i of a trained teacher package (an exported `ensemble` of as many members)."""

    teacher: str = ""  # a package directory; empty: no distillation
    weight: float = 0.5  # clean term = (1 - weight) * CE + weight * T^2 * KL(teacher_T || member_T)
    temperature: float = 4.0


@dataclass(frozen=True)
class LossConfig:
    # Weight of the gradient-similarity term (mean |cos| between members' input gradients).
    l_sim: float = 0.0
    # Weight of the Lipschitz term (mean 2*||input gradient||^2 on half clean, half PGD inputs).
    l_lip: float = 0.0
    # PGD against the averaged ensemble that makes the adversarial half of the L_lip batch.
    lip_attack: AttackConfig = field(default_factory=AttackConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass(frozen=True)
class OverfitCheck:
    """A PGD check after every epoch on held-out test images (the last `examples` of the test set,
    disjoint from the first images that evaluation and the study score). Catastrophic overfitting of
    FGSM training shows as PGD accuracy collapsing within an epoch: when it falls more than `drop`
    below the best epoch's, training stops and the best epoch's weights are what the run keeps."""

    enabled: bool = False
    examples: int = 1000
    steps: int = 10
    drop: float = 0.2


@dataclass(frozen=True)
class AdversarialConfig:
    """Per-member adversarial training (methods independent-at, red, ps-red).

    loss "ce": CE = (1 - mix) * CE(clean) + mix * CE(x_adv), x_adv from PGD on the member's CE; mix
    1.0 is Madry-style training on the whole batch. One step with step_ratio 1.25 and a random start
    is fast adversarial training (FGSM-RS, Wong et al. 2020).
    loss "trades": CE(clean) + trades_beta * KL(f(x) || f(x_adv)), x_adv from PGD on that KL started
    0.001-close to x (Zhang et al. 2019); mix does not apply.
    """

    enabled: bool = False
    attack: AttackConfig = field(default_factory=AttackConfig)
    mix: float = 0.5
    loss: str = "ce"
    trades_beta: float = 6.0
    check: OverfitCheck = field(default_factory=OverfitCheck)


@dataclass(frozen=True)
class HypernetConfig:
    """PS-RED: one generator shared by every member (method ps-red)."""

    member_dim: int = 16
    chunk_dim: int = 16
    chunk_size: int = 128
    hidden: int = 64
    # Per-member gain on every output channel of every generated weight (direct parameters, like the
    # biases; initialised to 1). The generator alone gives members only a shared shift of its hidden
    # layer to differ by; the gains let each member rescale whole channels cheaply.
    member_gains: bool = False
    # FiLM-style conditioning: the member embedding also scales the generator's hidden layer,
    # hidden = relu(W1 [z_m; c]) * (1 + S z_m), S shared (member_dim x hidden parameters). Without it a
    # member only shifts that layer, and the trained members come out nearly alike (input-gradient
    # cosine 0.88 between the shipped fmnist-psred's members, 0.35 for fmnist-red's).
    member_scale: bool = False
    # Learning rate of the chunk and member embeddings as a multiple of optim.lr. They start at unit
    # scale (randn), ten times the scale of a direct member weight, so at the same Adam step size
    # they move ten times slower relative to their size.
    embedding_lr_scale: float = 1.0
    # One generator per member, as the public PS-RED code does (each member's own generator weights
    # and chunk embeddings; nothing but the layout is shared). Off: one generator shared by all.
    per_member: bool = False
    # Rank of a per-member low-rank adapter on the shared generator's output layer (0: none): member
    # m's chunks are last(hidden) + (hidden A_m) B_m, A_m starting at zero.
    adapter_rank: int = 0
    # How hypernet.onnx stores its parameters. float16 halves the bytes on disk: export rounds the
    # trained parameters to half precision first, so the package's golden logits, accuracy and
    # parity checks are those of the rounded hypernetwork, and an in-graph Cast restores float32.
    storage: str = "float32"


@dataclass(frozen=True)
class BoostConfig:
    """Method barre (redtrain.boost): members boosted one after another from a finished run."""

    start: str = ""  # a finished single-member adversarial training run: member 0
    epochs_per_member: int = 5
    margin_weight: float = 1.0  # weight of the margin CE beside CE on the mixture's PGD examples
    rounds: int = 5  # ARC rounds that fit the sampling probabilities
    probability_step: float = 1.0  # projected-gradient step on the expected error, per round
    arc_iterations: int = 10


@dataclass(frozen=True)
class Config:
    name: str
    method: str = "red"
    members: int = 5
    seed: int = 0
    # Torch CPU threads (None: torch's default). Two runs side by side on 2 cores: 1 each.
    threads: typing.Optional[int] = None
    # How a step is computed: "stacked" evaluates all members in one vectorised pass (cnn-small and
    # cnn-strided),
    # "loop" one member after another; "auto" picks stacked where it applies. Same objective either way.
    trainer: str = "auto"
    # Where training runs: "auto" takes CUDA when torch sees a GPU, the CPU otherwise.
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    hypernet: HypernetConfig = field(default_factory=HypernetConfig)
    boost: BoostConfig = field(default_factory=BoostConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(f"method: '{self.method}' is not one of {', '.join(METHODS)}")
        if self.data.name not in DATASETS:
            problems.append(f"data.name: '{self.data.name}' is not one of {', '.join(DATASETS)}")
        if self.model.arch not in ARCHS:
            problems.append(f"model.arch: '{self.model.arch}' is not one of {', '.join(ARCHS)}")
        if self.trainer not in TRAINERS:
            problems.append(f"trainer: '{self.trainer}' is not one of {', '.join(TRAINERS)}")
        elif self.trainer == "stacked" and self.model.arch not in STACKABLE:
            problems.append(f"trainer: 'stacked' needs model.arch {' or '.join(STACKABLE)}, got '{self.model.arch}'")
        if self.method == "barre":
            b = self.boost
            if not b.start:
                problems.append("method barre needs boost.start: a finished run whose member 0 it boosts from")
            if self.members < 2 or not self.adversarial.enabled:
                problems.append("method barre needs members >= 2 and adversarial.enabled: true")
            if b.epochs_per_member < 1 or b.rounds < 1 or b.arc_iterations < 1 or not b.probability_step > 0:
                problems.append("boost: epochs_per_member, rounds and arc_iterations must be >= 1, "
                                "probability_step > 0")
        if self.device not in DEVICES:
            problems.append(f"device: '{self.device}' is not one of {', '.join(DEVICES)}")
        if self.adversarial.loss not in ADVERSARIAL_LOSSES:
            problems.append(f"adversarial.loss: '{self.adversarial.loss}' is not one of {', '.join(ADVERSARIAL_LOSSES)}")
        elif self.adversarial.loss == "trades":
            if self.method != "independent-at":
                problems.append(f"adversarial.loss trades applies to method independent-at, got '{self.method}'")
            if self.trainer == "stacked":
                problems.append("adversarial.loss trades runs on the loop trainer; set trainer to auto or loop")
        if not self.adversarial.trades_beta > 0:
            problems.append(f"adversarial.trades_beta: {self.adversarial.trades_beta} must be > 0")
        check = self.adversarial.check
        if check.enabled and (check.examples < 1 or check.steps < 1 or not 0 < check.drop <= 1):
            problems.append(f"adversarial.check: examples and steps must be >= 1 and drop in (0, 1], got "
                            f"{check.examples}, {check.steps}, {check.drop}")
        if not 0.0 <= self.optim.ema < 1.0:
            problems.append(f"optim.ema: {self.optim.ema} is outside [0, 1)")
        if self.members < 1:
            problems.append(f"members: {self.members} must be >= 1")
        if self.method in ("red", "ps-red") and self.members < 2 and self.loss.l_sim > 0:
            problems.append("loss.l_sim needs at least 2 members")
        if self.method == "independent-at" and not self.adversarial.enabled:
            problems.append("method independent-at needs adversarial.enabled: true")
        if self.method == "independent" and (self.adversarial.enabled or self.loss.l_sim or self.loss.l_lip):
            problems.append("method independent trains with plain CE: disable adversarial, l_sim, l_lip")
        if not 0.0 <= self.adversarial.mix <= 1.0:
            problems.append(f"adversarial.mix: {self.adversarial.mix} is outside [0, 1]")
        for key, attack in (("adversarial.attack", self.adversarial.attack), ("loss.lip_attack", self.loss.lip_attack)):
            if not 0.0 < attack.eps <= 1.0:
                problems.append(f"{key}.eps: {attack.eps} is outside (0, 1]")
            if attack.steps < 1:
                problems.append(f"{key}.steps: {attack.steps} must be >= 1")
        if not self.hypernet.embedding_lr_scale > 0:
            problems.append(f"hypernet.embedding_lr_scale: {self.hypernet.embedding_lr_scale} must be > 0")
        if self.hypernet.adapter_rank < 0:
            problems.append(f"hypernet.adapter_rank: {self.hypernet.adapter_rank} must be >= 0")
        if self.hypernet.per_member and (self.hypernet.adapter_rank or self.hypernet.member_scale):
            problems.append("hypernet.per_member: members already have their own generators; "
                            "adapter_rank and member_scale apply to a shared one")
        if self.hypernet.storage not in ("float32", "float16"):
            problems.append(f"hypernet.storage: '{self.hypernet.storage}' is not one of float32, float16")
        if self.loss.distill.teacher:
            if not 0.0 < self.loss.distill.weight <= 1.0:
                problems.append(f"loss.distill.weight: {self.loss.distill.weight} is outside (0, 1]")
            if self.loss.distill.temperature <= 0:
                problems.append(f"loss.distill.temperature: {self.loss.distill.temperature} must be > 0")
        if self.optim.optimizer not in ("adam", "sgd"):
            problems.append(f"optim.optimizer: '{self.optim.optimizer}' is not one of adam, sgd")
        if self.optim.schedule not in ("cosine", "constant"):
            problems.append(f"optim.schedule: '{self.optim.schedule}' is not one of cosine, constant")
        if self.optim.epochs < 1 or self.optim.batch_size < 2:
            problems.append("optim: epochs must be >= 1 and batch_size >= 2")
        if problems:
            raise UserError("invalid config: " + "; ".join(problems))

    @property
    def stacked(self) -> bool:
        """Whether training uses the vectorised all-members step (redtrain.stacked)."""
        return self.trainer == "stacked" or (self.trainer == "auto" and self.model.arch in STACKABLE
                                              and self.adversarial.loss == "ce")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The config as YAML that load_config reads back (a JSON round trip turns tuples into lists,
        which safe_dump writes plainly)."""
        return yaml.safe_dump(json.loads(json.dumps(self.to_dict())), sort_keys=False)


def _check_type(value: object, hint: object, key: str) -> object:
    """Return value converted to hint, or raise UserError naming key."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(value, inner, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{key}': expected a list, got {type(value).__name__}")
        (inner, _ellipsis) = typing.get_args(hint)
        return tuple(_check_type(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}': expected a mapping, got {type(value).__name__}")
        return from_dict(hint, value, prefix=f"{key}.")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise UserError(f"config key '{key}': expected {hint.__name__}, got bool")
    if not isinstance(value, hint):  # type: ignore[arg-type]
        raise UserError(f"config key '{key}': expected {hint.__name__}, got {type(value).__name__} ({value!r})")
    return value


def from_dict(cls: type, raw: dict, prefix: str = "") -> object:
    """A config dataclass from its dict (YAML), every value checked against its type and unknown
    keys refused, each problem naming its dotted key (also used by import's spec)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise UserError(
            f"unknown config key '{prefix}{unknown[0]}' (allowed in this section: {', '.join(sorted(names))})"
        )
    kwargs = {k: _check_type(v, hints[k], prefix + k) for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required key is missing
        raise UserError(f"config section '{prefix or 'top level'}': {exc}") from None


def config_from_dict(raw: dict) -> Config:
    if not isinstance(raw, dict):
        raise UserError("config: expected a mapping at the top level")
    return typing.cast(Config, from_dict(Config, raw))


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return config_from_dict(raw or {})
