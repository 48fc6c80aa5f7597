from pathlib import Path

import pytest

from dlkdd.pipeline.config import Config, ConfigError, apply_overrides, build_config, load_toml, validate


def test_defaults_are_valid_and_every_field_commented():
    validate(Config())
    src = (Path(__file__).resolve().parents[1] / "pipeline" / "config.py").read_text()
    for line in src.splitlines():
        stripped = line.strip()
        if ":" in stripped and " = " in stripped and not stripped.startswith(("#", "def", "return", "if")) \
                and line.startswith("    ") and not line.startswith("        ") and "field(" not in line:
            assert "#" in line, f"config value without a comment: {line!r}"


def test_set_overrides_are_typed():
    cfg = build_config(None, ["student.alpha=0.7", "data.frames=8", "enhance.strict=true",
                              "enhancer.kind=gamma", "soft-labels.batch_size=4"])
    assert cfg.student.alpha == 0.7 and isinstance(cfg.student.alpha, float)
    assert cfg.data.frames == 8 and isinstance(cfg.data.frames, int)
    assert cfg.enhance.strict is True
    assert cfg.enhancer.kind == "gamma"
    assert cfg.soft_labels.batch_size == 4


@pytest.mark.parametrize("item, needle", [
    ("student.nope=1", "unknown config key 'student.nope'"),
    ("nosection.alpha=1", "unknown config section 'nosection'"),
    ("student.alpha", "expected section.key=value"),
    ("data.frames=eight", "data.frames: expected int, got 'eight'"),
    ("enhance.strict=maybe", "enhance.strict: expected true or false"),
    ("data.frames=0", "data.frames: must be > 0"),
    ("data.crop=-3", "data.crop: must be > 0"),
    ("student.alpha=1.5", "student.alpha: must be in [0, 1]"),
    ("data.crop=128", "data.crop: 128 is larger than data.short_side"),
])
def test_bad_overrides_are_one_line_errors(item, needle):
    with pytest.raises(ConfigError) as e:
        build_config(None, [item])
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_toml_file_and_its_errors(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[student]\nalpha = 0.3\ntemperature = 2\n[data]\nframes = 8\n')
    cfg = build_config(good, ["student.alpha=0.9"])
    assert cfg.student.alpha == 0.9  # --set wins over the file
    assert cfg.student.temperature == 2.0 and isinstance(cfg.student.temperature, float)
    assert cfg.data.frames == 8
    bad = tmp_path / "bad.toml"
    bad.write_text('[student]\nalpha = "high"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: student.alpha: expected float"):
        build_config(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[teacher]\nepoch = 3\n')
    with pytest.raises(ConfigError, match=r"unknown.toml: unknown config key 'teacher.epoch'"):
        build_config(unknown)
    broken = tmp_path / "broken.toml"
    broken.write_text('[teacher\n')
    with pytest.raises(ConfigError, match="broken.toml"):
        build_config(broken)
    with pytest.raises(ConfigError, match="not found"):
        build_config(tmp_path / "absent.toml")


def test_bool_is_not_an_int():
    cfg = Config()
    with pytest.raises(ConfigError):
        load_toml(cfg, _write(cfg, "[data]\nframes = true\n"))


def _write(cfg, text, _n=[0]):  # noqa: B006 (a counter across calls)
    import tempfile
    p = Path(tempfile.mkdtemp()) / "c.toml"
    p.write_text(text)
    return p


def test_overrides_do_not_leak_between_configs():
    a = build_config(None, ["student.alpha=0.1"])
    b = build_config(None, [])
    assert a.student.alpha == 0.1 and b.student.alpha == 0.5
    apply_overrides(b, ["teacher.epochs=2"])
    assert a.teacher.epochs != 2 or a.teacher.epochs == Config().teacher.epochs
