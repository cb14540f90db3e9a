"""The backend registry: every registered backend imports and looks right."""
import pytest

from trove_image_builder.build import backends
from trove_image_builder import profile as profiles
from trove_image_builder.errors import InputError


@pytest.mark.parametrize("name", sorted(backends.REGISTRY))
def test_registered_backend_imports(name):
    backend = backends.get(name)
    assert backend.name == name
    assert callable(backend.command)
    assert callable(getattr(backend, "build", None))
    assert backend.tools
    for tool in backend.tools:
        tool_name, package, needed_for = tool
        assert tool_name and package and needed_for


def test_names_are_the_registry():
    assert backends.names() == tuple(backends.REGISTRY)
    assert "dib" in backends.names()


def test_each_get_is_a_new_instance():
    assert backends.get("dib") is not backends.get("dib")


def test_dib_needs_disk_image_create():
    assert "disk-image-create" in [t[0] for t in backends.get("dib").tools]


def test_unknown_backend():
    with pytest.raises(InputError) as info:
        backends.get("nosuch")
    assert info.value.message == (
        f"--backend nosuch: unknown backend; choose one of: {', '.join(backends.REGISTRY)}")
    assert info.value.exit_code == 2


def test_profile_default_backend_is_registered():
    assert profiles.Profile.__dataclass_fields__["backend"].default in backends.REGISTRY


@pytest.mark.parametrize("name", profiles.BACKENDS)
def test_every_backend_a_profile_may_name_is_registered(name):
    assert backends.get(name).name == name
