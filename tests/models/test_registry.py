"""Tests of fluoseg.models.registry: look-up by name, option validation, specs."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from fluoseg.errors import FluosegError
from fluoseg.models import build_model, count_parameters, model_names, model_spec, register_model
from fluoseg.models.registry import MODELS, Registry


def test_unet_is_registered():
    assert "unet" in model_names()
    assert model_names() == sorted(model_names())


def test_unknown_model_lists_registered_names():
    with pytest.raises(FluosegError, match=r"unknown model 'unetx'.*'unet'"):
        build_model("unetx", in_channels=1, out_channels=1)


def test_unknown_option_is_named_with_accepted_ones():
    with pytest.raises(FluosegError) as info:
        build_model("unet", in_channels=1, out_channels=1, dept=2)
    message = str(info.value)
    assert "'dept'" in message and "depth" in message and "base_filters" in message
    assert "in_channels" not in message  # supplied by fluoseg, not a user option


@pytest.mark.parametrize(
    "options",
    [{"depth": 0}, {"depth": True}, {"base_filters": 2.5}, {"padding": "full"}, {"norm": "group"}, {"attention_at": "input"}],
)
def test_invalid_option_values_are_user_errors(options):
    with pytest.raises(FluosegError):
        build_model("unet", in_channels=1, out_channels=1, **options)


@pytest.mark.parametrize("channels", [0, -1, 1.0, None])
def test_invalid_channel_counts_are_user_errors(channels):
    with pytest.raises(FluosegError, match="in_channels"):
        build_model("unet", in_channels=channels, out_channels=1)


def test_spec_round_trips_through_json_and_rebuilds_the_same_network():
    model = build_model("unet", in_channels=3, out_channels=2, depth=2, base_filters=4, padding="same", norm="instance")
    spec = model_spec(model)
    assert set(spec) == {"name", "in_channels", "out_channels", "options"}
    assert spec["name"] == "unet" and spec["in_channels"] == 3 and spec["out_channels"] == 2
    assert spec["options"]["depth"] == 2 and spec["options"]["padding"] == "same"
    assert spec["options"]["marker_input"] == "mz"
    rebuilt = build_model(**json.loads(json.dumps(spec)))
    rebuilt.load_state_dict(model.state_dict())  # strict: same parameter names and shapes
    assert model_spec(rebuilt) == spec
    x = torch.randn(1, 3, 16, 16)
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), model(x))


def test_options_as_mapping_and_keywords():
    model = build_model("unet", in_channels=1, out_channels=1, options={"depth": 2}, base_filters=4)
    assert model_spec(model)["options"]["depth"] == 2 and model.base_filters == 4
    with pytest.raises(FluosegError, match="given twice"):
        build_model("unet", in_channels=1, out_channels=1, options={"depth": 2}, depth=3)
    with pytest.raises(FluosegError, match="mapping"):
        build_model("unet", in_channels=1, out_channels=1, options=["depth", 2])


def test_spec_records_defaults_so_checkpoints_do_not_depend_on_them():
    options = model_spec(build_model("unet", in_channels=1, out_channels=1, base_filters=2))["options"]
    assert options["depth"] == 4 and options["norm"] == "none" and options["attention"] == "none"


def test_spec_of_unregistered_module_is_a_programming_error():
    with pytest.raises(ValueError):
        model_spec(nn.Conv2d(1, 1, 1))


def test_registering_a_new_architecture():
    @register_model("_test_pointwise")
    class Pointwise(nn.Module):
        padding = "same"

        def __init__(self, in_channels: int, out_channels: int, *, bias: bool = True) -> None:
            super().__init__()
            self.in_channels, self.out_channels = in_channels, out_channels
            self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

        def forward(self, x, availability=None):
            return self.conv(x)

    try:
        assert "_test_pointwise" in model_names()
        model = build_model("_test_pointwise", in_channels=2, out_channels=3, bias=False)
        assert model_spec(model) == {"name": "_test_pointwise", "in_channels": 2, "out_channels": 3,
                                     "options": {"bias": False}}
        direct = Pointwise(2, 3)  # direct construction is described too
        assert model_spec(direct)["options"]["bias"] is True
        with pytest.raises(ValueError, match="already registered"):
            register_model("_test_pointwise")(type("Other", (nn.Module,), {}))

        class Reserved(nn.Module):
            def __init__(self, in_channels: int, out_channels: int, options: dict | None = None) -> None:
                super().__init__()

        with pytest.raises(ValueError, match="reserved"):
            register_model("_test_reserved")(Reserved)
        assert "_test_reserved" not in model_names()
    finally:
        MODELS.unregister("_test_pointwise")
    assert "_test_pointwise" not in model_names()


def test_generic_registry_builds_with_validated_options():
    things: Registry[type] = Registry("widget", required=("size",))

    @things.register("box")
    class Box:
        def __init__(self, size: int, *, colour: str = "red") -> None:
            self.size, self.colour = size, colour

    assert things.options("box") == ["colour"]
    box = things.build("box", size=3, colour="blue")
    assert (box.size, box.colour) == (3, "blue")
    with pytest.raises(FluosegError, match=r"unknown option 'color' for widget 'box'; accepted options: \['colour'\]"):
        things.build("box", size=3, color="blue")
    with pytest.raises(FluosegError, match=r"unknown widget 'bag'; choose one of \['box'\]"):
        things.get("bag")


def test_count_parameters():
    layer = nn.Linear(3, 2)
    assert count_parameters(layer) == 8
    layer.bias.requires_grad_(False)
    assert count_parameters(layer, trainable_only=True) == 6
    assert count_parameters(layer) == 8
