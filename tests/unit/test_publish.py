"""publish: what goes to Glance, computed from the manifest; reuse; the
checks before any upload; the one-line errors. Glance is a stateful fake at
the openstacksdk seam (its images are openstacksdk's own Image resources);
tests/integration/test_publish.py runs the real one."""
import hashlib
import http.server
import json
from pathlib import Path
import socket
import threading
import uuid

from openstack import exceptions as sdk_exc
from openstack.image.v2.image import Image
import pytest
import requests

from trove_image_builder.errors import InputError
from trove_image_builder.release import glance, manifests

from tests.helpers.cli import assert_error, invoke

DIGEST = "sha256:" + "ab" * 32


def manifest(**changes) -> dict:
    """The parts of a build's manifest that publish reads (as prod-mariadb's)."""
    m = {
        "schema": 2,
        "image": {"file": "prod-mariadb.qcow2", "format": "qcow2", "sha256": None},
        "profile": {"name": "prod-mariadb", "variant": "production"},
        "tools": {"trove-image-builder": "0.1.0"},
        "os": {"distro": "debian", "release": "trixie",
               "os_release": {"ID": "debian", "VERSION_ID": "13"}},
        "guest_agent": {"install": "release", "version": "26.0.0"},
        "datastore": {"name": "mariadb", "manager": "mariadb", "version": "11.8"},
    }
    for key, value in changes.items():
        m[key] = value
    return m


@pytest.fixture
def image(tmp_path) -> Path:
    """A small image file with its manifest beside it."""
    path = tmp_path / "prod-mariadb.qcow2"
    path.write_bytes(b"QFI\xfb" + bytes(range(256)) * 4096)
    m = manifest()
    m["image"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + manifests.SUFFIX).write_text(json.dumps(m, indent=2))
    return path


class FakeImages:
    """The image proxy of a connection: a stateful in-memory Glance that
    hashes what it is sent, as Glance does (checksum md5, os_hash_value)."""

    def __init__(self):
        self.bodies = {}
        self.calls = []

    def _image(self, image_id):
        return Image.existing(**self.bodies[image_id])

    def list_by_hash(self, **query):
        self.calls.append(("list", query))
        return [self._image(i) for i, b in self.bodies.items()
                if b.get("os_hash_value") == query["os_hash_value"] and b["status"] == "active"
                and ("owner" not in query or b["owner"] == query["owner"])]

    def create_image(self, name, *, data, size, disk_format, container_format, tags,
                     visibility, allow_duplicates, md5, sha256, validate_checksum,
                     owner=None, **props):
        self.calls.append(("create", name))
        content = b"".join(iter(lambda: data.read(65536), b""))
        assert len(content) == size
        image_id = str(uuid.uuid4())
        self.bodies[image_id] = {
            "id": image_id, "name": name, "status": "active", "disk_format": disk_format,
            "container_format": container_format, "tags": list(tags),
            "visibility": visibility, "owner": owner, "size": len(content),
            "checksum": hashlib.md5(content).hexdigest(), "os_hash_algo": "sha512",
            "os_hash_value": hashlib.sha512(content).hexdigest(), **props}
        return self._image(image_id)

    def get_image(self, image_id):
        return self._image(image_id)

    def update_image(self, image, properties=None, **attrs):
        self.calls.append(("update", sorted(attrs) + sorted(properties or {})))
        self.bodies[image.id].update(attrs, **(properties or {}))

    def add_tag(self, image, tag):
        self.calls.append(("tag", tag))
        self.bodies[image.id]["tags"].append(tag)

    def delete_image(self, image, ignore_missing=False):
        self.calls.append(("delete", image.id))
        del self.bodies[image.id]

    def images(self, name=None):
        return [self._image(i) for i, b in self.bodies.items() if name in (None, b["name"])]


class FakeConnection:
    current_project_id = None

    def __init__(self):
        self.image = FakeImages()


@pytest.fixture
def cloud(monkeypatch) -> FakeConnection:
    conn = FakeConnection()
    monkeypatch.setattr(glance, "connect", lambda cloud=None: conn)
    monkeypatch.setattr(glance, "_list_by_hash", lambda c, **q: c.image.list_by_hash(**q))
    return conn


# --------------------------------------------------------------------------
# from the manifest

def test_properties_come_from_the_manifest():
    assert glance.properties_of(manifest(), DIGEST) == {
        "os_distro": "debian", "os_version": "13", "hw_rng_model": "virtio",
        "trove_datastore": "mariadb", "trove_datastore_version": "11.8",
        "trove_datastore_manager": "mariadb", "trove_guest_agent_version": "26.0.0",
        "trove_image_builder_version": "0.1.0", "trove_image_builder_profile": "prod-mariadb",
        "trove_image_builder_variant": "production",
        "trove_image_builder_manifest_digest": DIGEST}


