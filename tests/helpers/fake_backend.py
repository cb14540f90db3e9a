"""A backend registered in the real registry that 'builds' a small file,
and the seams of the build stage that would mount it, replaced."""
import contextlib
from pathlib import Path

from trove_image_builder.build import backends, stage
from trove_image_builder.build.backends.base import Backend


class FakeBackend(Backend):
    """Writes a few bytes as the image; raises what ``fail`` holds."""
    name = "fake"
    tools = ()
    layered = False
    fail: BaseException | None = None
    seen: list = []

    def host_checks(self):
        return []

    def describe(self, plan, workdir, cache_dir):
        return [f"fake build of {' '.join(plan.elements)}"]

    def build(self, plan, workdir, cache_dir, log_path, timings):
        type(self).seen.append({"plan": plan, "workdir": workdir})
        log_path.write_text("fake log\n")
        image = workdir / f"image.{plan.profile.image.format}"
        image.write_bytes(b"QFI\xfb a fake image")
        if type(self).fail is not None:
            raise type(self).fail
        return image


@contextlib.contextmanager
def fake_backend(monkeypatch, contents=None):
    """FakeBackend registered as 'fake'; the image is not mounted: its
    contents are ``contents`` (a dict as stage.read_contents returns)."""
    FakeBackend.fail = None
    FakeBackend.seen = []

    def read_contents(image, plan, prepared=()):
        assert Path(image).is_file()
        return contents if contents is not None else {
            "guest_agent": {"venv": "/opt/guest-agent-venv",
                            "version": plan.profile.guest_agent.version},
            "certificates": {"hook": plan.profile.cert_hook},
            "datastore": None}
    monkeypatch.setattr(stage, "read_contents", read_contents)
    monkeypatch.setattr(stage.imagefs, "image_info",
                        lambda image: {"format": "qcow2", "virtual-size": 4 << 30})
    monkeypatch.setattr(stage, "_tool_versions", lambda: {"trove-image-builder": "test"})
    with backends.registered("fake", FakeBackend):
        yield FakeBackend
