"""dev sync (vm/dev/sync.py): which files are sent, when the tree is
installed again, the requirements decision, and what runs in the guest;
against a fake guest that records each ssh script and keeps each archive."""
import os

import pytest

from tests.helpers.dev import Done, FakeGuest, make_state
from trove_image_builder.errors import InputError, VerifyError
from trove_image_builder.vm.dev import machine, state as state_mod, sync

REQUIREMENTS = "pbr>=2.0.0 # Apache-2.0\noslo.messaging>=14.1.0\nSQLAlchemy>=1.4.0\n"


@pytest.fixture
def tree(tmp_path):
    """A small Trove tree, with what a sync leaves out."""
    root = tmp_path / "trove-src"
    files = {"setup.cfg": "[metadata]\nname = trove\nsummary = OpenStack DBaaS\n",
             "setup.py": "import setuptools\n", "PKG-INFO": "Version: 26.0.0\n",
             "requirements.txt": REQUIREMENTS,
             "trove/__init__.py": "", "trove/guestagent/__init__.py": "",
             "trove/guestagent/datastore/manager.py": "def rpc_ping(): return True\n",
             # left out
             ".git/HEAD": "ref: refs/heads/master\n", ".tox/py3/x": "",
             "trove/__pycache__/x.cpython-311.pyc": "", "trove/guestagent/api.pyc": "",
             "trove.egg-info/PKG-INFO": "", "trove/.manager.py.swp": ""}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


KEPT = ["PKG-INFO", "requirements.txt", "setup.cfg", "setup.py", "trove/__init__.py",
        "trove/guestagent/__init__.py", "trove/guestagent/datastore/manager.py"]


def touch(path, text):
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))


# --------------------------------------------------------------------------
# the tree and the plan

def test_check_tree_takes_a_trove_tree(tree):
    assert sync.check_tree(str(tree)) == tree


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "{p}: no such folder (the Trove tree to sync)"),
    (lambda p: p.mkdir(), "{p}: not a Trove source tree (expected setup.cfg naming 'trove' "
                          "and trove/guestagent/)"),
    (lambda p: (p.mkdir(), (p / "setup.cfg").write_text("[metadata]\nname = nova\n"),
                (p / "trove" / "guestagent").mkdir(parents=True)),
     "{p}: not a Trove source tree (expected setup.cfg naming 'trove' and trove/guestagent/)"),
])
def test_check_tree_refuses_what_is_not_a_trove_tree(tmp_path, make, message):
    path = tmp_path / "x"
    make(path)
    with pytest.raises(InputError) as err:
        sync.check_tree(path)
    assert err.value.message == message.format(p=path)


def test_check_tree_without_a_tree():
    with pytest.raises(InputError, match="no Trove tree to sync: give --trove-src PATH"):
        sync.check_tree(None)


def test_scan_leaves_out_git_caches_and_egg_info(tree):
    assert sorted(sync.scan(tree)) == KEPT


def test_first_sync_sends_everything_installs_and_checks_requirements(tree):
    plan = sync.plan(tree, None, installed=False)
    assert list(plan.send) == KEPT and plan.delete == ()
    assert plan.install and plan.requirements


def test_nothing_changed_nothing_to_do(tree):
    first = sync.plan(tree, None, installed=False)
    plan = sync.plan(tree, first.files, installed=True)
    assert plan.empty and not plan.requirements


def test_a_changed_module_is_all_that_is_sent(tree):
    first = sync.plan(tree, None, installed=False)
    touch(tree / "trove/guestagent/datastore/manager.py", "def rpc_ping(): return 'new'\n")
    (tree / "trove/guestagent/new.py").write_text("")
    (tree / "trove/__init__.py").unlink()
    plan = sync.plan(tree, first.files, installed=True)
    assert plan.send == ("trove/guestagent/datastore/manager.py", "trove/guestagent/new.py")
    assert plan.delete == ("trove/__init__.py",)
    assert not plan.install and not plan.requirements


@pytest.mark.parametrize("name", ["setup.cfg", "setup.py", "PKG-INFO"])
def test_packaging_changes_install_again(tree, name):
    first = sync.plan(tree, None, installed=False)
    touch(tree / name, (tree / name).read_text() + "\n")
    plan = sync.plan(tree, first.files, installed=True)
    assert plan.send == (name,) and plan.install and not plan.requirements


def test_an_install_not_done_is_done_next_time(tree):
    first = sync.plan(tree, None, installed=False)
    assert sync.plan(tree, first.files, installed=False).install


def test_a_requirements_change_is_checked(tree):
    first = sync.plan(tree, None, installed=False)
    touch(tree / "requirements.txt", REQUIREMENTS + "tenacity>=6.3.1\n")
    plan = sync.plan(tree, first.files, installed=True)
    assert plan.send == ("requirements.txt",) and plan.requirements and not plan.install


