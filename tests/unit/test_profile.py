"""Profiles: inheritance, templating, --set, and every error message.

Profiles under test are written into tmp_path (the working directory, see
the ``write`` fixture), so error messages start with the bare file name.
"""
import re

import pytest

from trove_image_builder import elements, profile as profiles
from trove_image_builder.errors import InputError, ProfileError

TOP_ALLOWED = ("name, description, variant, os, datastore, guest_agent, guest_user, "
               "certificates, elements, packages, image, env, backend")

# The smallest valid profile: production, no datastore, no guest agent.
MINIMAL = """
name: a
guest_agent:
  install: none
"""


def error_of(ref, sets=(), known_elements=None, exc=ProfileError) -> str:
    with pytest.raises(exc) as info:
        profiles.load(str(ref), sets, known_elements=known_elements)
    return info.value.message


# --------------------------------------------------------------------------
# Inheritance

def test_minimal_profile_takes_the_defaults(write):
    p = profiles.load(str(write("a.yaml", MINIMAL)))
    assert p.name == "a"
    assert p.variant == "production"
    assert p.os.distro == "debian"
    assert p.release == "trixie"
    assert p.datastore is None
    assert p.image.format == "qcow2" and p.image.size == "4G"
    assert p.elements == () and p.packages == () and p.env == {}
    assert p.backend == "dib"


def test_extends_a_shipped_profile_by_name(write, known):
    path = write("child.yaml", """
        extends: prod-mariadb
        name: child
        image:
          size: 6G
    """)
    p = profiles.load(str(path), known_elements=known)
    assert p.name == "child"
    assert p.image.size == "6G"
    # from prod-mariadb
    assert p.datastore.name == "mariadb" and p.datastore.version == "11.8"
    assert p.guest_agent.install == "release" and p.guest_agent.version == "26.0.0"
    # from base-debian, two levels up
    assert p.os.mirror == "http://deb.debian.org/debian"
    assert p.image.format == "qcow2" and p.image.compression == "zstd"
    assert p.source == str(path.resolve())


def test_extends_by_path_is_relative_to_the_extending_file(write, tmp_path):
    # A decoy next to the working directory: a path resolved against the
    # working directory instead of the profile's folder would pick it.
    write("parent.yaml", """
        name: decoy
        description: wrong parent
        guest_agent: {install: none}
    """)
    write("sub/parent.yaml", """
        name: parent
        description: right parent
        guest_agent: {install: none}
    """)
    write("sub/up.yaml", """
        name: up
        description: one level up
        guest_agent: {install: none}
    """)
    near = write("sub/child.yaml", """
        extends: parent.yaml
        name: child
    """)
    far = write("sub/deeper/child.yaml", """
        extends: ../up.yaml
        name: child
    """)
    assert profiles.load(str(near)).description == "right parent"
    assert profiles.load(str(far)).description == "one level up"


def test_load_by_relative_path_from_the_working_directory(write):
    write("a.yaml", MINIMAL)
    assert profiles.load("a.yaml").name == "a"
    assert profiles.load("./a.yaml").name == "a"


def test_mappings_are_deep_merged(write):
    write("parent.yaml", """
        name: parent
        guest_agent: {install: none}
        os:
          distro: ubuntu
          mirror: http://parent.example/ubuntu
        image:
          format: raw
          size: 5G
        env:
          DIB_A: "1"
          DIB_B: "2"
    """)
    p = profiles.load(str(write("child.yaml", """
        extends: parent.yaml
        name: child
        os:
          release: noble
        image:
          size: 8G
        env:
          DIB_B: "20"
          DIB_C: "3"
    """)))
    assert (p.os.distro, p.os.release, p.os.mirror) == (
        "ubuntu", "noble", "http://parent.example/ubuntu")
    assert (p.image.format, p.image.size) == ("raw", "8G")
    assert p.env == {"DIB_A": "1", "DIB_B": "20", "DIB_C": "3"}


def test_lists_are_appended_parent_first(write, known):
    write("grand.yaml", """
        name: grand
        guest_agent: {install: none}
        packages: [vim]
        elements: [cloud-init-growpart]
    """)
    write("parent.yaml", """
        extends: grand.yaml
        name: parent
        packages: [curl, less]
    """)
    p = profiles.load(str(write("child.yaml", """
        extends: parent.yaml
        name: child
        packages: [jq]
        elements: [growroot]
    """)), known_elements=known)
    assert p.packages == ("vim", "curl", "less", "jq")
    assert p.elements == ("cloud-init-growpart", "growroot")


def test_child_can_drop_a_parent_section_with_null(write, known):
    p = profiles.load(str(write("child.yaml", """
        extends: prod-mariadb
        name: child
        datastore: null
    """)), known_elements=known)
    assert p.datastore is None


def test_child_null_clears_a_parent_value(write, known):
    # dev-mariadb does this with guest_agent.version.
    p = profiles.load("dev-mariadb", known_elements=known)
    assert p.guest_agent.version is None
    assert p.guest_agent.install == "source"


