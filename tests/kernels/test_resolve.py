"""The one allow-listed resolver of `module:attribute` names."""

from __future__ import annotations

import pickle
import sys

import pytest
import torch

from augserve.kernels.resolve import DEFAULT_PREFIXES, AllowList, ImportRefused


def test_resolves_allowed_names_with_dotted_attributes():
    imports = AllowList()
    assert imports.resolve("augserve.kernels.resolve:AllowList", field="f") is AllowList
    assert imports.resolve("augserve.kernels.resolve:AllowList.with_extra",
                           field="f") is AllowList.with_extra


def test_refuses_names_outside_the_prefixes_before_importing_them():
    name = "augserve_resolve_test_never_imported"
    with pytest.raises(ImportRefused) as caught:
        AllowList().resolve(f"{name}:main", field="source.architecture")
    assert str(caught.value) == (f"source.architecture: '{name}:main' is outside the allowed "
                                 "modules (augserve, torchvision.models)")
    assert caught.value.allowed == DEFAULT_PREFIXES
    assert name not in sys.modules


@pytest.mark.parametrize("target", ["augserve_evil:x", "torchvision.io:read_image",
                                    "torchvision:models", "os:system"])
def test_a_prefix_allows_its_package_and_below_only(target):
    with pytest.raises(ImportRefused, match="outside the allowed modules"):
        AllowList().check(target, field="architecture")


@pytest.mark.parametrize("target", ["augserve.server.zoo", "augserve.server.zoo:", ":resnet20",
                                    "augserve server:x", "augserve.server.zoo:res-net"])
def test_refuses_malformed_names(target):
    with pytest.raises(ImportRefused, match=r"is not a 'package\.module:attribute' name"):
        AllowList().check(target, field="architecture")


def test_missing_modules_and_attributes_are_refused_with_the_cause():
    with pytest.raises(ImportRefused, match="cannot be imported: No module named"):
        AllowList().resolve("augserve.no_such_module:x", field="architecture")
    with pytest.raises(ImportRefused, match=r"cannot be imported: .*no attribute 'nope'"):
        AllowList().resolve("augserve.kernels.resolve:nope", field="architecture")


def test_extra_prefixes_are_added_by_the_operator():
    imports = AllowList().with_extra(["torch.nn."])
    assert imports.prefixes == (*DEFAULT_PREFIXES, "torch.nn")
    assert imports.resolve("torch.nn.modules.linear:Identity", field="f") is torch.nn.Identity
    with pytest.raises(ValueError, match="dotted module names"):
        AllowList().with_extra(["not a module"])


def test_the_error_class_is_the_owners_and_crosses_processes():
    class Refused(ImportRefused):
        pass

    imports = AllowList(error=Refused)
    with pytest.raises(Refused) as caught:
        imports.check("os:system", field="architecture")
    again = pickle.loads(pickle.dumps(ImportRefused("f", "os:system", ("augserve",), "no")))
    assert (again.field, again.target, again.allowed, str(again)) == (
        "f", "os:system", ("augserve",), "f: 'os:system' no")
    assert caught.value.field == "architecture"