def test_changed_requirements_names_added_and_changed_lines():
    new = ("pbr>=2.0.0 # Apache-2.0\noslo.messaging>=14.3.0\nSQLAlchemy>=1.4.0\n"
           "Tenacity>=6.3.1\n-c constraints.txt\n\n# a comment\n")
    assert sync.changed_requirements(REQUIREMENTS, new) == {"oslo-messaging", "tenacity"}
    assert sync.changed_requirements(REQUIREMENTS, REQUIREMENTS) == set()


def test_constraints_are_the_guests_pins_less_what_changed():
    freeze = ("oslo.messaging==14.9.0\nSQLAlchemy==2.0.30\n-e file:///var/lib/trove-dev/trove\n"
              "trove==26.0.0\nfoo @ file:///tmp/foo.whl\npbr==6.1.0\n")
    assert sync.constraints(freeze, {"oslo-messaging"}) == "SQLAlchemy==2.0.30\npbr==6.1.0\n"


def test_pip_env_sets_the_version_for_a_git_checkout(tree):
    assert sync.pip_env(tree, "26.0.0") == ""
    (tree / "PKG-INFO").unlink()
    assert sync.pip_env(tree, "26.0.1.dev3") == "PBR_VERSION=26.0.1.dev3 "


# --------------------------------------------------------------------------
# the sync against a fake guest

AGENT = '{"version": "26.0.0", "direct_url": null, "python": "3.11"}'


@pytest.fixture
def guest(tmp_path, monkeypatch):
    fake = FakeGuest(tmp_path, answers=[("importlib.metadata", Done(0, AGENT + "\n"))])
    monkeypatch.setattr(state_mod.DevState, "guest", lambda self: fake)
    monkeypatch.setattr(machine, "wait_for_agent", lambda st, title, deadline=0: 7.5)
    return fake


@pytest.fixture
def st(tmp_path, tree):
    folder = tmp_path / "vm"
    folder.mkdir()
    return make_state(folder, trove_src=str(tree))


def test_first_sync_sends_the_tree_installs_it_editable_and_restarts(st, guest, tree):
    result = sync.sync(st)
    assert guest.archive_names(0) == KEPT
    script, _ = guest.received[0]
    assert script == ("sudo mkdir -p /var/lib/trove-dev/trove && sudo tar -C "
                      "/var/lib/trove-dev/trove --no-same-owner -xzf -")
    install = [s for s in guest.scripts if " -e " in s]
    assert install == ["cd / && sudo env /opt/guest-agent-venv/bin/pip install -q "
                       "--disable-pip-version-check --no-deps --no-index --no-build-isolation "
                       "-e /var/lib/trove-dev/trove"]
    # the guest's pip says whether its venv satisfies requirements.txt, offline
    assert any("pip install --dry-run" in s and "--no-index -r /var/lib/trove-dev/trove/"
               "requirements.txt" in s for s in guest.scripts)
    assert guest.scripts[-1] == "sudo systemctl restart guest-agent.service"
    assert result["sent"] == len(KEPT) and result["installed"] is True
    assert result["requirements"] == "satisfied by the agent's venv"
    assert set(result["seconds"]) == {"transfer", "install", "requirements", "restart",
                                      "first_answer", "total"}
    assert result["seconds"]["first_answer"] == 7.5


IMAGE_INSTALL = {"version": "26.0.0", "direct_url": None, "python": "3.11",
                 "requires": ["pbr>=2.0.0", "oslo.messaging>=14.1.0", "SQLAlchemy>=1.4.0",
                              'stestr>=3.0; extra == "test"']}


def test_same_requirements_as_the_installed_distribution_says_them():
    requires = IMAGE_INSTALL["requires"]
    assert sync.same_requirements(REQUIREMENTS, requires)
    # the marker as written, as the metadata has it, and left out by pbr
    for installed in ('pyroute2>=0.7.7; sys_platform != "win32"', "pyroute2>=0.7.7"):
        assert sync.same_requirements("pyroute2>=0.7.7;sys_platform!='win32' # GPL\n",
                                      [installed], "3.11")
    # a line for another Python than the guest's
    assert sync.same_requirements("a>=1\nb>=2;python_version<'3.8'\n", ["a>=1"], "3.11")
    assert not sync.same_requirements("a>=1\nb>=2;python_version<'3.8'\n", ["a>=1"], "3.7")
    assert not sync.same_requirements(REQUIREMENTS.replace("14.1.0", "14.3.0"), requires)
    assert not sync.same_requirements(REQUIREMENTS + "tenacity\n", requires)
    assert not sync.same_requirements(REQUIREMENTS, None)
    assert not sync.same_requirements("", [])


def test_first_sync_over_the_images_own_install_needs_no_pip_check(st, guest, tree):
    import json
    guest.answers.insert(0, ("importlib.metadata", Done(0, json.dumps(IMAGE_INSTALL))))
    result = sync.sync(st)
    assert not [s for s in guest.scripts if "--dry-run" in s]
    assert result["requirements"] == "the same as the image's install of the agent"
    assert "requirements" not in result["seconds"] and result["installed"] is True