# --------------------------------------------------------------------------
# Templating and --set

def test_variables_are_rendered(write):
    p = profiles.load(str(write("a.yaml", """
        name: a
        variables:
          mirror_host: mirror.example
          user: dbagent
        guest_agent: {install: none}
        guest_user: "{{ user }}"
        os:
          mirror: "http://{{ mirror_host }}/debian"
    """)))
    assert p.guest_user == "dbagent"
    assert p.os.mirror == "http://mirror.example/debian"


def test_set_gives_a_template_variable(write):
    path = write("a.yaml", """
        name: a
        variables:
          user: dbagent
        guest_agent: {install: none}
        guest_user: "{{ user }}"
    """)
    assert profiles.load(str(path), ["user=other"]).guest_user == "other"


def test_set_variable_reaches_a_parents_template(known):
    p = profiles.load("prod-mariadb", ["trove_version=27.0.1",
                                       "debian_mirror=http://m.example/debian"],
                      known_elements=known)
    assert p.guest_agent.version == "27.0.1"
    assert p.os.mirror == "http://m.example/debian"
    # base-debian derives the security mirror with a filter
    assert p.os.security_mirror == "http://m.example/debian-security"


def test_child_variables_override_the_parents(write, known):
    p = profiles.load(str(write("child.yaml", """
        extends: prod-mariadb
        name: child
        variables:
          trove_version: "25.0.0"
    """)), known_elements=known)
    assert p.guest_agent.version == "25.0.0"


def test_set_beats_variables(write, known):
    path = write("child.yaml", """
        extends: prod-mariadb
        name: child
        variables:
          trove_version: "25.0.0"
    """)
    p = profiles.load(str(path), ["trove_version=24.0.0"], known_elements=known)
    assert p.guest_agent.version == "24.0.0"


def test_set_dotted_key_overrides_the_field(known):
    p = profiles.load("mariadb-package", ["image.size=6G", "datastore.version=10.11"],
                      known_elements=known)
    assert p.image.size == "6G"
    assert p.datastore.runtime == "package"     # the rest of the section is kept
    assert p.image.format == "qcow2"  # the rest of the section is kept


def test_set_top_level_field(known):
    p = profiles.load("prod-mariadb", ["guest_user=dbagent", "description=hello there"],
                      known_elements=known)
    assert p.guest_user == "dbagent"
    assert p.description == "hello there"


def test_set_value_is_read_as_yaml(known):
    p = profiles.load("prod-mariadb", ["packages=[vim, curl]", "env.DIB_X=1"],
                      known_elements=known)
    assert p.packages == ("vim", "curl")
    assert p.env["DIB_X"] == "1"
    assert p.env["DIB_DEBIAN_COMPONENTS"] == "main"


def test_set_creates_a_missing_section(write, known):
    p = profiles.load(str(write("a.yaml", MINIMAL)),
                      ["datastore.name=postgresql", "datastore.version='15'"],
                      known_elements=known)
    assert p.datastore.name == "postgresql" and p.datastore.version == "15"


def test_set_error_is_attributed_to_set(known):
    assert error_of("prod-mariadb", ["image.size=lots"], known) == (
        "--set: image.size: 'lots' is not a size in GiB; write e.g. 4G")


def test_set_without_equals_is_refused():
    with pytest.raises(InputError) as info:
        profiles.load("prod-mariadb", ["image.size"])
    assert info.value.message == "--set image.size: expected KEY=VALUE"


def test_set_with_empty_key_is_refused():
    with pytest.raises(InputError) as info:
        profiles.load("prod-mariadb", ["=6G"])
    assert info.value.message == "--set =6G: expected KEY=VALUE"


def test_set_into_a_value_is_refused():
    with pytest.raises(InputError) as info:
        profiles.load("prod-mariadb", ["image.size.x=1"])
    assert info.value.message == "--set image.size.x: 'size' is not a section"


def test_declared_variables_usable_in_expressions(write):
    p = profiles.load(str(write("a.yaml", """
        name: a
        variables:
          extra: 2
        guest_agent: {install: none}
        image:
          size: "{{ 4 + extra }}G"
    """)))
    assert p.image.size == "6G"


def test_set_numeric_looking_string_setting(known):
    p = profiles.load("prod-mariadb", ["datastore.version=10.6"], known_elements=known)
    assert p.datastore.version == "10.6"


# --------------------------------------------------------------------------
# Errors: "FILE: FIELD: message"

def test_unknown_top_level_key(write):
    path = write("a.yaml", MINIMAL + "colour: blue\n")
    assert error_of(path) == f"a.yaml: colour: unknown key; allowed: {TOP_ALLOWED}"


def test_unknown_nested_key(write):
    path = write("a.yaml", MINIMAL + "os:\n  foo: 1\n")
    assert error_of(path) == (
        "a.yaml: os.foo: unknown key; allowed: distro, release, mirror, security_mirror, kernel")


