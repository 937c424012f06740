from __future__ import annotations

import pytest

from dream_plugin.core.config import (
    ConfigError,
    Settings,
    apply_env,
    load_settings,
    load_yaml,
    parse_settings,
)


def write(tmp_path, text: str):
    p = tmp_path / "dream.yaml"
    p.write_text(text)
    return p


def test_defaults_are_dream_with_host_bn_batches():
    s = Settings()
    assert s.strategy == "dream"
    assert s.init_strategy == "dream"
    assert s.bn_batch == "host"
    assert s.plugins.autoload is True


def test_yaml_is_parsed_into_typed_settings(tmp_path):
    p = write(tmp_path, """
strategy: random
init: {strategy: dream, factor: 2}
seed: 7
options:
  dream: {interval: 5, kmeans: {max_iter: 20}}
plugins: {block: [noisy]}
""")
    s = load_settings(p, environ={})
    assert s.strategy == "random"
    assert s.init_strategy == "dream"
    assert s.init.factor == 2
    assert s.seed == 7
    assert s.options["dream"]["interval"] == 5
    assert s.plugins.block == ("noisy",)


def test_unknown_top_level_key_names_key_and_allowed():
    with pytest.raises(ConfigError, match=r"unknown key 'stratgy'; allowed keys: .*strategy"):
        parse_settings({"stratgy": "dream"})


def test_unknown_nested_key_names_dotted_path():
    with pytest.raises(ConfigError, match=r"unknown key 'init\.ipc'; allowed keys under 'init': factor, strategy"):
        parse_settings({"init": {"ipc": 3}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"seed": "zero"}, r"seed: 'zero' is not allowed; expected an integer"),
        ({"seed": -1}, r"seed: -1 is not allowed; expected an integer >= 0"),
        ({"embed_batch_size": 0}, r"embed_batch_size: 0 is not allowed; expected an integer >= 1"),
        ({"bn_batch": "always"}, r"bn_batch: 'always' is not allowed; expected one of 'host', 'strategy'"),
        ({"init": {"factor": 0}}, r"init\.factor: 0 is not allowed; expected an integer >= 1"),
        ({"plugins": {"autoload": "yes"}}, r"plugins\.autoload: 'yes' is not allowed; expected true or false"),
        ({"plugins": {"block": "x"}}, r"plugins\.block: 'x' is not allowed; expected a list of strings"),
        ({"strategy": ""}, r"strategy: '' is not allowed"),
        ({"init": 3}, r"init: 3 is not allowed; expected a mapping"),
    ],
)
def test_bad_values_name_key_and_what_is_allowed(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_settings(data)


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = write(tmp_path, "strategy: dream\noptions: {dream: [1, 2\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+, column \d+"):
        load_yaml(p)


def test_yaml_that_is_not_a_mapping(tmp_path):
    p = write(tmp_path, "- dream\n- random\n")
    with pytest.raises(ConfigError, match="must hold a mapping at the top level, got list"):
        load_yaml(p)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "nope.yaml")


def test_env_strategy_is_the_ab_switch(tmp_path):
    p = write(tmp_path, "strategy: dream\n")
    assert load_settings(p, environ={"DREAM_STRATEGY": "random"}).strategy == "random"
    assert load_settings(p, environ={}).strategy == "dream"
    # the init strategy follows the A/B switch unless set on its own
    assert load_settings(p, environ={"DREAM_STRATEGY": "random"}).init_strategy == "random"


def test_env_config_path_and_other_overrides(tmp_path):
    p = write(tmp_path, "strategy: herding\nseed: 3\n")
    s = load_settings(environ={"DREAM_PLUGIN_CONFIG": str(p), "DREAM_SEED": "11", "DREAM_INIT_STRATEGY": "kcenter",
                               "DREAM_PLUGIN_DISABLE_AUTOLOAD": "1"})
    assert (s.strategy, s.seed, s.init_strategy, s.plugins.autoload) == ("herding", 11, "kcenter", False)


def test_bad_env_values_are_errors():
    with pytest.raises(ConfigError, match=r"DREAM_SEED: 'x1' is not allowed"):
        apply_env(Settings(), {"DREAM_SEED": "x1"})
    with pytest.raises(ConfigError, match=r"DREAM_PLUGIN_DISABLE_AUTOLOAD: 'maybe' is not allowed"):
        apply_env(Settings(), {"DREAM_PLUGIN_DISABLE_AUTOLOAD": "maybe"})