def test_the_tags_are_the_ones_trove_looks_an_image_up_by():
    assert glance.tags_of(manifest()) == ["trove", "mariadb", "mariadb-11.8"]


def test_only_a_production_image_with_an_agent_gets_the_trove_tag():
    dev = manifest(profile={"name": "dev-mariadb", "variant": "development"})
    agentless = manifest(guest_agent={"install": "none", "version": None})
    base = manifest(guest_agent={"install": "none", "version": None}, datastore=None)
    assert glance.tags_of(dev) == ["trove-dev", "mariadb", "mariadb-11.8"]
    assert glance.tags_of(agentless) == ["trove-no-agent", "mariadb", "mariadb-11.8"]
    assert glance.tags_of(base) == ["trove-no-agent"]
    props = glance.properties_of(base, DIGEST)
    assert not {"trove_datastore", "trove_guest_agent_version"} & set(props)


def test_the_default_name_is_the_stem_and_the_manifest_digest(image):
    pub = glance.plan(image)
    digest = manifests.manifest_digest(image, {}, image.with_name(image.name
                                                                  + manifests.SUFFIX))
    assert pub.name == "prod-mariadb-" + digest[len("sha256:"):][:12]
    assert (pub.disk_format, pub.tags) == ("qcow2", ["trove", "mariadb", "mariadb-11.8"])
    assert glance.plan(image, "mine").name == "mine"


def test_a_manifest_without_the_image_is_refused(image):
    m = image.with_name(image.name + manifests.SUFFIX)
    image.unlink()
    with pytest.raises(InputError, match="no image file next to this manifest"):
        glance.plan(m)


# --------------------------------------------------------------------------
# publishing, against the fake

def test_publish_uploads_with_the_manifests_properties_and_tags(cloud, image, capsys):
    result = glance.publish_image(image, visibility="community", owner="service-project")
    assert result["reused"] is False and result["status"] == "active"
    [body] = cloud.image.bodies.values()
    assert result["id"] == body["id"]
    assert result["tags"] == ["mariadb", "mariadb-11.8", "trove"]
    assert result["properties"] == glance.plan(image).properties
    assert (result["visibility"], result["owner"]) == ("community", "service-project")
    assert result["checksum"] == hashlib.md5(image.read_bytes()).hexdigest()
    assert "upload: 100% " in capsys.readouterr().err


def test_publishing_again_reuses_the_image(cloud, image):
    first = glance.publish_image(image)
    again = glance.publish_image(image)
    assert again["reused"] is True and again["updated"] == []
    assert again["id"] == first["id"] and len(cloud.image.bodies) == 1
    assert [c for c in cloud.image.calls if c[0] == "create"] == [("create", first["name"])]


def test_a_reused_image_gets_the_missing_tags_and_properties(cloud, image):
    first = glance.publish_image(image)
    body = cloud.image.bodies[first["id"]]
    body["tags"] = ["trove"]
    del body["trove_datastore_version"]
    again = glance.publish_image(image, visibility="public")
    assert again["reused"] is True
    assert again["updated"] == ["trove_datastore_version", "visibility",
                                "tag:mariadb", "tag:mariadb-11.8"]
    assert again["tags"] == first["tags"] and again["visibility"] == "public"
    assert again["properties"] == first["properties"]


def test_an_image_failing_its_own_checksum_is_refused_before_any_upload(cloud, image):
    with open(image, "r+b") as f:
        f.seek(100)
        f.write(b"X")
    result = invoke("publish", str(image))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(f"Error: {image}: sha256 ")
    assert "nothing uploaded" in result.stderr and "Traceback" not in result.output
    assert cloud.image.calls == []


def test_an_upload_glance_stored_wrongly_is_deleted(cloud, image, monkeypatch):
    create = cloud.image.create_image

    def corrupting(name, **kwargs):
        created = create(name, **kwargs)
        cloud.image.bodies[created.id]["checksum"] = "0" * 32
        return created
    monkeypatch.setattr(cloud.image, "create_image", corrupting)
    with pytest.raises(glance.PublishError, match="deleted it"):
        glance.publish_image(image)
    assert cloud.image.bodies == {}


# --------------------------------------------------------------------------
# the command line

def test_an_interrupted_upload_leaves_no_image(cloud, image, monkeypatch):
    """Glance makes the image record, then takes the data: an upload cut
    short (Ctrl-C here) removes the record it left queued, and only it."""
    other = str(uuid.uuid4())
    cloud.image.bodies[other] = {"id": other, "name": "prod-mariadb-x", "status": "queued",
                                 "tags": [], "properties": {}}

    def create_then_stop(name, *, data, **kwargs):
        image_id = str(uuid.uuid4())
        cloud.image.bodies[image_id] = {
            "id": image_id, "name": name, "status": "saving", "tags": [],
            "properties": {glance.PREFIX + "manifest_digest":
                           kwargs[glance.PREFIX + "manifest_digest"]}}
        data.read(1024)
        raise KeyboardInterrupt

    monkeypatch.setattr(cloud.image, "create_image", create_then_stop)
    with pytest.raises(KeyboardInterrupt):
        glance.publish_image(image)
    assert list(cloud.image.bodies) == [other]