def test_unknown_key_is_reported_against_the_file_that_has_it(write):
    write("parent.yaml", """
        name: parent
        guest_agent: {install: none}
        image:
          sise: 4G
    """)
    path = write("child.yaml", "extends: parent.yaml\nname: child\n")
    assert error_of(path) == (
        "parent.yaml: image.sise: unknown key; allowed: format, size, compression")


def test_error_carries_source_and_field(write):
    with pytest.raises(ProfileError) as info:
        profiles.load(str(write("a.yaml", MINIMAL + "variant: staging\n")))
    assert (info.value.source, info.value.field) == ("a.yaml", "variant")
    assert info.value.exit_code == 2


def test_float_for_a_string_says_to_quote_it(write):
    path = write("a.yaml", MINIMAL + "datastore:\n  name: mariadb\n  version: 10.11\n")
    assert error_of(path) == 'a.yaml: datastore.version: must be a string; quote it: "10.11"'


def test_integer_for_a_string_is_accepted(write):
    path = write("a.yaml", MINIMAL + "datastore:\n  name: postgresql\n  version: 15\n")
    assert profiles.load(str(path)).datastore.version == "15"


def test_boolean_for_a_string_is_refused(write):
    path = write("a.yaml", MINIMAL + "guest_user: yes\n")
    assert error_of(path) == "a.yaml: guest_user: must be a string, not a boolean"


@pytest.mark.parametrize("value", ["vm", "{a: b}", "[1, 2]"])
def test_elements_must_be_a_list_of_strings(write, value):
    path = write("a.yaml", MINIMAL + f"elements: {value}\n")
    assert error_of(path) == "a.yaml: elements: must be a list of strings"


def test_section_must_be_a_mapping(write):
    path = write("a.yaml", MINIMAL + "os: debian\n")
    assert error_of(path) == "a.yaml: os: must be a mapping, not str"


def test_value_not_in_choices(write):
    path = write("a.yaml", MINIMAL + "variant: staging\n")
    assert error_of(path) == (
        "a.yaml: variant: 'staging' is not allowed; choose one of: production, development")


def test_nested_value_not_in_choices(write):
    path = write("a.yaml", MINIMAL + "image:\n  format: vmdk\n")
    assert error_of(path) == (
        "a.yaml: image.format: 'vmdk' is not allowed; choose one of: qcow2, raw, vhd")


def test_name_is_required(write):
    path = write("a.yaml", "guest_agent: {install: none}\n")
    assert error_of(path) == "a.yaml: name: is required"


def test_datastore_name_is_required(write):
    path = write("a.yaml", MINIMAL + "datastore:\n  version: '1'\n")
    assert error_of(path) == "a.yaml: datastore.name: is required"


def test_bad_name(write):
    path = write("a.yaml", "name: My Image\nguest_agent: {install: none}\n")
    assert error_of(path) == (
        "a.yaml: name: 'My Image' must be lower case letters, digits, '.', '_' or '-'")


@pytest.mark.parametrize("size", ["4GB", "0G", "big", "-1G"])
def test_bad_image_size(write, size):
    path = write("a.yaml", MINIMAL + f"image:\n  size: '{size}'\n")
    assert error_of(path) == f"a.yaml: image.size: '{size}' is not a size in GiB; write e.g. 4G"


def test_env_names_and_values(write):
    path = write("a.yaml", MINIMAL + "env:\n  DIB_FLAG: true\n  DIB_N: 3\n")
    assert profiles.load(str(path)).env == {"DIB_FLAG": "true", "DIB_N": "3"}
    bad = write("b.yaml", MINIMAL + "env:\n  lower: x\n")
    assert error_of(bad) == "b.yaml: env.lower: not a valid environment variable name"
    nested = write("c.yaml", MINIMAL + "env:\n  DIB_X: [1]\n")
    assert error_of(nested) == "c.yaml: env.DIB_X: must be a string"


def test_unknown_datastore(write, known):
    path = write("a.yaml", MINIMAL + "datastore:\n  name: oracle\n")
    assert error_of(path, known_elements=known) == (
        "a.yaml: datastore.name: unknown datastore 'oracle'; known: mariadb, mysql, postgresql "
        "(a datastore is an element folder with a datastore.yaml)")


def test_unknown_datastore_is_not_checked_without_known_elements(write):
    path = write("a.yaml", MINIMAL + "datastore:\n  name: oracle\n")
    assert profiles.load(str(path)).datastore.name == "oracle"


def test_unsupported_runtime(write, known, tmp_path):
    folder = tmp_path / "mine" / "redis"
    folder.mkdir(parents=True)
    (folder / "datastore.yaml").write_text(
        "name: redis\nruntimes: [package]\npackage: redis-server\n"
        "service: redis-server\ndata_dir: /var/lib/redis\n")
    path = write("a.yaml", MINIMAL + "datastore:\n  name: redis\n  runtime: container\n")
    assert error_of(path, known_elements=elements.discover([tmp_path / "mine"])) == (
        "a.yaml: datastore.runtime: 'container' is not supported by the redis "
        "element; it supports: package")


