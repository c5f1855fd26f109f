"""Each run setting is declared once (`xband.settings.setting` on `RunConfig`'s fields): the
command line's options and `xband.explain`'s signature and docstring follow the declarations."""

from __future__ import annotations

import inspect
import re

import numpy as np

from xband.cli.main import build_parser
from xband.cli.options import run_config
from xband.run.config import RunConfig
from xband.run.engine import RayEngine
from xband.run.pipeline import explain
from xband.settings import flag_of, help_of, settings_of

REQUIRED = ["explain", "--model", "m.onnx", "--data", "d.npz", "--out", "report"]


def test_explain_takes_every_setting_with_its_declared_default():
    parameters = inspect.signature(explain).parameters
    for field in settings_of(RunConfig):
        assert field.name in parameters, f"explain() lacks the setting {field.name}"
        assert parameters[field.name].default == field.default, field.name
        assert parameters[field.name].kind is inspect.Parameter.KEYWORD_ONLY


def test_explain_documents_every_parameter_and_each_setting_as_declared():
    doc = inspect.getdoc(explain)
    args = doc[doc.index("Args:"):doc.index("Returns:")]
    documented = re.findall(r"^    (\w+):", args, re.M)
    assert documented == list(inspect.signature(explain).parameters)
    for field in settings_of(RunConfig):
        first_words = " ".join(help_of(field, cli=False).split()[:6])
        assert first_words in " ".join(args.split()), field.name


def test_the_command_line_offers_every_setting_with_its_declared_default():
    parser = build_parser()
    args = parser.parse_args(REQUIRED)
    explain_parser = parser._subparsers._group_actions[0].choices["explain"]
    flags = {flag for action in explain_parser._actions for flag in action.option_strings}
    for cls in (RunConfig, RayEngine):
        for field in settings_of(cls):
            if not field.metadata["cli"]:
                continue
            assert flag_of(field) in flags, field.name
            assert getattr(args, field.name) == field.default, field.name
    assert run_config(args) == RunConfig.build("all")


def test_a_setting_given_on_the_command_line_reaches_the_run_configuration():
    args = build_parser().parse_args([*REQUIRED, "--seed", "7", "--untuned", "--all-images",
                                      "--output-space", "probabilities", "--budget", "5m"])
    config = run_config(args)
    assert (config.seed, config.tuned, config.all_images, config.output, config.budget) == (
        7, False, True, "probabilities", 300.0)


def test_explain_passes_every_setting_to_the_run(monkeypatch):
    import xband.run.pipeline as pipeline

    seen = {}
    monkeypatch.setattr(pipeline, "run_explanation",
                        lambda model, data, config, progress: seen.setdefault("config", config))
    values = {"target": "predicted", "output": "probabilities", "multi_label": False,
              "baseline": "zero", "background_images": 3, "max_images": 11, "max_per_class": 5,
              "all_images": True, "budget": None, "examples_per_class": 1,
              "accept_low_accuracy": True, "skip_bad": True, "regions": "none", "seed": 9,
              "batch_size": 16, "device": "cpu", "tuned": False, "n_boot": 50, "engine": None}
    assert set(values) == {f.name for f in settings_of(RunConfig)}
    explain(None, (np.zeros((2, 3, 4, 4)), np.zeros(2, dtype=int)), "saliency", **values)
    config = seen["config"]
    for name, value in values.items():
        given = getattr(config, name)
        assert (given.text if name == "regions" else given) == value, name
