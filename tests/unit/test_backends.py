"""The backend registry and the Backend interface: every registered backend
imports and implements the interface; a fake registers through the real
registry."""
import inspect
from pathlib import Path
import shlex

import pytest

from trove_image_builder.build import backends, stage as build_mod
from trove_image_builder.build.backends.base import INTERFACE, Backend
from trove_image_builder.build.backends.dib import DibBackend
from trove_image_builder import profile as profiles
from trove_image_builder.errors import InputError
from trove_image_builder.plumbing import host


class FakeBackend(Backend):
    """A backend that needs nothing and builds a file."""
    name = "fake"
    tools = ()

    def host_checks(self):
        return [host.Check("fake tool", True, "always here")]

    def describe(self, plan, workdir, cache_dir):
        return [f"would build {' '.join(plan.elements)}"]

    def build(self, plan, workdir, cache_dir, log_path, timings):
        image = workdir / "image.qcow2"
        image.write_bytes(b"QFI\xfb")
        return image


# --------------------------------------------------------------------------
# every registered backend

@pytest.mark.parametrize("name", sorted(backends.REGISTRY))
def test_registered_backend_imports_and_implements_the_interface(name):
    cls = backends.backend_class(name)
    assert issubclass(cls, Backend)
    assert not inspect.isabstract(cls), cls.__abstractmethods__
    backend = backends.get(name)
    assert isinstance(backend, cls) and backend.name == name
    for method in INTERFACE:
        assert callable(getattr(backend, method)), method
        assert list(inspect.signature(getattr(cls, method)).parameters) == list(
            inspect.signature(getattr(Backend, method)).parameters), method
    for method in Backend.__abstractmethods__:
        assert getattr(cls, method) is not getattr(Backend, method), method
    assert backend.tools
    for tool in backend.tools:
        tool_name, package, needed_for = tool
        assert tool_name and package and needed_for


@pytest.mark.parametrize("name", sorted(backends.REGISTRY))
def test_host_checks_name_every_tool(name):
    backend = backends.get(name)
    found = backend.host_checks()
    assert all(isinstance(c, host.Check) for c in found)
    assert {f"tool {t[0]}" for t in backend.tools} <= {c.name for c in found}


def test_the_interface_is_these_methods():
    assert set(Backend.__abstractmethods__) == {"describe", "build"}
    assert set(INTERFACE) == {"host_checks", "describe", "build"}


def test_names_are_the_registry():
    assert backends.names() == tuple(backends.REGISTRY)
    assert "dib" in backends.names()


def test_each_get_is_a_new_instance():
    assert backends.get("dib") is not backends.get("dib")


def test_dib_needs_disk_image_create():
    assert "disk-image-create" in [t[0] for t in backends.get("dib").tools]


def test_dib_describe_is_the_environment_then_the_command(known, tmp_path, monkeypatch):
    for var in ("TROVE_IMAGE_BUILDER_CA_BUNDLE", "PIP_CERT", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    plan = build_mod.plan_for(profiles.load("prod-mariadb", known_elements=known))
    argv, env = DibBackend().command(plan, tmp_path / "w", tmp_path / "c")
    lines = DibBackend().describe(plan, tmp_path / "w", tmp_path / "c")
    assert lines[-1] == shlex.join(argv)
    assert lines[:-1] == [f"export {k}={shlex.quote(env[k])}" for k in sorted(env)]
    assert not (tmp_path / "w").exists() and not (tmp_path / "c").exists()


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


# --------------------------------------------------------------------------
# registering

@pytest.fixture
def fake():
    with backends.registered("fake", FakeBackend):
        yield


def test_a_fake_registers_through_the_real_registry(fake):
    assert "fake" in backends.names()
    assert isinstance(backends.get("fake"), FakeBackend)
    assert backends.backend_class("fake") is FakeBackend


def test_registered_unregisters_even_on_error():
    with pytest.raises(RuntimeError):
        with backends.registered("fake", FakeBackend):
            raise RuntimeError("boom")
    assert "fake" not in backends.REGISTRY


def test_stage_builds_with_the_registered_backend(fake, known, tmp_path, monkeypatch):
    seen = {}

    def fake_stage(plan, backend, workdir, out, *_rest):
        seen["image"] = backend.build(plan, workdir, Path(tmp_path), workdir / "log", {})
        seen["checks"] = backend.host_checks()
        raise RuntimeError("stop here")
    monkeypatch.setattr(build_mod, "_stage", fake_stage)
    prof = profiles.load("prod-mariadb", known_elements=known)
    with pytest.raises(RuntimeError, match="stop here"):
        build_mod.build(prof, tmp_path / "out" / "x.qcow2", backend_name="fake")
    assert seen["image"].name == "image.qcow2"
    assert [c.name for c in seen["checks"]] == ["fake tool"]


def test_register_by_import_path_is_lazy():
    with backends.registered("lazy", "trove_image_builder.build.backends.dib:DibBackend"):
        assert backends.REGISTRY["lazy"] == "trove_image_builder.build.backends.dib:DibBackend"
        assert type(backends.get("lazy")) is DibBackend
    with backends.registered("not-a-backend", "json:dumps"):
        with pytest.raises(TypeError, match="not a Backend subclass"):
            backends.get("not-a-backend")


def test_register_refuses_a_taken_name_and_what_is_not_a_backend():
    with pytest.raises(ValueError, match="'dib' is already registered"):
        backends.register("dib", FakeBackend)
    with pytest.raises(TypeError, match="give 'module:Class' or a Backend subclass"):
        backends.register("odd", object)
    assert "odd" not in backends.REGISTRY


def test_a_backend_without_name_or_tools_is_refused():
    with pytest.raises(TypeError, match="set 'name'"):
        type("Nameless", (Backend,), {"tools": ()})
    with pytest.raises(TypeError, match="set 'tools'"):
        type("Toolless", (Backend,), {"name": "toolless"})


def test_a_backend_must_describe_and_build():
    class HalfDone(Backend):
        name = "half"
        tools = ()

        def build(self, plan, workdir, cache_dir, log_path, timings):
            return workdir

    with pytest.raises(TypeError, match="describe"):
        HalfDone()