def test_mysql_8_0_in_a_container(write, known):
    path = write("a.yaml", MINIMAL + "datastore:\n  name: mysql\n  version: '8.0'\n"
                 "  runtime: container\n")
    ds = profiles.load(str(path), known_elements=known).datastore
    assert (ds.name, ds.version, ds.runtime) == ("mysql", "8.0", "container")


def test_mysql_from_packages_is_refused(write, known):
    path = write("a.yaml", MINIMAL + "datastore:\n  name: mysql\n  version: '8.0'\n"
                 "  runtime: package\n")
    assert error_of(path, known_elements=known) == (
        "a.yaml: datastore.runtime: 'package' is not supported by the mysql element; "
        "it supports: container")


def test_package_runtime_refused_for_a_current_agent(write, known):
    path = write("a.yaml", MINIMAL + "datastore:\n  name: mariadb\n  runtime: package\n"
                 "guest_agent:\n  install: release\n  version: '26.0.0'\n")
    assert error_of(path, known_elements=known) == (
        "a.yaml: datastore.runtime: the Trove 26.0.0 guest agent runs its datastore in a "
        "container (since Trove 14, Victoria) and cannot manage one from OS packages; use "
        "runtime: container, or guest_agent.install: none")


def test_package_runtime_allowed_for_an_older_agent(write, known):
    path = write("a.yaml", MINIMAL + "datastore:\n  name: mariadb\n  runtime: package\n"
                 "guest_agent:\n  install: release\n  version: '13.0.0'\n")
    assert profiles.load(str(path), known_elements=known).datastore.runtime == "package"


def test_unknown_element(write, known):
    path = write("a.yaml", MINIMAL + "elements: [growroot, no-such-element]\n")
    assert error_of(path, known_elements=known) == (
        "a.yaml: elements: unknown element 'no-such-element'; see 'trove-image-builder "
        "elements list', or add its folder with --elements-path")


def test_dib_elements_are_known(write, known):
    path = write("a.yaml", MINIMAL + "elements: [growroot]\n")
    assert profiles.load(str(path), known_elements=known).elements == ("growroot",)


@pytest.fixture
def deadline():
    """Fail, instead of hanging, if a cycle is followed for ever."""
    import signal

    def expired(signum, frame):
        raise AssertionError("still loading after 10 s: is the cycle detected?")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_extends_cycle(write, deadline):
    a = write("a.yaml", "extends: b.yaml\nname: a\n")
    write("b.yaml", "extends: a.yaml\nname: b\n")
    assert error_of(a) == "b.yaml: extends: cycle: a -> b -> a; remove one of these 'extends'"


def test_extends_itself(write, deadline):
    a = write("a.yaml", "extends: a.yaml\nname: a\n")
    assert error_of(a) == "a.yaml: extends: cycle: a -> a; remove one of these 'extends'"


def test_missing_parent_by_path(write):
    a = write("a.yaml", "extends: missing.yaml\nname: a\n")
    assert error_of(a) == "a.yaml: extends: no profile file missing.yaml"


def test_missing_parent_by_name(write):
    a = write("a.yaml", "extends: nosuch\nname: a\n")
    names = ", ".join(profiles.available())
    assert error_of(a) == f"a.yaml: extends: no profile named 'nosuch'; available: {names}"


def test_extends_must_be_a_name(write):
    a = write("a.yaml", "extends: [base-debian]\nname: a\n")
    assert error_of(a) == "a.yaml: extends: must be a profile name or a path to a YAML file"


def test_missing_profile_is_an_input_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as info:
        profiles.load("nope.yaml")
    assert not isinstance(info.value, ProfileError)
    assert info.value.message == (
        "no profile file nope.yaml (see 'trove-image-builder profiles list')")


def test_missing_profile_by_name():
    names = ", ".join(profiles.available())
    assert error_of("nosuch", exc=InputError) == (
        f"no profile named 'nosuch'; available: {names} "
        "(see 'trove-image-builder profiles list')")


def test_undefined_template_variable(write):
    path = write("a.yaml", MINIMAL + "guest_user: '{{ who }}'\n")
    assert error_of(path) == (
        "a.yaml: undefined template variable ('who' is undefined); "
        "give it with --set NAME=VALUE or under 'variables:'")


def test_undefined_variable_in_a_parent_names_the_parent(write):
    write("parent.yaml", MINIMAL.replace("name: a", "name: parent")
          + "guest_user: '{{ who }}'\n")
    child = write("child.yaml", "extends: parent.yaml\nname: child\n")
    assert error_of(child).startswith("parent.yaml: undefined template variable ('who'")
    # ... and the child (or --set) can give it
    assert profiles.load(str(child), ["who=agent"]).guest_user == "agent"


def test_template_syntax_error(write):
    path = write("a.yaml", "name: a\n{% if %}\n")
    message = error_of(path)
    assert message.startswith("a.yaml: line 2: template error: "), message