def test_an_editable_install_proves_nothing_about_the_venv(st, guest, tree):
    import json
    editable = dict(IMAGE_INSTALL, direct_url=json.dumps({
        "url": "file:///var/lib/trove-dev/trove", "dir_info": {"editable": True}}))
    guest.answers.insert(0, ("importlib.metadata", Done(0, json.dumps(editable))))
    result = sync.sync(st)
    assert [s for s in guest.scripts if "--dry-run" in s]
    assert result["requirements"] == "satisfied by the agent's venv"


def test_second_sync_sends_the_change_only_and_restarts(st, guest, tree):
    sync.sync(st)
    guest.scripts.clear()
    touch(tree / "trove/guestagent/datastore/manager.py", "def rpc_ping(): return 'new'\n")
    (tree / "trove/__init__.py").unlink()
    result = sync.sync(st)
    assert guest.archive_names() == ["trove/guestagent/datastore/manager.py"]
    assert guest.received[-1][0].endswith(" && cd /var/lib/trove-dev/trove && sudo rm -f -- "
                                          "trove/__init__.py")
    # no install, no requirements check: transfer and restart only
    assert guest.scripts[1:] == ["sudo systemctl restart guest-agent.service"]
    assert result["files"] == ["trove/guestagent/datastore/manager.py"]
    assert result["deleted"] == ["trove/__init__.py"] and result["installed"] is False
    assert set(result["seconds"]) == {"transfer", "restart", "first_answer", "total"}


def test_another_tree_is_sent_whole(st, guest, tree, tmp_path):
    sync.sync(st)
    other = tmp_path / "other"
    os.rename(tree, other)
    result = sync.sync(st, other)
    assert result["sent"] == len(KEPT) and result["installed"] is True


def test_a_failed_install_is_tried_again_by_the_next_sync(st, guest, tree):
    guest.answers.insert(0, (" -e ", Done(1, "", "ERROR: pbr: no version")))
    with pytest.raises(VerifyError) as err:
        sync.sync(st)
    assert err.value.message == ("the editable install failed in the guest (exit 1): "
                                 "ERROR: pbr: no version")
    guest.answers.pop(0)
    guest.scripts.clear()
    result = sync.sync(st)
    # requirements.txt, not checked yet, goes again
    assert result["files"] == ["requirements.txt"] and result["installed"] is True
    assert result["requirements"] == "satisfied by the agent's venv"


def test_unsatisfied_requirements_are_downloaded_on_the_host_with_the_guests_pins(
        st, guest, tree, monkeypatch):
    sync.sync(st)
    touch(tree / "requirements.txt", REQUIREMENTS.replace("14.1.0", "14.3.0"))
    guest.answers[:0] = [("--dry-run", Done(1, "", "ERROR: No matching distribution")),
                         ("pip freeze", Done(0, "oslo.messaging==14.1.0\npbr==6.1.0\n"))]
    downloads = []

    def pip_download(argv, **kwargs):
        downloads.append(argv)
        dest = argv[argv.index("-d") + 1]
        open(f"{dest}/oslo.messaging-14.3.0-py3-none-any.whl", "w").close()
        return Done(0)
    monkeypatch.setattr(sync.subprocess, "run", _only_pip(pip_download))
    result = sync.sync(st)
    (argv,) = downloads
    assert argv[1:5] == ["-m", "pip", "download", "-q"]
    assert (st.folder / "wheels" / "constraints.txt").read_text() == "pbr==6.1.0\n"
    assert guest.archive_names() == ["constraints.txt", "oslo.messaging-14.3.0-py3-none-any.whl"]
    assert any("--no-index --find-links /var/lib/trove-dev/wheels -r "
               "/var/lib/trove-dev/trove/requirements.txt -c /var/lib/trove-dev/wheels/"
               "constraints.txt" in s for s in guest.scripts)
    assert result["requirements"] == "installed from 1 downloaded file(s)"


def test_a_failed_download_is_one_line_and_checked_again_next_time(st, guest, tree,
                                                                   monkeypatch):
    sync.sync(st)
    touch(tree / "requirements.txt", REQUIREMENTS + "nosuchthing>=1\n")
    guest.answers.insert(0, ("--dry-run", Done(1)))
    monkeypatch.setattr(sync.subprocess, "run", _only_pip(
        lambda argv, **kw: Done(1, "", "ERROR: No matching distribution found for nosuchthing")))
    with pytest.raises(VerifyError) as err:
        sync.sync(st)
    assert err.value.message == (
        "requirements.txt changed and the guest lacks some of it; downloading on the host "
        "failed: ERROR: No matching distribution found for nosuchthing")
    plan = sync.plan(tree, sync._read_sync(st.folder)["files"], installed=True)
    assert plan.send == ("requirements.txt",) and plan.requirements


def _only_pip(fake):
    """subprocess.run for sync: pip download faked, ssh (the fake guest's sh) real."""
    real = sync.subprocess.run

    def run(argv, **kwargs):
        if argv[1:3] == ["-m", "pip"]:
            return fake(argv, **kwargs)
        return real(argv, **kwargs)
    return run