def test_env_strategy_set_but_empty_is_an_error():
    # DREAM_STRATEGY=$ARM with ARM unset would else turn a random arm into the configured (DREAM) one
    for value in ("", "  "):
        with pytest.raises(ConfigError, match=r"^DREAM_STRATEGY is set but empty; set it to a strategy name "
                                              r"\(e.g. DREAM_STRATEGY=random or DREAM_STRATEGY=dream\) or unset it"):
            apply_env(Settings(), {"DREAM_STRATEGY": value})
    with pytest.raises(ConfigError, match=r"^DREAM_INIT_STRATEGY is set but empty"):
        apply_env(Settings(), {"DREAM_INIT_STRATEGY": ""})
    assert apply_env(Settings(strategy="dream"), {}).strategy == "dream"  # unset: the configured strategy


def test_overrides_merge_deeply(tmp_path):
    p = write(tmp_path, "options: {dream: {interval: 5}}\n")
    s = load_settings(p, overrides={"options": {"dream": {"subsample": 2}}}, environ={})
    assert dict(s.options["dream"]) == {"interval": 5, "subsample": 2}


def test_to_dict_round_trips():
    s = parse_settings({"strategy": "kcenter", "plugins": {"block": ["a"]}, "options": {"dream": {"interval": 3}}})
    assert parse_settings(s.to_dict()) == s


# -- bad input from files, the environment and Python (docs/errors.md) ---------------------------------
def test_duplicate_key_names_key_and_both_lines(tmp_path):
    p = write(tmp_path, "strategy: dream\nseed: 1\nstrategy: random\n")
    with pytest.raises(ConfigError, match=r"key 'strategy' is given twice, at line 1 and at line 3"):
        load_yaml(p)


def test_duplicate_nested_key_in_flow_style_names_columns(tmp_path):
    p = write(tmp_path, "options: {dream: {interval: 5, interval: 6}}\n")
    with pytest.raises(ConfigError, match=r"key 'interval' is given twice, at line 1, column 19 and at line 1, column 32"):
        load_yaml(p)


def test_same_key_in_different_mappings_is_fine(tmp_path):
    p = write(tmp_path, "init: {strategy: random}\nstrategy: dream\n")
    assert load_settings(p, environ={}).init_strategy == "random"


def test_config_env_pointing_to_a_directory_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r"is a directory; expected the path of a YAML file"):
        load_settings(environ={"DREAM_PLUGIN_CONFIG": str(tmp_path)})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": "abc"}, r"^seed: 'abc' is not allowed; expected an integer$"),
        ({"seed": 1.5}, r"^seed: 1.5 is not allowed; expected an integer$"),
        ({"seed": True}, r"^seed: True is not allowed; expected an integer$"),
        ({"strategy": 3}, r"^strategy: 3 is not allowed; expected a string$"),
        ({"embed_batch_size": None}, r"^embed_batch_size: None is not allowed"),
        ({"bn_batch": "mine"}, r"^bn_batch: 'mine' is not allowed; expected one of 'host', 'strategy'$"),
        ({"options": [1]}, r"^options: \[1\] is not allowed; expected a mapping$"),
        ({"init": {"factor": "x"}}, r"^init.factor: 'x' is not allowed; expected an integer$"),
        ({"plugins": {"block": "abc"}}, r"^plugins.block: 'abc' is not allowed; expected a list of strings$"),
    ],
)
def test_wrong_types_from_python_are_config_errors_naming_the_field(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Settings(**kwargs)


def test_nested_settings_classes_check_their_own_fields():
    from dream_plugin.core.config import DistributedSettings, InitSettings, PluginSettings

    with pytest.raises(ConfigError, match=r"^factor: '2' is not allowed; expected an integer$"):
        InitSettings(factor="2")
    with pytest.raises(ConfigError, match=r"^autoload: 'yes' is not allowed; expected true or false$"):
        PluginSettings(autoload="yes")
    with pytest.raises(ConfigError, match=r"^mode: 'all' is not allowed; expected one of"):
        DistributedSettings(mode="all")


def test_numpy_integers_are_accepted_like_ints_and_stored_as_int():
    import numpy as np

    s = Settings(seed=np.int64(3), embed_batch_size=np.int32(64), init={"factor": np.uint8(2)})
    assert (s.seed, s.embed_batch_size, s.init.factor) == (3, 64, 2)
    assert all(type(v) is int for v in (s.seed, s.embed_batch_size, s.init.factor))
    # the same through a mapping (e.g. YAML built in Python) and in a strategy's options
    p = parse_settings({"seed": np.int64(4), "options": {"dream": {"interval": np.int64(7)}}})
    assert p.seed == 4 and type(p.seed) is int
    from dream_plugin.core.selector import Selector

    sel = Selector(p)
    assert sel._options("dream").interval == 7
    with pytest.raises(ConfigError, match=r"seed: np.True_ is not allowed"):
        Settings(seed=np.bool_(True))


def test_config_path_that_is_not_a_regular_file_says_so():
    import os

    with pytest.raises(ConfigError, match=r"config file '/dev/null' is not a regular file; expected the path of a YAML file"):
        load_yaml(os.devnull)