def test_template_sandbox(write):
    path = write("a.yaml", MINIMAL + "description: \"{{ ''.__class__.__mro__ }}\"\n")
    assert error_of(path) == (
        "a.yaml: template not allowed: access to attribute '__class__' of 'str' "
        "object is unsafe.")


@pytest.mark.parametrize("text, line, problem", [
    ("name: a\nguest_agent: {install: none}\nimage: size: 4G\n", 3,
     "mapping values are not allowed here"),
    ("name: a\n  indented: wrong\n", 2, "mapping values are not allowed here"),
    ("name: a\nos:\n  distro: [debian\nimage: {}\n", 4, "expected ',' or ']', but got ':'"),
])
def test_malformed_yaml_names_the_line(write, text, line, problem):
    path = write("a.yaml", text)
    assert error_of(path) == f"a.yaml: line {line}: malformed YAML: {problem}"


def test_profile_must_be_a_mapping(write):
    path = write("a.yaml", "- name\n- a\n")
    assert error_of(path) == "a.yaml: a profile must be a YAML mapping of settings"


def test_empty_profile_needs_a_name(write):
    path = write("a.yaml", "# nothing\n")
    assert error_of(path) == "a.yaml: name: is required"


def test_production_refuses_source_agent(write):
    path = write("a.yaml", """
        name: a
        guest_agent:
          install: source
          path: /src/trove
    """)
    assert error_of(path) == (
        "a.yaml: guest_agent.install: 'source' is for development images; "
        "a production image takes the agent from a release")


def test_development_accepts_source_agent(write):
    path = write("a.yaml", """
        name: a
        variant: development
        guest_agent:
          install: source
          path: /src/trove
    """)
    assert profiles.load(str(path)).guest_agent.path == "/src/trove"


def test_production_refuses_dev_access(write):
    path = write("a.yaml", MINIMAL + "elements: [dev-access]\n")
    assert error_of(path) == "a.yaml: elements: 'dev-access' is for development images only"


def test_release_without_version_is_refused(write):
    path = write("a.yaml", "name: a\nguest_agent:\n  install: release\n")
    assert error_of(path) == (
        'a.yaml: guest_agent.version: is required for install: release (e.g. "26.0.0")')


def test_release_is_the_default_install(write):
    path = write("a.yaml", "name: a\n")
    assert error_of(path).startswith("a.yaml: guest_agent.version: is required")


def test_source_without_path_is_refused(write):
    path = write("a.yaml", "name: a\nvariant: development\nguest_agent:\n  install: source\n")
    assert error_of(path) == (
        "a.yaml: guest_agent.path: is required for install: source (a Trove checkout)")


def test_variables_shadowing_a_setting(write):
    path = write("a.yaml", MINIMAL + "variables:\n  image: big\n")
    assert error_of(path) == (
        "a.yaml: variables.image: shadows a profile setting; rename the variable")


def test_variables_must_be_a_mapping(write):
    path = write("a.yaml", MINIMAL + "variables: [a, b]\n")
    assert error_of(path) == "a.yaml: variables: must be a mapping of NAME: value"


# --------------------------------------------------------------------------
# Shipped profiles

SHIPPED = sorted(profiles.available())