def test_publish_prints_the_image_as_json(cloud, image):
    result = invoke("publish", str(image), "--name", "x", "--visibility", "shared")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["name"], out["visibility"], out["reused"]) == ("x", "shared", False)


def test_a_dry_run_checks_the_image_and_sends_nothing(cloud, image):
    result = invoke("publish", str(image), "--dry-run")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["dry_run"] is True and out["tags"] == ["mariadb", "mariadb-11.8", "trove"]
    assert out["os_hash_value"] == hashlib.sha512(image.read_bytes()).hexdigest()
    assert cloud.image.calls == [] and cloud.image.bodies == {}
    with open(image, "ab") as f:         # no longer the image its manifest describes
        f.write(b"x")
    result = invoke("publish", str(image), "--dry-run")
    assert result.exit_code == 1
    assert "is not the manifest's" in result.output and cloud.image.calls == []


def test_a_missing_image_or_manifest_is_exit_code_2(cloud, tmp_path, image):
    assert_error(invoke("publish", str(tmp_path / "nope.qcow2")),
                 f"{tmp_path / 'nope.qcow2'}: no such image file")
    image.with_name(image.name + manifests.SUFFIX).unlink()
    result = invoke("publish", str(image))
    assert result.exit_code == 2 and result.stderr.startswith(f"Error: {image}: no manifest")


def test_an_unknown_visibility_is_a_usage_error(image):
    result = invoke("publish", str(image), "--visibility", "everyone")
    assert result.exit_code == 2 and "'everyone' is not one of" in result.stderr


def test_glance_unreachable_names_the_endpoint(image):
    """Through the real openstacksdk, to a port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = invoke("publish", str(image),
                    env={"OS_AUTH_TYPE": "none", "OS_ENDPOINT": url, "OS_CLOUD": None})
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1] == \
        f"Error: Glance unreachable at {url}: no answer to version discovery"


def test_an_unknown_cloud_is_exit_code_2(image, tmp_path):
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds: {}\n")
    result = invoke("publish", str(image), "--os-cloud", "nowhere",
                    env={"OS_CLIENT_CONFIG_FILE": str(clouds)})
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == \
        "Error: cloud configuration: Cloud nowhere was not found."


def test_refused_authorization_is_one_line(cloud, image, monkeypatch):
    def forbidden(conn, **query):
        response = requests.Response()
        response.status_code = 403
        raise sdk_exc.ForbiddenException(
            message="ForbiddenException: 403", response=response,
            details="You are not authorized to complete get_images action.<br /><br />")
    monkeypatch.setattr(glance, "_list_by_hash", forbidden)
    monkeypatch.setattr(glance, "_endpoint", lambda conn: "http://glance:9292")
    result = invoke("publish", str(image))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "Error: authorization refused (403) by http://glance:9292: "
        "You are not authorized to complete get_images action.")


def test_keystone_refusing_the_password_is_one_line(image):
    """Through the real openstacksdk and keystoneauth, to a Keystone of a
    few lines that refuses every token request."""
    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = b'{"error": {"code": 401, "message": "The request you have made '\
                   b'requires authentication.", "title": "Unauthorized"}}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v3"
        result = invoke("publish", str(image), env={
            "OS_CLOUD": None, "OS_AUTH_TYPE": "password", "OS_AUTH_URL": url,
            "OS_USERNAME": "u", "OS_PASSWORD": "wrong", "OS_PROJECT_NAME": "p",
            "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default"})
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1, result.output
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"Error: authorization refused (401) by {url}: "), last
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------
# the upload body

def test_the_progress_reader_reports_every_few_seconds_and_at_the_end(tmp_path):
    data = tmp_path / "d"
    data.write_bytes(b"x" * (4 << 20))
    now, lines = [0.0], []
    with open(data, "rb") as f:
        reader = glance.ProgressReader(f, 4 << 20, every=3, report=lines.append,
                                       clock=lambda: now[0])
        assert len(reader) == 4 << 20
        for _ in range(4):
            now[0] += 2
            reader.read(1 << 20)
        assert reader.read(1 << 20) == b"" and reader.read(10) == b""
    assert lines == ["upload: 50% (2/4 MiB, 0 MiB/s)", "upload: 100% (4/4 MiB, 0 MiB/s)"]
