"""Config loading: YAML -> dataclasses, dotted overrides, type checks, unknown keys, resolved config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest
import yaml

from medtrain.config import build_config, config_to_dict, load_config, save_resolved
from medtrain.errors import UserError


@dataclasses.dataclass
class Optim:
    lr: float = 1e-4
    warmup_steps: int = 0
    schedule: Literal["linear", "cosine"] = "linear"


@dataclasses.dataclass
class Corpus:
    name: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ValueError(f"weight must be > 0 (got {self.weight}); drop the corpus instead")


@dataclasses.dataclass
class Job:
    output_dir: Path
    optim: Optim = dataclasses.field(default_factory=Optim)
    corpora: list[Corpus] = dataclasses.field(default_factory=list)
    test: str | dict[str, str] = ""
    seed: int | None = None
    verbose: bool = False


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_nested_types_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "output_dir: runs/a\noptim: {lr: 5e-5}\ncorpora:\n  - {name: c1}\n"
                           "test: {es: d/es, ro: d/ro}\n")
    cfg = load_config(Job, path)
    assert cfg.output_dir == Path("runs/a")
    assert cfg.optim.lr == pytest.approx(5e-5)  # YAML 1.1 reads 5e-5 as a string; the schema makes it a float
    assert cfg.optim.warmup_steps == 0
    assert cfg.corpora == [Corpus("c1", 1.0)]
    assert cfg.test == {"es": "d/es", "ro": "d/ro"}
    assert cfg.seed is None


def test_dotted_overrides_reach_nested_fields_and_list_items(tmp_path: Path) -> None:
    path = write(tmp_path, "output_dir: runs/a\ncorpora:\n  - {name: c1}\n  - {name: c2}\n")
    cfg = load_config(Job, path, ["optim.lr=3e-5", "optim.schedule=cosine", "corpora.1.weight=2.5",
                                  "seed=7", "verbose=true", "test=d/nl"])
    assert cfg.optim.lr == pytest.approx(3e-5)
    assert cfg.optim.schedule == "cosine"
    assert cfg.corpora[1].weight == 2.5 and cfg.corpora[0].weight == 1.0
    assert cfg.seed == 7 and cfg.verbose is True
    assert cfg.test == "d/nl"


def test_unknown_key_names_closest_valid_keys_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "output_dir: runs/a\noptim:\n  lr: 1e-4\n  warmup_step: 10\n")
    with pytest.raises(UserError) as info:
        load_config(Job, path)
    message = info.value.format()
    assert f"{path}:4:" in message
    assert "optim.warmup_step" in message and "did you mean warmup_steps" in message


def test_unknown_override_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "output_dir: runs/a\n")
    with pytest.raises(UserError, match="did you mean lr"):
        load_config(Job, path, ["optim.lrr=1"])


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("output_dir: r\noptim: {warmup_steps: ten}\n", "optim.warmup_steps", "an integer"),
        ("output_dir: r\noptim: {lr: fast}\n", "optim.lr", "a number"),
        ("output_dir: r\nverbose: 3\n", "verbose", "true/false"),
        ("output_dir: r\noptim: {schedule: step}\n", "optim.schedule", "must be one of"),
        ("output_dir: r\ncorpora: {name: c}\n", "corpora", "a list"),
    ],
)
def test_wrong_types_name_key_and_expected_type(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_config(Job, path)
    assert key in info.value.message and expected in info.value.message
    assert info.value.path == str(path) and info.value.line is not None


def test_missing_required_key(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="output_dir: is required"):
        load_config(Job, write(tmp_path, "seed: 1\n"))


def test_post_init_validation_becomes_user_error_with_location(tmp_path: Path) -> None:
    path = write(tmp_path, "output_dir: r\ncorpora:\n  - {name: c, weight: 0}\n")
    with pytest.raises(UserError, match="weight must be > 0") as info:
        load_config(Job, path)
    assert info.value.line == 3


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="invalid YAML") as info:
        load_config(Job, write(tmp_path, "output_dir: [unclosed\n"))
    assert info.value.line is not None
    with pytest.raises(UserError, match="not found"):
        load_config(Job, tmp_path / "nope.yaml")


@pytest.mark.parametrize("override", ["noequals", "=3", "a..b=1"])
def test_malformed_override(tmp_path: Path, override: str) -> None:
    with pytest.raises(UserError, match="dotted.key=value"):
        load_config(Job, write(tmp_path, "output_dir: r\n"), [override])


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(Job, write(tmp_path, "output_dir: runs/a\ncorpora: [{name: c}]\n"), ["optim.lr=2e-5"])
    saved = save_resolved(cfg, tmp_path / "run")
    assert saved == tmp_path / "run" / "config.yaml"
    data = yaml.safe_load(saved.read_text())
    assert data == config_to_dict(cfg)
    assert build_config(Job, data) == cfg