def test_shipped_profiles_exist():
    assert {"base-debian", "prod-mariadb", "prod-postgresql",
            "dev-mariadb", "dev-postgresql"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads_and_validates(name, known):
    p = profiles.load(name, known_elements=known)
    assert p.name == name
    assert p.description
    assert p.source == str(profiles.available()[name].resolve())
    if p.variant == "production":
        assert p.guest_agent.install != "source"
        assert "dev-access" not in p.elements


@pytest.mark.parametrize("name", [n for n in SHIPPED if n.startswith("dev-")])
def test_dev_profiles_take_the_trove_checkout_from_set(name, known, shipped_profiles_dir):
    # by default the 'trove' folder beside this project (../../trove from profiles/)
    beside = str((shipped_profiles_dir.parent.parent / "trove").resolve())
    assert profiles.load(name, known_elements=known).guest_agent.path == beside
    p = profiles.load(name, ["trove_source=/src/trove"], known_elements=known)
    assert p.variant == "development"
    assert p.guest_agent.path == "/src/trove"


def test_shipped_datastore_versions(known):
    assert profiles.load("prod-mariadb", known_elements=known).datastore.version == "11.8"
    assert profiles.load("prod-postgresql", known_elements=known).datastore.version == "17"


# --------------------------------------------------------------------------
# Digest

def test_digest_is_stable():
    one = profiles.load("prod-mariadb").digest()
    assert one == profiles.load("prod-mariadb").digest()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", one)


def test_digest_changes_with_a_field():
    base = profiles.load("prod-mariadb").digest()
    assert profiles.load("prod-mariadb", ["image.size=6G"]).digest() != base
    assert profiles.load("prod-mariadb", ["trove_version=27.0.0"]).digest() != base
    assert profiles.load("prod-mariadb", ["env.DIB_X=1"]).digest() != base


def test_digest_ignores_where_the_file_is(write, shipped_profiles_dir):
    copy = write("copy.yaml", (shipped_profiles_dir / "prod-mariadb.yaml").read_text())
    loaded = profiles.load(str(copy))
    assert loaded.source != profiles.load("prod-mariadb").source
    assert loaded.digest() == profiles.load("prod-mariadb").digest()


def test_to_dict_round_trips_through_a_profile_file(write, known):
    import yaml
    original = profiles.load("prod-postgresql", known_elements=known)
    path = write("dumped.yaml", yaml.safe_dump(original.to_dict()))
    again = profiles.load(str(path), known_elements=known)
    assert again == original
    assert again.digest() == original.digest()


def test_every_setting_is_described():
    rows = profiles.describe_settings()
    names = [name for name, _allowed, _help in rows]
    assert "image.size" in names and "datastore.runtime" in names and "name" in names
    assert "source" not in names
    assert all(help_text for _name, _allowed, help_text in rows)


# --------------------------------------------------------------------------
# The certificate hook

@pytest.mark.parametrize("name, hook", [("prod-mariadb", True), ("prod-postgresql", True),
                                        ("dev-mariadb", False), ("mariadb-package", False),
                                        ("base-debian", False)])
def test_certificate_hook_is_on_by_default_for_production_agents(name, hook, known):
    p = profiles.load(name, known_elements=known)
    assert p.cert_hook is hook
    assert p.certificates.volume == "/dev/vdb"


@pytest.mark.parametrize("value, hook", [("true", True), ("on", True), ("false", False),
                                         ("no", False), ("True", True)])
def test_certificates_enabled_from_set(value, hook, known):
    p = profiles.load("mariadb-package", [f"certificates.enabled={value}"],
                      known_elements=known)
    assert p.cert_hook is hook


def test_certificates_enabled_yaml_boolean_turns_it_off(write, known):
    path = write("a.yaml", "extends: prod-mariadb\nname: a\ncertificates:\n  enabled: false\n")
    assert profiles.load(str(path), known_elements=known).cert_hook is False


def test_certificates_enabled_must_be_a_boolean(write):
    path = write("a.yaml", MINIMAL + "certificates:\n  enabled: sometimes\n")
    assert error_of(path) == "a.yaml: certificates.enabled: must be true or false, not 'sometimes'"


@pytest.mark.parametrize("volume", ["/dev/vdb", "/dev/disk/by-id/virtio-abc", "LABEL=data",
                                    "UUID=0b1c2d3e-aaaa-bbbb-cccc-123456789abc"])
def test_certificates_volume_forms(volume, known):
    p = profiles.load("prod-mariadb", [f"certificates.volume={volume}"], known_elements=known)
    assert p.certificates.volume == volume


@pytest.mark.parametrize("volume", ["vdb", "/mnt/data", "LABEL=", "UUID=xyz", "/dev/vd b",
                                    "LABEL=a;reboot", "LABEL=$(id)"])
def test_certificates_volume_is_checked(volume):
    assert error_of("prod-mariadb", [f"certificates.volume={volume}"]) == (
        f"--set: certificates.volume: '{volume}' is not a device path, LABEL=name or "
        "UUID=uuid; write e.g. /dev/vdb")


def test_user_hook_needs_the_certificate_hook(write):
    path = write("a.yaml", MINIMAL + "certificates:\n  user_hook: fetch.sh\n")
    assert error_of(path) == (
        "a.yaml: certificates.user_hook: runs in the certificate hook, which this image "
        "does not get; set certificates.enabled: true")


def test_user_hook_is_relative_to_the_profile(write, tmp_path, known):
    (tmp_path / "site").mkdir()
    path = write("site/a.yaml", "extends: prod-mariadb\nname: a\n"
                 "certificates:\n  user_hook: hooks/fetch.sh\n")
    p = profiles.load(str(path), known_elements=known)
    assert p.user_hook_path() == (tmp_path / "site" / "hooks" / "fetch.sh").resolve()
    assert profiles.load("prod-mariadb", known_elements=known).user_hook_path() is None


def test_user_hook_is_relative_to_the_profile_that_names_it(write, tmp_path, known):
    (tmp_path / "site").mkdir()
    (tmp_path / "team").mkdir()
    write("site/base.yaml", "extends: prod-mariadb\nname: base\n"
          "certificates:\n  user_hook: hooks/fetch.sh\n")
    leaf = write("team/leaf.yaml", "extends: ../site/base.yaml\nname: leaf\n")
    p = profiles.load(str(leaf), known_elements=known)
    assert p.certificates.user_hook == str((tmp_path / "site/hooks/fetch.sh").resolve())
    p = profiles.load(str(leaf), ["certificates.user_hook=mine.sh"], known_elements=known)
    assert p.user_hook_path() == (tmp_path / "mine.sh").resolve()


# --------------------------------------------------------------------------
# Every default resolved at load: what is shown, hashed and recorded is built

def test_release_is_resolved_at_load(write):
    p = profiles.load(str(write("a.yaml", MINIMAL)))
    assert p.os.release == "trixie"
    assert p.to_dict()["os"]["release"] == "trixie"
    ubuntu = profiles.load(str(write("u.yaml", MINIMAL + "os:\n  distro: ubuntu\n")))
    assert ubuntu.os.release == ubuntu.release == "noble"


@pytest.mark.parametrize("name, enabled", [("prod-mariadb", True), ("dev-mariadb", False),
                                           ("mariadb-package", False)])
def test_certificates_enabled_is_resolved_at_load(name, enabled, known):
    p = profiles.load(name, known_elements=known)
    assert p.certificates.enabled is enabled
    assert p.to_dict()["certificates"]["enabled"] is enabled


def test_dependent_defaults_follow_what_they_depend_on(known):
    dev = profiles.load("prod-mariadb", ["variant=development"], known_elements=known)
    assert dev.certificates.enabled is False
    agentless = profiles.load("prod-mariadb", ["guest_agent.install=none"], known_elements=known)
    assert agentless.certificates.enabled is False
    assert profiles.load("base-debian", ["os.distro=ubuntu", "os.release=null"],
                         known_elements=known).os.release == "noble"


def test_digest_is_the_same_when_a_default_is_given():
    base = profiles.load("prod-mariadb").digest()
    assert profiles.load("prod-mariadb", ["os.release=trixie"]).digest() == base
    assert profiles.load("prod-mariadb", ["certificates.enabled=true"]).digest() == base
    assert profiles.load("prod-mariadb", ["variant=development"]).digest() != base


def test_null_means_the_default(write):
    p = profiles.load(str(write("a.yaml", MINIMAL + "guest_user: null\nimage:\n"
                                "  size: null\nos: null\n")))
    assert (p.guest_user, p.image.size, p.os.distro, p.os.release) == (
        "trove", "4G", "debian", "trixie")


def test_from_dict_resolves_an_old_manifests_defaults(tmp_path):
    # written before the defaults were resolved at load
    old = profiles.load("prod-mariadb").to_dict()
    old["os"]["release"] = None
    old["certificates"]["enabled"] = None
    p = profiles.from_dict(old, source=str(tmp_path / "x.manifest.json"))
    assert p.os.release == "trixie" and p.certificates.enabled is True
    assert p == profiles.load("prod-mariadb")
    assert p.digest() == profiles.load("prod-mariadb").digest()


def test_from_dict_takes_a_relative_path_beside_the_manifest(tmp_path):
    old = profiles.load("prod-mariadb").to_dict()
    old["certificates"]["user_hook"] = "fetch.sh"
    p = profiles.from_dict(old, source=str(tmp_path / "x.manifest.json"))
    assert p.certificates.user_hook == str((tmp_path / "fetch.sh").resolve())
    assert p.user_hook_path() == (tmp_path / "fetch.sh").resolve()


def test_only_debian_and_ubuntu(write):
    assert sorted(profiles.DISTROS) == ["debian", "ubuntu"]
    path = write("a.yaml", MINIMAL + "os:\n  distro: centos\n")
    assert error_of(path) == (
        "a.yaml: os.distro: 'centos' is not allowed; choose one of: debian, ubuntu")


def test_settings_describe_dependent_defaults():
    rows = {name: allowed for name, allowed, _help in profiles.describe_settings()}
    assert rows["os.release"] == "per os.distro"
    assert rows["certificates.enabled"] == "true | false, per variant, guest_agent.install"
    assert rows["os.distro"] == "debian | ubuntu"
    assert rows["name"] == "required"
    assert rows["backend"] == " | ".join(profiles.BACKENDS)


# --------------------------------------------------------------------------
# Relative paths: from the file that names them, or the current folder for --set

IMAGE = "datastore:\n  images:\n    - {{ref: 'mariadb:10.11', archive: {archive}}}\n"


def test_image_archives_are_relative_to_the_profile_that_names_each(write, tmp_path, known):
    write("site/base.yaml", "extends: prod-mariadb\nname: base\n"
          + IMAGE.format(archive="images/one.tar"))
    leaf = write("team/leaf.yaml", "extends: ../site/base.yaml\nname: leaf\n"
                 + IMAGE.format(archive="two.tar"))
    p = profiles.load(str(leaf), known_elements=known)
    assert [i.archive for i in p.datastore.images] == [
        str((tmp_path / "site/images/one.tar").resolve()),
        str((tmp_path / "team/two.tar").resolve())]
    p = profiles.load(str(leaf), ["datastore.images=[{ref: 'm:1', archive: here.tar}]"],
                      known_elements=known)
    assert [i.archive for i in p.datastore.images] == [str((tmp_path / "here.tar").resolve())]


def test_guest_agent_path_is_relative_to_the_profile(write, tmp_path, monkeypatch, known):
    path = write("site/dev.yaml", "extends: dev-mariadb\nname: dev\n"
                 "guest_agent:\n  path: ../src/trove\n")
    p = profiles.load(str(path), known_elements=known)
    assert p.guest_agent.path == str((tmp_path / "src/trove").resolve())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert profiles.load(str(path), known_elements=known).guest_agent.path == p.guest_agent.path
    p = profiles.load(str(path), ["guest_agent.path=mine"], known_elements=known)
    assert p.guest_agent.path == str((tmp_path / "elsewhere/mine").resolve())


def test_home_is_expanded_in_paths(write, tmp_path, monkeypatch, known):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write("a.yaml", "extends: prod-mariadb\nname: a\n"
                 "certificates:\n  user_hook: ~/hooks/fetch.sh\n")
    p = profiles.load(str(path), known_elements=known)
    assert p.certificates.user_hook == str((tmp_path / "home/hooks/fetch.sh").resolve())


def test_trove_source_from_set_is_relative_to_the_current_folder(write, tmp_path, known):
    write("x.yaml", "")       # the working directory is tmp_path
    p = profiles.load("dev-mariadb", ["trove_source=src/trove"], known_elements=known)
    assert p.guest_agent.path == str((tmp_path / "src/trove").resolve())


def test_abspath_takes_a_variable_where_it_is_declared(write, tmp_path):
    write("site/base.yaml", "name: base\nvariant: development\n"
          "variables:\n  src: ../trove\n"
          "guest_agent:\n  install: source\n  path: '{{ src | abspath }}'\n")
    leaf = write("team/deep/leaf.yaml", "extends: ../../site/base.yaml\nname: leaf\n")
    assert profiles.load(str(leaf)).guest_agent.path == str((tmp_path / "trove").resolve())
    child = write("team/child.yaml", "extends: ../site/base.yaml\nname: child\n"
                  "variables:\n  src: checkout\n")
    assert profiles.load(str(child)).guest_agent.path == str(
        (tmp_path / "team/checkout").resolve())


def test_abspath_of_a_literal_is_relative_to_the_file(write, tmp_path):
    path = write("site/a.yaml", "name: a\nvariant: development\nguest_agent:\n"
                 "  install: source\n  path: \"{{ nothing | default('t') | abspath }}\"\n")
    assert profiles.load(str(path)).guest_agent.path == str((tmp_path / "site/t").resolve())


def test_resolved_paths_load_back_the_same(write, tmp_path, known):
    path = write("site/a.yaml", "extends: prod-mariadb\nname: a\n"
                 "certificates:\n  user_hook: fetch.sh\n" + IMAGE.format(archive="one.tar"))
    import yaml
    original = profiles.load(str(path), known_elements=known)
    again = profiles.load(str(write("elsewhere/b.yaml", yaml.safe_dump(original.to_dict()))),
                          known_elements=known)
    assert again == original and again.digest() == original.digest()


# --------------------------------------------------------------------------
# The setting machinery and the layering

def test_a_dependent_default_may_depend_on_a_later_setting():
    from dataclasses import dataclass
    from trove_image_builder.profile import settings

    @dataclass(frozen=True, kw_only=True)
    class Inner:
        c: str = settings.setting("c", default="x")

    @dataclass(frozen=True, kw_only=True)
    class Outer:
        b: str = settings.setting("b", default_factory=lambda s: s["inner.c"] * 2,
                                  default_factory_depends=("inner.c",))
        inner: Inner = settings.section(Inner)

    def build(data):
        return settings.build(Outer, data, leaf="t.yaml", base_of=lambda _o: None)
    assert build({}).b == "xx"
    assert build({"inner": {"c": "y"}}).b == "yy"
    assert build({"b": "z"}).b == "z"


def test_the_profile_package_does_not_import_the_other_layers():
    import ast
    from pathlib import Path
    forbidden = ("build", "verify", "vm", "contract", "cli")
    root = Path(profiles.__file__)
    package = root.name == "__init__.py"
    sources = sorted(root.parent.glob("*.py")) if package else [root]
    base = (profiles.__name__ if package else profiles.__name__.rpartition(".")[0]).split(".")
    for source in sources:
        tree = ast.parse(source.read_text())
        top = set(tree.body)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                module = ".".join(base[:len(base) + 1 - node.level]
                                  + (node.module.split(".") if node.module else []))
            elif isinstance(node, ast.ImportFrom):
                module = node.module
            elif isinstance(node, ast.Import):
                module = node.names[0].name
            else:
                continue
            parts = module.split(".")
            if parts[0] != "trove_image_builder" or len(parts) < 2 or parts[1] not in forbidden:
                continue
            # only the backend names, and only when asked for
            assert module == "trove_image_builder.build.backends" and node not in top, \
                f"{source.name}:{node.lineno} imports {module}"


def test_loading_a_profile_imports_no_build_module():
    import subprocess
    import sys
    code = ("import sys; from trove_image_builder import profile; profile.load('prod-mariadb'); "
            "print(' '.join(m for m in sys.modules if m.startswith(('trove_image_builder.build', "
            "'trove_image_builder.verify', 'trove_image_builder.vm', "
            "'trove_image_builder.contract', 'trove_image_builder.cli'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
