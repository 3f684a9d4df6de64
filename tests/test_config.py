"""Search configs and track profiles: shipped ones load, bad ones fail with one clear line."""

import pytest

from harness.config import ConfigError, available_tracks, load_config, load_track


def test_shipped_tracks_load():
    assert set(available_tracks()) >= {"main-10min-16mb", "local-30min-2mb", "cpu-smoke"}
    main = load_track("main-10min-16mb")
    assert (main.byte_cap, main.time_cap_s, main.records_folder) == (16_000_000, 600, "track_10min_16mb")
    assert main.top_rung.gpus == 8 and main.rung("screen").gpus == 1 and main.rung("smoke").gpus == 0
    local = load_track("local-30min-2mb")
    assert (local.byte_cap, local.time_cap_s, local.records_folder) == (2_000_000, 1800, "track_30min_2mb_local")
    assert load_track("cpu-smoke").data.source == "build"


def test_smoke_preset():
    cfg = load_config(preset="smoke")
    assert cfg.track == "cpu-smoke" and cfg.promotion.seeds == 3 and cfg.search_dir().name == "smoke"


def _write(tmp_path, text):
    p = tmp_path / "search.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, expected",
    [
        ('nmae = "x"', "unknown key 'nmae' (did you mean 'name'?)"),
        ('[budget]\nmax_candidatez = 3', "unknown key 'budget.max_candidatez'"),
        ('objective = "fastest"', "objective: 'fastest' is not allowed; allowed: val_bpb, pareto"),
        ('track = "nope"', "unknown track 'nope'; allowed: cpu-smoke, local-30min-2mb, main-10min-16mb"),
        ("seed = \"zero\"", "seed: expected int"),
        ("[promotion]\nseeds = 1", "promotion.seeds must be >= 2"),
        ("[proposers]\noptuna = 0\ncatalog = 0\nllm = 0", "at least one share must be positive"),
        ("name = [", "malformed TOML"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, text))
    msg = str(e.value)
    assert expected in msg and "\n" not in msg


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")


def test_user_track_file_checked(tmp_path):
    bad = tmp_path / "t.toml"
    bad.write_text('name = "t"\n[[rungs]]\nname = "a"\ngpus = 3\n')
    with pytest.raises(ConfigError, match="gpus must be 0, 1, 2, 4 or 8"):
        load_track(str(bad))
    bad.write_text('name = "t"\n')
    with pytest.raises(ConfigError, match="at least one"):
        load_track(str(bad))
    good = tmp_path / "mine.toml"
    good.write_text('name = "mine"\nbyte_cap = 1000000\n[[rungs]]\nname = "only"\ngpus = 2\nkeep = 0.5\n')
    t = load_track(str(good))
    assert t.byte_cap == 1_000_000 and t.rungs[0].gpus == 2
