"""Where the container image Trove's agent runs comes from (datastore.image):
built here and preloaded, an archive given in datastore.images, or pulled
by the agent at prepare; the tag is <docker_image>:<datastore version>."""
import pytest

from trove_image_builder import profile as profiles
from trove_image_builder.build.plan import IMAGES_PLACEHOLDER, check_inputs, make_plan
from trove_image_builder.errors import InputError, ProfileError

from tests.helpers.cli import invoke


@pytest.fixture
def plan_of(known):
    def _plan(ref, sets=()):
        prof = profiles.load(str(ref), sets, known_elements=known)
        return make_plan(prof, None, known)
    return _plan


def test_shipped_production_profiles_build_their_datastore_image(plan_of):
    maria, pg = plan_of("prod-mariadb"), plan_of("prod-postgresql")
    assert maria.profile.datastore.image == "built"
    assert maria.datastore_image == "mariadb:11.8"
    # Trove's [postgresql] docker_image default is 'postgres'
    assert pg.datastore_image == "postgres:17"
    assert maria.env["TROVE_CONTAINER_IMAGES_LIST"] == IMAGES_PLACEHOLDER


def test_the_tag_follows_the_datastore_version(plan_of):
    assert plan_of("prod-postgresql", ["datastore.version=16"]).datastore_image == \
        "postgres:16"


def test_built_is_the_default_for_a_container_datastore(plan_of, tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("extends: base-debian\nname: p\n"
                       "datastore: {name: mariadb, version: '11.8', runtime: container}\n")
    assert plan_of(profile).datastore_image == "mariadb:11.8"


def test_package_runtime_has_no_datastore_image(plan_of):
    plan = plan_of("mariadb-package")
    assert plan.profile.datastore.image is None
    assert plan.datastore_image is None
    assert "TROVE_CONTAINER_IMAGES_LIST" not in plan.env


def test_pull_preloads_nothing(plan_of):
    plan = plan_of("prod-mariadb", ["datastore.image=pull"])
    assert plan.datastore_image is None
    assert "TROVE_CONTAINER_IMAGES_LIST" not in plan.env


def test_archive_needs_the_tag_in_datastore_images(known, tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("extends: prod-mariadb\nname: p\ndatastore:\n  image: archive\n"
                       "  images: [{ref: 'mariadb:10.11', archive: x.tar}]\n")
    with pytest.raises(ProfileError) as err:
        profiles.load(str(profile), known_elements=known)
    assert "datastore.image: archive: datastore.images has no entry for mariadb:11.8" \
        in str(err.value)
    assert str(profile) in str(err.value)


def test_archive_with_the_tag_preloads_it(plan_of, tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("extends: prod-mariadb\nname: p\ndatastore:\n  image: archive\n"
                       "  images: [{ref: 'mariadb:11.8', archive: x.tar}]\n")
    plan = plan_of(profile)
    assert plan.datastore_image is None
    assert plan.env["TROVE_CONTAINER_IMAGES_LIST"] == IMAGES_PLACEHOLDER


def test_built_and_the_same_tag_given_is_refused(known, tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("extends: prod-mariadb\nname: p\ndatastore:\n"
                       "  images: [{ref: 'mariadb:11.8', archive: x.tar}]\n")
    with pytest.raises(ProfileError, match="set datastore.image: archive"):
        profiles.load(str(profile), known_elements=known)


def test_image_source_is_for_the_container_runtime(known):
    with pytest.raises(ProfileError, match="datastore.image: 'built' is for runtime: container"):
        profiles.load("mariadb-package", ["datastore.image=built"], known_elements=known)


def test_unknown_source_is_refused(known):
    with pytest.raises(ProfileError, match="choose one of: built, archive, pull"):
        profiles.load("prod-mariadb", ["datastore.image=registry"], known_elements=known)


def test_a_version_with_no_recipe_is_refused_before_the_build(plan_of):
    plan = plan_of("prod-mariadb", ["datastore.version=10.11"])
    with pytest.raises(InputError) as err:
        check_inputs(plan)
    assert "datastore.image: built: no recipe here for mariadb:10.11" in str(err.value)
    assert "mariadb:11.8" in str(err.value)


def test_dry_run_refuses_a_version_with_no_recipe():
    proc = invoke("build", "prod-mariadb", "--set", "datastore.version=10.11", "--dry-run")
    assert proc.exit_code == 2, proc.output
    [line] = proc.stderr.splitlines()
    assert line.startswith("Error: ") and "Traceback" not in proc.output
    assert "datastore.image: built: no recipe here for mariadb:10.11" in line
