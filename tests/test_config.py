"""Configuration, profiles and the command line's error handling."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitviz_core import cli, config
from vitviz_core.errors import UnknownModelError, VitvizError
from vitviz_core.profiles import PROFILES, get_profile


def test_env_overrides_locations(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VITVIZ_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("VITVIZ_WEIGHTS", f"{tmp_path / 'a'}:{tmp_path / 'b.safetensors'}")
    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    assert config.data_root() == tmp_path / "data"
    assert config.data_root(tmp_path / "x") == tmp_path / "x"
    assert config.weights_paths()[:2] == [tmp_path / "a", tmp_path / "b.safetensors"]
    assert config.cache_dir() == tmp_path / "cache" and (tmp_path / "cache").is_dir()


def test_missing_shared_dir_is_none(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VITVIZ_SHARED", str(tmp_path / "nowhere"))
    monkeypatch.delenv("VITVIZ_DATA", raising=False)
    assert config.shared_dir() is None
    assert config.data_root() is None


def test_profiles() -> None:
    assert set(PROFILES) >= {"cpu", "full"}
    full = get_profile("full")
    assert (full.steps, full.n_augment) == (400, 8)  # paper Appendix B
    assert get_profile("cpu", steps=7).steps == 7
    with pytest.raises(VitvizError, match="unknown profile"):
        get_profile("fast")
    with pytest.raises(VitvizError, match="unknown profile setting"):
        get_profile("cpu", stepz=3)
    assert "cpu" in get_profile("cpu").describe()


def test_cli_turns_user_errors_into_one_line(monkeypatch, capsys) -> None:
    def boom(args):
        raise UnknownModelError("unknown model 'vit_tiiny'; closest: vit_tiny_patch16_224")

    monkeypatch.setattr(cli, "_cmd_models", boom)
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["models"].set_defaults(func=boom)
    assert cli.main(["models"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown model 'vit_tiiny'; closest: vit_tiny_patch16_224"]
